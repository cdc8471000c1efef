-- Delete objects.
-- ARGV[base]      'check': an object written since the caller read it fails the call (one
--                 object only); 'skip': such an object is left alone; '': no check
-- ARGV[base+1 ..] (pk, the version the caller read or '') pairs; key layout: KEYS[4+n ..] are
--                 the objects' keys, in the same order
-- Returns {1, number of live objects deleted}, or {0, current version} when 'check' failed.
prepare()  -- the keys' types checked (prelude.lua)
local mode = ARGV[base]
local removed, n = 0, 0
for i = base + 1, #ARGV, 2 do
  n = n + 1
  local pk = ARGV[i]
  local alive = live(redis.call('ZSCORE', KEYS[1], pk))
  local current = 0
  if alive then current = version_of(redis.call('HGET', KEYS[2], pk)) end
  local unchanged = mode == '' or tonumber(ARGV[i + 1]) == current
  if not unchanged and mode == 'check' then return answer({0, current}) end
  if unchanged then
    drop(pk)
    if not hashed then redis.call('DEL', KEYS[3 + nidx + n]) end
    if alive then removed = removed + 1 end
  end
end
return answer({1, removed})
