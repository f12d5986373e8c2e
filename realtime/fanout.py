"""Per-process fan-out of Redis pub/sub messages to local sockets, bypassing Channels groups.

A Channels group send costs O(listeners) Redis work per message and drops messages silently
when a channel's buffer is full. Here each ASGI process keeps ONE Redis pub/sub connection
(per event loop and user of this module) and subscribes once per topic that has at least one
local listener; every message published on the topic reaches each process once, and the
process writes the same bytes to its own sockets: no per-listener Redis work, no thread hop.

What a message means is the product's business: `Fanout` hands every message to the
product's `on_message` (called from the connection's data_received: it must not await), and
the product writes frames to its local sockets with `write_binary` (framed once, written
straight to each socket's transport where realtime.rawsocket allows, else through the ASGI
send) and `write_text`. A socket that applies back-pressure gets its frames queued in order
in a task of its own, so that it never holds up the others; past MAX_BACKLOG binary frames
behind, it cannot keep up with real time and further ones are dropped for it alone.

The hot path (publishing, reading the subscription) speaks RESP itself (`RespConnection`):
redis-py's per-command overhead was the server's limit with many publishers. CBLINE's audio
relay (voice/relay.py) is the first user.

Imports no product and not accounts (pyproject's import-linter contract).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from django.conf import settings

from .rawsocket import RawSocket, Write, binary_frame, text_frame

log = logging.getLogger(__name__)

# Binary frames queued behind a send that is waiting on a full socket buffer; beyond this
# the listener cannot keep up with real time and further frames are dropped for it alone.
MAX_BACKLOG = 50
SUBSCRIBE_TIMEOUT_SECONDS = 5.0
RECONNECT_FIRST_DELAY_SECONDS = 0.05
RECONNECT_MAX_DELAY_SECONDS = 2.0


# --- a lean Redis wire for the hot path
class RespError(Exception):
    """An error reply from Redis."""


def resp_command(*parts: bytes | str | int | float) -> bytes:
    """One command in RESP, ready to write."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(out)


@dataclass(frozen=True)
class Script:
    """A Lua script sent by its SHA1 (EVALSHA): a burst of calls carries 40 bytes each, not
    the whole source, and Redis does not hash it again each time."""

    source: str
    sha: bytes

    @classmethod
    def of(cls, source: str) -> Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest().encode())  # noqa: S324 - Redis' name


async def run_script(conn: RespConnection, script: Script, *args: bytes | str | int | float) -> Any:
    """EVALSHA on `conn` (args: the key count, keys, then arguments), with the source
    once if Redis does not know it yet (a new or flushed server)."""
    try:
        (reply,) = await conn.call(resp_command(b"EVALSHA", script.sha, *args), 1)
    except RespError as exc:
        if not str(exc).startswith("NOSCRIPT"):
            raise
        (reply,) = await conn.call(resp_command(b"EVAL", script.source, *args), 1)
    return reply


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
        self.unsent: list[bytes] = []  # calls of this turn of the event loop
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
        """Send `payload` (that many commands); the future gets their replies. The calls of
        one turn of the event loop go out in one write, in order (a burst of presses or
        packets costs a system call per turn, not per call)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        if not self.is_open or self.transport is None:
            fut.set_exception(ConnectionError("redis connection closed"))
            return fut
        self.waiters.append([fut, replies, []])
        if not self.unsent:
            loop.call_soon(self.flush)
        self.unsent.append(payload)
        return fut

    def flush(self) -> None:
        """Write what `call` queued (it schedules this itself)."""
        unsent, self.unsent = self.unsent, []
        if unsent and self.transport is not None and self.is_open:
            self.transport.write(b"".join(unsent))

    def write(self, payload: bytes) -> None:
        """A command whose answer arrives as a push (SUBSCRIBE, UNSUBSCRIBE)."""
        self.flush()
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
            log.exception("fanout: unreadable reply from Redis; dropping the connection")
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


class Listener(Protocol):
    """A local socket: a Channels consumer qualifies. One with a `raw_socket`
    (realtime.rawsocket) gets binary frames written straight to its transport;
    `channel_name` names it (to skip the sender's own socket, say)."""

    user_id: int | None
    channel_name: str

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None: ...


@dataclass(eq=False)
class _Slot:
    listener: Listener
    raw: RawSocket | None = None
    # Not None while a send to this socket is suspended; frames wait here in order
    # (bytes: audio, str: an announcement).
    backlog: deque[bytes | str] | None = None
    task: asyncio.Task[None] | None = None


@dataclass
class FanoutStats:
    """Counts of binary frames (text frames are not counted)."""

    delivered: int = 0
    raw: int = 0  # of those delivered, written straight to the transport
    dropped: int = 0  # a socket that cannot keep up (backlog or write buffer full)
    errors: int = 0  # send raised (closed socket, server error)
    unknown: int = 0  # the product could not tell who may receive it (see Fanout.unknown)


class _Resume:
    """Awaitable that carries on a coroutine which was already stepped once by hand.

    Sending to a socket almost always completes without suspending (daphne writes to a
    buffer), so the fan-out steps each send coroutine synchronously instead of paying for a
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
class Fanout:
    """The fan-out of one product in one event loop: one subscriber and one publishing
    connection to Redis, and the local listeners of each topic.

    `pubsub_name(topic)` names the topic's Redis pub/sub channel (the product's keys module);
    `on_message(topic, data)` gets every message published there, in order;
    `on_reconnect()` runs when the subscriber connection came back after a drop (messages
    were lost meanwhile: forget what they would have said)."""

    client_name: str
    pubsub_name: Callable[[Any], str]
    on_message: Callable[[Any, bytes], None]
    on_reconnect: Callable[[], None] = lambda: None
    listeners: dict[Any, dict[Listener, _Slot]] = field(default_factory=dict)
    stats: FanoutStats = field(default_factory=FanoutStats)
    _names: dict[bytes, Any] = field(default_factory=dict)  # pub/sub channel -> topic
    _subscribed: set[Any] = field(default_factory=set)  # confirmed (or given up waiting)
    _pending_subs: dict[bytes, asyncio.Future[None]] = field(default_factory=dict)
    _sub: RespConnection | None = None  # subscriber connection
    _pub: RespConnection | None = None  # publishing connection
    _reader: asyncio.Task[None] | None = None  # reconnects the subscriber
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _pub_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _closed: bool = False

    # --- local listeners
    async def join(self, topic: Hashable, listener: Listener) -> None:
        """Deliver the topic's messages to `listener` from now on (subscribing if first);
        returns once Redis confirmed the subscription: a message published after this
        returns reaches it."""
        slot = _Slot(listener, getattr(listener, "raw_socket", None))
        self.listeners.setdefault(topic, {}).setdefault(listener, slot)
        if topic not in self._subscribed:
            # Later joiners wait here too, so nobody returns before the subscription exists.
            async with self._lock:
                if topic not in self._subscribed and self.listeners.get(topic):
                    await self._subscribe(topic)
                    self._subscribed.add(topic)

    async def leave(self, topic: Hashable, listener: Listener) -> None:
        """Stop delivering to `listener`; unsubscribe when the topic has no local listener."""
        slots = self.listeners.get(topic)
        if not slots or listener not in slots:
            return
        slot = slots.pop(listener)
        if slot.task is not None:
            slot.task.cancel()
        if not slots:
            del self.listeners[topic]
            async with self._lock:
                if topic not in self.listeners and topic in self._subscribed:
                    self._subscribed.discard(topic)
                    await self._unsubscribe(topic)

    def local_listener_count(self, topic: Hashable) -> int:
        return len(self.listeners.get(topic, ()))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` in a task that `close()` cancels (work an on_message cannot await)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- publishing
    async def publisher(self) -> RespConnection:
        """The publishing connection (opened on first use, again after a drop)."""
        if self._pub is None or not self._pub.is_open:
            async with self._pub_lock:
                if self._pub is None or not self._pub.is_open:
                    self._pub = await RespConnection.open(self.client_name + ":pub")
        return self._pub

    def publisher_now(self) -> RespConnection | None:
        """The publishing connection if it is open, without opening one (no await)."""
        pub = self._pub
        return pub if pub is not None and pub.is_open else None

    # --- local delivery
    def write_text(self, topic: Hashable, text_for: Callable[[Listener], str | None]) -> None:
        """Write a JSON text frame to every local socket of the topic: `text_for(listener)`
        says which text (None: nothing). Each distinct text is framed once. Text is control,
        not to be lost like late audio: a socket behind gets it through the ordinary send."""
        slots = self.listeners.get(topic)
        if not slots:
            return
        frames: dict[str, bytes] = {}
        for slot in list(slots.values()):
            text = text_for(slot.listener)
            if text is None:
                continue
            raw = slot.raw
            if raw is None or slot.backlog is not None:
                self._deliver(slot, text)
                continue
            frame = frames.get(text)
            if frame is None:
                frame = frames[text] = text_frame(text.encode())
            if raw.write(frame) is not Write.SENT:
                self._deliver(slot, text)

    def write_text_to(self, topic: Hashable, listener: Listener, text: str) -> bool:
        """Write a JSON text frame to one local socket of the topic, as `write_text` would
        (straight to its transport, in order with what is queued for it): a reply, without
        the ASGI send's layers. False: not a listener of the topic (send it yourself)."""
        slot = self.listeners.get(topic, {}).get(listener)
        if slot is None:
            return False
        raw = slot.raw
        if (
            raw is None
            or slot.backlog is not None
            or raw.write(text_frame(text.encode())) is not Write.SENT
        ):
            self._deliver(slot, text)
        return True

    def write_binary(
        self, topic: Hashable, data: bytes, may_receive: Callable[[int | None], bool]
    ) -> None:
        """Write `data` to every local listener of the topic whose user `may_receive`:
        framed once and written to each raw socket, else through the ASGI send."""
        slots = self.listeners.get(topic)
        if not slots:
            return
        frame = None
        stats = self.stats
        for slot in list(slots.values()):
            if not may_receive(slot.listener.user_id):
                continue
            raw = slot.raw
            if raw is None or slot.backlog is not None:
                self._deliver(slot, data)
                continue
            if frame is None:
                frame = binary_frame(data)
            result = raw.write(frame)
            if result is Write.SENT:
                stats.delivered += 1
                stats.raw += 1
            elif result is Write.BEHIND:
                stats.dropped += 1
            else:
                stats.errors += 1

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
            log.debug("fanout: send failed", exc_info=True)
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
        self, slot: _Slot, coro: Coroutine[Any, Any, Any], waiting_on: Any, binary: bool
    ) -> None:
        try:
            await _Resume(coro, waiting_on)
            self.stats.delivered += binary
            while slot.backlog:
                frame = slot.backlog.popleft()
                binary = isinstance(frame, bytes)
                await _send(slot.listener, frame)
                self.stats.delivered += binary
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.errors += binary
            log.debug("fanout: send failed", exc_info=True)
        finally:
            slot.backlog = None
            slot.task = None

    # --- subscription management (callers hold self._lock)
    async def _subscribe(self, topic: Hashable) -> None:
        name = self.pubsub_name(topic).encode()
        self._names[name] = topic
        acked = self._pending_subs[name] = asyncio.get_running_loop().create_future()
        try:
            sub = await self._subscriber()
            sub.write(resp_command(b"SUBSCRIBE", name))
            # Return only once Redis has confirmed: a message published after join() arrives.
            await asyncio.wait_for(asyncio.shield(acked), SUBSCRIBE_TIMEOUT_SECONDS)
        except (TimeoutError, OSError) as exc:
            # The supervisor subscribes again to every name once the connection is back.
            log.warning("fanout: %r not confirmed subscribed (%r)", name, exc)
        finally:
            self._pending_subs.pop(name, None)

    async def _unsubscribe(self, topic: Hashable) -> None:
        name = self.pubsub_name(topic).encode()
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
        backoff = RECONNECT_FIRST_DELAY_SECONDS
        while not self._closed:
            if self._sub is not None and self._sub.is_open:
                await asyncio.shield(self._sub.closed)
                if self._closed:
                    return
                log.warning("fanout: pub/sub connection lost; reconnecting")
            await asyncio.sleep(backoff)
            try:
                self._sub = await RespConnection.open(self.client_name, self._on_push)
            except OSError as exc:
                log.warning("fanout: Redis unreachable (%s); retrying", exc)
                backoff = min(backoff * 2, RECONNECT_MAX_DELAY_SECONDS)
                continue
            backoff = RECONNECT_FIRST_DELAY_SECONDS
            self.on_reconnect()
            if self._names:
                self._sub.write(resp_command(b"SUBSCRIBE", *self._names))

    # --- inbound from Redis (called from the subscriber's data_received: no awaiting)
    def _on_push(self, push: list[Any]) -> None:
        kind = push[0]
        if kind == b"message":
            topic = self._names.get(push[1])
            if topic is not None and push[2]:  # else unsubscribed meanwhile
                self.on_message(topic, push[2])
        elif kind == b"subscribe":
            fut = self._pending_subs.get(push[1])
            if fut is not None and not fut.done():
                fut.set_result(None)

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
