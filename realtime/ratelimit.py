"""Token buckets. `allow` keeps the bucket in Redis, shared by all of a user's sockets on every
process; `LocalBucket` is for one socket's hot path (audio frames), where a Redis round trip
per packet would cost more than the packet."""

from __future__ import annotations

import time

from .redis import get_async_redis, get_redis

# KEYS[1] bucket; ARGV: capacity, refill per second, cost, now (seconds, float).
# Stores tokens and the time of the last refill; expires once it would be full again.
_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
end
redis.call('HSET', KEYS[1], 't', tokens, 'ts', now)
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 1)
return allowed
"""


def allow(key: str, *, capacity: int, per_second: float, cost: int = 1) -> bool:
    r = get_redis()
    return bool(r.eval(_BUCKET_LUA, 1, key, capacity, per_second, cost, time.time()))


async def allow_async(key: str, *, capacity: int, per_second: float, cost: int = 1) -> bool:
    r = get_async_redis()
    result = await r.eval(_BUCKET_LUA, 1, key, capacity, per_second, cost, time.time())  # type: ignore[misc]
    return bool(result)


class LocalBucket:
    def __init__(self, capacity: float, per_second: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.tokens = capacity
        self.stamp = time.monotonic()

    def allow(self, cost: float = 1.0) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.per_second)
        self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False
