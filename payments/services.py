"""Every write of payments/: orders from checkout to refund, entitlements that follow them,
provider events recorded once and applied from the provider's own current state."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from realtime.errors import ServiceError
from realtime.events import send_on_commit
from realtime.jobs import enqueue

from . import selectors
from .events import EntitlementsChanged
from .keys import entitlements_group
from .models import (
    Entitlement,
    Order,
    OrderStatus,
    Price,
    PriceKind,
    Provider,
    ProviderEvent,
)
from .providers import google_play_api, paypal_api, stripe_api
from .providers.state import ProviderError, PurchaseState, VerifiedEvent

log = logging.getLogger(__name__)

# A purchase in one of these states grants its product (until paid_until).
GRANTING = {OrderStatus.PAID}


# --- checkout
def checkout_start(
    *,
    user: User,
    price_id: int,
    provider: str,
    success_url: str,
    cancel_url: str,
    return_url: str = "",
) -> str:
    """Create a pending order and the provider's checkout; returns where to send the buyer."""
    price = (
        Price.objects.select_related("product")
        .filter(pk=price_id, active=True, product__active=True)
        .first()
    )
    if price is None:
        raise ServiceError("no_such_plan", "that plan is not on sale")
    if provider not in (Provider.STRIPE, Provider.PAYPAL):
        raise ServiceError("bad_provider", "pay with Stripe or PayPal")
    if provider == Provider.PAYPAL and price.kind != PriceKind.ONE_OFF:
        raise ServiceError("bad_provider", "PayPal sells the one-off passes; subscribe by card")
    order = Order.objects.create(
        user=user,
        price=price,
        provider=provider,
        amount_minor=price.amount_minor,
        currency=price.currency,
        product_id=price.stripe_price_id or price.product.code,
    )
    try:
        if provider == Provider.STRIPE:
            checkout_id, url = stripe_api.checkout_create(
                order_id=order.pk,
                kind=price.kind,
                product_name=price.product.name,
                amount_minor=price.amount_minor,
                currency=price.currency,
                interval=price.interval,
                stripe_price_id=price.stripe_price_id,
                customer_email=user.email or "",
                success_url=success_url,
                cancel_url=cancel_url,
            )
        else:
            checkout_id, url = paypal_api.order_create(
                order_id=order.pk,
                product_name=price.product.name,
                amount_minor=price.amount_minor,
                currency=price.currency,
                return_url=return_url or success_url,
                cancel_url=cancel_url,
            )
    except ProviderError as exc:
        order.status = OrderStatus.FAILED
        order.save(update_fields=["status", "updated_at"])
        raise ServiceError("provider_unavailable", str(exc)) from exc
    order.checkout_id = checkout_id
    order.save(update_fields=["checkout_id", "updated_at"])
    return url


# --- applying what the provider says
def order_apply_state(*, order_id: int, state: PurchaseState) -> Order:
    """Bring an order and its entitlement to the provider's current state. Idempotent: the
    same state applied twice changes nothing the second time."""
    with transaction.atomic():
        order = Order.objects.select_for_update().select_related("price").get(pk=order_id)
        for field in (
            "checkout_id",
            "subscription_id",
            "transaction_id",
            "purchase_token",
            "provider_order_id",
            "product_id",
            "currency",
            "payer_id",
            "payer_email",
            "payer_name",
            "payer_country",
        ):
            value = getattr(state, field)
            if value:
                setattr(order, field, value)
        if state.amount_minor is not None:
            order.amount_minor = state.amount_minor
        if state.ordered_at is not None:
            order.ordered_at = state.ordered_at
        # A refund or chargeback is final: a later "paid" read of the same purchase (an
        # event processed late) does not undo it.
        if order.status not in (OrderStatus.REFUNDED, OrderStatus.CHARGEBACK, OrderStatus.VOIDED):
            known = state.status in OrderStatus.values
            order.status = state.status if known else OrderStatus.PENDING
        order.renews = state.renews and order.status == OrderStatus.PAID
        order.paid_until = _paid_until(order, state)
        order.save()
        _entitlement_sync(order)
    return order


def _paid_until(order: Order, state: PurchaseState) -> dt.datetime | None:
    if state.paid_until is not None:
        return state.paid_until
    if order.price.kind == PriceKind.ONE_OFF and order.price.duration_days:
        return order.ordered_at + dt.timedelta(days=order.price.duration_days)
    return order.paid_until


def _entitlement_sync(order: Order) -> None:
    """The order's entitlement follows the order: in force while paid and not past its end,
    revoked (with the reason) otherwise."""
    if order.user_id is None:
        return
    now = timezone.now()
    grants = order.status in GRANTING and (order.paid_until is None or order.paid_until > now)
    current = Entitlement.objects.filter(order=order).first()
    changed = False
    if grants:
        if current is None:
            Entitlement.objects.create(
                user_id=order.user_id,
                product_id=order.price.product_id,
                order=order,
                source=order.provider,
                valid_until=order.paid_until,
            )
            changed = True
        elif current.revoked_at is not None or current.valid_until != order.paid_until:
            current.revoked_at = None
            current.revoke_reason = ""
            current.valid_until = order.paid_until
            current.save()
            changed = True
    elif current is not None and current.revoked_at is None:
        current.revoked_at = now
        current.revoke_reason = order.status
        current.save()
        changed = True
    if changed:
        _announce(order.user_id)


@transaction.atomic
def entitlement_staff_save(*, entitlement: Entitlement) -> Entitlement:
    """Staff grant, extend or revoke an entitlement (the admin): the user's open sockets learn
    their features at once, as after a purchase."""
    entitlement.save()
    _announce(entitlement.user_id)
    return entitlement


@transaction.atomic
def entitlement_staff_delete(*, entitlement: Entitlement) -> None:
    user_id = entitlement.user_id
    entitlement.delete()
    _announce(user_id)


def _announce(user_id: int) -> None:
    features = selectors.features_of(user_id=user_id)
    send_on_commit(entitlements_group(user_id), EntitlementsChanged(features=list(features)))


# --- provider events
def provider_event_record(*, provider: str, event: VerifiedEvent) -> ProviderEvent | None:
    """Store a verified delivery once; None when this (provider, event id) was seen before.
    The work is queued after commit (tasks.provider_event_process)."""
    try:
        with transaction.atomic():
            row = ProviderEvent.objects.create(
                provider=provider,
                event_id=event.event_id,
                kind=event.kind,
                object_ref=event.object_ref,
                occurred_at=event.occurred_at,
            )
            transaction.on_commit(lambda: enqueue("payments.tasks.provider_event_process", row.pk))
    except IntegrityError:
        return None
    return row


def provider_event_process(*, event_pk: int) -> None:
    """Apply one recorded event: find the purchase it is about, ask the provider for its
    state now, apply that. The event is marked processed in the same transaction."""
    with transaction.atomic():
        row = ProviderEvent.objects.select_for_update().get(pk=event_pk)
        if row.processed_at is not None:
            return
        sync = _SYNC[row.provider]
        sync(row.object_ref)
        row.processed_at = timezone.now()
        row.save(update_fields=["processed_at"])


def _stripe_sync(ref: dict[str, str]) -> None:
    orders = Order.objects.filter(provider=Provider.STRIPE)
    if "checkout_id" in ref:
        orders = orders.filter(checkout_id=ref["checkout_id"])
    elif "transaction_id" in ref:
        orders = orders.filter(transaction_id=ref["transaction_id"])
    elif "subscription_id" in ref:
        orders = orders.filter(subscription_id=ref["subscription_id"])
    else:
        return
    for order in orders:
        order_apply_state(
            order_id=order.pk, state=stripe_api.purchase_state(checkout_id=order.checkout_id)
        )


def _paypal_sync(ref: dict[str, str]) -> None:
    orders = Order.objects.filter(provider=Provider.PAYPAL)
    if ref.get("paypal_order_id"):
        orders = orders.filter(checkout_id=ref["paypal_order_id"])
    elif ref.get("capture_id"):
        orders = orders.filter(transaction_id=ref["capture_id"])
    else:
        return
    for order in orders:
        order_apply_state(order_id=order.pk, state=_paypal_state(order.checkout_id))


def _paypal_state(paypal_order_id: str) -> PurchaseState:
    """PayPal's state of an order; an approved one is captured first (the buyer may have
    closed the tab before coming back to us)."""
    state = paypal_api.purchase_state(paypal_order_id=paypal_order_id)
    if state.status == "approved":
        paypal_api.order_capture(paypal_order_id=paypal_order_id)
        state = paypal_api.purchase_state(paypal_order_id=paypal_order_id)
    return state


def _google_play_sync(ref: dict[str, str]) -> None:
    """A Play notification: fetch the purchase from Google (never the notification's word),
    make its order on first sight (the buyer is named by the account id our app passed to
    Play), apply the state."""
    token = ref.get("purchase_token")
    if not token:
        return  # a test notification
    order = Order.objects.filter(provider=Provider.GOOGLE_PLAY, purchase_token=token).first()
    product_id = ref.get("product_id") or (order.product_id if order else "")
    state = google_play_api.purchase_state(
        purchase_token=token, kind=ref.get("type", "product"), product_id=product_id
    )
    if order is None:
        order = _google_play_order(token, state)
        if order is None:
            return
    order_apply_state(order_id=order.pk, state=state)


def _google_play_order(token: str, state: PurchaseState) -> Order | None:
    price = Price.objects.filter(google_product_id=state.product_id).first()
    if price is None:
        log.error("google play: no price sells product id %r", state.product_id)
        return None
    user_id = google_play_api.user_id_from_account_id(state.payer_id)
    if user_id is None or not User.objects.filter(pk=user_id).exists():
        # Kept for accounting; it grants nothing until staff link it to an account.
        log.warning("google play: purchase %s names no account of ours", state.transaction_id)
        user_id = None
    order, _ = Order.objects.get_or_create(
        provider=Provider.GOOGLE_PLAY,
        purchase_token=token,
        defaults={
            "user_id": user_id,
            "price": price,
            "amount_minor": price.amount_minor,
            "currency": price.currency,
            "product_id": state.product_id,
        },
    )
    return order


_SYNC: dict[str, Callable[[dict[str, str]], None]] = {
    Provider.STRIPE: _stripe_sync,
    Provider.PAYPAL: _paypal_sync,
    Provider.GOOGLE_PLAY: _google_play_sync,
}


def paypal_return(*, user: User, paypal_order_id: str) -> Order | None:
    """The buyer came back from PayPal: capture and apply (the webhook may come later)."""
    order = Order.objects.filter(
        provider=Provider.PAYPAL, checkout_id=paypal_order_id, user=user
    ).first()
    if order is None:
        return None
    try:
        return order_refresh(order_id=order.pk)
    except ProviderError:
        log.warning("paypal return: order %s not captured yet", order.pk, exc_info=True)
        return order


def order_refresh(*, order_id: int) -> Order:
    """Refetch one order's state from its provider (after checkout returns, or by staff)."""
    order = Order.objects.get(pk=order_id)
    if order.provider == Provider.STRIPE and order.checkout_id:
        state = stripe_api.purchase_state(checkout_id=order.checkout_id)
    elif order.provider == Provider.PAYPAL and order.checkout_id:
        state = _paypal_state(order.checkout_id)
    else:
        return order
    return order_apply_state(order_id=order.pk, state=state)


# --- staff and buyer actions
def order_refund(*, order_id: int) -> Order:
    """Staff: refund through the provider, then apply the provider's state."""
    order = Order.objects.get(pk=order_id)
    if order.status != OrderStatus.PAID:
        raise ServiceError("not_refundable", "only a paid order can be refunded")
    try:
        if order.provider == Provider.STRIPE:
            if order.subscription_id:
                stripe_api.subscription_cancel(
                    subscription_id=order.subscription_id, at_period_end=False
                )
            if order.transaction_id.startswith("pi_"):
                stripe_api.refund(transaction_id=order.transaction_id)
        elif order.provider == Provider.PAYPAL and order.transaction_id:
            paypal_api.refund(capture_id=order.transaction_id)
        elif order.provider == Provider.GOOGLE_PLAY and order.provider_order_id:
            google_play_api.refund(order_id=order.provider_order_id)
        else:
            raise ServiceError("not_refundable", "refund this order in the provider's console")
    except ProviderError as exc:
        raise ServiceError("provider_unavailable", str(exc)) from exc
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order_id)
        order.status = OrderStatus.REFUNDED
        order.renews = False
        order.save()
        _entitlement_sync(order)
    return order


def renewal_cancel(*, user: User, order_id: int) -> Order:
    """The buyer stops a subscription's renewal; it stays in force to the paid end."""
    order = Order.objects.filter(pk=order_id, user=user).first()
    if order is None or not order.renews or not order.subscription_id:
        raise ServiceError("not_renewing", "that purchase does not renew")
    if order.provider != Provider.STRIPE:
        raise ServiceError("cancel_elsewhere", "cancel this subscription where you bought it")
    try:
        stripe_api.subscription_cancel(subscription_id=order.subscription_id, at_period_end=True)
    except ProviderError as exc:
        raise ServiceError("provider_unavailable", str(exc)) from exc
    return order_refresh(order_id=order.pk)


def records_purge(*, now: dt.datetime | None = None) -> int:
    """Beat: the sales of erased accounts (orders the deletion unlinked, kept as the
    accounting record the law requires) are deleted once PAYMENTS_RECORD_RETENTION_YEARS
    have passed since the order, with the payer details they hold. A live account's orders
    are its own data and go with it. Returns how many went."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(days=365.25 * settings.PAYMENTS_RECORD_RETENTION_YEARS)
    deleted, _ = Order.objects.filter(user__isnull=True, ordered_at__lt=cutoff).delete()
    return int(deleted)


def entitlements_expire(*, now: dt.datetime | None = None, batch_size: int = 500) -> int:
    """Beat: entitlements whose paid time ran out without a renewal are closed, their orders
    marked expired, and the user's open pages told (the video chat page locks its filters).
    A renewal that arrives later brings them back (order_apply_state). Returns how many."""
    now = now or timezone.now()
    done = 0
    due = Entitlement.objects.filter(revoked_at__isnull=True, valid_until__lte=now)
    for ent_id in list(due.order_by("pk").values_list("pk", flat=True)[:batch_size]):
        with transaction.atomic():
            ent = Entitlement.objects.select_for_update().filter(pk=ent_id).first()
            if ent is None or ent.revoked_at is not None or ent.valid_until is None:
                continue
            if ent.valid_until > now:
                continue
            ent.revoked_at = now
            ent.revoke_reason = OrderStatus.EXPIRED
            ent.save(update_fields=["revoked_at", "revoke_reason"])
            if ent.order_id is not None:
                Order.objects.filter(pk=ent.order_id, status=OrderStatus.PAID).update(
                    status=OrderStatus.EXPIRED, renews=False
                )
            _announce(ent.user_id)
            done += 1
    return done
