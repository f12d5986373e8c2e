"""Time running out closes Premium (a beat task, tested by moving time forward), a late
renewal brings it back; and a webhook is answered before any work, which Celery does."""

from __future__ import annotations

import datetime as dt
import time

from celery import current_app

from payments import selectors, services
from payments.models import Entitlement, OrderStatus, ProviderEvent
from payments.tasks import entitlements_expire, provider_event_process
from realtime.events import capture_events
from tests.factories import PriceFactory, SubscriptionPriceFactory
from tests.payments.test_stripe import buy, completed, deliver

FEATURE = "videochat.filters"


def test_the_beat_closes_premium_when_its_time_runs_out(make_user, stripe_stub) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    order = buy(user, PriceFactory(duration_days=30), stripe_stub)
    stripe_stub.pay(order.checkout_id)
    deliver(stripe_stub, completed(stripe_stub, order))
    order.refresh_from_db()
    assert services.entitlements_expire(now=order.paid_until - dt.timedelta(seconds=1)) == 0
    assert entitlements_expire.delay().get() == 0  # the beat's task, today
    with capture_events() as sent:
        assert services.entitlements_expire(now=order.paid_until + dt.timedelta(seconds=1)) == 1
    order.refresh_from_db()
    assert order.status == OrderStatus.EXPIRED
    assert Entitlement.objects.get(order=order).revoke_reason == "expired"
    assert not selectors.has_entitlement(user_id=user.pk, feature=FEATURE)
    assert (f"payments.user.{user.pk}", {"type": "payments.entitlements", "features": []}) in sent
    assert services.entitlements_expire(now=order.paid_until + dt.timedelta(days=1)) == 0


def test_a_renewal_after_the_beat_expired_it_brings_premium_back(make_user, stripe_stub) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    order = buy(user, SubscriptionPriceFactory(), stripe_stub)
    stripe_stub.pay(order.checkout_id, period_days=30)
    deliver(stripe_stub, completed(stripe_stub, order))
    order.refresh_from_db()
    services.entitlements_expire(now=order.paid_until + dt.timedelta(minutes=5))
    assert not selectors.has_entitlement(user_id=user.pk, feature=FEATURE)
    # Stripe renewed it; the invoice's event names the subscription as Stripe does since 2025.
    items = stripe_stub.subscriptions[order.subscription_id]["items"]["data"]
    items[0]["current_period_end"] = int(time.time()) + 60 * 86400
    paid = stripe_stub.event(
        "invoice.paid",
        {
            "id": "in_2",
            "object": "invoice",
            "parent": {"subscription_details": {"subscription": order.subscription_id}},
        },
    )
    assert deliver(stripe_stub, paid)[0] == 200
    order.refresh_from_db()
    assert order.status == OrderStatus.PAID
    assert selectors.has_entitlement(user_id=user.pk, feature=FEATURE)


def test_the_webhook_answers_before_the_work_which_celery_does(make_user, stripe_stub) -> None:  # type: ignore[no-untyped-def]
    user = make_user()
    order = buy(user, PriceFactory(), stripe_stub)
    stripe_stub.pay(order.checkout_id)
    asked = len(stripe_stub.requests)
    current_app.conf.task_always_eager = False  # queued on this run's Redis broker
    try:
        status, _ = deliver(stripe_stub, completed(stripe_stub, order))
    finally:
        current_app.conf.task_always_eager = True
    assert status == 200
    event = ProviderEvent.objects.get()
    assert event.processed_at is None and len(stripe_stub.requests) == asked
    assert not selectors.has_entitlement(user_id=user.pk, feature=FEATURE)
    # The worker's run (as the queued task would): Stripe is asked, Premium granted.
    provider_event_process.apply(args=[event.pk]).get()
    event.refresh_from_db()
    assert event.processed_at is not None and len(stripe_stub.requests) > asked
    assert selectors.has_entitlement(user_id=user.pk, feature=FEATURE)
