-- Count the live objects whose stored value can be read: present, of the right type and a
-- JSON object (so the count agrees with what reads return for damaged values; a JSON
-- object that does not validate against the class is counted, and skipped by reads).
-- ARGV[base]  key layout: the objects' key prefix (the key of pk is prefix .. pk; it has
--             the class's hash tag, so it is in the slot of KEYS); hash layout: ''
-- Returns an integer.
prepare()  -- the keys' types checked (prelude.lua)
local prefix = ARGV[base]
local n = 0
local pks = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
for _, pk in ipairs(pks) do
  local data
  if hashed then
    data = redis.call('HGET', KEYS[3], pk)
  elseif kind_of(prefix .. pk) == 'string' then
    data = redis.call('GET', prefix .. pk)
  end
  if data then
    local ok, value = pcall(cjson.decode, data)
    if ok and type(value) == 'table' then n = n + 1 end
  end
end
return answer(n)
