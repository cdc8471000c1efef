-- Write the index entries of live objects again (after their index keys were deleted),
-- keeping each object's version and deadline.
-- ARGV[base ..]  per object: pk, the number k of its entries, then k (field, member, score)
-- Returns the number of objects indexed.
prepare()  -- the keys' types checked (prelude.lua)
local n, i = 0, base
while i <= #ARGV do
  local pk, k = ARGV[i], tonumber(ARGV[i + 1])
  local first, last = i + 2, i + 1 + 3 * k
  i = last + 1
  if live(redis.call('ZSCORE', KEYS[1], pk)) then
    local parts = {string.format('%d', version_of(redis.call('HGET', KEYS[2], pk))), '|'}
    for j = first, last, 3 do
      local field, member = ARGV[j], ARGV[j + 1]
      if index[field] then redis.call('ZADD', index[field], ARGV[j + 2], member) end
      parts[#parts + 1] = #field .. ':' .. field .. #member .. ':' .. member
    end
    redis.call('HSET', KEYS[2], pk, table.concat(parts))
    n = n + 1
  end
end
local pttl = redis.call('PTTL', KEYS[1])
for _, key in pairs(index) do
  if pttl > 0 then redis.call('PEXPIRE', key, pttl) end
end
return answer(n)
