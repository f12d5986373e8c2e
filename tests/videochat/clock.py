"""Matchmaking's clock in tests: time passes for its state without waiting for it.
Imports nothing of Django at module level: test modules that import it are also imported
by the spawned processes of the cross-process tests, before Django is set up."""

from __future__ import annotations

# Time passing for matchmaking, without waiting for it: every time the state holds (the
# deadlines, the arrival times, the averages' last update) moves `ARGV[1]` ms into the past,
# which is what the script sees when its clock (Redis TIME) has moved that far ahead.
_ADVANCE = """
local IDX, WAIT, TTL, STATS = KEYS[1], KEYS[2], KEYS[5], KEYS[6]
local shift = tonumber(ARGV[1])
local function earlier(arrival)
  local us = tonumber(string.sub(arrival, 1, 10)) * 1000000 + tonumber(string.sub(arrival, 11))
  us = us - shift * 1000
  return string.format('%010d%06d', math.floor(us / 1000000), us % 1000000)
end
local deadlines = redis.call('ZRANGE', TTL, 0, -1, 'WITHSCORES')
for i = 1, #deadlines, 2 do
  redis.call('ZADD', TTL, tonumber(deadlines[i + 1]) - shift, deadlines[i])
end
local waiting = redis.call('HGETALL', WAIT)
for i = 1, #waiting, 2 do
  local raw = waiting[i + 1]
  local bar = string.find(raw, '|', 1, true)
  redis.call('HSET', WAIT, waiting[i], earlier(string.sub(raw, 1, bar - 1)) .. string.sub(raw, bar))
end
for _, member in ipairs(redis.call('ZRANGE', IDX, 0, -1)) do
  local bucket, arrival, uid = string.match(member, '^([^|]*)|([^|]*)|(.*)$')
  redis.call('ZREM', IDX, member)
  redis.call('ZADD', IDX, 0, bucket .. '|' .. earlier(arrival) .. '|' .. uid)
end
local stats = redis.call('HGETALL', STATS)
for i = 1, #stats, 2 do
  local ewma, updated = string.match(stats[i + 1], '^([^|]*)|(.*)$')
  local moved = string.format('%.0f', tonumber(updated) - shift)
  redis.call('HSET', STATS, stats[i], ewma .. '|' .. moved)
end
return 1
"""


async def advance_matchmaking_clock(seconds: float) -> None:
    """Matchmaking as it will be `seconds` from now: deadlines due by then are past."""
    from realtime.redis import get_async_redis
    from videochat import matchmaking as mm

    keys = mm.state_keys()
    await get_async_redis().eval(_ADVANCE, len(keys), *keys, round(seconds * 1000))  # type: ignore[misc]


async def waiting_deadline_ahead(user_id: int, seconds: float = 0.0) -> bool:
    """Whether the user's waiting entry is alive by the script's clock (Redis TIME) for at
    least `seconds` more."""
    from realtime.redis import get_async_redis
    from videochat import matchmaking as mm

    r = get_async_redis()
    deadline = await r.zscore(mm.state_keys()[4], f"w:{user_id}")
    now_s, micros = await r.time()
    return deadline is not None and deadline > now_s * 1000 + micros // 1000 + seconds * 1000
