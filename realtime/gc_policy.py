"""Garbage collection for ASGI processes that hold thousands of sockets.

Each open WebSocket keeps about 250-300 GC-tracked objects alive (the server's protocol, the
middleware's scope copies, the consumer, its tasks and futures). CPython runs a full
collection whenever the objects promoted to the oldest generation reach a quarter of it,
and a full collection walks every one of them with the event loop stopped. Measured with
benchmarks/ptt_fanout.py on 2 cores: 500 sockets a process, 40-50 ms pauses; 1,500 sockets,
130-290 ms pauses every 1.5-2 s while sockets join, and every ~10 s in steady talk. Each
pause delays every audio packet in flight: it was the whole p99.

So: objects made while importing are frozen (never scanned again); young collections run as
usual (they only look at young objects: a few ms); the oldest generation is left to a
schedule, one run per `ASGI_GC_FULL_SECONDS` (default 60). A run that falls due while a
product is in the middle of something the pause would be heard in (CBLINE: a transmission
on this process) waits for a quiet moment, at most `ASGI_GC_MAX_DEFER_SECONDS` (default 60).

A scheduled run collects the young generations and freezes everything else unwalked (the
open sockets, mostly): it walks the young objects only. Every `FULL_WALK_EVERY`-th unfreezes and
walks everything, which frees the reference cycles that died in the oldest generation
meanwhile (closed sockets' consumers, exceptions: they wait up to FULL_WALK_EVERY x the
interval, 10 minutes by default), a 0.2-0.6 s pause at 1,000-2,000 sockets a process.
Walking the oldest generation every minute cost that pause whenever much had come since the
last walk: the first run after the sockets opened walked all of them (330-340 ms of CPU at
2,000 video chat sockets, 2-3 s of wall time on a busy machine, in both processes within
2 s), which fell at the start of the 500 arrivals/s step of benchmarks/matchmaking.py and
was its stall. Video chat has no quiet moment to wait for. Processes started together (a
deploy) would pause together, and a video chat match spans two of them: each process's
schedule starts at a random point of its second interval (60-120 s after its first socket).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
import weakref
from typing import Protocol

log = logging.getLogger(__name__)

# A generation-2 threshold no process reaches: only the scheduled collection runs.
NEVER = 1_000_000_000

QUIET_POLL_SECONDS = 0.05
# One scheduled collection in this many walks every object, frozen ones included.
FULL_WALK_EVERY = 10

_interval = 0.0
_max_defer = 0.0
_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_tasks: set[asyncio.Task[None]] = set()
scheduled_runs = 0  # scheduled collections done in this process (tests, operators)


class Busy(Protocol):
    def gc_should_wait(self) -> bool: ...


_busy: weakref.WeakSet[Busy] = weakref.WeakSet()


def install(full_every_seconds: float, max_defer_seconds: float = 60.0) -> None:
    """Freeze what exists now; schedule full collections (0: leave CPython's defaults)."""
    global _interval, _max_defer
    gc.freeze()
    if full_every_seconds <= 0:
        return
    _interval = full_every_seconds
    _max_defer = max_defer_seconds
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)


def start_in_loop() -> None:
    """Run the scheduled collection in the calling event loop (once per loop; cheap to call
    on every connection). On the loop's own thread, so finalizers run where they expect."""
    if _interval <= 0:
        return
    loop = asyncio.get_running_loop()
    if loop in _loops:
        return
    _loops.add(loop)
    task = loop.create_task(_full_collections(_interval), name="scheduled full gc")
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def defer_while(owner: Busy) -> None:
    """A due collection waits while `owner.gc_should_wait()` (held weakly)."""
    _busy.add(owner)


async def _full_collections(interval: float) -> None:
    global scheduled_runs
    runs = 0
    delay = interval * (1 + random.random())
    loop = asyncio.get_running_loop()  # its clock, as asyncio.sleep's (tests move it)
    while True:
        await asyncio.sleep(delay)
        delay = interval
        deadline = loop.time() + _max_defer
        # Polled: "busy" is computed from the owners' state, nobody signals its end.
        while loop.time() < deadline and any(b.gc_should_wait() for b in list(_busy)):  # noqa: ASYNC110
            await asyncio.sleep(QUIET_POLL_SECONDS)
        runs += 1
        walk_all = runs % FULL_WALK_EVERY == 0
        started, cpu = time.perf_counter(), time.process_time()
        if walk_all:
            gc.unfreeze()
            freed = gc.collect()
        else:
            freed = gc.collect(1)  # the young only: what survives them is long-lived
        gc.freeze()  # not walked again until the next walk_all
        scheduled_runs += 1
        ms = (time.perf_counter() - started) * 1e3
        # Operators want to hear of pauses long enough to matter, not of every collection.
        # The CPU beside the wall time: on a busy machine the pause is mostly waiting.
        (log.info if ms > 50 else log.debug)(
            "scheduled %s gc: %d unreachable, %d frozen, %.1f ms (%.1f ms CPU)",
            "full" if walk_all else "young-generation",
            freed,
            gc.get_freeze_count(),
            ms,
            (time.process_time() - cpu) * 1e3,
        )
