"""The edge every product's socket shares, tested through the presence socket on the real
ASGI application, session auth and Redis."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.test import Client

from tests.conftest import acommunicator, aconnected
from tests.factories import make_contacts

pytestmark = pytest.mark.django_db(transaction=True)


async def connected(user):  # type: ignore[no-untyped-def]
    return await aconnected("/ws/presence/", user)


async def assert_usable(comm) -> None:  # type: ignore[no-untyped-def]
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from() == {"type": "pong"}


async def test_foreign_origin_is_refused(amake_user):
    comm = await acommunicator("/ws/presence/", await amake_user(), origin="https://evil.example")
    ok, _ = await comm.connect()
    assert not ok


async def test_anonymous_socket_is_closed_with_4401():
    comm = await acommunicator("/ws/presence/")
    ok, _ = await comm.connect()
    assert ok  # accepted only to deliver the close code
    out = await comm.receive_output()
    assert out == {"type": "websocket.close", "code": 4401}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        (json.dumps({"type": "no.such.type"}), "unknown_type"),
        (json.dumps({"type": "presence.watch", "user_ids": "all"}), "invalid"),
        (json.dumps({"type": "presence.watch", "user_ids": [1], "extra": 1}), "invalid"),
    ],
)
async def test_bad_input_gets_error_frame_and_connection_stays(amake_user, frame, code):
    comm = await connected(await amake_user())
    await comm.send_to(text_data=frame)
    reply = await comm.receive_json_from()
    assert reply["type"] == "error" and reply["code"] == code
    await assert_usable(comm)
    await comm.disconnect()


async def test_oversize_frame_is_refused(amake_user):
    comm = await connected(await amake_user())
    big = json.dumps({"type": "ping", "ref": "x" * settings.WS_MAX_TEXT_FRAME_BYTES})
    await comm.send_to(text_data=big)
    assert (await comm.receive_json_from())["code"] == "too_large"
    await assert_usable(comm)
    await comm.disconnect()


async def test_error_frame_echoes_ref(amake_user):
    comm = await connected(await amake_user())
    await comm.send_json_to({"type": "presence.watch", "user_ids": "x", "ref": "r-7"})
    reply = await comm.receive_json_from()
    assert reply["ref"] == "r-7"
    await comm.disconnect()


async def burst(comm, n: int) -> list[dict]:  # type: ignore[no-untyped-def]
    for _ in range(n):
        await comm.send_json_to({"type": "ping"})
    return [await comm.receive_json_from() for _ in range(n)]


# Three buckets' worth: over the limit even on a slow machine, where refills during the burst
# (WS_RATE_REFILL_PER_SECOND) would otherwise hide it.
BURST = 3 * settings.WS_RATE_CAPACITY


async def test_burst_over_rate_limit_is_refused_then_recovers(amake_user, monkeypatch):
    from realtime.consumers import BaseConsumer
    from realtime.keys import rate_key
    from realtime.redis import get_async_redis

    user = await amake_user()
    comm = await connected(user)
    # No refill during the burst, however slow the machine: exactly the bucket gets through.
    monkeypatch.setattr(BaseConsumer, "rate_per_second", 0.001)
    replies = await burst(comm, BURST)
    limited = [r for r in replies if r.get("code") == "rate_limited"]
    pongs = [r for r in replies if r == {"type": "pong"}]
    assert len(limited) + len(pongs) == BURST
    # The bucket starts full; the settling ping in connected() took one token.
    assert len(pongs) == settings.WS_RATE_CAPACITY - 1
    monkeypatch.undo()
    # It refills (WS_RATE_REFILL_PER_SECOND): a second later the socket is usable again, and
    # was never closed. The second passes for the bucket: its last refill moves a second back.
    bucket = rate_key(BaseConsumer.rate_scope, user.pk)
    assert await get_async_redis().hincrbyfloat(bucket, "ts", -1.0)
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from() == {"type": "pong"}
    await comm.disconnect()


async def test_rate_limit_is_per_user_and_spares_others(amake_user):
    noisy, calm = await amake_user(), await amake_user()
    a, b = await connected(noisy), await connected(calm)
    assert any(r.get("code") == "rate_limited" for r in await burst(a, BURST))
    await assert_usable(b)
    await a.disconnect()
    await b.disconnect()


async def test_logout_closes_the_sockets_of_that_session_only(amake_user):
    from asgiref.sync import sync_to_async

    user, other = await amake_user(), await amake_user()
    client = Client()
    await sync_to_async(client.force_login)(user)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    s1 = await aconnected("/ws/presence/", session_key=key)
    s2 = await aconnected("/ws/presence/", session_key=key)
    same_user_elsewhere, bystander = await connected(user), await connected(other)

    await sync_to_async(client.post)("/accounts/logout/")
    for comm in (s1, s2):
        assert await comm.receive_output(timeout=3) == {"type": "websocket.close", "code": 4001}
    await assert_usable(same_user_elsewhere)
    await assert_usable(bystander)
    await same_user_elsewhere.disconnect()
    await bystander.disconnect()


async def test_presence_reports_online_and_respects_privacy(amake_user):
    from asgiref.sync import sync_to_async

    watcher, visible, hidden = await amake_user(), await amake_user(), await amake_user()
    await sync_to_async(make_contacts)(watcher, visible, hidden)

    def hide() -> None:
        hidden.profile.show_online_status = False
        hidden.profile.save()

    await sync_to_async(hide)()
    w = await connected(watcher)
    await w.send_json_to({"type": "presence.watch", "user_ids": [visible.pk, hidden.pk]})
    assert (await w.receive_json_from())["statuses"] == {
        str(visible.pk): False,
        str(hidden.pk): False,
    }

    v, h = await connected(visible), await connected(hidden)
    update = await w.receive_json_from()
    assert update == {"type": "presence", "statuses": {str(visible.pk): True}}
    assert await w.receive_nothing(timeout=0.3)  # the hidden user's arrival is not announced
    await w.send_json_to({"type": "presence.watch", "user_ids": [visible.pk, hidden.pk]})
    assert (await w.receive_json_from())["statuses"] == {
        str(visible.pk): True,
        str(hidden.pk): False,
    }

    await v.disconnect()
    assert (await w.receive_json_from())["statuses"] == {str(visible.pk): False}
    await h.disconnect()
    await w.disconnect()


async def test_binary_frames_take_the_fast_path_and_are_checked(amake_user):
    """Binary frames skip Channels' per-message database hop (BaseConsumer.dispatch) but still
    meet the size check and the consumer's handler; a socket that takes none says so."""
    comm = await connected(await amake_user())
    await comm.send_to(bytes_data=b"\x01" * (settings.WS_MAX_BINARY_FRAME_BYTES + 1))
    assert (await comm.receive_json_from())["code"] == "too_large"
    await comm.send_to(bytes_data=b"\x01\x00")
    assert (await comm.receive_json_from())["code"] == "unexpected_binary"
    await assert_usable(comm)
    await comm.disconnect()
