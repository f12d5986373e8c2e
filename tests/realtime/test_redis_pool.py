"""A process's asyncio Redis pool is bounded and waits: a burst of concurrent commands (a
backlog under overload, a mass reconnect) shares REDIS_ASYNC_POOL_SIZE connections instead
of opening one per command in flight. Unbounded, the pool grew with the backlog (one
uvicorn process went from ~30 to ~390 connections during one step of
benchmarks/matchmaking.py's end-to-end mode, and a third of its samples were in making
connections: redis-py's version lookup, a TCP handshake and CLIENT SETINFO for each), so
an overloaded process slowed itself down further. Nothing is refused meanwhile."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from realtime.keys import key as redis_key
from realtime.redis import get_async_redis


def own_redis_connections() -> int:
    """Established TCP connections from this process to the Redis server's port."""
    port = urlsplit(settings.REDIS_URL).port or 6379
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:
                count += 1
    return count


async def test_a_burst_of_commands_waits_for_a_bounded_pool(settings) -> None:  # type: ignore[no-untyped-def]
    assert urlsplit(settings.REDIS_URL).scheme == "redis", "the count reads TCP connections"
    settings.REDIS_ASYNC_POOL_SIZE = 4
    r = get_async_redis()  # this test's event loop gets its own client, built now
    counter = redis_key("test", "pool-burst")
    await r.ping()
    before = own_redis_connections()
    results = await asyncio.gather(*(r.incr(counter) for _ in range(300)))
    assert sorted(results) == list(range(1, 301))  # every command ran, none refused
    assert own_redis_connections() - before <= 4 - 1  # the ping's connection is reused
