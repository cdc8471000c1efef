-- Extend a held lock.
-- KEYS: locks, lockpaths, fences, released (locks.lua)
-- ARGV[1] lock path, ARGV[2] owner, ARGV[3] ms, ARGV[4] '1' to add to the remaining
-- time, '0' to reset it. Returns reply(1), or reply(0) if not owned.
local p, me = ARGV[1], ARGV[2]
local o, c, d, t = holder(p)
if o ~= me then return reply(0) end
local base = now
if ARGV[4] == '1' then base = d end
record(p, me, c, base + tonumber(ARGV[3]), t)
return reply(1)
