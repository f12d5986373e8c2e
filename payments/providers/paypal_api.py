"""Every call to PayPal: Orders v2 for checkout (create, capture, read), refunds, and the
offline verification of webhook deliveries.

PayPal signs a delivery by the string "transmission id|transmission time|webhook id|CRC32 of
the raw body" with SHA256withRSA; the certificate to check it with is named by the delivery
itself (PAYPAL-CERT-URL), so the URL must be PayPal's over https, and the certificate must
chain to a trusted root, be in date and be issued to PayPal's message-verification host.
Verified certificates are cached per URL until they expire."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import certifi
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.verification import DNSName, PolicyBuilder, Store, VerificationError
from django.conf import settings

from .state import ProviderError, PurchaseState, VerifiedEvent, WebhookRefused

log = logging.getLogger(__name__)

# The HTTP client every PayPal call goes through (tests mount a transport adapter on it).
http = requests.Session()
TIMEOUT = (5, 15)
CERT_HOSTS = {
    "api.paypal.com",
    "api-m.paypal.com",
    "api.sandbox.paypal.com",
    "api-m.sandbox.paypal.com",
}
_token_lock = threading.Lock()
_token: tuple[str, float] | None = None
_cert_lock = threading.Lock()
_certs: dict[str, x509.Certificate] = {}


def _base() -> str:
    return (
        "https://api-m.sandbox.paypal.com"
        if settings.PAYPAL_SANDBOX
        else "https://api-m.paypal.com"
    )


def _cert_subject() -> str:
    return (
        "messageverificationcerts.sandbox.paypal.com"
        if settings.PAYPAL_SANDBOX
        else "messageverificationcerts.paypal.com"
    )


def _access_token() -> str:
    global _token
    if not (settings.PAYPAL_CLIENT_ID and settings.PAYPAL_CLIENT_SECRET):
        raise ProviderError("PayPal is not configured (PAYPAL_CLIENT_ID/SECRET)")
    with _token_lock:
        if _token is not None and _token[1] > time.monotonic() + 60:
            return _token[0]
        try:
            resp = http.post(
                _base() + "/v1/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(settings.PAYPAL_CLIENT_ID, settings.PAYPAL_CLIENT_SECRET),
                timeout=TIMEOUT,
            )
            resp.raise_for_status()
            body = resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise ProviderError(f"PayPal token request failed: {exc}") from exc
        _token = (body["access_token"], time.monotonic() + int(body.get("expires_in", 300)))
        return _token[0]


def _api(method: str, path: str, *, body: Any = None, request_id: str = "") -> Any:
    headers = {"Authorization": f"Bearer {_access_token()}", "Content-Type": "application/json"}
    if request_id:
        headers["PayPal-Request-Id"] = request_id  # makes a retried create/capture idempotent
    try:
        resp = http.request(method, _base() + path, json=body, headers=headers, timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise ProviderError(f"PayPal {method} {path} failed: {exc}") from exc
    if resp.status_code >= 400:
        log.warning("paypal %s %s: %s %s", method, path, resp.status_code, resp.text[:300])
        raise ProviderError(f"PayPal {method} {path} answered {resp.status_code}")
    return resp.json() if resp.content else {}


def _money(amount_minor: int) -> str:
    return f"{amount_minor // 100}.{amount_minor % 100:02d}"


def order_create(
    *,
    order_id: int,
    product_name: str,
    amount_minor: int,
    currency: str,
    return_url: str,
    cancel_url: str,
) -> tuple[str, str]:
    """A PayPal order for one of ours; returns (PayPal order id, URL to approve it at)."""
    body = {
        "intent": "CAPTURE",
        "purchase_units": [
            {
                "reference_id": str(order_id),
                "custom_id": str(order_id),
                "description": product_name[:127],
                "amount": {"currency_code": currency, "value": _money(amount_minor)},
            }
        ],
        "payment_source": {
            "paypal": {
                "experience_context": {
                    "return_url": return_url,
                    "cancel_url": cancel_url,
                    "user_action": "PAY_NOW",
                    "shipping_preference": "NO_SHIPPING",
                }
            }
        },
    }
    made = _api("POST", "/v2/checkout/orders", body=body, request_id=f"order-{order_id}")
    links = {link["rel"]: link["href"] for link in made.get("links", [])}
    url = links.get("payer-action") or links.get("approve")
    if not url:
        raise ProviderError("PayPal returned no approval link")
    return made["id"], url


def order_capture(*, paypal_order_id: str) -> None:
    """Take the money for an approved order (PayPal answers a repeat with the same result)."""
    _api(
        "POST",
        f"/v2/checkout/orders/{paypal_order_id}/capture",
        body={},
        request_id=f"capture-{paypal_order_id}",
    )


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


_CAPTURE_STATUS = {
    "COMPLETED": "paid",
    "PENDING": "pending",
    "REFUNDED": "refunded",
    "PARTIALLY_REFUNDED": "refunded",
    "DECLINED": "failed",
    "FAILED": "failed",
}


def purchase_state(*, paypal_order_id: str) -> PurchaseState:
    """Ask PayPal where an order stands now."""
    order = _api("GET", f"/v2/checkout/orders/{paypal_order_id}")
    unit = (order.get("purchase_units") or [{}])[0]
    captures = (unit.get("payments") or {}).get("captures") or []
    capture = captures[-1] if captures else None
    payer = order.get("payer") or {}
    name = payer.get("name") or {}
    amount = (capture or unit).get("amount") or {}
    value = amount.get("value")
    if capture is not None:
        status = _CAPTURE_STATUS.get(capture.get("status", ""), "pending")
    elif order.get("status") == "VOIDED":
        status = "voided"
    elif order.get("status") == "APPROVED":
        status = "approved"
    else:
        status = "pending"
    return PurchaseState(
        status,
        checkout_id=order["id"],
        provider_order_id=order["id"],
        transaction_id=capture["id"] if capture else "",
        amount_minor=round(float(value) * 100) if value else None,
        currency=amount.get("currency_code", ""),
        ordered_at=_parse_time(order.get("create_time")),
        payer_id=payer.get("payer_id", ""),
        payer_email=payer.get("email_address", ""),
        payer_name=" ".join(p for p in (name.get("given_name"), name.get("surname")) if p),
        payer_country=(payer.get("address") or {}).get("country_code", ""),
    )


def refund(*, capture_id: str) -> None:
    _api(
        "POST",
        f"/v2/payments/captures/{capture_id}/refund",
        body={},
        request_id=f"refund-{capture_id}",
    )


# --- webhooks
@dataclass(frozen=True)
class Transmission:
    id: str
    time: str
    signature: str
    cert_url: str
    auth_algo: str


def _certificate(url: str) -> x509.Certificate:
    """PayPal's signing certificate at `url`, its chain and dates checked; cached."""
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.hostname not in CERT_HOSTS or parts.port not in (None, 443):
        raise WebhookRefused(f"certificate URL is not PayPal's: {url!r}")
    if parts.username or parts.password:
        raise WebhookRefused("certificate URL carries credentials")
    now = dt.datetime.now(tz=dt.UTC)
    with _cert_lock:
        cached = _certs.get(url)
    if cached is not None and cached.not_valid_before_utc <= now < cached.not_valid_after_utc:
        return cached
    try:
        resp = http.get(url, timeout=TIMEOUT)
        resp.raise_for_status()
        chain = x509.load_pem_x509_certificates(resp.content)
    except (requests.RequestException, ValueError) as exc:
        raise WebhookRefused(f"could not fetch PayPal's certificate: {exc}") from exc
    leaf, intermediates = chain[0], chain[1:]
    roots_pem = open(settings.PAYPAL_CERT_CA_BUNDLE or certifi.where(), "rb").read()  # noqa: SIM115
    store = Store(x509.load_pem_x509_certificates(roots_pem))
    verifier = (
        PolicyBuilder().store(store).time(now).build_server_verifier(DNSName(_cert_subject()))
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise WebhookRefused(f"PayPal's certificate does not verify: {exc}") from exc
    with _cert_lock:
        _certs[url] = leaf
    return leaf


def webhook_verify(*, payload: bytes, headers: dict[str, str]) -> VerifiedEvent:
    if not settings.PAYPAL_WEBHOOK_ID:
        raise WebhookRefused("PayPal webhooks are not configured")
    try:
        t = Transmission(
            id=headers["PAYPAL-TRANSMISSION-ID"],
            time=headers["PAYPAL-TRANSMISSION-TIME"],
            signature=headers["PAYPAL-TRANSMISSION-SIG"],
            cert_url=headers["PAYPAL-CERT-URL"],
            auth_algo=headers.get("PAYPAL-AUTH-ALGO", ""),
        )
    except KeyError as exc:
        raise WebhookRefused(f"missing header {exc}") from exc
    if t.auth_algo != "SHA256withRSA":
        raise WebhookRefused(f"unexpected signature algorithm {t.auth_algo!r}")
    sent = _parse_time(t.time)
    now = dt.datetime.now(tz=dt.UTC)
    tolerance = dt.timedelta(seconds=settings.PAYMENTS_EVENT_TOLERANCE_SECONDS)
    if sent is None or abs(now - sent) > tolerance:
        raise WebhookRefused("transmission time outside the accepted window")
    key = _certificate(t.cert_url).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise WebhookRefused("PayPal's certificate holds no RSA key")
    signed = f"{t.id}|{t.time}|{settings.PAYPAL_WEBHOOK_ID}|{zlib.crc32(payload)}".encode()
    try:
        key.verify(base64.b64decode(t.signature), signed, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise WebhookRefused("signature does not match") from exc
    event = json.loads(payload)
    return VerifiedEvent(
        event_id=str(event["id"]),
        kind=str(event.get("event_type", "")),
        occurred_at=sent,
        object_ref=_event_ref(event),
    )


def _event_ref(event: dict[str, Any]) -> dict[str, str]:
    resource = event.get("resource") or {}
    kind = str(event.get("event_type", ""))
    if kind.startswith("CHECKOUT.ORDER."):
        return {"paypal_order_id": str(resource.get("id", ""))}
    if kind.startswith("PAYMENT.CAPTURE."):
        related = (resource.get("supplementary_data") or {}).get("related_ids") or {}
        # A refund or reversal's resource is the refund; its "up" link names the capture.
        up = [
            link["href"].rstrip("/").rsplit("/", 1)[-1]
            for link in resource.get("links") or []
            if link.get("rel") == "up" and "/captures/" in link.get("href", "")
        ]
        ref = {"capture_id": up[0] if up else str(resource.get("id", ""))}
        if related.get("order_id"):
            ref["paypal_order_id"] = str(related["order_id"])
        return ref
    return {}
