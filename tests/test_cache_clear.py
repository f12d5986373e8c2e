"""The cache shares its Redis with the channel layer, Celery and live state: clearing it must
remove its own keys only (Django's RedisCache.clear() is a FLUSHDB)."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

from realtime.redis import get_redis


def test_cache_clear_removes_only_the_caches_keys():
    r = get_redis()
    bystander = settings.REDIS_KEY_PREFIX + "voice:live-state"
    other_run = "another-app:key"
    r.set(bystander, "1")
    r.set(other_run, "1")
    try:
        cache.set("k", "v")
        cache.set("k", "v2", version=3)
        cache.clear()
        assert cache.get("k") is None and cache.get("k", version=3) is None
        assert r.get(bystander) == b"1" and r.get(other_run) == b"1"
    finally:
        r.delete(bystander, other_run)
