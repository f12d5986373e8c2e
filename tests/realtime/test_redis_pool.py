"""A process's Redis connections open without redis-py's CLIENT SETINFO. redis-py otherwise
read its own version from the package metadata for every new connection (0.3 ms of CPU)
and sent two more commands (refused by Redis before 7.2); an overloaded process opens
connections by the hundred as its backlog grows (one uvicorn process went from ~30 to ~390
in one step of benchmarks/matchmaking.py's end-to-end mode, a third of its samples making
connections), so that cost landed exactly when it had no time to spare. redis-py's version
lookup is watched at its boundary; a burst is still served in full."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.utils
from channels.layers import get_channel_layer

from realtime.keys import key as redis_key
from realtime.redis import get_async_redis


@pytest.fixture
def version_lookups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each time redis-py looks its own version up (it does so to send CLIENT SETINFO)."""
    seen: list[int] = []
    lookup = redis.utils.get_lib_version

    def counting() -> Any:
        seen.append(1)
        return lookup()

    monkeypatch.setattr(redis.utils, "get_lib_version", counting)
    return seen


async def test_a_burst_opens_connections_without_setinfo(version_lookups: list[int]) -> None:
    r = get_async_redis()  # this test's event loop gets its own client, built now
    counter = redis_key("test", "burst")
    results = await asyncio.gather(*(r.incr(counter) for _ in range(300)))
    assert sorted(results) == list(range(1, 301))  # every command served, none refused
    assert version_lookups == []


async def test_the_channel_layer_opens_connections_without_setinfo(
    version_lookups: list[int],
) -> None:
    """The channel layer's own pool too: a reconnect storm opened its connections by the
    hundred, and the version lookups were 12 % of a server's event loop (reconnect_storm.py)."""
    layer = get_channel_layer()
    group = "test-burst"
    names = [await layer.new_channel() for _ in range(50)]
    await asyncio.gather(*(layer.group_add(group, name) for name in names))
    await asyncio.gather(*(layer.group_discard(group, name) for name in names))
    assert version_lookups == []
