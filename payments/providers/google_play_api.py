"""Every call to Google for Play purchases: the Pub/Sub push's OIDC token (verified with
google-auth: Google's signature, audience, service-account e-mail, issue time), and the
purchase state (androidpublisher v3 through google-api-python-client, from its bundled
discovery document) fetched before anything is granted, then acknowledged."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import google.auth.exceptions
import google_auth_httplib2
import httplib2
import requests
from django.conf import settings
from google.auth.transport.requests import Request as GoogleRequest
from google.oauth2 import id_token, service_account
from googleapiclient import discovery
from googleapiclient.errors import Error as GoogleApiError

from .state import ProviderError, PurchaseState, VerifiedEvent, WebhookRefused

log = logging.getLogger(__name__)

SCOPE = "https://www.googleapis.com/auth/androidpublisher"
# HTTP clients (tests put a transport of their own in their place): requests for Google's
# token-signing certificates, httplib2 for the Android Publisher API.
certs_http = requests.Session()
api_http_factory: Any = httplib2.Http

# Subscription states in which the buyer has access (a canceled subscription runs to its end).
_ACCESS = {
    "SUBSCRIPTION_STATE_ACTIVE",
    "SUBSCRIPTION_STATE_IN_GRACE_PERIOD",
    "SUBSCRIPTION_STATE_CANCELED",
}
_SUBSCRIPTION_STATUS = {
    "SUBSCRIPTION_STATE_PENDING": "pending",
    "SUBSCRIPTION_STATE_PENDING_PURCHASE_CANCELED": "canceled",
    "SUBSCRIPTION_STATE_ON_HOLD": "expired",
    "SUBSCRIPTION_STATE_PAUSED": "expired",
    "SUBSCRIPTION_STATE_EXPIRED": "expired",
}


# --- the account link: the Android app passes this as obfuscatedAccountId when it buys
def account_id_for(user_id: int) -> str:
    mac = hmac.new(settings.SECRET_KEY.encode(), f"play:{user_id}".encode(), hashlib.sha256)
    return f"{user_id}.{mac.hexdigest()[:32]}"


def user_id_from_account_id(value: str) -> int | None:
    user_part, _, _ = (value or "").partition(".")
    if not user_part.isdigit():
        return None
    user_id = int(user_part)
    return user_id if hmac.compare_digest(account_id_for(user_id), value) else None


# --- push verification
def webhook_verify(*, payload: bytes, authorization: str) -> VerifiedEvent:
    if not (settings.GOOGLE_PUBSUB_AUDIENCE and settings.GOOGLE_PUBSUB_SERVICE_ACCOUNT):
        raise WebhookRefused("Google Play notifications are not configured")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise WebhookRefused("no bearer token")
    try:
        claims = id_token.verify_oauth2_token(
            token, GoogleRequest(session=certs_http), audience=settings.GOOGLE_PUBSUB_AUDIENCE
        )
    except (ValueError, google.auth.exceptions.GoogleAuthError) as exc:
        raise WebhookRefused(f"token refused: {exc}") from exc
    if claims.get("email") != settings.GOOGLE_PUBSUB_SERVICE_ACCOUNT or not claims.get(
        "email_verified"
    ):
        raise WebhookRefused("token is not from the push subscription's service account")
    # Pub/Sub signs a fresh token for every delivery: an old one is a replay.
    if abs(time.time() - int(claims.get("iat", 0))) > settings.PAYMENTS_EVENT_TOLERANCE_SECONDS:
        raise WebhookRefused("token issued outside the accepted window")
    try:
        envelope = json.loads(payload)
        message = envelope["message"]
        note = json.loads(base64.b64decode(message["data"]))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise WebhookRefused(f"not a Pub/Sub push of a Play notification: {exc}") from exc
    if note.get("packageName") != settings.GOOGLE_PLAY_PACKAGE_NAME:
        raise WebhookRefused("notification for another app")
    occurred = dt.datetime.fromtimestamp(int(note.get("eventTimeMillis", 0)) / 1000, tz=dt.UTC)
    return VerifiedEvent(
        event_id=str(message.get("messageId") or message.get("message_id")),
        kind=_kind(note),
        occurred_at=occurred,
        object_ref=_ref(note),
    )


def _kind(note: dict[str, Any]) -> str:
    for key in ("subscriptionNotification", "oneTimeProductNotification"):
        if key in note:
            return f"{key}.{note[key].get('notificationType')}"
    if "voidedPurchaseNotification" in note:
        return "voidedPurchaseNotification"
    return "testNotification" if "testNotification" in note else "unknown"


def _ref(note: dict[str, Any]) -> dict[str, str]:
    if "subscriptionNotification" in note:
        n = note["subscriptionNotification"]
        return {"purchase_token": n["purchaseToken"], "type": "subscription"}
    if "oneTimeProductNotification" in note:
        n = note["oneTimeProductNotification"]
        return {"purchase_token": n["purchaseToken"], "type": "product", "product_id": n["sku"]}
    if "voidedPurchaseNotification" in note:
        n = note["voidedPurchaseNotification"]
        kind = "subscription" if int(n.get("productType", 0)) == 1 else "product"
        return {"purchase_token": n["purchaseToken"], "type": kind, "voided": "1"}
    return {}


# --- purchase state
def _service() -> Any:
    if not settings.GOOGLE_PLAY_SERVICE_ACCOUNT_FILE:
        raise ProviderError("Google Play is not configured (GOOGLE_PLAY_SERVICE_ACCOUNT_FILE)")
    credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
        settings.GOOGLE_PLAY_SERVICE_ACCOUNT_FILE, scopes=[SCOPE]
    )
    http = google_auth_httplib2.AuthorizedHttp(credentials, http=api_http_factory())
    return discovery.build(
        "androidpublisher", "v3", http=http, cache_discovery=False, static_discovery=True
    )


def _ms(value: Any) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(int(value) / 1000, tz=dt.UTC) if value else None


def _rfc3339(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def purchase_state(*, purchase_token: str, kind: str, product_id: str = "") -> PurchaseState:
    """Ask Google where a purchase stands now, and acknowledge it if it grants (Play refunds
    a purchase left unacknowledged for three days)."""
    package = settings.GOOGLE_PLAY_PACKAGE_NAME
    try:
        purchases = _service().purchases()
        if kind == "subscription":
            sub = (
                purchases.subscriptionsv2().get(packageName=package, token=purchase_token).execute()
            )
            state = _subscription_state(sub, purchase_token)
            if (
                state.status == "paid"
                and sub.get("acknowledgementState") != "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED"
            ):
                purchases.subscriptions().acknowledge(
                    packageName=package,
                    subscriptionId=state.product_id,
                    token=purchase_token,
                    body={},
                ).execute()
            return state
        got = (
            purchases.products()
            .get(packageName=package, productId=product_id, token=purchase_token)
            .execute()
        )
        state = _product_state(got, purchase_token, product_id)
        if state.status == "paid" and int(got.get("acknowledgementState", 0)) == 0:
            purchases.products().acknowledge(
                packageName=package, productId=product_id, token=purchase_token, body={}
            ).execute()
        return state
    except (GoogleApiError, google.auth.exceptions.GoogleAuthError, httplib2.HttpLib2Error) as exc:
        raise ProviderError(f"Google Play purchase lookup failed: {exc}") from exc


def _subscription_state(sub: dict[str, Any], token: str) -> PurchaseState:
    items = sub.get("lineItems") or [{}]
    item = items[0]
    state = sub.get("subscriptionState", "")
    status = "paid" if state in _ACCESS else _SUBSCRIPTION_STATUS.get(state, "pending")
    ids = sub.get("externalAccountIdentifiers") or {}
    return PurchaseState(
        status,
        paid_until=_rfc3339(item.get("expiryTime")),
        renews=bool((item.get("autoRenewingPlan") or {}).get("autoRenewEnabled"))
        and state == "SUBSCRIPTION_STATE_ACTIVE",
        purchase_token=token,
        transaction_id=sub.get("latestOrderId", ""),
        provider_order_id=sub.get("latestOrderId", ""),
        product_id=item.get("productId", ""),
        ordered_at=_rfc3339(sub.get("startTime")),
        payer_id=ids.get("obfuscatedExternalAccountId", ""),
        payer_country=sub.get("regionCode", ""),
    )


def _product_state(got: dict[str, Any], token: str, product_id: str) -> PurchaseState:
    purchase_state = int(got.get("purchaseState", 2))
    status = {0: "paid", 1: "voided", 2: "pending"}.get(purchase_state, "pending")
    return PurchaseState(
        status,
        purchase_token=token,
        transaction_id=got.get("orderId", ""),
        provider_order_id=got.get("orderId", ""),
        product_id=product_id,
        ordered_at=_ms(got.get("purchaseTimeMillis")),
        payer_id=got.get("obfuscatedExternalAccountId", ""),
        payer_country=got.get("regionCode", ""),
    )


def refund(*, order_id: str) -> None:
    """Refund a Play order and revoke what it bought (orders.refund with revoke)."""
    try:
        _service().orders().refund(
            packageName=settings.GOOGLE_PLAY_PACKAGE_NAME, orderId=order_id, revoke=True
        ).execute()
    except (GoogleApiError, google.auth.exceptions.GoogleAuthError, httplib2.HttpLib2Error) as exc:
        raise ProviderError(f"Google Play refund failed: {exc}") from exc
