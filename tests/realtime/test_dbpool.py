"""realtime.dbpool: socket database calls on a few threads that keep their connections."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from realtime import dbpool
from realtime.dbpool import pooled

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL backends"),
]


def terminate(pids: set[int]) -> None:
    # With a timeout, PostgreSQL returns once the backend has exited, so its goodbye is on
    # the client's socket already; without one, the next call could race the exit.
    with connection.cursor() as cur:
        for pid in pids:
            cur.execute("SELECT pg_terminate_backend(%s, 10000)", [pid])


def backend_pid() -> int:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])


async def test_a_thread_keeps_its_connection_between_calls() -> None:
    dbpool.release_connections()
    pids = {await pooled(backend_pid)() for _ in range(12)}
    # Four threads at most, each on its own connection, reused from call to call.
    assert 1 <= len(pids) <= 4


@pytest.mark.parametrize("idle_check", [0.0, 3600.0])
async def test_a_connection_broken_while_idle_is_replaced_before_the_next_call(
    monkeypatch, idle_check
):
    """Also when it was used a moment ago: the server's goodbye (or a reset) left its socket
    readable, which is checked before every call without a round trip."""
    dbpool.release_connections()
    monkeypatch.setattr(dbpool, "IDLE_CHECK_SECONDS", idle_check)
    pids = {await pooled(backend_pid)() for _ in range(8)}
    await sync_to_async(terminate)(pids)  # the database drops them (a restart, an admin)
    # Every call still succeeds: an idle connection is checked, and replaced, first.
    after = {await pooled(backend_pid)() for _ in range(8)}
    assert after and not (after & pids)


async def test_a_busy_thread_takes_no_connection_from_the_pool_per_call(monkeypatch):
    dbpool.release_connections()
    monkeypatch.setattr(dbpool, "IDLE_CHECK_SECONDS", 3600.0)
    await pooled(backend_pid)()
    before = connection.pool.get_stats()["requests_num"]
    for _ in range(10):
        await pooled(backend_pid)()
    # Each taking meant a health-check round trip and the pool's bookkeeping.
    assert connection.pool.get_stats()["requests_num"] - before <= 3  # the other threads'
