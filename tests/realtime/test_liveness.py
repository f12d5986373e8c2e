"""A process whose event loop is busy for seconds (a reconnect storm on a loaded host, a long
collection) is not taken for dead: its liveness key is renewed by a thread of its own while
the loop still makes progress now and then. One whose loop is wedged past
LIVENESS_STALL_SECONDS, or that is gone, still is (realtime/liveness.py)."""

from __future__ import annotations

import time
from typing import Any

from realtime import liveness
from realtime.keys import process_key, process_sweep_key
from realtime.redis import get_async_redis
from tests.waiting import until


async def beating(live: liveness.Liveness) -> None:
    r = get_async_redis()

    async def first_beat() -> bool:
        return bool(live.epoch and await r.exists(process_key(live.pid)))

    await until(first_beat, what="the first beat")


async def stalled(
    settings: Any, *, ttl: float, stall: float, busy: float
) -> tuple[liveness.Liveness, str]:
    """This loop's liveness once beating, after its loop was busy for `busy` seconds (nothing
    on it runs meanwhile); with the pid it had before."""
    settings.LIVENESS_BEAT_SECONDS = 0.1
    settings.LIVENESS_TTL_SECONDS = ttl
    settings.LIVENESS_STALL_SECONDS = stall
    live = liveness.current()
    await beating(live)
    pid = live.pid
    # Not a wait: the loop must really be blocked (nothing on it runs) while the liveness
    # thread and Redis's TTL go on in real time; that is the situation under test.
    time.sleep(busy)
    return live, pid


async def test_a_loop_busy_for_several_ttls_is_not_declared_dead(settings) -> None:  # type: ignore[no-untyped-def]
    # The loop busy with other work for three TTLs.
    live, pid = await stalled(settings, ttl=1.0, stall=30.0, busy=3.0)
    r = get_async_redis()
    assert await r.exists(process_key(pid)), "the key ran out while the process was alive"
    await liveness.Liveness().sweep()  # a survivor looks for the dead
    assert not await r.exists(process_sweep_key(pid))
    await live.beat()
    assert live.pid == pid  # not declared dead: its sockets were kept


async def test_a_wedged_loop_is_declared_dead_and_starts_afresh(settings) -> None:  # type: ignore[no-untyped-def]
    # Wedged past the stall bound: the thread stops vouching for it.
    live, pid = await stalled(settings, ttl=0.5, stall=0.3, busy=2.0)
    r = get_async_redis()
    assert not await r.exists(process_key(pid))
    await liveness.Liveness().sweep()
    assert await r.exists(process_sweep_key(pid))  # a survivor cleaned up after it
    await live.beat()
    assert live.pid != pid  # back under a new id, its sockets told to reconnect
