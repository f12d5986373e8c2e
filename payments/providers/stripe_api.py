"""Every call to the Stripe SDK. API version pinned: Stripe's objects change shape between
versions (a subscription's period end moved onto its items in 2025), and this module is
written against the one below."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import stripe
from django.conf import settings

from .state import ProviderError, PurchaseState, VerifiedEvent, WebhookRefused

log = logging.getLogger(__name__)

API_VERSION = "2026-10-28.endive"
# Subscription states in which the customer has paid for the current period.
_SUBSCRIPTION_PAID = {"active", "trialing", "past_due"}


def _client() -> stripe.StripeClient:
    if not settings.STRIPE_SECRET_KEY:
        raise ProviderError("Stripe is not configured (STRIPE_SECRET_KEY)")
    base = {"api": settings.STRIPE_API_BASE} if settings.STRIPE_API_BASE else None
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        stripe_version=API_VERSION,
        base_addresses=base,  # type: ignore[arg-type]
        max_network_retries=2,
    )


def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except stripe.StripeError as exc:
        log.warning("stripe %s failed: %s", what, exc)
        raise ProviderError(f"Stripe {what} failed: {exc.user_message or exc}") from exc


def checkout_create(
    *,
    order_id: int,
    kind: str,
    product_name: str,
    amount_minor: int,
    currency: str,
    interval: str,
    stripe_price_id: str,
    customer_email: str,
    success_url: str,
    cancel_url: str,
) -> tuple[str, str]:
    """A Checkout Session for one order; returns (session id, URL to send the buyer to)."""
    if stripe_price_id:
        item: dict[str, Any] = {"price": stripe_price_id, "quantity": 1}
    else:
        price_data: dict[str, Any] = {
            "currency": currency.lower(),
            "unit_amount": amount_minor,
            "product_data": {"name": product_name},
        }
        if kind == "subscription":
            price_data["recurring"] = {"interval": interval}
        item = {"price_data": price_data, "quantity": 1}
    params: dict[str, Any] = {
        "mode": "subscription" if kind == "subscription" else "payment",
        "line_items": [item],
        "client_reference_id": str(order_id),
        "metadata": {"order_id": str(order_id)},
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    if customer_email:
        params["customer_email"] = customer_email
    session = _call("checkout create", _client().v1.checkout.sessions.create, params)
    return session.id, session.url or ""


def _ts(value: Any) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(int(value), tz=dt.UTC) if value else None


def purchase_state(*, checkout_id: str) -> PurchaseState:
    """Ask Stripe where a Checkout Session's purchase stands now."""
    session = _call(
        "checkout retrieve",
        _client().v1.checkout.sessions.retrieve,
        checkout_id,
        {"expand": ["payment_intent.latest_charge", "subscription"]},
    )
    details = session.customer_details
    common: dict[str, Any] = {
        "checkout_id": session.id,
        "provider_order_id": session.id,
        "amount_minor": session.amount_total,
        "currency": (session.currency or "").upper(),
        "ordered_at": _ts(session.created),
        "payer_id": session.customer if isinstance(session.customer, str) else "",
        "payer_email": (details.email or "") if details else "",
        "payer_name": (details.name or "") if details else "",
        "payer_country": (details.address.country or "") if details and details.address else "",
    }
    if session.mode == "subscription":
        return _subscription_state(session, common)
    return _payment_state(session, common)


def _payment_state(session: Any, common: dict[str, Any]) -> PurchaseState:
    intent = session.payment_intent
    charge = getattr(intent, "latest_charge", None) if intent is not None else None
    transaction_id = intent.id if intent is not None and not isinstance(intent, str) else ""
    if charge is not None and not isinstance(charge, str):
        if charge.disputed:
            return PurchaseState("chargeback", transaction_id=transaction_id, **common)
        if charge.refunded:
            return PurchaseState("refunded", transaction_id=transaction_id, **common)
    if session.payment_status == "paid":
        return PurchaseState("paid", transaction_id=transaction_id, **common)
    if session.status == "expired":
        return PurchaseState("canceled", **common)
    return PurchaseState("pending", **common)


def _subscription_state(session: Any, common: dict[str, Any]) -> PurchaseState:
    sub = session.subscription
    if sub is None or isinstance(sub, str):
        status = "canceled" if session.status == "expired" else "pending"
        return PurchaseState(status, **common)
    items = (sub.to_dict().get("items") or {}).get("data") or []
    period_end = _ts(items[0].get("current_period_end")) if items else None
    if sub.status in _SUBSCRIPTION_PAID:
        status = "paid"
    elif sub.status in ("incomplete", "paused"):
        status = "pending"
    else:  # canceled, unpaid, incomplete_expired
        status = "expired"
    return PurchaseState(
        status,
        paid_until=period_end,
        renews=sub.status in _SUBSCRIPTION_PAID and not sub.cancel_at_period_end,
        subscription_id=sub.id,
        transaction_id=sub.latest_invoice if isinstance(sub.latest_invoice, str) else "",
        **common,
    )


def refund(*, transaction_id: str) -> None:
    """Refund a one-off payment in full."""
    _call("refund", _client().v1.refunds.create, {"payment_intent": transaction_id})


def subscription_cancel(*, subscription_id: str, at_period_end: bool) -> None:
    """Stop a subscription now, or let it run to the end of the paid period."""
    client = _client()
    if at_period_end:
        _call(
            "subscription update",
            client.v1.subscriptions.update,
            subscription_id,
            {"cancel_at_period_end": True},
        )
    else:
        _call("subscription cancel", client.v1.subscriptions.cancel, subscription_id)


# --- webhooks
# Event types whose object leads us to a purchase to refetch; all others are acknowledged.
_EVENT_REFS = {
    "checkout.session.completed": "checkout",
    "checkout.session.async_payment_succeeded": "checkout",
    "checkout.session.async_payment_failed": "checkout",
    "checkout.session.expired": "checkout",
    "charge.refunded": "payment_intent",
    "charge.dispute.created": "payment_intent",
    "charge.dispute.closed": "payment_intent",
    "customer.subscription.updated": "subscription",
    "customer.subscription.deleted": "subscription",
    "invoice.paid": "subscription",
}


def webhook_verify(*, payload: bytes, signature: str) -> VerifiedEvent:
    """Check the Stripe-Signature header over the raw body (with Stripe's timestamp inside
    the signed string, so an old delivery cannot be replayed)."""
    if not settings.STRIPE_WEBHOOK_SECRET:
        raise WebhookRefused("Stripe webhooks are not configured")
    try:
        event = stripe.Webhook.construct_event(
            payload,
            signature,
            settings.STRIPE_WEBHOOK_SECRET,
            tolerance=settings.PAYMENTS_EVENT_TOLERANCE_SECONDS,
        )
    except (ValueError, stripe.SignatureVerificationError) as exc:
        raise WebhookRefused(str(exc)) from exc
    obj = event.data.object.to_dict()
    ref: dict[str, str] = {}
    kind = _EVENT_REFS.get(event.type)
    if kind == "checkout":
        ref = {"checkout_id": obj["id"]}
    elif kind == "payment_intent":
        intent = obj.get("payment_intent")
        ref = {"transaction_id": intent} if isinstance(intent, str) else {}
    elif kind == "subscription":
        # An invoice names its subscription under parent.subscription_details since 2025.
        details = (obj.get("parent") or {}).get("subscription_details") or {}
        sub = (
            obj["id"]
            if event.type.startswith("customer.subscription")
            else obj.get("subscription") or details.get("subscription")
        )
        ref = {"subscription_id": sub} if isinstance(sub, str) else {}
    occurred = _ts(event.created) or dt.datetime.now(tz=dt.UTC)
    return VerifiedEvent(event_id=event.id, kind=event.type, occurred_at=occurred, object_ref=ref)
