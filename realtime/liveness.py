"""Each ASGI process proves it is alive, and the survivors clean up after one that is not.

A process (one event loop) renews `process_key(pid)` every LIVENESS_BEAT_SECONDS with a TTL
of LIVENESS_TTL_SECONDS, and lists its sockets in `process_sockets_key(pid)`. The renewal
runs on a thread of its own, as long as the loop has made progress within
LIVENESS_STALL_SECONDS: a loop merely busy for seconds (a reconnect storm on a loaded host)
would otherwise be taken for dead, and the survivors would release its thousands of sockets,
which reconnect and double the storm. A wedged loop is still found, after the stall bound. A process
killed with SIGKILL says no goodbye: its key runs out, and the first survivor to notice
claims the clean-up (SET NX, so exactly one does it; a claimer that dies too is replaced
once its claim expires). It marks the dead sockets' users offline here, then runs the hooks
the products registered in their `AppConfig.ready` (release CBLINE floors, end video chat
matches and tell the partner, fix member lists). Without this, each of those waited for
its own expiry: 59 s for a floor, about 90 s for presence, forever for a video chat match.

After a Redis restart every key is gone: each process simply writes its own again at its
next beat, and sockets open from then on register as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from . import presence
from .events import PresenceUpdate, send_now
from .keys import (
    epoch_key,
    presence_group,
    process_key,
    process_sockets_key,
    process_sweep_key,
    processes_key,
)
from .redis import get_async_redis, get_redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadSocket:
    channel_name: str
    user_id: int
    show_online: bool


# A hook gets the dead process's id and its sockets (channel name -> DeadSocket).
Hook = Callable[[str, dict[str, DeadSocket]], Awaitable[None]]
_hooks: list[Hook] = []


def on_process_dead(hook: Hook) -> None:
    """Products register their clean-up here, from `AppConfig.ready` (realtime imports no
    product)."""
    if hook not in _hooks:
        _hooks.append(hook)


def _new_pid() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(eq=False)
class Liveness:
    """The liveness of one event loop. Use `current()`."""

    pid: str = field(default_factory=lambda: _new_pid())
    task: asyncio.Task[None] | None = None
    swept: int = 0  # dead processes this one cleaned up (tests, operators)
    stopping: bool = False
    epoch: str = ""  # of the Redis we last beat on (keys.epoch_key)
    # This process's open sockets (consumers with an async `state_lost()`) -> the epoch
    # their state was written in.
    local: weakref.WeakKeyDictionary[Any, str] = field(default_factory=weakref.WeakKeyDictionary)
    loop_seen: float = 0.0  # monotonic time the loop last ran its beat
    halt: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        if self.task is None:
            self.loop_seen = time.monotonic()
            self.task = asyncio.get_running_loop().create_task(self._run())
            threading.Thread(target=self._keep, name="liveness", daemon=True).start()

    def _keep(self) -> None:
        """Renew the key while the loop is making progress (see the module's docstring)."""
        while not self.halt.wait(settings.LIVENESS_BEAT_SECONDS):
            if time.monotonic() - self.loop_seen > settings.LIVENESS_STALL_SECONDS:
                continue  # wedged: let the key run out
            try:
                with get_redis().pipeline(transaction=False) as p:
                    p.set(process_key(self.pid), "1", px=int(settings.LIVENESS_TTL_SECONDS * 1000))
                    p.zadd(processes_key(), {self.pid: time.time()})
                    p.execute()
            except Exception as exc:  # Redis down: the loop's beat logs and recovers
                log.debug("liveness: renewal failed (%r)", exc)

    async def _run(self) -> None:
        while not self.stopping:
            self.loop_seen = time.monotonic()
            try:
                await self.beat()
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Redis down or restarting: keep trying; the next beat re-creates our key.
                # (A cancel that the Redis client turned into an error ends here too, hence
                # the flag.)
                if self.stopping:
                    return
                log.warning("liveness: beat failed (%r)", exc)
            await asyncio.sleep(settings.LIVENESS_BEAT_SECONDS)

    async def beat(self) -> None:
        ttl_ms = int(settings.LIVENESS_TTL_SECONDS * 1000)
        async with get_async_redis().pipeline(transaction=False) as p:
            p.exists(process_sweep_key(self.pid))
            p.set(process_key(self.pid), "1", px=ttl_ms)
            p.zadd(processes_key(), {self.pid: time.time()})
            # Outlives us long enough for a survivor to read it, not forever.
            p.expire(process_sockets_key(self.pid), settings.LIVENESS_SOCKETS_KEEP_SECONDS)
            p.set(epoch_key(), uuid.uuid4().hex, nx=True)
            p.get(epoch_key())
            swept, _, _, _, _, raw_epoch = await p.execute()
        epoch = raw_epoch.decode() if isinstance(raw_epoch, bytes) else str(raw_epoch)
        if swept:
            # This loop stalled past the TTL and a survivor released what our sockets held:
            # start afresh under a new id, every socket reconnecting.
            log.warning("liveness: process %s was declared dead while alive", self.pid)
            async with get_async_redis().pipeline(transaction=False) as p:
                p.delete(process_key(self.pid), process_sockets_key(self.pid))
                p.zrem(processes_key(), self.pid)
                await p.execute()
            self.pid = _new_pid()
            await self.state_lost(keep_epoch=None)
        elif self.epoch and epoch != self.epoch:
            # Redis restarted or was flushed: sockets whose groups and live state were
            # written before are deaf now. Those opened since (already in `epoch`) are fine.
            await self.state_lost(keep_epoch=epoch)
        self.epoch = epoch

    async def state_lost(self, *, keep_epoch: str | None) -> None:
        consumers = [c for c, e in list(self.local.items()) if e != keep_epoch]
        log.warning(
            "liveness: live state lost (epoch %s -> %s); closing %d sockets to reconnect",
            self.epoch,
            keep_epoch,
            len(consumers),
        )
        for consumer in consumers:
            self.local.pop(consumer, None)
            try:
                await consumer.state_lost()
            except Exception:
                log.debug("liveness: could not close a socket", exc_info=True)

    async def sweep(self) -> int:
        """Clean up after every process whose key ran out; returns how many."""
        r = get_async_redis()
        stale = time.time() - settings.LIVENESS_TTL_SECONDS
        candidates = await r.zrangebyscore(processes_key(), "-inf", stale)
        done = 0
        for raw in candidates:
            pid = raw.decode() if isinstance(raw, bytes) else str(raw)
            if pid == self.pid or await r.exists(process_key(pid)):
                continue
            claim = await r.set(process_sweep_key(pid), self.pid, nx=True, ex=30)
            if not claim:
                continue  # another survivor is on it
            await process_dead(pid)
            done += 1
        self.swept += done
        return done

    async def stop(self) -> None:
        self.stopping = True
        self.halt.set()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.task, 5)
            self.task = None


_instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Liveness] = (
    weakref.WeakKeyDictionary()
)


def current() -> Liveness:
    """This event loop's liveness, beating from the first call on."""
    loop = asyncio.get_running_loop()
    live = _instances.get(loop)
    if live is None:
        live = _instances[loop] = Liveness()
        live.start()
    return live


def process_id() -> str:
    return current().pid


async def stop() -> None:
    """Stop this loop's beat (tests; a process that is shutting down)."""
    live = _instances.pop(asyncio.get_running_loop(), None)
    if live is not None:
        await live.stop()


def local_add(consumer: Any, epoch: str) -> None:
    current().local[consumer] = epoch


def local_discard(consumer: Any) -> None:
    current().local.pop(consumer, None)


def socket_entry(user_id: int, show_online: bool) -> str:
    return json.dumps({"u": user_id, "s": int(show_online)})


async def process_dead(pid: str) -> None:
    """Everything a dead process's sockets held: presence here, the rest in the hooks."""
    r = get_async_redis()
    raw = await r.hgetall(process_sockets_key(pid))
    sockets: dict[str, DeadSocket] = {}
    for name, value in raw.items():
        entry = json.loads(value)
        channel_name = name.decode() if isinstance(name, bytes) else name
        sockets[channel_name] = DeadSocket(channel_name, int(entry["u"]), bool(entry["s"]))
    log.warning("liveness: process %s is gone; releasing its %d sockets", pid, len(sockets))
    for sock in sockets.values():
        try:
            if await presence.socket_down(sock.user_id, sock.channel_name) and sock.show_online:
                await send_now(
                    presence_group(sock.user_id), PresenceUpdate(user_id=sock.user_id, online=False)
                )
        except Exception:
            log.exception("liveness: presence of user %s not corrected", sock.user_id)
    for hook in list(_hooks):
        try:
            await hook(pid, sockets)
        except Exception:
            log.exception("liveness: clean-up hook %r failed for process %s", hook, pid)
    async with r.pipeline(transaction=False) as p:
        p.delete(process_sockets_key(pid))
        p.zrem(processes_key(), pid)
        await p.execute()
