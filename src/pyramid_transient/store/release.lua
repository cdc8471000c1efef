-- Release a lock once.
-- KEYS: locks, lockpaths, fences, released (locks.lua); ARGV[1] lock path, ARGV[2] owner
-- Returns reply(remaining count), or reply(-1) when the owner does not hold the lock.
local p, me = ARGV[1], ARGV[2]
local o, c, d, t = holder(p)
if o ~= me then return reply(-1) end
if c > 1 then
  record(p, me, c - 1, d, t)
  return reply(c - 1)
end
redis.call('HDEL', LK, p)
redis.call('ZREM', LP, p)
-- wake a waiter blocked on the section (BLPOP); a few wake-ups at most, gone in a second
check_released()
redis.call('RPUSH', R, 1)
redis.call('LTRIM', R, -4, -1)
redis.call('PEXPIRE', R, 1000)
return reply(0)
