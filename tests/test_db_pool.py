"""PostgreSQL connections come from a pool per process: the ASGI handler runs each HTTP
request in a thread of its own, so without one every request opened a new backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.testing import HttpCommunicator
from django.conf import settings
from django.db import connection
from django.db.backends.signals import connection_created

from config.asgi import application
from tests.conftest import session_cookie_for
from tests.factories import UserFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3",
        reason="the pool is PostgreSQL's (SQLite connects in-process)",
    ),
]

REQUESTS = 24


def test_http_requests_share_at_most_pool_size_backends() -> None:
    cookie = session_cookie_for(UserFactory())
    backends: set[int] = set()

    def seen(sender: Any, connection: Any, **kwargs: Any) -> None:
        backends.add(connection.connection.info.backend_pid)

    async def whoami() -> int:
        comm = HttpCommunicator(
            application,
            "GET",
            "/messaging/_matrix/client/v3/account/whoami",
            headers=[(b"host", b"127.0.0.1"), (b"cookie", f"sessionid={cookie}".encode())],
        )
        # 24 requests through a pool of 8 queue for a backend: on a loaded 2-core machine the
        # last waits well past the communicator's 1 s default, which is not what this tests.
        status = (await comm.get_response(timeout=30))["status"]
        # The handler's request_finished (which closes) runs after the body.
        await comm.wait(timeout=30)
        return status

    async def many() -> list[int]:
        return await asyncio.gather(*(whoami() for _ in range(REQUESTS)))

    connection_created.connect(seen)
    try:
        statuses = asyncio.run(many())
    finally:
        connection_created.disconnect(seen)
    assert statuses == [200] * REQUESTS
    # Every request connected (the signal fired per request), through at most the pool.
    assert backends
    pool = connection.settings_dict["OPTIONS"].get("pool") or {}
    assert len(backends) <= pool.get("max_size", 8) < REQUESTS
