-- Reserve: check every hard limit of a plan, then count every limit, in one
-- atomic step (Redis runs a script without interleaving other commands).
--
-- KEYS[i]      the counter of plan entry i
-- ARGV[1]      lease id of this reservation (member of concurrency sets)
-- ARGV[2]      now, ms (the sidecar's clock; only compared with lease ends)
-- ARGV[3]      lease length, ms
-- then 5 per entry: kind ('c' counter, 'z' concurrency set), max, add,
--                   hard ('1' refuses when full), ttl ms (window end - now + slack)
--
-- Returns {1, counter after, ...} when admitted, {0, entry, counter} when
-- hard entry `entry` (1-based) has no room; then nothing was counted.
local now = tonumber(ARGV[2])
local lease_id = ARGV[1]
local lease_ms = tonumber(ARGV[3])
local cur = {}
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 5
  local kind = ARGV[b + 1]
  local max = tonumber(ARGV[b + 2])
  local add = tonumber(ARGV[b + 3])
  local c
  if kind == 'z' then
    -- Leases of crashed sidecars drain: expired members are dropped first.
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    c = redis.call('ZCARD', KEYS[i])
  else
    c = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  cur[i] = c
  -- Adding nothing (a cost without an estimate) is refused once at the limit.
  if ARGV[b + 4] == '1' and (c + add > max or (add == 0 and c >= max)) then
    return {0, i, c}
  end
end
local out = {1}
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 5
  local ttl = tonumber(ARGV[b + 5])
  if ARGV[b + 1] == 'z' then
    redis.call('ZADD', KEYS[i], now + lease_ms, lease_id)
    redis.call('PEXPIRE', KEYS[i], lease_ms + ttl)
    out[i + 1] = cur[i] + 1
  else
    local v = redis.call('INCRBY', KEYS[i], ARGV[b + 3])
    if v == tonumber(ARGV[b + 3]) or redis.call('PTTL', KEYS[i]) < 0 then
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
    out[i + 1] = v
  end
end
return out
