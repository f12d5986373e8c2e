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
thread keeps its own connection, closed when stale exactly as Channels does it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import close_old_connections, connections

P = ParamSpec("P")
R = TypeVar("R")

_executor = ThreadPoolExecutor(
    max_workers=max(1, settings.DB_POOL_THREADS), thread_name_prefix="db-pool"
)


class _PooledCall(SyncToAsync):
    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            try:
                close_old_connections()
            except Exception:
                # The health check itself failed (or, in tests, database access was blocked
                # again when the call outlived its test): a connection left here would stay
                # open for the thread's lifetime, so close it outright.
                connections.close_all()
                raise


def pooled(func: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """`await pooled(f)(...)`: `database_sync_to_async(f)(...)` on the pool."""
    return _PooledCall(func, thread_sensitive=False, executor=_executor)  # type: ignore[return-value]
