"""/ws/payments/: the features the user holds, at connect and whenever they change."""

from __future__ import annotations

from asgiref.sync import sync_to_async

from payments.models import Order
from tests.conftest import acommunicator
from tests.factories import grant_premium

WS = "/ws/payments/"
FEATURE = "videochat.filters"


async def test_anonymous_socket_is_closed(amake_user):  # type: ignore[no-untyped-def]
    comm = await acommunicator(WS)
    await comm.connect()
    assert (await comm.receive_output(timeout=3))["code"] == 4401


async def test_features_at_connect_and_on_change_only_to_their_owner(amake_user, stripe_stub):  # type: ignore[no-untyped-def]
    from tests.payments.test_videochat_revocation import bought_premium

    buyer, other = await amake_user(), await amake_user()
    mine = await acommunicator(WS, buyer)
    assert (await mine.connect())[0]
    assert await mine.receive_json_from() == {"type": "entitlements", "features": []}
    theirs = await acommunicator(WS, other)
    assert (await theirs.connect())[0]
    await theirs.receive_json_from()

    await sync_to_async(bought_premium)(buyer, stripe_stub)
    assert await mine.receive_json_from(timeout=5) == {
        "type": "entitlements",
        "features": [FEATURE],
    }
    assert await theirs.receive_nothing(timeout=0.5)
    assert await sync_to_async(Order.objects.filter(user=buyer, status="paid").count)() == 1
    await mine.disconnect()
    await theirs.disconnect()


async def test_a_staff_grant_shows_at_connect_and_client_messages_are_refused(amake_user):  # type: ignore[no-untyped-def]
    user = await amake_user()
    await sync_to_async(grant_premium)(user)
    comm = await acommunicator(WS, user)
    assert (await comm.connect())[0]
    assert await comm.receive_json_from() == {"type": "entitlements", "features": [FEATURE]}
    await comm.send_json_to({"type": "grant", "feature": FEATURE})
    assert (await comm.receive_json_from())["code"] == "unknown_type"
    await comm.disconnect()
