-- Delete a subtree.
-- KEYS: data, paths, expiry, expiring, locks (data.lua)
-- ARGV[1] node path, ARGV[2] guard flag, ARGV[3] guard lock path, ARGV[4] guard owner
-- Returns reply(1) if it existed, reply(0) if not; error LOCKLOST.
check_keys(true)
local now = now_ms()
purge(now)
if not guard(ARGV[2], ARGV[3], ARGV[4], now) then return redis.error_reply('LOCKLOST') end
local p = ARGV[1]
if not has_leaves(p) then return reply(0) end
drop(p, true)
return reply(1)
