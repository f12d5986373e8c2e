"""One Redis connection pool per process (sync) and per event loop (asyncio).

redis.asyncio connections belong to the loop that made them, so the async client is cached
per running loop; daphne and uvicorn run one loop, tests may run many.

The pools block: with all REDIS_MAX_CONNECTIONS in use a command waits up to
REDIS_POOL_TIMEOUT_SECONDS for a free one. redis-py's default pool raised
MaxConnectionsError at once, which closed the sockets of a reconnect storm (1,004 of 5,000 in
benchmarks/reconnect_storm.py). The channel layer's pool is made here too.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import redis
import redis.asyncio as aioredis
import redis.exceptions
from django.conf import settings
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

_sync_client: redis.Redis | None = None
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def _pool_kwargs(retry: type[Retry] | type[AsyncRetry]) -> dict[str, Any]:
    # Health checks and a retry on a fresh connection: after a Redis restart a pooled
    # connection is dead, and the first command on it must not fail the caller.
    return {
        "max_connections": settings.REDIS_MAX_CONNECTIONS,
        "health_check_interval": 10,
        "retry": retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        # No CLIENT SETINFO on a new connection: redis-py read its own version from the
        # package metadata for every connection (0.3 ms of CPU) and then sent two commands
        # (refused by Redis before 7.2). An overloaded process opens connections by the
        # hundred as its backlog grows (one uvicorn process went from ~30 to ~390 in one step
        # of benchmarks/matchmaking.py, a third of its samples making connections), so that
        # cost came exactly when the process had no time to spare.
        "driver_info": None,
    }


def async_blocking_pool(url: str, **kwargs: Any) -> aioredis.BlockingConnectionPool:
    """An asyncio pool whose commands wait for a free connection (the channel layer's too:
    realtime.layers)."""
    return aioredis.BlockingConnectionPool.from_url(
        url, timeout=settings.REDIS_POOL_TIMEOUT_SECONDS, **kwargs
    )


def get_redis() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        pool = redis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, timeout=settings.REDIS_POOL_TIMEOUT_SECONDS, **_pool_kwargs(Retry)
        )
        _sync_client = redis.Redis(connection_pool=pool)
    return _sync_client


def get_async_redis() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        pool = async_blocking_pool(settings.REDIS_URL, **_pool_kwargs(AsyncRetry))
        client = aioredis.Redis.from_pool(pool)
        _async_clients[loop] = client
    return client
