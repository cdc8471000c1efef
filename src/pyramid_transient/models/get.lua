-- Read one object.
-- ARGV[base]  pk
-- Returns {JSON, version}, or nil when it does not exist or has expired (then cleaned).
local pk = ARGV[base]
local deadline = redis.call('ZSCORE', KEYS[1], pk)
if not deadline then return nil end
if not live(deadline) then drop(pk) return nil end
local data
if hashed then data = redis.call('HGET', KEYS[3], pk) else data = redis.call('GET', KEYS[3]) end
if not data then drop(pk) return nil end
return {data, version_of(redis.call('HGET', KEYS[2], pk))}
