-- Milliseconds until a node expires (its own expiry or an ancestor's, the earliest).
-- KEYS: data, paths, expiry, expiring, locks (data.lua); ARGV[1] node path
-- Returns reply(ms), reply(-1) without expiry, reply(-2) when the node does not exist.
if not check_keys(false) then return reply(-2) end
local now = now_ms()
purge(now)
local p = ARGV[1]
if not has_leaves(p) then return reply(-2) end
local best = redis.call('ZSCORE', XT, p)
for _, a in ipairs(ancestors(p)) do
  local d = redis.call('ZSCORE', XT, a)
  if d and (not best or tonumber(d) < tonumber(best)) then best = d end
end
if not best then return reply(-1) end
return reply(math.max(0, tonumber(best) - now))
