-- The state of a lock.
-- KEYS: locks, lockpaths, fences, released (locks.lua); ARGV[1] lock path, ARGV[2] owner
-- Returns reply({held by anyone on p, an ancestor or a descendant 0/1, count held by
-- owner on p, token or 0}).
local p, me = ARGV[1], ARGV[2]
local o, c, d, t = holder(p)
local mine = 0
if o == me then mine = c end
local busy = 0
-- '' is nobody's owner token, so every live lock around p counts
if o or conflict(p, '') then busy = 1 end
return reply({busy, mine, t or 0})
