-- Save one object with its index entries.
-- ARGV[base]     pk
-- ARGV[base+1]   the object's JSON
-- ARGV[base+2]   time to live in ms, or '' to never expire
-- ARGV[base+3]   the version the caller read ('0': must not exist), or '' to skip the check
-- ARGV[base+4]   how many expired objects of the class to clean up on the way
-- ARGV[base+5]   the write's identity (hex), or '': a save whose identity is already in
--                the object's record was applied before (a copy re-sent after a lost
--                reply) and is a no-op answering {1, current version}
-- ARGV[base+6 ..] (field, member, score) per index entry
-- Returns {1, new version}, or {0, current version} when the check failed.
local limit = tonumber(ARGV[base + 4])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, old in ipairs(stale) do drop(old) end
local pk = ARGV[base]
local current = 0
local deadline = redis.call('ZSCORE', KEYS[1], pk)
if deadline then
  if live(deadline) then current = version_of(redis.call('HGET', KEYS[2], pk)) else drop(pk) end
end
local write_id = ARGV[base + 5]
if write_id ~= '' and current > 0 then
  local rec = redis.call('HGET', KEYS[2], pk)
  if string.find(rec, '#' .. write_id .. '|', 1, true) then return answer({1, current}) end
end
if ARGV[base + 3] ~= '' and tonumber(ARGV[base + 3]) ~= current then
  return answer({0, current})
end
unindex(pk)
-- after the clean-ups, which may have emptied (so deleted) keys that are now recreated
local existed = {}
for i = 1, 3 + nidx do existed[i] = redis.call('EXISTS', KEYS[i]) == 1 end
local seq = redis.call('HGET', KEYS[2], '\0seq')
if seq and not (string.match(seq, '^%d+$') and #seq < 19) then
  -- not a counter we wrote (HINCRBY would fail): start again as a new one
  redis.call('HDEL', KEYS[2], '\0seq')
  repaired[#repaired + 1] = KEYS[2] .. ' \\0seq'
end
local version = redis.call('HINCRBY', KEYS[2], '\0seq', 1)
if version == 1 or version <= current then
  -- A new counter (the class's keys were deleted or expired, or the counter was damaged):
  -- start it at the server time in microseconds, above every version handed out before,
  -- and above this object's, so that none is ever reused.
  version = math.max(tonumber(clock[1]) * 1000000 + tonumber(clock[2]), current + 1)
  redis.call('HSET', KEYS[2], '\0seq', string.format('%d', version))
end
local parts = {string.format('%d', version), '|'}
if write_id ~= '' then parts[2] = '#' .. write_id .. '|' end
for i = base + 6, #ARGV, 3 do
  local field, member = ARGV[i], ARGV[i + 1]
  if index[field] then redis.call('ZADD', index[field], ARGV[i + 2], member) end
  parts[#parts + 1] = #field .. ':' .. field .. #member .. ':' .. member
end
redis.call('HSET', KEYS[2], pk, table.concat(parts))
local ttl = ARGV[base + 2]
local until_ms = 'inf'
if ttl ~= '' then until_ms = now + tonumber(ttl) end
if hashed then
  redis.call('HSET', KEYS[3], pk, ARGV[base + 1])
elseif ttl == '' then
  redis.call('SET', KEYS[3], ARGV[base + 1])
else
  redis.call('SET', KEYS[3], ARGV[base + 1], 'PXAT', until_ms)
end
redis.call('ZADD', KEYS[1], until_ms, pk)
-- The class's keys live at least as long as their longest-lived object, so a class
-- nobody writes any more disappears by itself once all of its objects expired.
for i = 1, 3 + nidx do
  if hashed or i ~= 3 then
    local pttl = redis.call('PTTL', KEYS[i])
    if pttl ~= -2 then
      if ttl == '' then
        if pttl >= 0 then redis.call('PERSIST', KEYS[i]) end
      elseif (pttl >= 0 and now + pttl < until_ms) or (pttl == -1 and not existed[i]) then
        redis.call('PEXPIREAT', KEYS[i], until_ms)
      end
    end
  end
end
return answer({1, version})
