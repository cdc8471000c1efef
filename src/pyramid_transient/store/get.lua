-- Read a subtree as flat (path, encoded value) pairs.
-- KEYS: data, paths, expiry, expiring, locks (data.lua); ARGV[1] node path
-- Returns reply({path, value, ...}).
if not check_keys(false) then return reply({}) end
purge(now_ms())
local p = ARGV[1]
if p == '' then return reply(redis.call('HGETALL', H)) end
local v = redis.call('HGET', H, p)
if v then return reply({p, v}) end
local lo, hi = bounds(p)
local fields = redis.call('ZRANGEBYLEX', Z, lo, hi)
local out = {}
for i = 1, #fields, 1000 do
  local last = math.min(i + 999, #fields)
  local vals = redis.call('HMGET', H, unpack(fields, i, last))
  for j = i, last do
    out[#out + 1] = fields[j]
    out[#out + 1] = vals[j - i + 1]
  end
end
return reply(out)
