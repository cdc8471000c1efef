-- Acquire (or re-enter) the lock of a path.
-- KEYS: locks, lockpaths, fences, released (locks.lua)
-- ARGV[1] lock path, ARGV[2] owner, ARGV[3] expiry in ms
-- Returns reply({1, fencing token}) or reply({0, ms until the blocking lock expires});
-- errors BADFENCES (the fences key is not a hash), BADFENCE (this path's counter is not
-- an integer): the counters cannot be repaired without letting tokens go back.
local p, me = ARGV[1], ARGV[2]
local wait = conflict(p, me)
if wait then
  check_released()
  return reply({0, wait})
end
local o, c, d, t = holder(p)
if o == me then
  c = c + 1
else
  local f = kind(F)
  if f ~= 'hash' and f ~= 'none' then return redis.error_reply('BADFENCES') end
  local last = redis.call('HGET', F, p)
  if last and not string.match(last, '^%d+$') then return redis.error_reply('BADFENCE') end
  c = 1
  t = redis.call('HINCRBY', F, p, 1)
  redis.call('ZADD', LP, 0, p)
end
record(p, me, c, now + tonumber(ARGV[3]), t)
return reply({1, t})
