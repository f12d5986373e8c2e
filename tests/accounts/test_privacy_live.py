"""Privacy settings and deletion take effect on live sockets (real ASGI app, Redis, sessions)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from accounts import services
from tests.conftest import acommunicator, aconnected
from tests.factories import make_contacts

pytestmark = pytest.mark.django_db(transaction=True)


async def connected(user):  # type: ignore[no-untyped-def]
    return await aconnected("/ws/presence/", user)


async def test_hiding_online_status_shows_the_user_offline_at_once(amake_user):
    watcher, user = await amake_user(), await amake_user()
    await sync_to_async(make_contacts)(watcher, user)
    w, u = await connected(watcher), await connected(user)
    await w.send_json_to({"type": "presence.watch", "user_ids": [user.pk]})
    assert (await w.receive_json_from())["statuses"] == {str(user.pk): True}

    await sync_to_async(services.profile_update)(user=user, data={"show_online_status": False})

    assert (await w.receive_json_from())["statuses"] == {str(user.pk): False}
    await w.send_json_to({"type": "presence.watch", "user_ids": [user.pk]})
    assert (await w.receive_json_from())["statuses"] == {str(user.pk): False}
    await u.disconnect()
    await w.disconnect()


async def test_deleting_the_profile_closes_its_open_sockets(amake_user):
    user, bystander = await amake_user(), await amake_user()
    mine, theirs = await connected(user), await connected(bystander)

    await sync_to_async(services.account_delete_request)(user=user)

    assert await mine.receive_output(timeout=3) == {"type": "websocket.close", "code": 4403}
    await theirs.send_json_to({"type": "ping"})
    assert await theirs.receive_json_from() == {"type": "pong"}
    # A new socket with the old session is refused.
    again = await acommunicator("/ws/presence/", user)
    await again.connect()
    assert (await again.receive_output(timeout=3))["type"] == "websocket.close"
    await theirs.disconnect()
