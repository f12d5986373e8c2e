"""Database calls from async code on a few threads at once instead of Channels' one.

`channels.db.database_sync_to_async` is thread-sensitive: every ORM call of a process runs
on one thread, one round trip at a time. In a reconnect storm the sockets' session reads,
connection-log inserts and channel admissions queued there behind each other, the thread
waiting on PostgreSQL (benchmarks/reconnect_storm.py, profiled: the database thread busy
77 % of the storm, half of it in psycopg's wait). A call that needs no thread affinity (a
short unit of work on the thread's own connection, committed or read-only when it returns:
no transaction spans two calls) runs here instead, up to DB_POOL_THREADS at a time: the
CBLINE joins and presses, the session read of every socket, and the durable stream's fetch,
ack and send (realtime/stream_socket.py, messaging/consumers.py). Each
thread keeps its own connection between calls (see IDLE_CHECK_SECONDS).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import functools
import os
import queue
import select
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

import psycopg
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import connections

P = ParamSpec("P")
R = TypeVar("R")

try:  # asgiref 3.10+: a Local's data is tagged with its thread
    from asgiref.local import _rehome, _Storage
except ImportError:  # older: the copied context is enough
    _Storage = None  # type: ignore[misc,assignment]


# A thread keeps its connection between calls (a pooled connection taken per call cost a
# health-check round trip and the pool's bookkeeping each time: a tenth of a CallsApp
# server's CPU). One idle longer than this is checked before its next use (a database
# restarted meanwhile); one older than DB_POOL_KEEP_SECONDS goes back to the pool.
IDLE_CHECK_SECONDS = 1.0
_local = threading.local()


def _before_call() -> None:
    now = time.monotonic()
    idle = now - getattr(_local, "last_used", now)
    for conn in connections.all(initialized_only=True):
        raw = conn.connection
        if raw is None:
            continue
        # A server that closed or reset the connection (a restart, a cut) left the socket
        # readable: a zero-timeout poll sees it at the cost of a syscall, not a round trip.
        if (idle > IDLE_CHECK_SECONDS or _readable(raw)) and not conn.is_usable():
            conn.close()
    _local.last_used = now


def _readable(raw: Any) -> bool:
    """Whether an idle PostgreSQL connection has anything to read (it should have nothing:
    something there is the server's goodbye, or a reset)."""
    pgconn = getattr(raw, "pgconn", None)
    if pgconn is None:
        return False  # SQLite: no server
    try:
        ready, _, _ = select.select([pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True  # no socket any more
    return bool(ready)


def _after_call() -> None:
    keep = settings.DB_POOL_KEEP_SECONDS
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        if getattr(conn, "_pool_thread_kept", None) is not conn.connection:
            # Newly connected (CONN_MAX_AGE 0 set close_at to now): keep it a while instead.
            conn._pool_thread_kept = conn.connection  # type: ignore[attr-defined]
            conn.close_at = time.monotonic() + keep
        # Closes it on a failed transaction state, errors it cannot survive, or age.
        conn.close_if_unusable_or_obsolete()
    _local.last_used = time.monotonic()


def pool_call_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop of the pooled call running on this thread (None elsewhere)."""
    return getattr(_local, "loop", None)


# The hand-off is our own rather than asgiref's SyncToAsync on a ThreadPoolExecutor: that
# one cost a CallsApp server 11-13 % of its CPU (profiled at 700 msg/s: the context copied
# back and forth var by var, the executor's future chained to the loop's and shielded, a
# wake-up of the loop per result). Here a call is one tuple on a queue; its result comes
# back to the caller's loop with the other results that finished meanwhile, in one wake-up.
# What SyncToAsync gave the call is kept: the caller's contextvars (Django's Locals among
# them, re-homed to the thread as asgiref does) and, for async_to_sync inside the call, the
# caller's loop. Unlike SyncToAsync, contextvars the call sets stay in the call.
_calls: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
_threads: list[threading.Thread] = []
_idle = 0  # threads waiting for a call; under _idle_lock
_idle_lock = threading.Lock()
_shutdown = False


def _submit(item: tuple[Any, ...]) -> None:
    global _idle
    if _shutdown:
        raise RuntimeError("the database pool has shut down (the interpreter is exiting)")
    _calls.put(item)
    with _idle_lock:
        if _idle:
            _idle -= 1  # that thread takes it (or another that went idle meanwhile)
            return
        if len(_threads) >= max(1, settings.DB_POOL_THREADS):
            return  # queued for the next thread that is done
        thread = threading.Thread(target=_work, name=f"db-pool_{len(_threads)}")
        _threads.append(thread)
    thread.start()


def _exit() -> None:
    """At the interpreter's exit, as a ThreadPoolExecutor's threads: the calls under way and
    queued finish (their commits and on-commit sends) before the threads end."""
    global _shutdown
    _shutdown = True
    for _ in _threads:
        _calls.put(None)
    for thread in _threads:
        thread.join()


threading._register_atexit(_exit)  # type: ignore[attr-defined]  # before threads are joined


def _work() -> None:
    threadlocal = SyncToAsync.threadlocal
    threadlocal.main_event_loop_pid = os.getpid()
    threadlocal.task_context = None
    while True:
        item = _calls.get()
        if item is None:
            return
        _run(threadlocal, *item)
        del item  # not kept while waiting for the next call


def _done() -> None:
    """Before a call's result goes back: the thread counts as idle already, or the caller's
    next call, made at once, would find none and start another (one more connection)."""
    global _idle
    with _idle_lock:
        if _calls.empty():
            _idle += 1
        # Else a call queued while no thread was counted idle: taken without counting.


def _run(
    threadlocal: Any,
    loop: Any,
    future: Any,
    context: contextvars.Context | None,
    func: Callable[..., Any],
    args: Any,
    kwargs: Any,
) -> None:
    if loop is None:  # release_connections(): a plain task
        try:
            value = func()
        except BaseException as exc:
            _done()
            future.set_exception(exc)
        else:
            _done()
            future.set_result(value)
        return
    threadlocal.main_event_loop = loop  # async_to_sync in the call runs on the caller's
    try:
        value = context.run(_call, loop, func, args, kwargs)  # type: ignore[union-attr]
    except BaseException as exc:
        if isinstance(exc, StopIteration):  # a future cannot hold one
            exc = RuntimeError("StopIteration from a pooled call")
        threadlocal.main_event_loop = None
        _done()
        _results_of(loop).add(loop, future, False, exc)
    else:
        threadlocal.main_event_loop = None
        _done()
        _results_of(loop).add(loop, future, True, value)


def _call(loop: Any, func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    if _Storage is not None:
        # asgiref's Locals ignore data of another thread's (translation.activate, urlconf):
        # moved here on purpose, as SyncToAsync moves them.
        context = contextvars.copy_context()
        for var, value in context.items():
            if type(value) is _Storage:
                var.set(_rehome(value))
    _before_call()
    _local.loop = loop
    try:
        return func(*args, **kwargs)
    finally:
        _local.loop = None
        try:
            _after_call()
        except Exception:
            # The check itself failed (or, in tests, database access was blocked again
            # when the call outlived its test): close outright rather than keep it.
            connections.close_all()
            raise


class _Results:
    """Results finished on the threads for one event loop's callers, handed over in one
    wake-up of the loop however many finished before it ran."""

    __slots__ = ("done", "scheduled")

    def __init__(self) -> None:
        self.done: collections.deque[tuple[asyncio.Future[Any], bool, Any]] = collections.deque()
        self.scheduled = False

    def add(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], ok: bool, value: Any
    ) -> None:
        self.done.append((future, ok, value))
        if not self.scheduled:  # read after the append: a hand-over under way sees it
            self.scheduled = True
            try:
                loop.call_soon_threadsafe(self.hand_over)
            except RuntimeError:
                self.done.clear()  # the loop is closed: nobody awaits these any more

    def hand_over(self) -> None:
        self.scheduled = False  # cleared before taking: one added later schedules again
        done = self.done
        while done:
            future, ok, value = done.popleft()
            if future.done():
                continue  # the caller was cancelled
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


_results: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Results] = (
    weakref.WeakKeyDictionary()
)
_results_lock = threading.Lock()


def _results_of(loop: asyncio.AbstractEventLoop) -> _Results:
    results = _results.get(loop)
    if results is None:
        with _results_lock:
            results = _results.get(loop)
            if results is None:
                results = _results[loop] = _Results()  # not the loop: a weak key
    return results


def _reset_after_fork() -> None:
    global _calls, _idle, _idle_lock, _results_lock
    _calls = queue.SimpleQueue()
    _threads.clear()
    _idle = 0
    _idle_lock = threading.Lock()  # held by a thread of the parent's, perhaps
    _results.clear()
    _results_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def release_connections() -> None:
    """Every pool thread closes its connection (back to its pool): tests, before they drop
    the pool or the database. Each thread takes one task; the barrier makes them all."""
    threads = len(_threads)
    if not threads:
        return
    barrier = threading.Barrier(threads)

    def close() -> None:
        barrier.wait(timeout=30)
        connections.close_all()

    futures: list[concurrent.futures.Future[None]] = []
    for _ in range(threads):
        futures.append(concurrent.futures.Future())
        _submit((None, futures[-1], None, close, (), {}))
    for future in futures:
        future.result(timeout=30)


# One wrapper per function, as the sockets call the same few functions for every frame.
_wrappers: dict[Callable[..., Any], Callable[..., Any]] = {}


def pooled(func: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`await pooled(f)(...)`: `database_sync_to_async(f)(...)` on the pool."""
    known = _wrappers.get(func)
    if known is None:

        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            _submit((loop, future, contextvars.copy_context(), func, args, kwargs))
            return await future

        if len(_wrappers) < 1024:  # bound, should a caller pass partials or closures
            _wrappers[func] = wrapper
        known = wrapper
    return known  # type: ignore[return-value]
