"""A refund or an expiry takes the video chat filters away: the open page is told at once,
and the user's next match is made without them."""

from __future__ import annotations

import datetime as dt
import json
import time
from types import SimpleNamespace

from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone

from payments import services
from payments.models import Entitlement, Order
from tests.conftest import acommunicator
from tests.factories import PriceFactory
from tests.videochat.helpers import close_all, join, ready
from videochat import matching

FEATURE = "videochat.filters"


async def frames_until(comm, kind: str) -> list[dict]:  # type: ignore[no-untyped-def]
    seen = []
    while True:
        frame = await comm.receive_json_from(timeout=5)
        seen.append(frame)
        if frame["type"] == kind:
            return seen


def bought_premium(user, stripe_stub) -> Order:  # type: ignore[no-untyped-def]
    """Checkout, payment at Stripe, Stripe's signed webhook: the whole production path."""
    client = Client()
    client.force_login(user)
    client.post("/premium/checkout/", {"price": PriceFactory().pk, "provider": "stripe"})
    order = Order.objects.get(user=user)
    stripe_stub.pay(order.checkout_id)
    body = json.dumps(
        stripe_stub.event(
            "checkout.session.completed", {"id": order.checkout_id, "object": "checkout.session"}
        )
    ).encode()
    resp = Client().post(
        "/premium/webhooks/stripe/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=stripe_stub.sign(body),
    )
    assert resp.status_code == 200
    return order


async def test_refund_locks_the_filters_now_and_the_next_match_ignores_them(  # type: ignore[no-untyped-def]
    amake_user, stripe_stub
):
    buyer = await amake_user()
    order = await sync_to_async(bought_premium)(buyer, stripe_stub)
    picky, frame = await ready(buyer, gender="m", want_gender="f")
    assert frame["filters_allowed"] is True
    assert (await join(picky))["type"] == "queue.waiting"
    man, _ = await ready(await amake_user(), gender="m")
    assert (await join(man))["type"] == "queue.waiting"  # filtered out while Premium holds

    watcher = await acommunicator("/ws/payments/", buyer)
    assert (await watcher.connect())[0]
    assert await watcher.receive_json_from() == {"type": "entitlements", "features": [FEATURE]}
    await sync_to_async(services.order_refund)(order_id=order.pk)
    # Every open page hears of it at once.
    assert await watcher.receive_json_from(timeout=5) == {"type": "entitlements", "features": []}

    # The next queue entry drops the filter: the man waiting is now a match.
    await picky.send_json_to({"type": "queue.leave"})
    await frames_until(picky, "queue.left")
    await picky.send_json_to({"type": "queue.join"})
    seen = await frames_until(picky, "match.found")
    assert {"type": "error", "code": "filters_not_allowed"}.items() <= seen[0].items()
    await close_all(picky, man, watcher)


async def test_expiry_takes_the_filters_away_at_the_next_match(  # type: ignore[no-untyped-def]
    amake_user, stripe_stub, monkeypatch
):
    # A socket trusts the paid time it read until that time ends (tests/videochat/
    # test_matching.py): the next entry after it waits for a fresh read.
    buyer = await amake_user()
    order = await sync_to_async(bought_premium)(buyer, stripe_stub)
    picky, frame = await ready(buyer, gender="m", want_gender="f")
    assert frame["filters_allowed"] is True
    man, _ = await ready(await amake_user(), gender="m")
    assert (await join(man))["type"] == "queue.waiting"

    # Time moves past the paid period (30 days): for the socket's clock, and for the
    # database's (the entitlement's end moved into the past stands in for it there).
    await sync_to_async(Entitlement.objects.filter(order=order).update)(
        valid_until=timezone.now() - dt.timedelta(seconds=1)
    )
    ahead = dt.timedelta(days=31).total_seconds()
    monkeypatch.setattr(
        matching,
        "time",
        SimpleNamespace(time=lambda: time.time() + ahead, monotonic=time.monotonic),
    )
    seen = await frames_until_join(picky)
    assert seen[0]["type"] == "error" and seen[0]["code"] == "filters_not_allowed"
    assert seen[-1]["type"] == "match.found"
    await close_all(picky, man)


async def frames_until_join(comm):  # type: ignore[no-untyped-def]
    await comm.send_json_to({"type": "queue.join"})
    return await frames_until(comm, "match.found")
