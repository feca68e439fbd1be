-- Reserve: check every hard limit of a plan and count every limit, in one
-- atomic step (Redis runs a script without interleaving other commands).
-- Counters are incremented first and the increments undone when a hard
-- limit has no room: refusals are rare, so the common path costs one call
-- per counter.
--
-- KEYS[i]      the counter of plan entry i
-- ARGV[1]      lease id of this reservation (member of concurrency sets)
-- ARGV[2]      now, ms (the sidecar's clock; only compared with lease ends)
-- ARGV[3]      lease length, ms
-- then 5 per entry: kind ('c' counter, 'z' concurrency set), max, add,
--                   hard ('1' refuses when full), ttl ms (window end - now + slack)
--
-- Returns {1, counter after, ...} when admitted, {0, entry, counter} when
-- hard entry `entry` (1-based) has no room; then nothing stays counted.
local lease_id = ARGV[1]
local now = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local out = {1}
local refused = 0
local refused_at = 0
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 5
  local max = tonumber(ARGV[b + 2])
  local add = tonumber(ARGV[b + 3])
  local hard = ARGV[b + 4] == '1'
  local ttl = tonumber(ARGV[b + 5])
  if ARGV[b + 1] == 'z' then
    local c = redis.call('ZCARD', KEYS[i])
    if c + 1 > max then
      -- Full: drop the leases of crashed sidecars, then count again.
      redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
      c = redis.call('ZCARD', KEYS[i])
    end
    if hard and c + 1 > max then
      refused, refused_at = i, c
      break
    end
    redis.call('ZADD', KEYS[i], now + lease_ms, lease_id)
    redis.call('PEXPIRE', KEYS[i], lease_ms + ttl)
    out[i + 1] = c + 1
  else
    local v = redis.call('INCRBY', KEYS[i], add)
    -- Equal to what was added: this call created the counter (a counter
    -- that existed got its expiry when it was created).
    if v == add then
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
    -- Adding nothing (a cost without an estimate) is refused once at the limit.
    if hard and (v > max or (add == 0 and v >= max)) then
      redis.call('DECRBY', KEYS[i], add)
      refused, refused_at = i, v - add
      break
    end
    out[i + 1] = v
  end
end
if refused == 0 then
  return out
end
for j = 1, refused - 1 do
  local b = 3 + (j - 1) * 5
  if ARGV[b + 1] == 'z' then
    redis.call('ZREM', KEYS[j], lease_id)
  else
    redis.call('DECRBY', KEYS[j], ARGV[b + 3])
  end
end
return {0, refused, refused_at}
