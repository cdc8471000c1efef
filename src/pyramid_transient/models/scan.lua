-- One page of every object of the class.
-- ARGV[base]    the ZSCAN cursor over KEYS[1]
-- ARGV[base+1]  ZSCAN COUNT
-- ARGV[base+2]  'd': return each object's JSON too (hash layout); 'p': pks and versions only
-- Returns {next cursor, pk, version[, JSON], ...}; expired objects met are cleaned.
prepare()  -- the keys' types checked (prelude.lua)
local with_data = ARGV[base + 2] == 'd'
local page = redis.call('ZSCAN', KEYS[1], ARGV[base], 'COUNT', ARGV[base + 1])
local out = {page[1]}
local items = page[2]
for i = 1, #items - 1, 2 do
  local pk = items[i]
  if live(items[i + 1]) then
    emit(out, pk, with_data)
  else
    drop(pk)
  end
end
return answer(out)
