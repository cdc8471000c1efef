-- Find objects through the indexes, one page at a time: a call reads at most ARGV[base+5]
-- entries of the index it walks, so one filter never holds the server for long; the
-- caller sends the returned cursor back until it says the walk is done.
-- ARGV[base]    'd': return each object's JSON too (hash layout); 'p': pks and versions only
-- ARGV[base+1]  the condition walked (1-based), or '0' on the first page: the condition
--               with the fewest entries is chosen (the caller checks the others)
-- ARGV[base+2]  the range of that condition the page starts in (1-based)
-- ARGV[base+3]  '' at the start of that range, else the score of the last entry read
-- ARGV[base+4]  the last entry read ('' at the start of the range)
-- ARGV[base+5]  the page size: at most this many index entries read by this call
-- ARGV[base+6]  the number of conditions
-- then per condition: its field, 's' (score) or 'l' (lexical), the number of ranges, and
--               each range's min and max (ZRANGEBYSCORE / ZRANGEBYLEX syntax)
-- Returns the cursor (condition, range, score, entry; range '0' when the walk is done),
-- then pk, version[, JSON] of each live object listed; entries of dead objects are cleaned.
-- Returns false (and the index in broken) when a condition's index has the wrong type.
-- Paging goes on from the last entry read (by its rank, or after it for a lexical index),
-- not from an offset, so entries removed meanwhile never make the walk skip others.
prepare()  -- the keys' types checked (prelude.lua)
local with_data = ARGV[base] == 'd'
local chosen = tonumber(ARGV[base + 1])
local r = tonumber(ARGV[base + 2])
local last_score, last = ARGV[base + 3], ARGV[base + 4]
local budget = tonumber(ARGV[base + 5])
local conds = {}
local pos = base + 7
for c = 1, tonumber(ARGV[base + 6]) do
  local key, kind, count = index[ARGV[pos]], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  if not key then return answer(false) end
  pos = pos + 3
  local ranges = {}
  for i = 1, count do
    ranges[i] = {ARGV[pos], ARGV[pos + 1]}
    pos = pos + 2
  end
  conds[c] = {key, kind, ranges}
end
if chosen == 0 then
  local fewest = nil
  for c, cond in ipairs(conds) do
    local total = 0
    for _, range in ipairs(cond[3]) do
      if cond[2] == 's' then
        total = total + redis.call('ZCOUNT', cond[1], range[1], range[2])
      else
        total = total + redis.call('ZLEXCOUNT', cond[1], range[1], range[2])
      end
    end
    if fewest == nil or total < fewest then chosen, fewest = c, total end
  end
end
local key, kind, ranges = conds[chosen][1], conds[chosen][2], conds[chosen][3]

local function num(text)
  if text == 'inf' or text == '+inf' then return math.huge end
  if text == '-inf' then return -math.huge end
  return tonumber(text)
end

local function below(score, hi)  -- within the upper bound hi of a score range
  if string.sub(hi, 1, 1) == '(' then return num(score) < num(string.sub(hi, 2)) end
  return num(score) <= num(hi)
end

-- Up to n entries {member, score} of range after the last entry read.
local function fetch(range, n)
  local lo, hi = range[1], range[2]
  local got = {}
  if kind == 'l' then
    local from = last_score == '' and lo or '(' .. last
    for _, m in ipairs(redis.call('ZRANGEBYLEX', key, from, hi, 'LIMIT', 0, n)) do
      got[#got + 1] = {m, '0'}
    end
    return got
  end
  local flat
  if last_score == '' then
    flat = redis.call('ZRANGEBYSCORE', key, lo, hi, 'WITHSCORES', 'LIMIT', 0, n)
  else
    local rank = redis.call('ZRANK', key, last)
    if rank and redis.call('ZSCORE', key, last) == last_score then
      flat = redis.call('ZRANGE', key, rank + 1, rank + n, 'WITHSCORES')
    else
      -- the last entry read is gone (or moved): the entries of its score after it (equal
      -- scores are ordered by member), then those above its score
      flat = {}
      for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, last_score, last_score)) do
        if m > last and #flat < 2 * n then
          flat[#flat + 1] = m
          flat[#flat + 1] = last_score
        end
      end
      if #flat < 2 * n then
        local more = redis.call('ZRANGEBYSCORE', key, '(' .. last_score, hi, 'WITHSCORES',
          'LIMIT', 0, n - #flat / 2)
        for _, v in ipairs(more) do flat[#flat + 1] = v end
      end
    end
  end
  for i = 1, #flat, 2 do
    if not below(flat[i + 1], hi) then break end
    got[#got + 1] = {flat[i], flat[i + 1]}
  end
  return got
end

local out, seen = {}, {}
local function visit(member)
  local pk = member
  if kind == 'l' then
    local nul = string.find(member, '\0', 1, true)
    pk = nul and string.sub(member, nul + 1)
  end
  if not pk then
    redis.call('ZREM', key, member)  -- without NUL: not a member we wrote
  elseif not seen[pk] then
    seen[pk] = true
    local deadline = redis.call('ZSCORE', KEYS[1], pk)
    if live(deadline) then
      emit(out, pk, with_data)
    elseif deadline then
      drop(pk)
    else
      redis.call('ZREM', key, member)
    end
  end
end

while budget > 0 and r <= #ranges do
  local got = fetch(ranges[r], budget)
  for _, entry in ipairs(got) do
    visit(entry[1])
    last, last_score = entry[1], entry[2]
  end
  if #got < budget then  -- the range is read to its end
    r, last, last_score = r + 1, '', ''
  end
  budget = budget - #got
end
local cursor = {tostring(chosen), r > #ranges and '0' or tostring(r), last_score, last}
for _, v in ipairs(out) do cursor[#cursor + 1] = v end
return answer(cursor)
