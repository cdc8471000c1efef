-- One page of every object of the class.
-- ARGV[base]    the ZSCAN cursor over KEYS[1]
-- ARGV[base+1]  ZSCAN COUNT
-- ARGV[base+2]  'd': return each object's JSON too (hash layout); 'p': pks and versions only
-- Returns {next cursor, pk, version[, JSON], ...}; expired objects met are cleaned.
local with_data = ARGV[base + 2] == 'd'
local reply = redis.call('ZSCAN', KEYS[1], ARGV[base], 'COUNT', ARGV[base + 1])
local out = {reply[1]}
local items = reply[2]
for i = 1, #items - 1, 2 do
  local pk = items[i]
  if live(items[i + 1]) then
    out[#out + 1] = pk
    out[#out + 1] = version_of(redis.call('HGET', KEYS[2], pk))
    if with_data then out[#out + 1] = redis.call('HGET', KEYS[3], pk) or '' end
  else
    drop(pk)
  end
end
return out
