-- Settle: move each counter of a reservation by (actual - reserved) and
-- free its concurrency slot, in one atomic step.
--
-- KEYS[i]   the counter of entry i, as reserved (its window, not the current one)
-- ARGV[1]   lease id of the reservation
-- then 2 per entry: kind ('c' or 'z'), delta
--
-- Returns per entry the counter after, or -1 when the counter is gone (its
-- window expired, or the store restarted empty): a correction is never
-- written into a window that no longer exists.
local out = {}
for i = 1, #KEYS do
  local b = 1 + (i - 1) * 2
  if ARGV[b + 1] == 'z' then
    redis.call('ZREM', KEYS[i], ARGV[1])
    out[i] = redis.call('ZCARD', KEYS[i])
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    -- (A counter can exist at 0, e.g. a cost reserved without estimate,
    -- so existence is asked, not guessed from the result.)
    out[i] = redis.call('INCRBY', KEYS[i], ARGV[b + 2])
  else
    out[i] = -1
  end
end
return out
