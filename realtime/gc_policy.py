"""Garbage collection for ASGI processes that hold thousands of sockets.

Each open WebSocket keeps about 250-300 GC-tracked objects alive (the server's protocol, the
middleware's scope copies, the consumer, its tasks and futures). CPython runs a full
collection whenever the objects promoted to the oldest generation reach a quarter of it,
and a full collection walks every one of them with the event loop stopped. Measured with
benchmarks/ptt_fanout.py on 2 cores: 500 sockets a process, 40-50 ms pauses; 1,500 sockets,
130-290 ms pauses every 1.5-2 s while sockets join, and every ~10 s in steady talk. Each
pause delays every audio packet in flight: it was the whole p99.

So: objects made while importing are frozen (never scanned again); young collections run as
usual (they only look at young objects: a few ms); full collections run on a schedule
instead of whenever the heuristic fires, one pause per `ASGI_GC_FULL_SECONDS` (default 60),
which is what frees reference cycles (closed sockets' consumers, exceptions) in the oldest
generation. A collection that falls due while a product is in the middle of something the
pause would be heard in (CBLINE: a transmission on this process) waits for a quiet moment,
at most `ASGI_GC_MAX_DEFER_SECONDS` (default 60).

What survives a scheduled collection is frozen too (mostly the open sockets), so the next
one walks only what was promoted since, and only every `FULL_WALK_EVERY`-th unfreezes and
walks everything (a cycle that died after it was frozen, a closed socket's, waits until
then). Walking every open socket each minute was a 0.2-0.6 s pause at 1,000-2,000 video
chat sockets a process: the p99 of a 500 arrivals/s matchmaking step whenever it fell in
it (benchmarks/matchmaking.py, profiled). Video chat has no quiet moment to wait for.
"""

from __future__ import annotations

import asyncio
import gc
import logging
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
    runs = 0
    while True:
        await asyncio.sleep(interval)
        deadline = time.monotonic() + _max_defer
        # Polled: "busy" is computed from the owners' state, nobody signals its end.
        while time.monotonic() < deadline and any(b.gc_should_wait() for b in list(_busy)):  # noqa: ASYNC110
            await asyncio.sleep(QUIET_POLL_SECONDS)
        runs += 1
        walk_all = runs % FULL_WALK_EVERY == 0
        started, cpu = time.perf_counter(), time.process_time()
        if walk_all:
            gc.unfreeze()
        freed = gc.collect()
        gc.freeze()  # the survivors are long-lived: not walked again until the next walk_all
        ms = (time.perf_counter() - started) * 1e3
        # Operators want to hear of pauses long enough to matter, not of every collection.
        # The CPU beside the wall time: on a busy machine the pause is mostly waiting.
        (log.info if ms > 50 else log.debug)(
            "scheduled %s gc: %d unreachable, %d frozen, %.1f ms (%.1f ms CPU)",
            "full" if walk_all else "oldest-generation",
            freed,
            gc.get_freeze_count(),
            ms,
            (time.process_time() - cpu) * 1e3,
        )
