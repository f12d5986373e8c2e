"""Token buckets. `allow` keeps the bucket in Redis, shared by all of a user's sockets on every
process; `LocalBucket` is for one socket's hot path (audio frames), where a Redis round trip
per packet would cost more than the packet."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from redis.exceptions import NoScriptError

from .fanout import RespConnection, Script, run_script
from .redis import get_async_redis, get_redis

# Refills follow Redis's own clock: callers' clocks differ between hosts, and a call's time
# read before it reached Redis would store an older refill time than the last one and count
# the same interval twice (a concurrent flood minted tokens that way).
_NOW_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
"""
# KEYS[1] bucket; ARGV: capacity, refill per second, cost.
# Stores tokens and the time of the last refill; expires once it would be full again.
_BUCKET_LUA = (
    _NOW_LUA
    + """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
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
)
_BUCKET_SCRIPT = Script.of(_BUCKET_LUA)

# For a script of the caller's that also takes a frame's rate tokens in its own step (a CBLINE
# press: one round trip, not two): `lease(key, capacity, rate, size)` takes `size` tokens of
# the bucket, else one (LeasedTokens' fallback), and returns how many it took (0: refused).
LEASE_LUA = (
    _NOW_LUA
    + """
local function lease(key, capacity, rate, size)
  local state = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(state[1]) or capacity
  local ts = tonumber(state[2]) or now
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
  local taken = 0
  if tokens >= size then taken = size elseif tokens >= 1 then taken = 1 end
  redis.call('HSET', key, 't', tokens - taken, 'ts', now)
  redis.call('EXPIRE', key, math.ceil(capacity / rate) + 1)
  return taken
end
"""
)

# One round trip for a connect: KEYS user bucket, IP bucket, the user's presence set (live
# sockets scored by expiry). ARGV: the caller's now (for the presence scores, which the
# callers write), user capacity, user rate, IP capacity, IP rate, socket cap, whether there is
# an IP. Tokens are taken only when all three checks pass, so a refused flood never drains
# anyone's bucket further. Returns 0 (admit), 1 (user rate),
# 2 (IP rate) or 3 (too many sockets). CONNECT_CHECK_LUA, everything but the admitting
# reply, also opens realtime.opening's script (a connect's other writes follow it there).
CONNECT_CHECK_LUA = (
    _NOW_LUA
    + """
local function refill(key, capacity, rate)
  local state = redis.call('HMGET', key, 't', 'ts')
  local tokens = tonumber(state[1]) or capacity
  local ts = tonumber(state[2]) or now
  return math.min(capacity, tokens + math.max(0, now - ts) * rate)
end
local function take(key, tokens, capacity, rate)
  redis.call('HSET', key, 't', tokens - 1, 'ts', now)
  redis.call('EXPIRE', key, math.ceil(capacity / rate) + 1)
end
local ucap, urate = tonumber(ARGV[2]), tonumber(ARGV[3])
local icap, irate = tonumber(ARGV[4]), tonumber(ARGV[5])
local user_tokens = refill(KEYS[1], ucap, urate)
if user_tokens < 1 then return 1 end
local ip_tokens = icap
if ARGV[7] == '1' then
  ip_tokens = refill(KEYS[2], icap, irate)
  if ip_tokens < 1 then return 2 end
end
if redis.call('ZCOUNT', KEYS[3], ARGV[1], '+inf') >= tonumber(ARGV[6]) then return 3 end
take(KEYS[1], user_tokens, ucap, urate)
if ARGV[7] == '1' then take(KEYS[2], ip_tokens, icap, irate) end
"""
)
_CONNECT_LUA = CONNECT_CHECK_LUA + "return 0\n"
_CONNECT_SCRIPT = Script.of(_CONNECT_LUA)


async def connect_check(
    *,
    user_key: str,
    ip_key: str | None,
    sockets_key: str,
    user_limit: tuple[int, float],
    ip_limit: tuple[int, float],
    max_sockets: int,
) -> int:
    """See _CONNECT_LUA: 0 admits the connect (and takes its tokens)."""
    r = get_async_redis()
    args = (
        3,
        user_key,
        ip_key or user_key,
        sockets_key,
        time.time(),
        *user_limit,
        *ip_limit,
        max_sockets,
        "1" if ip_key else "0",
    )
    # By its SHA1: a reconnect storm's every connect sent the whole source (and Redis, on
    # the same cores, hashed it again each time).
    try:
        result = await r.evalsha(_CONNECT_SCRIPT.sha.decode(), *args)  # type: ignore[misc]
    except NoScriptError:  # a new or flushed server
        result = await r.eval(_CONNECT_LUA, *args)  # type: ignore[misc]
    return int(result)


def allow(key: str, *, capacity: int, per_second: float, cost: int = 1) -> bool:
    r = get_redis()
    return bool(r.eval(_BUCKET_LUA, 1, key, capacity, per_second, cost))


async def allow_async(key: str, *, capacity: int, per_second: float, cost: int = 1) -> bool:
    r = get_async_redis()
    result = await r.eval(_BUCKET_LUA, 1, key, capacity, per_second, cost)  # type: ignore[misc]
    return bool(result)


async def allow_on(
    conn: RespConnection, key: str, *, capacity: int, per_second: float, cost: int = 1
) -> bool:
    """`allow_async` on a realtime.fanout connection (a product's own, for a hot path that
    redis-py's per-command cost would slow)."""
    return bool(await run_script(conn, _BUCKET_SCRIPT, 1, key, capacity, per_second, cost))


class LeasedTokens:
    """A socket's share of its user's bucket in Redis, taken several tokens at a time: one
    round trip per lease, not per frame. Leases start at one token and double with each
    frame that needs a new one, up to `lease` (slow start): a socket that sends one frame
    holds no more than that one, so thirty sockets of one user opened at once (a connect
    burst) each get their first frame through, as they did with a token each; a busy
    socket soon takes `lease` at a time. Refused: one token is tried, and leases start at
    one again."""

    def __init__(self, lease: int) -> None:
        self.lease = lease
        self.credit = 0
        self.size = 1

    async def allow(self, take: Callable[[int], Awaitable[bool]]) -> bool:
        """`take(cost)` takes that many tokens from the user's bucket (False: not there)."""
        if self.credit > 0:
            self.credit -= 1
            return True
        size = self.size
        if await take(size):
            self.credit = size - 1
            self.size = min(self.lease, size * 2)
            return True
        self.size = 1  # fewer left than that
        return size > 1 and await take(1)

    def wanted(self) -> int:
        """For a frame whose tokens are taken in a script of the caller's (LEASE_LUA): 0 when
        one is in hand (spent now), else the lease to ask for; then `settle` what it took."""
        if self.credit > 0:
            self.credit -= 1
            return 0
        return self.size

    def settle(self, asked: int, taken: int) -> bool:
        """LEASE_LUA took `taken` tokens of the `asked` lease (0: refused). True: the frame
        may go, as `allow` would have said."""
        if taken >= asked:
            self.credit = taken - 1
            self.size = min(self.lease, asked * 2)
            return True
        self.size = 1
        self.credit = max(0, taken - 1)
        return taken > 0


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
