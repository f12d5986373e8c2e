"""PayPal at the transport: a requests adapter mounted on the adapter module's HTTP session
answers as PayPal's API and certificate host do, with keys and certificates made here (a
root CA the test trusts, and PayPal's message-verification certificate signed by it)."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from requests.adapters import BaseAdapter

CERT_URL = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-test"
WEBHOOK_ID = "WH-TEST-0001"
SUBJECT = "messageverificationcerts.paypal.com"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(tz=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Test Root CA"))
        .issuer_name(_name("Test Root CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(
    ca_key: rsa.RSAPrivateKey,
    ca: x509.Certificate,
    *,
    subject: str = SUBJECT,
    expired: bool = False,
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _key()
    now = dt.datetime.now(tz=dt.UTC)
    start, end = (
        (now - dt.timedelta(days=400), now - dt.timedelta(days=30))
        if expired
        else (now - dt.timedelta(days=1), now + dt.timedelta(days=365))
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _response(request: requests.PreparedRequest, status: int, body: Any) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp.headers["Content-Type"] = "application/json"
    resp.url = request.url or ""
    resp.request = request
    return resp


@dataclass
class PayPalFake(BaseAdapter):
    """PayPal's API (orders, captures, refunds, OAuth) and certificate host."""

    cert_chain: bytes = b""
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    ids: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        super().__init__()

    def _id(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids):08d}"

    # --- the buyer and the bank, on PayPal's side
    def approve(self, order_id: str, *, email: str = "buyer@example.com") -> None:
        o = self.orders[order_id]
        o["status"] = "APPROVED"
        o["payer"] = {
            "payer_id": "PAYER123",
            "email_address": email,
            "name": {"given_name": "Pat", "surname": "Payer"},
            "address": {"country_code": "NL"},
        }

    def capture_of(self, order_id: str) -> dict[str, Any]:
        return self.orders[order_id]["purchase_units"][0]["payments"]["captures"][-1]

    def set_capture(self, order_id: str, status: str) -> None:
        self.capture_of(order_id)["status"] = status

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = request.url or ""
        path = url.split("://", 1)[1].split("/", 1)[1] if "://" in url else url
        path = "/" + path.split("?")[0]
        self.calls.append((request.method or "", url))
        if url == CERT_URL or "/v1/notifications/certs/" in url:
            return (
                _response(request, 200, self.cert_chain)
                if url == CERT_URL
                else _response(request, 404, {})
            )
        if path == "/v1/oauth2/token":
            return _response(request, 200, {"access_token": "A21AA-test", "expires_in": 32400})
        if not (request.headers.get("Authorization") or "").startswith("Bearer "):
            return _response(request, 401, {"error": "invalid_token"})
        if request.method == "POST" and path == "/v2/checkout/orders":
            body = json.loads(request.body or b"{}")
            oid = self._id("5O")
            unit = body["purchase_units"][0]
            self.orders[oid] = {
                "id": oid,
                "status": "PAYER_ACTION_REQUIRED",
                "create_time": dt.datetime.now(tz=dt.UTC).isoformat().replace("+00:00", "Z"),
                "purchase_units": [
                    {
                        "reference_id": unit["reference_id"],
                        "custom_id": unit["custom_id"],
                        "amount": unit["amount"],
                    }
                ],
                "links": [
                    {
                        "rel": "payer-action",
                        "href": f"https://www.paypal.com/checkoutnow?token={oid}",
                    }
                ],
                "request": body,
            }
            return _response(request, 200, self.orders[oid])
        parts = path.strip("/").split("/")
        if parts[:3] == ["v2", "checkout", "orders"] and parts[3] in self.orders:
            o = self.orders[parts[3]]
            if request.method == "GET":
                return _response(request, 200, {k: v for k, v in o.items() if k != "request"})
            if request.method == "POST" and parts[4:] == ["capture"]:
                if o["status"] == "COMPLETED":
                    return _response(
                        request,
                        422,
                        {
                            "name": "UNPROCESSABLE_ENTITY",
                            "details": [{"issue": "ORDER_ALREADY_CAPTURED"}],
                        },
                    )
                if o["status"] != "APPROVED":
                    return _response(
                        request,
                        422,
                        {
                            "name": "UNPROCESSABLE_ENTITY",
                            "details": [{"issue": "ORDER_NOT_APPROVED"}],
                        },
                    )
                o["status"] = "COMPLETED"
                o["purchase_units"][0]["payments"] = {
                    "captures": [
                        {
                            "id": self._id("CAP"),
                            "status": "COMPLETED",
                            "amount": o["purchase_units"][0]["amount"],
                        }
                    ]
                }
                return _response(request, 201, o)
        if parts[:3] == ["v2", "payments", "captures"] and parts[4:] == ["refund"]:
            for o in self.orders.values():
                for c in (o["purchase_units"][0].get("payments") or {}).get("captures", []):
                    if c["id"] == parts[3]:
                        c["status"] = "REFUNDED"
                        return _response(
                            request, 201, {"id": self._id("RF"), "status": "COMPLETED"}
                        )
        return _response(request, 404, {"name": "RESOURCE_NOT_FOUND"})

    def close(self) -> None:
        pass


def signed_headers(
    body: bytes,
    key: rsa.RSAPrivateKey,
    *,
    when: dt.datetime | None = None,
    cert_url: str = CERT_URL,
    webhook_id: str = WEBHOOK_ID,
    transmission_id: str = "b2384410-1",
) -> dict[str, str]:
    """The headers PayPal sends with a delivery, signed with `key`."""
    t = (when or dt.datetime.now(tz=dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = f"{transmission_id}|{t}|{webhook_id}|{zlib.crc32(body)}".encode()
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return {
        "HTTP_PAYPAL_TRANSMISSION_ID": transmission_id,
        "HTTP_PAYPAL_TRANSMISSION_TIME": t,
        "HTTP_PAYPAL_TRANSMISSION_SIG": base64.b64encode(signature).decode(),
        "HTTP_PAYPAL_CERT_URL": cert_url,
        "HTTP_PAYPAL_AUTH_ALGO": "SHA256withRSA",
    }
