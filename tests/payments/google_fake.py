"""Google at the transport: Google's token-signing certificates (requests adapter) and the
Android Publisher API with its OAuth token endpoint (an httplib2-shaped transport), with
keys and certificates made here. The production code (google-auth, google-api-python-client,
our adapter) runs unchanged on top."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httplib2
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt
from requests.adapters import BaseAdapter

PACKAGE = "com.example.comms"
AUDIENCE = "https://chat.example.com/premium/webhooks/google-play/"
PUSHER = "rtdn-push@example-project.iam.gserviceaccount.com"
CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
API = f"/androidpublisher/v3/applications/{PACKAGE}/purchases"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def self_signed(key: rsa.RSAPrivateKey) -> str:
    now = dt.datetime.now(tz=dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-google-signer")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def oidc_token(key: rsa.RSAPrivateKey, kid: str = "kid-1", **overrides: Any) -> str:
    """A token shaped as Pub/Sub's push tokens, signed with `key`."""
    now = int(time.time())
    claims = {
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "1234567890",
        "email": PUSHER,
        "email_verified": True,
        "sub": "1234567890",
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(overrides)
    return jwt.encode(crypt.RSASigner.from_string(key_pem(key), key_id=kid), claims).decode()


def push_body(note: dict[str, Any], *, message_id: str = "1001") -> bytes:
    """A Pub/Sub push envelope around a real-time developer notification."""
    data = base64.b64encode(
        json.dumps(
            {
                "version": "1.0",
                "packageName": PACKAGE,
                "eventTimeMillis": str(int(time.time() * 1000)),
                **note,
            }
        ).encode()
    ).decode()
    return json.dumps(
        {
            "message": {
                "data": data,
                "messageId": message_id,
                "publishTime": "2026-11-29T19:00:00Z",
            },
            "subscription": "projects/p/subscriptions/rtdn",
        }
    ).encode()


class CertsAdapter(BaseAdapter):
    def __init__(self, certs: dict[str, str]) -> None:
        super().__init__()
        self.certs = certs
        self.fetches = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        resp = requests.Response()
        resp.request = request
        resp.url = request.url or ""
        if request.url == CERTS_URL:
            self.fetches += 1
            resp.status_code = 200
            resp._content = json.dumps(self.certs).encode()
        else:
            resp.status_code = 404
            resp._content = b"{}"
        return resp

    def close(self) -> None:
        pass


@dataclass
class PlayApi:
    """Android Publisher v3 and Google's OAuth token endpoint, as an httplib2 transport."""

    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    products: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    acknowledged: list[str] = field(default_factory=list)
    refunded: list[tuple[str, bool]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self) -> PlayApi:  # used as the adapter's http factory
        return self

    def request(
        self, uri: str, method: str = "GET", body: Any = None, headers: Any = None, **kwargs: Any
    ) -> tuple[httplib2.Response, bytes]:
        self.calls.append((method, uri))
        path = unquote(urlsplit(uri).path)
        if uri.startswith("https://oauth2.googleapis.com/token"):
            return self._ok(
                {"access_token": "ya29.test-token", "expires_in": 3600, "token_type": "Bearer"}
            )
        if not (headers or {}).get("authorization", "").startswith("Bearer "):
            return self._answer(401, {"error": {"code": 401}})
        if path.startswith(API + "/subscriptionsv2/tokens/"):
            token = path.rsplit("/", 1)[1]
            if token in self.subscriptions:
                return self._ok(self.subscriptions[token])
        if path.startswith(API + "/products/") and method == "GET":
            _, product, _, token = path[len(API) + 1 :].split("/", 3)[0:4]
            if (product, token) in self.products:
                return self._ok(self.products[(product, token)])
        if path.endswith(":refund") and method == "POST":
            order_id = path.rsplit("/", 1)[1].split(":")[0]
            self.refunded.append((order_id, "revoke=true" in uri))
            for got in self.products.values():
                if got["orderId"] == order_id:
                    got["purchaseState"] = 1
            for sub in self.subscriptions.values():
                if sub["latestOrderId"] == order_id:
                    sub["subscriptionState"] = "SUBSCRIPTION_STATE_EXPIRED"
            return self._answer(204, None)
        if path.endswith(":acknowledge") and method == "POST":
            token = path.rsplit("/", 1)[1].split(":")[0]
            self.acknowledged.append(token)
            for (_p, t), got in self.products.items():
                if t == token:
                    got["acknowledgementState"] = 1
            if token in self.subscriptions:
                self.subscriptions[token]["acknowledgementState"] = (
                    "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
                )
            return self._answer(204, None)
        return self._answer(404, {"error": {"code": 404, "message": f"no {path}"}})

    def _ok(self, payload: Any) -> tuple[httplib2.Response, bytes]:
        return self._answer(200, payload)

    @staticmethod
    def _answer(status: int, payload: Any) -> tuple[httplib2.Response, bytes]:
        resp = httplib2.Response({"status": str(status), "content-type": "application/json"})
        return resp, b"" if payload is None else json.dumps(payload).encode()

    # --- state on Google's side
    def subscribe(
        self,
        token: str,
        *,
        account_id: str,
        product_id: str = "premium_monthly",
        state: str = "SUBSCRIPTION_STATE_ACTIVE",
        days: int = 30,
    ) -> None:
        expiry = dt.datetime.now(tz=dt.UTC) + dt.timedelta(days=days)
        self.subscriptions[token] = {
            "kind": "androidpublisher#subscriptionPurchaseV2",
            "subscriptionState": state,
            "regionCode": "BR",
            "startTime": "2026-11-29T19:00:00Z",
            "latestOrderId": "GPA.3333-4444-5555-66666",
            "acknowledgementState": "ACKNOWLEDGEMENT_STATE_PENDING",
            "externalAccountIdentifiers": {"obfuscatedExternalAccountId": account_id},
            "lineItems": [
                {
                    "productId": product_id,
                    "expiryTime": expiry.isoformat().replace("+00:00", "Z"),
                    "autoRenewingPlan": {"autoRenewEnabled": True},
                }
            ],
        }

    def buy(
        self,
        token: str,
        *,
        account_id: str,
        product_id: str = "premium_30_days",
        purchase_state: int = 0,
    ) -> None:
        self.products[(product_id, token)] = {
            "kind": "androidpublisher#productPurchase",
            "purchaseState": purchase_state,
            "consumptionState": 0,
            "acknowledgementState": 0,
            "orderId": "GPA.1111-2222-3333-44444",
            "purchaseTimeMillis": str(int(time.time() * 1000)),
            "regionCode": "IN",
            "obfuscatedExternalAccountId": account_id,
        }
