-- Find objects through the indexes.
-- ARGV[base]    'd': return each object's JSON too (hash layout); 'p': pks and versions only
-- ARGV[base+1]  the number of conditions
-- then per condition: its field, 's' (score) or 'l' (lexical), the number of ranges, and
--               each range's min and max (ZRANGEBYSCORE / ZRANGEBYLEX syntax)
-- Walks the condition with the fewest entries (the caller checks the others) and returns
-- pk, version[, JSON] of each live object listed; entries of dead objects are cleaned.
-- Returns false (and the index in broken) when a condition's index has the wrong type.
local with_data = ARGV[base] == 'd'
local best = nil
local pos = base + 2
for c = 1, tonumber(ARGV[base + 1]) do
  local key, kind, count = index[ARGV[pos]], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  local ranges, total = {}, 0
  if not key then return answer(false) end
  pos = pos + 3
  for r = 1, count do
    local lo, hi = ARGV[pos], ARGV[pos + 1]
    pos = pos + 2
    if kind == 's' then
      total = total + redis.call('ZCOUNT', key, lo, hi)
    else
      total = total + redis.call('ZLEXCOUNT', key, lo, hi)
    end
    ranges[#ranges + 1] = {lo, hi}
  end
  if best == nil or total < best[4] then best = {key, kind, ranges, total} end
end
local out, seen = {}, {}
for _, range in ipairs(best[3]) do
  local members
  if best[2] == 's' then
    members = redis.call('ZRANGEBYSCORE', best[1], range[1], range[2])
  else
    members = redis.call('ZRANGEBYLEX', best[1], range[1], range[2])
  end
  for _, member in ipairs(members) do
    local pk = member
    if best[2] == 'l' then
      local nul = string.find(member, '\0', 1, true)
      pk = nul and string.sub(member, nul + 1)
    end
    if not pk then
      redis.call('ZREM', best[1], member)  -- without NUL: not a member we wrote
    elseif not seen[pk] then
      seen[pk] = true
      local deadline = redis.call('ZSCORE', KEYS[1], pk)
      if live(deadline) then
        emit(out, pk, with_data)
      elseif deadline then
        drop(pk)
      else
        redis.call('ZREM', best[1], member)
      end
    end
  end
end
return answer(out)
