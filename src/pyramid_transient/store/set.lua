-- Replace the subtree at a node.
-- KEYS: data, paths, expiry, expiring, locks, listing (data.lua)
-- ARGV[1] node path, ARGV[2] expiry in ms or '', ARGV[3] guard flag '1'/'0',
-- ARGV[4] guard lock path, ARGV[5] guard owner, ARGV[6..n-1] leaf path, encoded value
-- pairs, ARGV[n] the section's name (for the listing)
-- Returns reply(1); error LOCKLOST when the guarding lock was lost.
check_keys(true)
local now = now_ms()
purge(now)
if not guard(ARGV[3], ARGV[4], ARGV[5], now) then return redis.error_reply('LOCKLOST') end
list_section(ARGV[#ARGV])
local p = ARGV[1]
drop(p, false)
remove_ancestor_leaves(p)
local kv, members = {}, {}
for i = 6, #ARGV - 1, 2 do
  kv[#kv + 1] = ARGV[i]
  kv[#kv + 1] = ARGV[i + 1]
  members[#members + 1] = 0
  members[#members + 1] = ARGV[i]
end
chunked('HSET', H, kv)
chunked('ZADD', Z, members)
if ARGV[2] ~= '' then
  local d = now + tonumber(ARGV[2])
  redis.call('ZADD', XT, d, p)
  redis.call('ZADD', XL, 0, p)
end
retime()
return reply(1)
