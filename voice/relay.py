"""Per-process fan-out of push-to-talk audio, bypassing Channels groups.

A Channels group send costs O(listeners) Redis work per packet and drops messages silently
when a channel's buffer is full. Here each ASGI process keeps ONE Redis pub/sub connection
(per event loop) and subscribes once per voice channel that has at least one local listener;
every packet published for the channel reaches each process once, and the process writes the
same bytes to its own sockets: no per-listener Redis work, no thread hop.

Pub/sub framing: first byte 0x00 = control message (JSON: transmission start/end), anything
else = the audio packet exactly as the protocol defines it (first byte is its kind, 1 or 2;
tx_id at offset 4). Control and audio of one channel share one Redis channel, so a process
always learns who may hear a transmission before its first packet (Redis keeps the order of
one publisher's messages on one channel). The same control messages are the channel's
floor.taken and floor.released announcements: each process writes them to its own sockets,
so a press costs O(processes) messages, not one per member, and every listener reads
floor.taken before the transmission's first packet.

Audio is also kept in Redis for VOICE_AUDIO_TTL_SECONDS (replay for a reconnecting listener),
never in SQL or on disk.

The hot path (publishing a packet, reading the subscription) speaks RESP itself over two
connections per event loop (`RespConnection`): redis-py's per-command overhead was the
server's limit with many talkers. Rare operations (start, end, replay) use redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import ssl
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from django.conf import settings

from realtime import gc_policy, metrics
from realtime.rawsocket import RawSocket, Write, binary_frame, text_frame
from realtime.redis import get_async_redis

from .keys import (
    held_bytes_key,
    pubsub_channel,
    recent_key,
    relay_client_name,
    sockets_key,
    tx_audio_key,
    tx_key,
    tx_recipients_key,
)
from .schemas import FloorReleased, FloorTaken, ReleaseReason

log = logging.getLogger(__name__)

CONTROL = 0x00
HEADER_BYTES = 16
AUDIO_KINDS = (1, 2)
# Packets queued behind a send that is waiting on a full socket buffer; beyond this the
# listener cannot keep up with real time and further packets are dropped for it alone.
MAX_BACKLOG = 50
# How long a process remembers a finished transmission's recipients (late packets, replay).
ENDED_TX_GRACE_SECONDS = 5.0
SUBSCRIBE_TIMEOUT_SECONDS = 5.0


class Listener(Protocol):
    """A local socket: a Channels consumer qualifies. One with a `raw_socket`
    (realtime.rawsocket) gets audio written straight to its transport; `channel_name` tells
    the talker's own socket (which hears floor.granted instead of floor.taken)."""

    user_id: int | None
    channel_name: str

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None: ...


def held_window_seconds() -> int:
    """Audio stays in Redis at most the TTL after a transmission's last packet, and a
    transmission lasts at most its maximum length: everything still held was stored within
    the current or the previous window of this length."""
    return settings.VOICE_AUDIO_TTL_SECONDS + settings.VOICE_MAX_TRANSMISSION_SECONDS


# KEYS: audio list, held bytes now, held bytes in the previous window.
# ARGV: packet, pub/sub channel, audio TTL, held-bytes cap, window seconds.
# Publishes and stores the packet unless the channel would hold more than the cap.
_AUDIO_LUA = """
local size = string.len(ARGV[1])
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
held = held + tonumber(redis.call('GET', KEYS[3]) or '0')
if held + size > tonumber(ARGV[4]) then return 0 end
redis.call('INCRBY', KEYS[2], size)
redis.call('EXPIRE', KEYS[2], 2 * tonumber(ARGV[5]))
redis.call('PUBLISH', ARGV[2], ARGV[1])
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
_AUDIO_SHA = hashlib.sha1(_AUDIO_LUA.encode()).hexdigest().encode()  # noqa: S324 - Redis' name


# KEYS: the channel's sockets hash, the transmission's recipient set. ARGV: TTL, talker.
# Who was joined at the press, for tx.fetch and late joiners' offers: copied inside Redis
# (microseconds a member, one round trip), never read member by member into Python.
_SNAPSHOT_LUA = """
local ids = {}
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local uid = string.match(v, '"user_id": *(%d+)')
  if uid and uid ~= ARGV[2] then
    ids[#ids + 1] = uid
    if #ids == 4000 then redis.call('SADD', KEYS[2], unpack(ids)); ids = {} end
  end
end
if #ids > 0 then redis.call('SADD', KEYS[2], unpack(ids)) end
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""


def packet_tx_id(packet: bytes) -> int:
    return int.from_bytes(packet[4:8], "big")


# --- a lean Redis wire for the hot path
class RespError(Exception):
    """An error reply from Redis."""


def resp_command(*parts: bytes | str | int) -> bytes:
    """One command in RESP, ready to write."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(out)


def _parse(buf: bytearray, pos: int) -> tuple[Any, int] | None:
    """One RESP2 reply from buf[pos:], or None while it is incomplete."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, line = buf[pos], bytes(buf[pos + 1 : end])
    pos = end + 2
    if kind == 0x24:  # $ bulk string
        n = int(line)
        if n < 0:
            return None, pos
        if len(buf) < pos + n + 2:
            return None
        return bytes(buf[pos : pos + n]), pos + n + 2
    if kind == 0x3A:  # : integer
        return int(line), pos
    if kind == 0x2B:  # + simple string
        return line, pos
    if kind == 0x2D:  # - error
        return RespError(line.decode(errors="replace")), pos
    if kind == 0x2A:  # * array
        items = []
        for _ in range(max(int(line), 0)):
            parsed = _parse(buf, pos)
            if parsed is None:
                return None
            item, pos = parsed
            items.append(item)
        return items, pos
    raise RespError(f"unexpected reply type {chr(kind)!r}")


class RespConnection(asyncio.Protocol):
    """One pipelined Redis connection: pre-encoded commands out, replies matched in order to
    waiting futures; pub/sub pushes go to `on_push`. Measured here, redis-py spends about
    170 us of CPU on a PUBLISH+RPUSH+EXPIRE pipeline and tens of us per pub/sub message;
    at 200 talkers x 25 packets a second that, not the sockets, was the limit."""

    def __init__(self, on_push: Callable[[list[Any]], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.on_push = on_push
        self.buf = bytearray()
        self.waiters: deque[list[Any]] = deque()  # [future, replies left, replies]
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = loop.create_future()

    @classmethod
    async def open(
        cls, name: str, on_push: Callable[[list[Any]], None] | None = None
    ) -> RespConnection:
        """Connect to settings.REDIS_URL (redis://, rediss://, unix://), authenticate,
        select the database and name the connection."""
        url = urlsplit(settings.REDIS_URL)
        query = parse_qs(url.query)
        loop = asyncio.get_running_loop()
        if url.scheme == "unix":
            _, conn = await loop.create_unix_connection(lambda: cls(on_push), url.path)
            db = (query.get("db") or ["0"])[0]
        else:
            tls = ssl.create_default_context() if url.scheme == "rediss" else None
            _, conn = await loop.create_connection(
                lambda: cls(on_push), url.hostname or "127.0.0.1", url.port or 6379, ssl=tls
            )
            db = url.path.strip("/") or (query.get("db") or ["0"])[0]
        setup: list[bytes] = []
        password = unquote(url.password) if url.password else None
        if password is not None:
            user = unquote(url.username) if url.username else None
            setup.append(
                resp_command("AUTH", user, password) if user else resp_command("AUTH", password)
            )
        if db not in ("", "0"):
            setup.append(resp_command("SELECT", db))
        setup.append(resp_command("CLIENT", "SETNAME", name))
        try:
            await conn.call(b"".join(setup), len(setup))
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def is_open(self) -> bool:
        return not self.closed.done()

    def call(self, payload: bytes, replies: int) -> asyncio.Future[list[Any]]:
        """Write `payload` (that many commands); the future gets their replies."""
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if not self.is_open or self.transport is None:
            fut.set_exception(ConnectionError("redis connection closed"))
            return fut
        self.waiters.append([fut, replies, []])
        self.transport.write(payload)
        return fut

    def write(self, payload: bytes) -> None:
        """A command whose answer arrives as a push (SUBSCRIBE, UNSUBSCRIBE)."""
        if self.transport is not None and self.is_open:
            self.transport.write(payload)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        try:
            while pos < len(buf):
                parsed = _parse(buf, pos)
                if parsed is None:
                    break
                value, pos = parsed
                self._reply(value)
        except Exception:
            log.exception("voice relay: unreadable reply from Redis; dropping the connection")
            self.close()
            return
        del buf[:pos]

    def _reply(self, value: Any) -> None:
        if self.on_push is not None and isinstance(value, list):
            self.on_push(value)
            return
        if not self.waiters:
            return
        waiter = self.waiters[0]
        waiter[1] -= 1
        waiter[2].append(value)
        if waiter[1] <= 0:
            self.waiters.popleft()
            fut, _, values = waiter
            if not fut.done():
                errors = [v for v in values if isinstance(v, RespError)]
                if errors:
                    fut.set_exception(errors[0])
                else:
                    fut.set_result(values)

    def connection_lost(self, exc: Exception | None) -> None:
        while self.waiters:
            fut = self.waiters.popleft()[0]
            if not fut.done():
                fut.set_exception(ConnectionError("redis connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass
class _Tx:
    """What a process needs to know to deliver one transmission's packets."""

    channel_id: int
    talker_id: int
    recipients: frozenset[int] | None  # None = everyone in the channel
    expires_at: float
    live: bool = True  # until its end message
    excluded: frozenset[int] = frozenset()  # banned: never, even with recipients None

    def may_hear(self, user_id: int | None) -> bool:
        if user_id is None or user_id == self.talker_id or user_id in self.excluded:
            return False
        return self.recipients is None or user_id in self.recipients


@dataclass(eq=False)
class _Slot:
    listener: Listener
    raw: RawSocket | None = None
    # Not None while a send to this socket is suspended; frames wait here in order
    # (bytes: audio, str: an announcement).
    backlog: deque[bytes | str] | None = None
    task: asyncio.Task[None] | None = None


@dataclass
class RelayStats:
    """Counts of audio frames (announcements are not counted)."""

    delivered: int = 0
    raw: int = 0  # of those delivered, written straight to the transport
    dropped: int = 0  # a socket that cannot keep up (backlog or write buffer full)
    errors: int = 0  # send raised (closed socket, server error)
    unknown_tx: int = 0  # packet whose transmission meta was gone


class _Resume:
    """Awaitable that carries on a coroutine which was already stepped once by hand.

    Sending to a socket almost always completes without suspending (daphne writes to a
    buffer), so the relay steps each send coroutine synchronously instead of paying for a
    task per listener per packet; only a send that actually suspends (full buffer under
    uvicorn, say) is handed to a task through this wrapper, which re-yields the future the
    coroutine is waiting on so that the task resumes it correctly.
    """

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting_on: Any) -> None:
        self.coro = coro
        self.waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, waiting_on = self.coro, self.waiting_on
        while True:
            try:
                value = yield waiting_on
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation, thrown into the coroutine
                try:
                    waiting_on = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting_on = coro.send(value)
                except StopIteration as stop:
                    return stop.value


@dataclass(eq=False)
class Relay:
    """The audio relay of one event loop. Use `get_relay()`."""

    listeners: dict[int, dict[Listener, _Slot]] = field(default_factory=dict)
    stats: RelayStats = field(default_factory=RelayStats)
    _counts: metrics.RelayCounts = field(default_factory=metrics.RelayCounts)
    _txs: dict[int, _Tx] = field(default_factory=dict)
    _names: dict[bytes, int] = field(default_factory=dict)  # pub/sub channel -> channel_id
    _subscribed: set[int] = field(default_factory=set)  # confirmed (or given up waiting)
    _pending_subs: dict[bytes, asyncio.Future[None]] = field(default_factory=dict)
    _sub: RespConnection | None = None  # subscriber connection
    _pub: RespConnection | None = None  # audio publishing connection
    _reader: asyncio.Task[None] | None = None  # reconnects the subscriber
    _waiting: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _pub_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _closed: bool = False

    @property
    def client_name(self) -> str:
        """Names the pub/sub connection in CLIENT LIST (operators; the reconnect test)."""
        return relay_client_name(f"{os.getpid()}:{id(self):x}")

    # --- local listeners
    async def join(self, channel_id: int, listener: Listener) -> None:
        """Deliver the channel's audio to `listener` from now on (subscribing if first)."""
        slot = _Slot(listener, getattr(listener, "raw_socket", None))
        self.listeners.setdefault(channel_id, {}).setdefault(listener, slot)
        if channel_id not in self._subscribed:
            # Later joiners wait here too, so nobody returns before the subscription exists.
            async with self._lock:
                if channel_id not in self._subscribed and self.listeners.get(channel_id):
                    await self._subscribe(channel_id)
                    self._subscribed.add(channel_id)

    async def leave(self, channel_id: int, listener: Listener) -> None:
        """Stop delivering to `listener`; unsubscribe when the channel has no local listener."""
        slots = self.listeners.get(channel_id)
        if not slots or listener not in slots:
            return
        slot = slots.pop(listener)
        if slot.task is not None:
            slot.task.cancel()
        if not slots:
            del self.listeners[channel_id]
            async with self._lock:
                if channel_id not in self.listeners and channel_id in self._subscribed:
                    self._subscribed.discard(channel_id)
                    await self._unsubscribe(channel_id)

    def gc_should_wait(self) -> bool:
        """A full collection stops the event loop for up to ~100 ms: not while someone
        whose audio passes through this process is talking (realtime/gc_policy.py)."""
        now = time.monotonic()
        return any(tx.live and tx.expires_at > now for tx in self._txs.values())

    def local_listener_count(self, channel_id: int) -> int:
        return len(self.listeners.get(channel_id, ()))

    # --- publishing (called by the talker's consumer)
    async def transmission_start(
        self,
        channel_id: int,
        tx_id: int,
        talker_id: int,
        recipients: set[int] | frozenset[int] | None,
        *,
        excluded: frozenset[int] = frozenset(),
        mode: str = "webcodecs",
        nickname: str = "",
        origin: str = "",
        **meta: str | int,
    ) -> None:
        """Announce a transmission and who may hear it, before any of its audio: listeners
        everywhere get floor.taken (except the `origin` socket, the talker's own). With
        `recipients` None the cost does not grow with the channel: each process checks its
        own sockets against `excluded` (the channel's banned members)."""
        ttl = settings.VOICE_AUDIO_TTL_SECONDS
        started_at = int(time.time() * 1000)
        fields: dict[Any, str | int] = {
            **meta,
            "nickname": nickname,
            "tx_id": tx_id,
            "channel_id": channel_id,
            "talker_id": talker_id,
            "started_at": started_at,
            "mode": mode,
            # Live audio goes to everyone joined (minus `excluded`); fetching it later is for
            # those joined at the press only, whose set is snapshotted below.
            "everyone": 0,
            "live_all": int(recipients is None),  # a process that learns the tx late
            "excluded": ",".join(map(str, sorted(excluded))),
        }
        control = {
            "e": "start",
            "tx": tx_id,
            "ch": channel_id,
            "talker": talker_id,
            "rcpt": None if recipients is None else sorted(recipients),
            "excl": sorted(excluded),
            "origin": origin,
            "say": FloorTaken(
                tx_id=tx_id,
                user_id=talker_id,
                nickname=nickname,
                started_at=started_at,
                mode=mode,
            ).model_dump_json(),
            "say_out": FloorTaken(
                tx_id=tx_id,
                user_id=None,
                nickname="",
                started_at=started_at,
                mode=mode,
                in_range=False,
            ).model_dump_json(),
        }
        pipe = get_async_redis().pipeline(transaction=False)
        pipe.hset(tx_key(tx_id), mapping=fields)
        pipe.expire(tx_key(tx_id), ttl)
        if recipients is None:
            pipe.eval(
                _SNAPSHOT_LUA, 2, sockets_key(channel_id), tx_recipients_key(tx_id), ttl, talker_id
            )
        elif recipients:
            pipe.sadd(tx_recipients_key(tx_id), *recipients)
            pipe.expire(tx_recipients_key(tx_id), ttl)
        pipe.zadd(recent_key(channel_id), {str(tx_id): started_at})
        pipe.zremrangebyscore(recent_key(channel_id), "-inf", started_at - ttl * 1000)
        pipe.expire(recent_key(channel_id), ttl)
        pipe.publish(pubsub_channel(channel_id), _control_frame(control))
        await pipe.execute()

    async def audio(self, channel_id: int, tx_id: int, packet: bytes) -> bool:
        """Publish one packet and keep it for replay, in one round trip to Redis; False (and
        nothing published or kept) when the channel already holds
        VOICE_CHANNEL_MAX_HELD_BYTES of audio."""
        if len(packet) < HEADER_BYTES or packet[0] not in AUDIO_KINDS:
            raise ValueError("not an audio packet (16-byte header, kind 1 or 2)")
        if packet_tx_id(packet) != tx_id:
            raise ValueError("packet header names another transmission")
        window = held_window_seconds()
        now_window = int(time.time()) // window
        args = (
            3,
            tx_audio_key(tx_id),
            held_bytes_key(channel_id, now_window),
            held_bytes_key(channel_id, now_window - 1),
            packet,
            pubsub_channel(channel_id),
            settings.VOICE_AUDIO_TTL_SECONDS,
            settings.VOICE_CHANNEL_MAX_HELD_BYTES,
            window,
        )
        pub = await self._publisher()
        try:
            (stored,) = await pub.call(resp_command(b"EVALSHA", _AUDIO_SHA, *args), 1)
        except RespError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            (stored,) = await pub.call(resp_command(b"EVAL", _AUDIO_LUA, *args), 1)
        return bool(stored)

    async def transmission_end(
        self,
        channel_id: int,
        tx_id: int,
        *,
        talker_id: int = 0,
        duration_ms: int = 0,
        reason: ReleaseReason = "released",
    ) -> None:
        """Announce the end (floor.released to every listener); stored audio keeps its TTL
        so it can still be replayed."""
        ended_at = int(time.time() * 1000)
        redis = get_async_redis()
        started = await redis.hget(tx_key(tx_id), "started_at")
        pipe = redis.pipeline(transaction=False)
        if started is not None:
            # hset would recreate an expired hash without a TTL; only touch a live one.
            stored_ms = ended_at - int(started)
            pipe.hset(tx_key(tx_id), mapping={"ended_at": ended_at, "duration_ms": stored_ms})
        say = FloorReleased(
            tx_id=tx_id, user_id=talker_id, duration_ms=duration_ms, reason=reason
        ).model_dump_json()
        say_out = FloorReleased(
            tx_id=tx_id, user_id=None, duration_ms=0, reason=reason, in_range=False
        ).model_dump_json()
        control = {"e": "end", "tx": tx_id, "say": say, "say_out": say_out}
        pipe.publish(pubsub_channel(channel_id), _control_frame(control))
        await pipe.execute()

    # --- stored transmissions
    async def replay(self, tx_id: int) -> tuple[dict[str, Any], list[bytes]] | None:
        """Meta and the packets still stored, in order; None once the transmission expired.
        Authorisation is the caller's: check `may_hear` first."""
        pipe = get_async_redis().pipeline(transaction=False)
        pipe.hgetall(tx_key(tx_id))
        pipe.lrange(tx_audio_key(tx_id), 0, -1)
        raw, packets = await pipe.execute()
        if not raw:
            return None
        return _decode_meta(raw), list(packets)

    async def may_hear(self, tx_id: int, user_id: int) -> bool:
        """From the stored recipient set: may `user_id` hear `tx_id` (the talker may)."""
        pipe = get_async_redis().pipeline(transaction=False)
        pipe.hmget(tx_key(tx_id), ["talker_id", "everyone", "excluded"])
        pipe.sismember(tx_recipients_key(tx_id), str(user_id))
        (talker, everyone, excluded), member = await pipe.execute()
        if talker is None:
            return False
        if int(talker) == user_id:
            return True
        if user_id in _decode_ids(excluded):
            return False
        return everyone == b"1" or bool(member)

    async def recent(self, channel_id: int, *, hearer: int | None = None) -> list[dict[str, Any]]:
        """Transmissions of the channel still on the server, oldest first (meta only); with
        `hearer`, only those that user may fetch (a listener then, or the talker)."""
        redis = get_async_redis()
        tx_ids: list[Any] = await redis.zrange(recent_key(channel_id), 0, -1)
        if not tx_ids:
            return []
        pipe = redis.pipeline(transaction=False)
        for tx in tx_ids:
            pipe.hgetall(tx_key(int(tx)))
            pipe.sismember(tx_recipients_key(int(tx)), str(hearer or 0))
        replies = await pipe.execute()
        out = []
        for raw, listed in zip(replies[::2], replies[1::2], strict=True):
            if not raw:
                continue
            meta = _decode_meta(raw)
            heard = hearer not in meta["excluded"] and (meta["everyone"] or listed)
            if hearer is None or meta["talker_id"] == hearer or heard:
                out.append(meta)
        return out

    # --- subscription management (callers hold self._lock)
    async def _subscribe(self, channel_id: int) -> None:
        name = pubsub_channel(channel_id).encode()
        self._names[name] = channel_id
        acked = self._pending_subs[name] = asyncio.get_running_loop().create_future()
        try:
            sub = await self._subscriber()
            sub.write(resp_command(b"SUBSCRIBE", name))
            # Return only once Redis has confirmed: a packet published after join() is heard.
            await asyncio.wait_for(asyncio.shield(acked), SUBSCRIBE_TIMEOUT_SECONDS)
        except (TimeoutError, OSError) as exc:
            # The supervisor subscribes again to every name once the connection is back.
            log.warning("voice relay: channel %s not confirmed subscribed (%r)", channel_id, exc)
        finally:
            self._pending_subs.pop(name, None)

    async def _unsubscribe(self, channel_id: int) -> None:
        name = pubsub_channel(channel_id).encode()
        self._names.pop(name, None)
        if self._sub is not None:
            self._sub.write(resp_command(b"UNSUBSCRIBE", name))

    async def _subscriber(self) -> RespConnection:
        # Only the first connection is made here; after a drop the supervisor alone
        # reconnects (two connections would both deliver) and subscribes to every name,
        # this one included.
        if self._sub is None:
            self._sub = await RespConnection.open(self.client_name, self._on_push)
            self._reader = asyncio.get_running_loop().create_task(self._supervise())
        return self._sub

    async def _supervise(self) -> None:
        """Reconnect the subscriber when Redis drops it, and subscribe again."""
        backoff = 0.05
        while not self._closed:
            if self._sub is not None and self._sub.is_open:
                await asyncio.shield(self._sub.closed)
                if self._closed:
                    return
                log.warning("voice relay: pub/sub connection lost; reconnecting")
            await asyncio.sleep(backoff)
            try:
                self._sub = await RespConnection.open(self.client_name, self._on_push)
            except OSError as exc:
                log.warning("voice relay: Redis unreachable (%s); retrying", exc)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            # Transmissions may have started while we were away: forget what we knew.
            self._txs.clear()
            if self._names:
                self._sub.write(resp_command(b"SUBSCRIBE", *self._names))

    async def _publisher(self) -> RespConnection:
        if self._pub is None or not self._pub.is_open:
            async with self._pub_lock:
                if self._pub is None or not self._pub.is_open:
                    self._pub = await RespConnection.open(self.client_name + ":pub")
        return self._pub

    # --- inbound from Redis (called from the subscriber's data_received: no awaiting)
    def _on_push(self, push: list[Any]) -> None:
        kind = push[0]
        if kind == b"message":
            self._on_message(push[1], push[2])
        elif kind == b"subscribe":
            fut = self._pending_subs.get(push[1])
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _on_message(self, name: bytes, data: bytes) -> None:
        channel_id = self._names.get(name)
        if channel_id is None or not data:
            return  # unsubscribed meanwhile
        if data[0] == CONTROL:
            self._on_control(channel_id, json.loads(data[1:]))
            return
        if len(data) < HEADER_BYTES:
            return
        tx_id = packet_tx_id(data)
        waiting = self._waiting.get(tx_id)
        if waiting is not None:  # its meta is being fetched: keep the order
            waiting.append((channel_id, data))
            return
        tx = self._txs.get(tx_id)
        if tx is None:
            self._waiting[tx_id] = [(channel_id, data)]
            task = asyncio.get_running_loop().create_task(self._resolve(tx_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        self._deliver_checked(channel_id, data, tx)

    async def _resolve(self, tx_id: int) -> None:
        """Packets of a transmission that started before we subscribed: fetch who may hear
        it, then deliver what queued meanwhile, in order."""
        try:
            tx = await self._load_tx(tx_id)
        except Exception:
            log.warning("voice relay: could not load transmission %s", tx_id, exc_info=True)
            tx = None
        for channel_id, data in self._waiting.pop(tx_id, []):
            self._deliver_checked(channel_id, data, tx)

    def _deliver_checked(self, channel_id: int, data: bytes, tx: _Tx | None) -> None:
        if tx is None or tx.channel_id != channel_id:
            self.stats.unknown_tx += 1
            return
        self.fan_out(channel_id, data, tx)

    def _on_control(self, channel_id: int, msg: dict[str, Any]) -> None:
        now = time.monotonic()
        say = msg.get("say")
        if say:
            hears: _Tx | None
            if msg["e"] == "start":
                rcpt = msg.get("rcpt")
                hears = _Tx(
                    channel_id=channel_id,
                    talker_id=int(msg["talker"]),
                    recipients=None if rcpt is None else frozenset(rcpt),
                    expires_at=0,
                    excluded=frozenset(msg.get("excl") or ()),
                )
            else:
                hears = self._txs.get(int(msg["tx"]))  # None: not known here, say nothing named
            self.announce(
                channel_id,
                say,
                skip=msg.get("origin") or None,
                tx=hears,
                out_of_range=msg.get("say_out"),
            )
        if msg["e"] == "start":
            rcpt = msg.get("rcpt")
            self._txs[int(msg["tx"])] = _Tx(
                channel_id=int(msg["ch"]),
                talker_id=int(msg["talker"]),
                recipients=None if rcpt is None else frozenset(rcpt),
                expires_at=now
                + settings.VOICE_MAX_TRANSMISSION_SECONDS
                + settings.VOICE_AUDIO_TTL_SECONDS,
                excluded=frozenset(msg.get("excl") or ()),
            )
            self._prune(now)
        elif msg["e"] == "end":
            tx = self._txs.get(int(msg["tx"]))
            if tx is not None:
                tx.live = False
                tx.expires_at = min(tx.expires_at, now + ENDED_TX_GRACE_SECONDS)

    def _prune(self, now: float) -> None:
        for tx_id in [t for t, tx in self._txs.items() if tx.expires_at < now]:
            del self._txs[tx_id]

    async def _load_tx(self, tx_id: int) -> _Tx | None:
        """A process that subscribed after the start message learns the recipients here."""
        pipe = get_async_redis().pipeline(transaction=False)
        pipe.hmget(tx_key(tx_id), ["channel_id", "talker_id", "live_all", "excluded"])
        pipe.smembers(tx_recipients_key(tx_id))
        (channel, talker, live_all, excluded), members = await pipe.execute()
        if channel is None:
            return None
        tx = _Tx(
            channel_id=int(channel),
            talker_id=int(talker),
            recipients=None if live_all == b"1" else frozenset(int(m) for m in members),
            expires_at=time.monotonic() + settings.VOICE_AUDIO_TTL_SECONDS,
            excluded=_decode_ids(excluded),
        )
        self._txs[tx_id] = tx
        return tx

    # --- local delivery
    def announce(
        self,
        channel_id: int,
        text: str,
        *,
        skip: str | None = None,
        tx: _Tx | None = None,
        out_of_range: str | None = None,
    ) -> None:
        """Write a JSON text frame to every local socket of the channel (framed once). With
        `out_of_range`, sockets that may not hear `tx` (all, when `tx` is unknown) get that
        text instead: an announcement that names no one."""
        slots = self.listeners.get(channel_id)
        if not slots:
            return
        frames: dict[str, bytes] = {}
        for slot in list(slots.values()):
            if skip is not None and getattr(slot.listener, "channel_name", None) == skip:
                continue
            say = text
            if out_of_range is not None:
                uid = slot.listener.user_id
                talker = tx is not None and uid == tx.talker_id
                if not talker and (tx is None or not tx.may_hear(uid)):
                    say = out_of_range
            raw = slot.raw
            if raw is None or slot.backlog is not None:
                self._deliver(slot, say)
                continue
            frame = frames.get(say)
            if frame is None:
                frame = frames[say] = text_frame(say.encode())
            if raw.write(frame) is not Write.SENT:
                # Control must not be lost like late audio: through the ordinary send.
                self._deliver(slot, say)

    def fan_out(self, channel_id: int, packet: bytes, tx: _Tx) -> None:
        """Write `packet` to every local listener of the channel allowed to hear `tx`:
        framed once and written to each raw socket, else through the ASGI send."""
        slots = self.listeners.get(channel_id)
        if not slots:
            return
        started = time.perf_counter()
        frame = None
        stats = self.stats
        for slot in list(slots.values()):
            if not tx.may_hear(slot.listener.user_id):
                continue
            raw = slot.raw
            if raw is None or slot.backlog is not None:
                self._deliver(slot, packet)
                continue
            if frame is None:
                frame = binary_frame(packet)
            result = raw.write(frame)
            if result is Write.SENT:
                stats.delivered += 1
                stats.raw += 1
            elif result is Write.BEHIND:
                stats.dropped += 1
            else:
                stats.errors += 1
        # Metrics once per packet, not per listener (realtime/metrics.py).
        metrics.RELAY_LAG_SECONDS.observe(time.perf_counter() - started)
        self._counts.sync(stats.delivered, stats.dropped, stats.errors, stats.unknown_tx)

    def _deliver(self, slot: _Slot, frame: bytes | str) -> None:
        if slot.backlog is not None:  # a send to this socket is still waiting: keep order
            if isinstance(frame, bytes) and len(slot.backlog) >= MAX_BACKLOG:
                self.stats.dropped += 1
            else:
                slot.backlog.append(frame)
            return
        coro = _send(slot.listener, frame)
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            if isinstance(frame, bytes):
                self.stats.delivered += 1
            return
        except Exception:
            self.stats.errors += isinstance(frame, bytes)
            log.debug("voice relay: send failed", exc_info=True)
            return
        # The socket is applying back-pressure: finish this send and the backlog in a task,
        # so that the other listeners are not held up.
        slot.backlog = deque()
        task = asyncio.get_running_loop().create_task(
            self._drain(slot, coro, waiting_on, isinstance(frame, bytes))
        )
        slot.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(
        self, slot: _Slot, coro: Coroutine[Any, Any, Any], waiting_on: Any, audio: bool
    ) -> None:
        try:
            await _Resume(coro, waiting_on)
            self.stats.delivered += audio
            while slot.backlog:
                frame = slot.backlog.popleft()
                audio = isinstance(frame, bytes)
                await _send(slot.listener, frame)
                self.stats.delivered += audio
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.errors += audio
            log.debug("voice relay: send failed", exc_info=True)
        finally:
            slot.backlog = None
            slot.task = None

    async def close(self) -> None:
        """Stop reading and drop every subscription (tests; process shutdown)."""
        self._closed = True
        for task in [self._reader, *self._tasks]:
            if task is not None:
                task.cancel()
        for conn in (self._sub, self._pub):
            if conn is not None:
                conn.close()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self._sub = self._pub = None
        self.listeners.clear()
        self._names.clear()
        self._subscribed.clear()


def _send(listener: Listener, frame: bytes | str) -> Coroutine[Any, Any, None]:
    if isinstance(frame, str):
        return listener.send(text_data=frame)  # type: ignore[return-value]
    return listener.send(bytes_data=frame)  # type: ignore[return-value]


def _control_frame(payload: dict[str, Any]) -> bytes:
    return bytes([CONTROL]) + json.dumps(payload, separators=(",", ":")).encode()


_INT_FIELDS = {"tx_id", "channel_id", "talker_id", "started_at", "ended_at", "duration_ms"}


def _decode_ids(raw: bytes | str | None) -> frozenset[int]:
    """A comma-separated id list as stored in a transmission's meta hash."""
    if not raw:
        return frozenset()
    text = raw.decode() if isinstance(raw, bytes) else raw
    return frozenset(int(part) for part in text.split(",") if part)


def _decode_meta(raw: dict[bytes, bytes]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        name, value = k.decode(), v.decode()
        meta[name] = int(value) if name in _INT_FIELDS else value
    meta["everyone"] = meta.get("everyone") == "1"
    meta["excluded"] = _decode_ids(meta.get("excluded"))
    return meta


_relays: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Relay] = weakref.WeakKeyDictionary()


def get_relay() -> Relay:
    """The relay of the running event loop (one per ASGI process in production)."""
    loop = asyncio.get_running_loop()
    relay = _relays.get(loop)
    if relay is None:
        relay = _relays[loop] = Relay()
        gc_policy.defer_while(relay)
    return relay


async def close_relay() -> None:
    """Close and forget this loop's relay (tests)."""
    relay = _relays.pop(asyncio.get_running_loop(), None)
    if relay is not None:
        await relay.close()
