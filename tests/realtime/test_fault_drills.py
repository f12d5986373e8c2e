"""Fault drills against real processes: two uvicorn processes on a Redis server of the drill's
own (never the shared one) and, for the database drill, a TCP proxy of the drill's own in
front of PostgreSQL. Each drill asserts what the clients see.

- kill -9 of one process: the survivor releases the dead process's CBLINE floor, marks its
  users offline, ends its video chat match (telling the partner) and fixes the member list
  within seconds; the killed process's clients reconnect to the survivor.
- Redis restart: sockets are closed with a reconnect code, clients reconnect, and talk
  crosses processes again (the relay resubscribed) without restarting any process.
- PostgreSQL unreachable for a few seconds: sockets stay up, audio keeps flowing, requests
  that need the database get an error frame, and everything works again once it is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from messaging.services import room_create
from realtime.consumers import CLOSE_RECONNECT
from tests.conftest import LiveServer, free_port, session_cookie_for
from tests.factories import make_contacts
from tests.messaging.test_processes import Person, Receiver, post, put
from tests.voice.helpers import packet
from voice import keys as voice_keys

pytestmark = pytest.mark.django_db(transaction=True)

# What "within seconds" means here: the liveness TTL (4 s) and one beat, plus scheduling slack
# on a busy 2-core machine.
RELEASED_WITHIN = 9.0


# --- a Redis server of the drill's own ----------------------------------------------------
@dataclass
class OwnRedis:
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        import redis

        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=1).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # startup poll: nothing to wait on but the port

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    server = OwnRedis(free_port())
    server.start()
    yield server
    server.stop()


# --- clients ------------------------------------------------------------------------------
class Client:
    """A socket over real TCP to one server process."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, server: LiveServer, user: Any, path: str) -> Client:
        cookie = await sync_to_async(session_cookie_for)(user)
        ws = await connect(
            f"{server.ws_url}{path}",
            origin=server.url,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"},
            compression=None,
            open_timeout=10,
        )
        return cls(ws)

    async def send(self, **message: Any) -> None:
        await self.ws.send(json.dumps(message))

    async def expect(self, type_: str, timeout: float = 5, **match: Any) -> dict[str, Any]:
        """The next text frame of `type_` (and the given field values), skipping others."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no {type_} {match or ''} within {timeout}s")
            frame = await asyncio.wait_for(self.ws.recv(), left)
            if isinstance(frame, bytes):
                continue
            msg = json.loads(frame)
            if msg["type"] == type_ and all(msg.get(k) == v for k, v in match.items()):
                return msg

    async def binaries(self, timeout: float = 0.7) -> list[bytes]:
        out = []
        while True:
            try:
                frame = await asyncio.wait_for(self.ws.recv(), timeout)
            except TimeoutError:
                return out
            if isinstance(frame, bytes):
                out.append(frame)

    async def closed_with(self, timeout: float = 10) -> int:
        """Wait for the server to close the socket; its close code."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code

    async def close(self) -> None:
        await self.ws.close()


async def cbline(server: LiveServer, user: Any, channel: Any) -> tuple[Client, dict[str, Any]]:
    c = await Client.open(server, user, "/ws/cbline/")
    await c.send(type="channel.join", channel_id=channel.pk)
    return c, await c.expect("channel.joined")


async def take_floor(c: Client) -> int:
    await c.send(type="floor.request", mode="webcodecs")
    return int((await c.expect("floor.granted"))["tx_id"])


async def videochat_pair(
    one: LiveServer, a: Any, two: LiveServer, b: Any
) -> tuple[Client, Client, str]:
    va = await Client.open(one, a, "/ws/videochat/")
    vb = await Client.open(two, b, "/ws/videochat/")
    for v in (va, vb):
        await v.send(type="hello", language="en")
        await v.expect("ready")
    await va.send(type="queue.join")
    await va.expect("queue.waiting")
    await vb.send(type="queue.join")
    found = await vb.expect("match.found")
    assert (await va.expect("match.found"))["match_id"] == found["match_id"]
    return va, vb, found["match_id"]


@pytest.fixture
def drill(
    asgi_servers: Callable[..., LiveServer], own_redis: OwnRedis, amake_user: Any
) -> Callable[..., Any]:
    """`await drill(env)`: two uvicorn processes on the drill's Redis."""

    async def start(env: dict[str, str] | None = None) -> tuple[LiveServer, LiveServer]:
        full = {"REDIS_URL": own_redis.url, **(env or {})}
        one = await sync_to_async(asgi_servers)(full, server="uvicorn")
        two = await sync_to_async(asgi_servers)(full, server="uvicorn")
        return one, two

    return start


@sync_to_async
def make_channel(creator: Any) -> Any:
    from voice.services import channel_create

    return channel_create(creator=creator, name=f"drill-{time.monotonic_ns()}")


# --- CallsApp over the drill's processes ----------------------------------------------------
@dataclass
class CallsAppPair:
    """Alice (sending through `server`) and Bob in a direct room; Bob holds Alice's Megolm
    room key (a real Olm to-device message over a claimed one-time key)."""

    alice: Any
    bob: Any
    room: Any
    http: Any
    group: Any
    server: LiveServer

    def path(self, txn: str) -> str:
        return f"rooms/{self.room.room_id}/send/m.room.encrypted/{txn}"

    def encrypt(self, text: str) -> dict[str, Any]:
        return self.alice.olm.megolm_encrypt(self.group, self.room.room_id, text)

    async def send(self, content: dict[str, Any], txn: str) -> dict[str, Any]:
        return await asyncio.to_thread(put, self.http, self.server, self.path(txn), content)


async def callsapp_pair(server: LiveServer) -> CallsAppPair:
    @sync_to_async
    def setup() -> tuple[Any, Any, Any]:
        alice, bob = Person(), Person()
        room = room_create(creator=alice.user, name="", invite=[bob.mxid], is_direct=True)
        return alice, bob, room

    alice, bob, room = await setup()
    http = alice.http()
    group = alice.olm.megolm_session()
    claim = {"one_time_keys": {bob.mxid: {bob.device.device_id: "signed_curve25519"}}}
    claimed = await asyncio.to_thread(post, http, server, "keys/claim", claim)
    (otk,) = claimed["one_time_keys"][bob.mxid][bob.device.device_id].values()
    room_key = alice.olm.room_key_payload(room.room_id, group)
    to_bob = alice.olm.olm_encrypt(bob.olm.curve25519, otk["key"], room_key)
    body = {"messages": {bob.mxid: {bob.device.device_id: to_bob}}}
    await asyncio.to_thread(put, http, server, "sendToDevice/m.room.encrypted/k1", body)
    return CallsAppPair(alice, bob, room, http, group, server)


async def bob_socket(pair: CallsAppPair, server: LiveServer, last_seq: int) -> ClientConnection:
    ws = await connect(
        f"{server.ws_url}/ws/messaging/",
        additional_headers=pair.bob.ws_headers(server),
        compression=None,
    )
    await ws.send(json.dumps({"type": "hello", "last_seq": last_seq}))
    return ws


# --- kill -9 ------------------------------------------------------------------------------
async def test_kill_9_of_one_process_releases_what_it_held(drill, amake_user):
    one, two = await drill()
    a, b, c = await amake_user(), await amake_user(), await amake_user()
    channel = await make_channel(b)
    ca, _ = await cbline(one, a, channel)
    cb, joined_b = await cbline(two, b, channel)
    assert joined_b["member_count"] == 2
    tx = await take_floor(ca)
    await cb.expect("floor.taken", tx_id=tx)
    va, vb, match_id = await videochat_pair(one, a, two, b)
    await sync_to_async(make_contacts)(a, c)  # c may see a online
    watcher = await Client.open(two, c, "/ws/presence/")
    await watcher.send(type="presence.watch", user_ids=[a.pk])
    assert (await watcher.expect("presence"))["statuses"] == {str(a.pk): True}

    one.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    one.process.wait(10)

    released = await cb.expect("floor.released", timeout=RELEASED_WITHIN, tx_id=tx)
    assert released["reason"] == "disconnected" and released["user_id"] == a.pk
    await cb.expect("member.left", timeout=RELEASED_WITHIN, user_id=a.pk)
    ended = await vb.expect("match.ended", timeout=RELEASED_WITHIN, match_id=match_id)
    assert ended["reason"] == "disconnected"
    await vb.expect("queue.waiting")  # the one left behind is back in the queue
    offline = await watcher.expect("presence", timeout=RELEASED_WITHIN)
    assert offline["statuses"] == {str(a.pk): False}
    elapsed = time.monotonic() - killed_at
    assert elapsed < RELEASED_WITHIN, elapsed

    # The floor is free, the member count is right, and the killed process's user comes back
    # on the survivor (what a load balancer does) and is heard.
    tx_b = await take_floor(cb)
    await cb.send(type="floor.release", tx_id=tx_b)
    await cb.expect("floor.released", tx_id=tx_b)
    cc, joined_c = await cbline(two, c, channel)
    assert joined_c["member_count"] == 2
    assert {m["user_id"] for m in joined_c["members"]} == {b.pk, c.pk}
    ca2, joined_a = await cbline(two, a, channel)
    assert joined_a["member_count"] == 3 and joined_a["talker"] is None
    tx_a = await take_floor(ca2)
    sent = packet(tx_a, 0)
    await ca2.ws.send(sent)
    assert await cb.binaries() == [sent]
    for client in (cb, cc, ca2, vb, watcher):
        await client.close()
    # The dead process's clients saw their connection drop: nothing to close.
    del ca, va


# --- Redis restart ------------------------------------------------------------------------
async def test_redis_restart_closes_sockets_with_a_reconnect_code_and_all_recovers(
    drill, own_redis, amake_user
):
    one, two = await drill()
    a, b = await amake_user(), await amake_user()
    channel = await make_channel(a)
    ca, _ = await cbline(one, a, channel)
    cb, _ = await cbline(two, b, channel)
    tx = await take_floor(ca)
    await cb.expect("floor.taken", tx_id=tx)
    await sync_to_async(make_contacts)(a, b)  # b's socket joins a's presence group
    watcher = await Client.open(two, b, "/ws/presence/")
    await watcher.send(type="presence.watch", user_ids=[a.pk])
    assert (await watcher.expect("presence"))["statuses"] == {str(a.pk): True}

    await sync_to_async(own_redis.stop)()
    await sync_to_async(own_redis.start)()

    # Every socket, on both processes, is told to come back (none is left deaf: its group
    # memberships and live state died with Redis).
    codes = await asyncio.gather(*(c.closed_with(15) for c in (ca, cb, watcher)))
    assert codes == [CLOSE_RECONNECT] * 3, codes

    # No process restarted: the clients reconnect, join, talk, and hear each other across
    # processes (the relay subscribed again).
    ca, _ = await cbline(one, a, channel)
    cb, joined_b = await cbline(two, b, channel)
    assert joined_b["member_count"] == 2 and joined_b["talker"] is None
    tx = await take_floor(ca)
    await cb.expect("floor.taken", tx_id=tx)
    sent = [packet(tx, i) for i in range(3)]
    for p in sent:
        await ca.ws.send(p)
    assert await cb.binaries() == sent
    await ca.send(type="floor.release", tx_id=tx)
    await cb.expect("floor.released", tx_id=tx)
    for client in (ca, cb):
        await client.close()


# --- PostgreSQL unreachable ---------------------------------------------------------------
class CuttableProxy:
    """A TCP proxy of the drill's own in front of PostgreSQL: `cut()` drops every connection
    and refuses new ones (the database is unreachable), `restore()` lets them through."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self.pipes |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self.pipes -= {writer, up_writer}

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.pipes):
            w.transport.abort()
        self.pipes.clear()
        await self.server.wait_closed()
        self.server = None

    async def restore(self) -> None:
        await self.start()


@pytest.fixture
async def pg_proxy() -> AsyncIterator[CuttableProxy]:
    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        # The embedded default (SQLite) has no server to cut off; CI runs on PostgreSQL and
        # sets REQUIRE_POSTGRES, so there the drill can never be skipped.
        if os.environ.get("REQUIRE_POSTGRES"):
            pytest.fail("the database drill needs PostgreSQL (set DATABASE_URL)")
        pytest.skip("the database drill needs PostgreSQL (set DATABASE_URL)")
    proxy = CuttableProxy((db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432)))
    await proxy.start()
    yield proxy
    if proxy.server is not None:
        await proxy.cut()


async def test_postgres_unreachable_for_seconds_keeps_sockets_and_audio(
    drill, pg_proxy, own_redis, amake_user
):
    db = settings.DATABASES["default"]
    url = f"postgres://{db['USER']}@127.0.0.1:{pg_proxy.port}/{db['NAME']}"
    if db.get("PASSWORD"):
        url = f"postgres://{db['USER']}:{db['PASSWORD']}@127.0.0.1:{pg_proxy.port}/{db['NAME']}"
    one, two = await drill({"DATABASE_URL": url})
    a, b, c = await amake_user(), await amake_user(), await amake_user()
    channel = await make_channel(a)
    other = await make_channel(b)
    ca, _ = await cbline(one, a, channel)
    cb, _ = await cbline(two, b, channel)

    tx = await take_floor(ca)
    await cb.expect("floor.taken", tx_id=tx)

    await pg_proxy.cut()
    # A transmission under way needs no database: its audio and its release go on.
    sent = [packet(tx, i) for i in range(3)]
    for p in sent:
        await ca.ws.send(p)
    assert await cb.binaries() == sent
    await ca.send(type="floor.release", tx_id=tx)
    await cb.expect("floor.released", tx_id=tx)
    # What needs the database (a join) is refused with an error frame; the sockets stay up.
    await cb.send(type="channel.join", channel_id=other.pk)
    assert (await cb.expect("error", timeout=15))["code"] == "server_error"
    # A press needs none while the channel's bans its process read at the join still hold.
    tx = await take_floor(cb)
    await ca.expect("floor.taken", tx_id=tx)
    await cb.send(type="floor.release", tx_id=tx)
    await cb.expect("floor.released", tx_id=tx)
    # A sanction changed meanwhile (its bump reached Redis): a press must read the bans
    # again, and is refused with an error frame, never granted on bans it could not read.
    redis.Redis.from_url(own_redis.url).incr(voice_keys.channel_sanctions_version_key(channel.pk))
    await cb.send(type="floor.request", mode="webcodecs")
    assert (await cb.expect("error", timeout=15))["code"] == "server_error"
    for client in (ca, cb):
        await client.send(type="ping")
        await client.expect("pong")

    await pg_proxy.restore()
    # Back: the same sockets and new ones work, and nothing had to restart.
    await cb.send(type="channel.join", channel_id=channel.pk)
    joined = await cb.expect("channel.joined", timeout=15)
    assert {m["user_id"] for m in joined["members"]} == {a.pk, b.pk}
    cc, joined_c = await cbline(one, c, channel)
    assert joined_c["member_count"] == 3
    tx = await take_floor(cc)
    await ca.expect("floor.taken", tx_id=tx)
    for client in (ca, cb, cc):
        await client.close()


async def test_redis_restart_loses_no_callsapp_message(drill, own_redis):
    """The durable stream lives in PostgreSQL: a message sent while Redis is down is stored
    (the live nudge is lost, never the message), and the device that reconnects after the
    restart with hello{last acked seq} gets it exactly once, as it gets the one it never acked."""
    one, two = await drill()
    pair = await callsapp_pair(one)
    receiver = Receiver(pair.bob)
    ws = await bob_socket(pair, two, 0)
    await pair.send(pair.encrypt("before"), "t1")
    await receiver.until(ws, 1)
    await pair.send(pair.encrypt("unacked"), "t2")
    await receiver.until(ws, 2, ack=False)

    await sync_to_async(own_redis.stop)()
    await pair.send(pair.encrypt("while Redis is down"), "t3")  # stored: no Redis needed
    await sync_to_async(own_redis.start)()
    try:
        await asyncio.wait_for(ws.wait_closed(), 15)
    finally:
        await ws.close()
    assert ws.close_code is not None

    ws = await bob_socket(pair, one, receiver.acked)
    await receiver.until(ws, 3)
    await pair.send(pair.encrypt("after"), "t4")
    await receiver.until(ws, 4)
    await ws.close()
    assert receiver.texts == ["before", "unacked", "while Redis is down", "after"]
    assert receiver.duplicates == 1  # "unacked" came again after the reconnect, deduped


async def test_postgres_unreachable_loses_and_doubles_no_callsapp_message(drill, pg_proxy):
    """A CallsApp send while PostgreSQL is unreachable is refused (nothing half-stored); the
    client's resend with the same txnId once it is back is applied once and delivered once."""
    db = settings.DATABASES["default"]
    auth = f"{db['USER']}:{db['PASSWORD']}" if db.get("PASSWORD") else db["USER"]
    one, two = await drill(
        {"DATABASE_URL": f"postgres://{auth}@127.0.0.1:{pg_proxy.port}/{db['NAME']}"}
    )
    pair = await callsapp_pair(one)
    during = pair.encrypt("during")
    receiver = Receiver(pair.bob)
    ws = await bob_socket(pair, two, 0)
    await pair.send(pair.encrypt("before"), "t1")
    await receiver.until(ws, 1)

    await pg_proxy.cut()
    url = f"{one.url}/messaging/_matrix/client/v3/{pair.path('t2')}"
    refused = await asyncio.to_thread(pair.http.put, url, json=during, timeout=30)
    assert refused.status_code >= 500, refused.status_code
    await pg_proxy.restore()

    # The client resends the same request (same txnId, same ciphertext), twice for good measure.
    first = await pair.send(during, "t2")
    again = await pair.send(during, "t2")
    assert first["event_id"] == again["event_id"]
    # Bob's socket could not store its ack during the outage and was told to reconnect; his
    # client comes back with what it stored, and gets the rest.
    try:
        await receiver.until(ws, 2)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None and exc.rcvd.code == CLOSE_RECONNECT
        ws = await bob_socket(pair, one, receiver.acked)
        await receiver.until(ws, 2)
    await ws.close()
    # Each message shown once (a frame seen again after the reconnect is deduped by event id).
    assert receiver.texts == ["before", "during"]
