-- Add a number to a leaf (created from nothing as the number itself).
-- KEYS: data, paths, expiry, expiring, locks, listing (data.lua)
-- ARGV[1] node path, ARGV[2] 'i' (int) or 'f' (float), ARGV[3] the number as text,
-- ARGV[4] guard flag, ARGV[5] guard lock path, ARGV[6] guard owner, ARGV[7] the
-- section's name (for the listing)
-- Returns reply(new encoded value); errors NOTNUM (not a number), RANGE (int64
-- overflow), LOCKLOST.
check_keys(true)
local now = now_ms()
purge(now)
if not guard(ARGV[4], ARGV[5], ARGV[6], now) then return redis.error_reply('LOCKLOST') end
list_section(ARGV[7])
local p, form, n = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', H, p)
if not cur then
  if has_leaves(p) then return redis.error_reply('NOTNUM') end
  remove_ancestor_leaves(p)
  redis.call('HSET', H, p, n)
  redis.call('ZADD', Z, 0, p)
  retime()
  return reply(n)
end
if form == 'i' and codec_int(cur) then
  local r = redis.pcall('HINCRBY', H, p, n)
  if type(r) == 'table' and r.err then return redis.error_reply('RANGE') end
  -- the reply became a Lua double: read the exact 64-bit text back instead
  return reply(redis.call('HGET', H, p))
end
if not codec_number(cur) then return redis.error_reply('NOTNUM') end
-- Lua numbers are IEEE doubles: the same sum Python computes; %.17g reads back exactly
local r = tonumber(cur) + tonumber(n)
if r ~= r or r == math.huge or r == -math.huge then return redis.error_reply('RANGE') end
local s = string.format('%.17g', r)
if not string.find(s, '[%.eE]') then s = s .. '.0' end
redis.call('HSET', H, p, s)
return reply(s)
