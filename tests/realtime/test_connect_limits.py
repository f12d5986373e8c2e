"""Origins and connection limits at the socket's edge, on the real ASGI app, session auth,
PostgreSQL and Redis: the Origin must match a configured origin in scheme, host AND port,
and one user's flood of connects is refused cheaply (close 4429) without slowing others."""

from __future__ import annotations

import asyncio
import math
import statistics
import time

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from realtime import closecodes
from tests.conftest import acommunicator, alogin_session
from tests.voice.helpers import join
from voice.models import ConnectionLog
from voice.services import channel_create

pytestmark = pytest.mark.django_db(transaction=True)


async def opens(user, origin: str, host: str = "127.0.0.1", scheme: str = "ws") -> bool:  # type: ignore[no-untyped-def]
    comm = await acommunicator("/ws/presence/", user, origin=origin, headers=[])
    comm.scope["headers"] = [(k, v) for k, v in comm.scope["headers"] if k != b"host"] + [
        (b"host", host.encode())
    ]
    comm.scope["scheme"] = scheme
    ok, _ = await comm.connect()
    if ok:
        await comm.send_json_to({"type": "ping"})
        ok = await comm.receive_json_from() == {"type": "pong"}
        await comm.disconnect()
    return ok


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com:8443",  # another port
        "http://app.example.com",  # another scheme
        "https://evil.example.com",  # another host
        "https://app.example.com.evil.example",  # a suffix is not the host
        "null",
    ],
)
async def test_configured_origin_only_other_port_scheme_or_host_refused(
    amake_user, settings, origin
):
    settings.WS_ALLOWED_ORIGINS = ["https://app.example.com"]
    settings.WS_ALLOW_SERVED_ORIGIN = False
    settings.ALLOWED_HOSTS = ["app.example.com"]
    user = await amake_user()
    assert await opens(user, "https://app.example.com", host="app.example.com", scheme="wss")
    assert await opens(user, "https://app.example.com:443", host="app.example.com", scheme="wss")
    assert not await opens(user, origin, host="app.example.com", scheme="wss")


async def test_served_origin_must_match_the_sockets_own_scheme_host_and_port(amake_user, settings):
    """Local and test (and the nginx stack on loopback ports): the page's own origin."""
    settings.WS_ALLOWED_ORIGINS = []
    settings.WS_ALLOW_SERVED_ORIGIN = True
    user = await amake_user()
    assert await opens(user, "http://127.0.0.1:8000", host="127.0.0.1:8000")
    assert not await opens(user, "http://127.0.0.1:8001", host="127.0.0.1:8000")
    assert not await opens(user, "https://127.0.0.1:8000", host="127.0.0.1:8000")
    assert not await opens(user, "http://localhost:8000", host="127.0.0.1:8000")
    # A Host header outside ALLOWED_HOSTS vouches for nothing.
    assert not await opens(user, "http://evil.example:8000", host="evil.example:8000")
    # Behind TLS (the server's proxy headers made the scheme wss): the https origin.
    assert await opens(user, "https://127.0.0.1:8000", host="127.0.0.1:8000", scheme="wss")
    assert not await opens(user, "http://127.0.0.1:8000", host="127.0.0.1:8000", scheme="wss")


async def first_reply(comm) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Accepted sockets answer the ping; refused ones were closed first."""
    ok, _ = await comm.connect(timeout=30)
    assert ok  # accepted only to deliver the close code when refused
    await comm.send_json_to({"type": "ping"})
    while True:
        out = await comm.receive_output(timeout=30)
        if out["type"] == "websocket.close" or '"pong"' in (out.get("text") or ""):
            return out  # type: ignore[no-any-return]


async def test_connect_flood_is_refused_past_the_limit_and_others_join_promptly(amake_user):
    flooder, witness = await amake_user(), await amake_user()
    channel = await sync_to_async(channel_create)(creator=witness, name="witness")
    key, _ = await alogin_session(flooder)
    wkey, _ = await alogin_session(witness)

    async def witness_join() -> float:
        t0 = time.perf_counter()
        comm = await acommunicator("/ws/cbline/", session_key=wkey)
        ok, _ = await comm.connect(timeout=30)
        assert ok
        await join(comm, channel)
        took = time.perf_counter() - t0
        await comm.disconnect()
        return took

    quiet = [await witness_join() for _ in range(5)]

    flood = [await acommunicator("/ws/cbline/", session_key=key) for _ in range(300)]
    started = time.monotonic()
    replies_task = asyncio.gather(*(first_reply(c) for c in flood))
    loaded = [await witness_join() for _ in range(5)]
    replies = await replies_task
    elapsed = time.monotonic() - started

    refused = [r for r in replies if r["type"] == "websocket.close"]
    assert {r["code"] for r in refused} == {closecodes.TRY_LATER}
    accepted = len(replies) - len(refused)
    # The burst, plus what the bucket refilled while the flood lasted.
    refilled = math.ceil(elapsed * settings.WS_CONNECT_USER_PER_SECOND)
    assert accepted <= settings.WS_CONNECT_USER_BURST + refilled, (accepted, elapsed)
    logged = await sync_to_async(ConnectionLog.objects.filter(user_id=flooder.pk).count)()
    assert logged == accepted
    # The witness's connect+join under the flood stays near its quiet cost.
    print(f"witness connect+join quiet {quiet} loaded {loaded}; flood took {elapsed:.2f}s")
    assert statistics.median(loaded) < max(0.25, 4 * statistics.median(quiet)), (quiet, loaded)
    for c in flood:
        await c.disconnect()


async def presence_socket(user, client: tuple[str, int] = ("198.51.100.7", 5000)):  # type: ignore[no-untyped-def]
    comm = await acommunicator("/ws/presence/", user)
    comm.scope["client"] = list(client)  # what the server puts there: the client's address
    return comm


async def test_open_sockets_per_user_are_capped_and_a_closed_one_frees_a_place(
    amake_user, settings
):
    settings.WS_MAX_SOCKETS_PER_USER = 2
    user, other = await amake_user(), await amake_user()
    first, second, third = [await presence_socket(user) for _ in range(3)]
    assert '"pong"' in (await first_reply(first))["text"]
    assert '"pong"' in (await first_reply(second))["text"]
    assert await first_reply(third) == {"type": "websocket.close", "code": closecodes.TRY_LATER}
    # Another user is not counted against this one.
    assert '"pong"' in (await first_reply(await presence_socket(other)))["text"]
    await first.disconnect()
    again = await presence_socket(user)
    assert '"pong"' in (await first_reply(again))["text"]
    for comm in (second, again):
        await comm.disconnect()


async def test_connects_from_one_address_are_limited_others_unaffected(amake_user, settings):
    settings.WS_CONNECT_IP_BURST = 3
    settings.WS_CONNECT_IP_PER_SECOND = 0.001
    users = [await amake_user() for _ in range(4)]
    opened = [await presence_socket(u, ("203.0.113.5", 4000 + i)) for i, u in enumerate(users)]
    replies = [await first_reply(c) for c in opened]
    assert [r["type"] for r in replies[:3]] == ["websocket.send"] * 3
    assert replies[3] == {"type": "websocket.close", "code": closecodes.TRY_LATER}
    # The same user from another address still gets in: the address was limited, not them.
    elsewhere = await presence_socket(users[3], ("198.51.100.8", 4000))
    assert '"pong"' in (await first_reply(elsewhere))["text"]
    for comm in [*opened[:3], elsewhere]:
        await comm.disconnect()
