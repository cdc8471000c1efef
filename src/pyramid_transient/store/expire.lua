-- Give a subtree an expiry.
-- KEYS: data, paths, expiry, expiring, locks (data.lua)
-- ARGV[1] node path, ARGV[2] milliseconds, ARGV[3] guard flag, ARGV[4] guard lock path,
-- ARGV[5] guard owner
-- Returns reply(1), or reply(0) if the node does not exist; error LOCKLOST.
check_keys(true)
local now = now_ms()
purge(now)
if not guard(ARGV[3], ARGV[4], ARGV[5], now) then return redis.error_reply('LOCKLOST') end
local p = ARGV[1]
if not has_leaves(p) then return reply(0) end
redis.call('ZADD', XT, now + tonumber(ARGV[2]), p)
redis.call('ZADD', XL, 0, p)
retime()
return reply(1)
