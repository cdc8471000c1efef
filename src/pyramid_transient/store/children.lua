-- Names of the direct children of a node, in order (one range lookup per child).
-- KEYS: data, paths, expiry, expiring, locks (data.lua); ARGV[1] node path
-- Returns reply({name, ...}).
if not check_keys(false) then return reply({}) end
purge(now_ms())
local p = ARGV[1]
local lo, hi = bounds(p)
local out = {}
while true do
  local r = redis.call('ZRANGEBYLEX', Z, lo, hi, 'LIMIT', 0, 1)
  if #r == 0 then break end
  local name = string.match(string.sub(r[1], #p + 1), '^([^.]*)%.')
  if name then
    out[#out + 1] = name
    lo = '[' .. p .. name .. '/'
  else
    -- p's own leaf, or a path we never write (no separator): step past it
    lo = '(' .. r[1]
  end
end
return reply(out)
