"""Wake-ups across processes, for long polls: a coroutine waits on a topic in one process,
and a write committed in any process (or Celery worker) signals the topic.

Each event loop keeps ONE Redis pub/sub connection, subscribed to one pattern while anyone
in it waits; the waiters are asyncio Events in memory. So a waiting poll holds no database
connection and no pooled Redis connection, and costs nothing until it is woken or times out
(a BLPOP per poll would hold a pooled connection for the whole wait).

Wake-ups are hints, lossy like any pub/sub: a waiter starts watching BEFORE it reads what
is there (`watching`), so a signal sent after that read always reaches it; one lost to a
Redis outage costs that waiter its timeout, after which its caller reads again. On a
reconnect every waiter of the loop is woken, for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from .keys import wake_channel
from .redis import get_async_redis, get_redis

log = logging.getLogger(__name__)

RECONNECT_DELAY_SECONDS = 0.5


def signal(topic: str) -> None:
    """Wake whoever waits on `topic`, in every process (sync: call it on commit)."""
    try:
        get_redis().publish(wake_channel(topic), b"1")
    except RedisError as exc:  # a hint: the waiter's timeout covers it
        log.warning("wake-up %s not sent: %r", topic, exc)


class _Hub:
    """One loop's subscription and its waiters."""

    def __init__(self) -> None:
        self.waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.users = 0
        self.task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()
        self.lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self.lock:
            self.users += 1
            if self.task is None:
                self.subscribed.clear()
                self.task = asyncio.get_running_loop().create_task(self._listen())
        await self.subscribed.wait()

    async def release(self) -> None:
        async with self.lock:
            self.users -= 1
            if self.users or self.task is None:
                return
            task, self.task = self.task, None
        # Nobody waits: close the connection (a test's loop, or a quiet process).
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _listen(self) -> None:
        pattern = wake_channel("*")
        prefix = len(wake_channel(""))
        while True:
            pubsub: PubSub = get_async_redis().pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                if self.subscribed.is_set():  # a reconnect: what was sent meanwhile is lost
                    self._wake_all()
                self.subscribed.set()
                async for message in pubsub.listen():
                    if message["type"] == "pmessage":
                        topic = message["channel"].decode()[prefix:]
                        for ev in self.waiters.get(topic, ()):
                            ev.set()
            except (OSError, RedisError) as exc:
                log.warning("wake-up subscription lost: %r", exc)
                self.subscribed.set()  # waiters go on; their timeouts cover the gap
                self._wake_all()
                await asyncio.sleep(RECONNECT_DELAY_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _wake_all(self) -> None:
        for events in self.waiters.values():
            for ev in events:
                ev.set()


_hubs: dict[asyncio.AbstractEventLoop, _Hub] = {}


def _hub() -> _Hub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        for old in [lp for lp in _hubs if lp.is_closed()]:
            del _hubs[old]
        hub = _hubs[loop] = _Hub()
    return hub


@contextlib.asynccontextmanager
async def watching(topic: str) -> AsyncIterator[asyncio.Event]:
    """An Event set when `topic` is signalled from now on (clear it to wait again). Read
    what is there inside the block, then wait on the event."""
    hub = _hub()
    await hub.acquire()
    event = asyncio.Event()
    hub.waiters[topic].add(event)
    try:
        yield event
    finally:
        waiters = hub.waiters[topic]
        waiters.discard(event)
        if not waiters:
            del hub.waiters[topic]
        await hub.release()


def waiting(topic: str) -> bool:
    """Whether any loop of this process has a waiter on `topic` (tests: the wait began)."""
    return any(topic in hub.waiters for hub in list(_hubs.values()))
