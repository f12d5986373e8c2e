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
import select
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import psycopg
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import connections

P = ParamSpec("P")
R = TypeVar("R")

_executor = ThreadPoolExecutor(
    max_workers=max(1, settings.DB_POOL_THREADS), thread_name_prefix="db-pool"
)


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


class _PooledCall(SyncToAsync):
    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        _before_call()
        _local.loop = loop
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            _local.loop = None
            try:
                _after_call()
            except Exception:
                # The check itself failed (or, in tests, database access was blocked again
                # when the call outlived its test): close outright rather than keep it.
                connections.close_all()
                raise


def release_connections() -> None:
    """Every pool thread closes its connection (back to its pool): tests, before they drop
    the pool or the database. Each thread takes one task; the barrier makes them all."""
    threads = len(_executor._threads)
    if not threads:
        return
    barrier = threading.Barrier(threads)

    def close() -> None:
        barrier.wait(timeout=30)
        connections.close_all()

    for future in [_executor.submit(close) for _ in range(threads)]:
        future.result(timeout=30)


# One wrapper per function: building a SyncToAsync (signature inspection, wrapper update)
# cost as much CPU as its call, and the sockets call the same few functions for every frame.
_wrappers: dict[Callable[..., Any], _PooledCall] = {}


def pooled(func: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`await pooled(f)(...)`: `database_sync_to_async(f)(...)` on the pool."""
    wrapper = _wrappers.get(func)
    if wrapper is None:
        wrapper = _PooledCall(func, thread_sensitive=False, executor=_executor)
        if len(_wrappers) < 1024:  # bound, should a caller pass partials or closures
            _wrappers[func] = wrapper
    return wrapper  # type: ignore[return-value]
