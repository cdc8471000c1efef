-- Read one object.
-- ARGV[base]  pk
-- Returns {JSON, version}, or false when it does not exist or has expired (then cleaned);
-- key layout: {false, version, type} when the object's key holds another type (read as
-- missing, replaced by the next save).
-- Runs with lazy checks (see prelude.lua): the reads go first, and only a read that fails
-- (a key of the wrong type) or a clean-up runs the checks, which repair, then the reads
-- again.
local pk = ARGV[base]
local function read()
  local deadline = redis.call('ZSCORE', KEYS[1], pk)
  if not deadline then return false end
  if not live(deadline) then drop(pk) return false end
  local data
  if hashed then
    data = redis.call('HGET', KEYS[3], pk)
  else
    local found = kind_of(KEYS[3])
    if found ~= 'none' and found ~= 'string' then
      return {false, version_of(redis.call('HGET', KEYS[2], pk)), found}
    end
    data = redis.call('GET', KEYS[3])
  end
  if not data then drop(pk) return false end
  return {data, version_of(redis.call('HGET', KEYS[2], pk))}
end
local ok, result = pcall(read)
if not ok then
  if prepared then error(result) end  -- the checks ran and it still fails: not a type
  prepare()
  result = read()
end
return answer(result)
