-- Whether a node holds anything.
-- KEYS: data, paths, expiry, expiring, locks (data.lua); ARGV[1] node path
-- Returns reply(1) or reply(0).
if not check_keys(false) then return reply(0) end
purge(now_ms())
if has_leaves(ARGV[1]) then return reply(1) end
return reply(0)
