"""One Redis connection pool per process (sync) and per event loop (asyncio).

redis.asyncio connections belong to the loop that made them, so the async client is cached
per running loop; daphne and uvicorn run one loop, tests may run many.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

_sync_client: redis.Redis | None = None
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def _pool_kwargs() -> dict[str, Any]:
    return {"max_connections": settings.REDIS_MAX_CONNECTIONS, "health_check_interval": 30}


def get_redis() -> redis.Redis:
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(settings.REDIS_URL, **_pool_kwargs())
    return _sync_client


def get_async_redis() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = aioredis.Redis.from_url(settings.REDIS_URL, **_pool_kwargs())
        _async_clients[loop] = client
    return client
