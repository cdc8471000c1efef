-- Read one object.
-- ARGV[base]  pk
-- Returns {JSON, version}, or false when it does not exist or has expired (then cleaned);
-- key layout: {false, version, type} when the object's key holds another type (read as
-- missing, replaced by the next save).
local pk = ARGV[base]
local deadline = redis.call('ZSCORE', KEYS[1], pk)
if not deadline then return answer(false) end
if not live(deadline) then drop(pk) return answer(false) end
local data
if hashed then
  data = redis.call('HGET', KEYS[3], pk)
else
  local found = kind_of(KEYS[3])
  if found ~= 'none' and found ~= 'string' then
    return answer({false, version_of(redis.call('HGET', KEYS[2], pk)), found})
  end
  data = redis.call('GET', KEYS[3])
end
if not data then drop(pk) return answer(false) end
return answer({data, version_of(redis.call('HGET', KEYS[2], pk))})
