"""Django's Redis cache, scoped to its own keys.

One Redis holds the cache, the channel layer, the Celery broker and every product's live state
(floors, queues, presence). Django's `RedisCache.clear()` is a FLUSHDB: one call (a test
helper, an admin action, a library) would wipe all of it. Here `clear()` deletes the keys under
the cache's KEY_PREFIX only."""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache


class ScopedRedisCache(RedisCache):
    def clear(self) -> None:
        client: Any = self._cache.get_client(None, write=True)
        # KEY_FUNCTION makes "<prefix>:<version>:<key>"; without a prefix, ":<version>:<key>".
        pattern = f"{self.key_prefix}:*" if self.key_prefix else ":*"
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
