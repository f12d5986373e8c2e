-- Video chat matchmaking: every operation is one atomic step of this script.
--
-- All state lives in six keys that share one Redis Cluster hash tag and are always passed
-- in KEYS, so the script never touches a key it did not declare:
--   KEYS[1] idx    sorted set, every score 0; member "<bucket>|<arrival>|<uid>"
--   KEYS[2] wait   hash uid -> "<arrival>|<g>|<c>|<wg>|<wc>|<channel>|<card>"  (waiting users;
--                  the card, the public JSON a partner is shown, is last: it may hold '|')
--   KEYS[3] pair   hash uid -> "<match_id>|<partner uid>|<partner channel>"  (current pairs)
--   KEYS[4] last   hash uid -> previous partner uid (only so a report can name whom it is about)
--   KEYS[5] ttl    sorted set of deadlines (ms): "w:<uid>" waiting, "p:<uid>" paired,
--                  "l:<uid>" last partner, "s:<lo>:<hi>" a skipped pair
--   KEYS[6] stats  hash filter class -> "<ewma ms>|<updated ms>" of time-to-match
--
-- Why one lexicographic sorted set rather than one sorted set per bucket: a matched partner
-- must leave every bucket it sits in, and those buckets depend on the partner's attributes,
-- known only inside the script. With per-bucket keys the script would touch undeclared keys.
-- Inside one set, equal scores order members by bytes, and the zero-padded arrival time after
-- the bucket name makes "oldest waiting in a bucket" the first member of a ZRANGEBYLEX
-- range: still a constant number of O(log N) lookups per arrival.
--
-- Tokens: gender f|m|x|? (unknown), country XX|? (unknown); wanted gender f|m|*, wanted
-- country XX|*. A waiting user W is indexed under bucket "<G>/<C>/<wg>/<wc>" for G in
-- {W.g, *} and C in {W.c, *}; a seeker S looks up "<S.wg>/<S.wc>/<WG>/<WC>" for WG in
-- {S.g, *} and WC in {S.c, *}. Both sides' filters are thus answered by the bucket name, and
-- a waiting user sits in at most one of a seeker's lookup buckets.
--
-- Time comes from Redis TIME, never from a client clock: arrival order is fair across
-- processes. Deadlines replace per-key EXPIRE (a hash field cannot expire on Redis < 7.4);
-- every step sweeps a few expired ones, and reads check the deadline themselves.

local IDX, WAIT, PAIR, LAST, TTL, STATS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local SWEEP_PER_STEP = 16

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_arrival = string.format('%010d%06d', tonumber(t[1]), tonumber(t[2]))

local function split(s)
  local out, start = {}, 1
  while true do
    local bar = string.find(s, '|', start, true)
    if not bar then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, bar - 1)
    start = bar + 1
  end
end

-- The card of a waiting entry: everything after the sixth '|'.
local function card_of(raw)
  local start = 1
  for _ = 1, 6 do
    local bar = string.find(raw, '|', start, true)
    if not bar then return '' end
    start = bar + 1
  end
  return string.sub(raw, start)
end

local function arrival_ms(arrival)
  return tonumber(string.sub(arrival, 1, 10)) * 1000 + math.floor(tonumber(string.sub(arrival, 11)) / 1000)
end

local function alive(kind, uid)
  local deadline = redis.call('ZSCORE', TTL, kind .. ':' .. uid)
  return deadline and tonumber(deadline) > now_ms
end

local function skip_member(a, b)
  local x, y = tonumber(a), tonumber(b)
  if x > y then x, y = y, x end
  return 's:' .. x .. ':' .. y
end

local function skipped(a, b)
  local deadline = redis.call('ZSCORE', TTL, skip_member(a, b))
  return deadline and tonumber(deadline) > now_ms
end

-- The buckets a waiting user is indexed under. Nobody can want an unknown or "x" gender or an
-- unknown country, so those attribute values are only indexed under "*".
local function own_buckets(g, c, wg, wc)
  local gs = (g == 'f' or g == 'm') and { g, '*' } or { '*' }
  local cs = (c ~= '?') and { c, '*' } or { '*' }
  local out = {}
  for _, gv in ipairs(gs) do
    for _, cv in ipairs(cs) do
      out[#out + 1] = gv .. '/' .. cv .. '/' .. wg .. '/' .. wc
    end
  end
  return out
end

-- The buckets where someone compatible with this seeker waits.
local function lookup_buckets(g, c, wg, wc)
  local wgs = (g == 'f' or g == 'm') and { g, '*' } or { '*' }
  local wcs = (c ~= '?') and { c, '*' } or { '*' }
  local out = {}
  for _, a in ipairs(wgs) do
    for _, b in ipairs(wcs) do
      out[#out + 1] = wg .. '/' .. wc .. '/' .. a .. '/' .. b
    end
  end
  return out
end

-- Remove a waiting user from every bucket; returns their entry fields or nil.
local function remove_waiting(uid)
  redis.call('ZREM', TTL, 'w:' .. uid)
  local raw = redis.call('HGET', WAIT, uid)
  if not raw then return nil end
  local e = split(raw)
  for _, bucket in ipairs(own_buckets(e[2], e[3], e[4], e[5])) do
    redis.call('ZREM', IDX, bucket .. '|' .. e[1] .. '|' .. uid)
  end
  redis.call('HDEL', WAIT, uid)
  return e
end

-- Dissolve uid's pair in both directions; returns {match_id, partner, partner_channel} or nil.
local function dissolve(uid, skip, skip_ttl_ms, last_ttl_ms)
  redis.call('ZREM', TTL, 'p:' .. uid)
  local raw = redis.call('HGET', PAIR, uid)
  if not raw then return nil end
  redis.call('HDEL', PAIR, uid)
  local p = split(raw)
  local match_id, partner = p[1], p[2]
  local back = redis.call('HGET', PAIR, partner)
  if back and split(back)[1] == match_id then
    redis.call('HDEL', PAIR, partner)
    redis.call('ZREM', TTL, 'p:' .. partner)
  end
  redis.call('HSET', LAST, uid, partner, partner, uid)
  redis.call('ZADD', TTL, now_ms + last_ttl_ms, 'l:' .. uid, now_ms + last_ttl_ms, 'l:' .. partner)
  if skip then
    redis.call('ZADD', TTL, now_ms + skip_ttl_ms, skip_member(uid, partner))
  end
  return { match_id, partner, p[3] }
end

-- Forget whatever has passed its deadline (a process that died without dequeuing, a pair
-- nobody ended, a last-partner note or a skip that ran out). Bounded per step.
local function sweep(limit, last_ttl_ms)
  local due = redis.call('ZRANGEBYSCORE', TTL, '-inf', now_ms, 'LIMIT', 0, limit)
  for _, m in ipairs(due) do
    local kind, rest = string.sub(m, 1, 1), string.sub(m, 3)
    if kind == 'w' then
      remove_waiting(rest)
    elseif kind == 'p' then
      dissolve(rest, false, 0, last_ttl_ms)
    elseif kind == 'l' then
      redis.call('HDEL', LAST, rest)
    end
    redis.call('ZREM', TTL, m)
  end
  return #due
end

-- The oldest eligible waiting user in one bucket: not me, still alive, not skipped with me.
-- Dead entries met on the way are collected for removal (removing while paging would shift
-- the offsets). max_scan bounds the work a user who skipped many waiting people can cause.
local function oldest_in(bucket, me, max_scan, dead)
  local lo, hi = '[' .. bucket .. '|', '(' .. bucket .. '}'  -- '}' sorts right after '|'
  local offset = 0
  while offset < max_scan do
    local batch = redis.call('ZRANGEBYLEX', IDX, lo, hi, 'LIMIT', offset, 16)
    if #batch == 0 then return nil end
    for _, m in ipairs(batch) do
      local parts = split(m)
      local arrival, uid = parts[2], parts[3]
      if uid ~= me then
        local raw = redis.call('HGET', WAIT, uid)
        if not raw or split(raw)[1] ~= arrival then
          dead[#dead + 1] = { m, nil }  -- a stray member: drop just that member
        elseif not alive('w', uid) then
          dead[#dead + 1] = { m, uid }  -- its process stopped heartbeating: drop the user
        elseif not skipped(me, uid) then
          return { arrival, uid, raw }
        end
      end
    end
    offset = offset + #batch
  end
  return nil
end

local function record_wait_time(class, waited_ms, alpha)
  local old = redis.call('HGET', STATS, class)
  local value = waited_ms
  if old then
    value = alpha * waited_ms + (1 - alpha) * tonumber(split(old)[1])
  end
  redis.call('HSET', STATS, class, string.format('%.0f|%.0f', value, now_ms))
end

-- The moving average of time-to-match for a filter class, or false (none recent).
local function expected(class, max_age_ms)
  local raw = redis.call('HGET', STATS, class)
  if not raw then return false end
  local s = split(raw)
  if now_ms - tonumber(s[2]) > max_age_ms then return false end
  return s[1]
end

local op = ARGV[1]

if op == 'enqueue' then
  -- One step for everything a queue entry needs, so a socket's "join" or "next" costs one
  -- round trip: end the current pair (a skip for "next"), pair or wait, and the expected wait.
  -- Reply: { ended match id, ended partner, ended partner's channel,
  --          match id, partner, partner's channel, partner's gender, country, card,
  --          expected wait ms }, '' where there is none.
  local me, channel, g, c, wg, wc = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
  local match_id = ARGV[8]
  local wait_ttl_ms, pair_ttl_ms = tonumber(ARGV[9]), tonumber(ARGV[10])
  local last_ttl_ms, max_scan, alpha = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
  local skip, skip_ttl_ms, card = ARGV[14] == '1', tonumber(ARGV[15]), ARGV[16]
  local class, max_age_ms = ARGV[17], tonumber(ARGV[18])
  sweep(SWEEP_PER_STEP, last_ttl_ms)

  -- Re-enqueueing: the current pair is dissolved and reported, so the caller tells the
  -- ex-partner (a skip when the user said "next"); a waiting entry is replaced but keeps its
  -- arrival time, so sending "join" twice never costs the user their place.
  local ended = dissolve(me, skip, skip_ttl_ms, last_ttl_ms) or { '', '', '' }
  local arrival = now_arrival
  local old = remove_waiting(me)
  if old then arrival = old[1] end

  local best, dead = nil, {}
  for _, bucket in ipairs(lookup_buckets(g, c, wg, wc)) do
    local cand = oldest_in(bucket, me, max_scan, dead)
    if cand and (not best or cand[1] < best[1] or (cand[1] == best[1] and cand[2] < best[2])) then
      best = cand
    end
  end
  for _, d in ipairs(dead) do
    redis.call('ZREM', IDX, d[1])
    if d[2] then remove_waiting(d[2]) end
  end

  if best then
    local partner, e = best[2], split(best[3])
    remove_waiting(partner)
    redis.call('HSET', PAIR, me, match_id .. '|' .. partner .. '|' .. e[6],
      partner, match_id .. '|' .. me .. '|' .. channel)
    redis.call('ZADD', TTL, now_ms + pair_ttl_ms, 'p:' .. me, now_ms + pair_ttl_ms, 'p:' .. partner)
    record_wait_time(e[2] .. '/' .. e[4] .. '/' .. e[5], now_ms - arrival_ms(e[1]), alpha)
    return { ended[1], ended[2], ended[3], match_id, partner, e[6], e[2], e[3], card_of(best[3]), '' }
  end

  redis.call('HSET', WAIT, me,
    arrival .. '|' .. g .. '|' .. c .. '|' .. wg .. '|' .. wc .. '|' .. channel .. '|' .. card)
  for _, bucket in ipairs(own_buckets(g, c, wg, wc)) do
    redis.call('ZADD', IDX, 0, bucket .. '|' .. arrival .. '|' .. me)
  end
  redis.call('ZADD', TTL, now_ms + wait_ttl_ms, 'w:' .. me)
  return { ended[1], ended[2], ended[3], '', '', '', '', '', '', expected(class, max_age_ms) or '' }

elseif op == 'leave' then
  -- Out of the queue and out of the pair in one step; returns the ex-partner to tell, or false.
  local uid, last_ttl_ms = ARGV[2], tonumber(ARGV[3])
  remove_waiting(uid)
  local ended = dissolve(uid, false, 0, last_ttl_ms)
  sweep(SWEEP_PER_STEP, last_ttl_ms)
  return ended or false

elseif op == 'dequeue' then
  remove_waiting(ARGV[2])
  sweep(SWEEP_PER_STEP, tonumber(ARGV[3]))
  return false

elseif op == 'end' then
  local skip_ttl_ms, last_ttl_ms = tonumber(ARGV[4]), tonumber(ARGV[5])
  local ended = dissolve(ARGV[2], ARGV[3] == '1', skip_ttl_ms, last_ttl_ms)
  sweep(SWEEP_PER_STEP, last_ttl_ms)
  return ended or false

elseif op == 'partner' then
  -- A pair is over as soon as either side's deadline has passed, swept or not.
  local raw = redis.call('HGET', PAIR, ARGV[2])
  if not raw or not alive('p', ARGV[2]) then return false end
  local p = split(raw)
  if not alive('p', p[2]) then return false end
  return { p[1], p[2], p[3] }

elseif op == 'last' then
  local partner = redis.call('HGET', LAST, ARGV[2])
  if not partner or not alive('l', ARGV[2]) then return false end
  return partner

elseif op == 'heartbeat' then
  -- XX: only an entry that still exists is extended; a swept one stays gone.
  local uid, wait_ttl_ms, pair_ttl_ms = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
  local w = redis.call('ZADD', TTL, 'XX', 'CH', now_ms + wait_ttl_ms, 'w:' .. uid)
  local p = redis.call('ZADD', TTL, 'XX', 'CH', now_ms + pair_ttl_ms, 'p:' .. uid)
  return w + p

elseif op == 'expected' then
  return expected(ARGV[2], tonumber(ARGV[3]))

elseif op == 'sweep' then
  return sweep(tonumber(ARGV[2]), tonumber(ARGV[3]))
end

return redis.error_reply('unknown matchmaking op ' .. tostring(op))
