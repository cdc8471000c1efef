-- Prepended to every script.
-- KEYS[1]   all:  sorted set, pk -> deadline in ms on the server clock ('inf': never)
-- KEYS[2]   meta: hash, pk -> '<version>[#<write id>]|' then '<len>:<field><len>:<member>'
--                 per index entry (the write id of a deferred save, see save.lua);
--                 field "\0seq" holds the class's version counter
-- KEYS[3]   data: hash layout: the hash pk -> JSON; key layout: the object's key in
--                 single-object scripts, unused otherwise
-- KEYS[4 .. 3+n]  the sorted set of each indexed field
-- ARGV[1]   'h' (hash layout) or 'k' (key layout)
-- ARGV[2]   n, the number of indexed fields
-- ARGV[3 .. 2+n]  the indexed fields' names, in the order of their KEYS
-- Each script's own ARGV start at ARGV[base] (base = 3 + n).
-- Every script answers answer(result): {repaired, result, broken}, where repaired lists the
-- keys of the wrong type this call deleted (all, meta, the data hash: their objects read as
-- missing until saved again) and broken the index keys of the wrong type, left alone (no
-- entry is written to or read from them; a filter through one is refused).
local hashed = ARGV[1] == 'h'
local nidx = tonumber(ARGV[2])
local base = 3 + nidx
local repaired, broken = {}, {}

local function kind_of(key)
  return redis.call('TYPE', key)['ok']
end

local function expect(key, kind)
  local found = kind_of(key)
  if found ~= 'none' and found ~= kind then
    redis.call('DEL', key)
    repaired[#repaired + 1] = key
  end
end

expect(KEYS[1], 'zset')
expect(KEYS[2], 'hash')
if hashed then expect(KEYS[3], 'hash') end
local index = {}
for i = 1, nidx do
  local found = kind_of(KEYS[3 + i])
  if found == 'none' or found == 'zset' then
    index[ARGV[2 + i]] = KEYS[3 + i]
  else
    broken[#broken + 1] = KEYS[3 + i]
  end
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function live(deadline)
  return deadline and (deadline == 'inf' or tonumber(deadline) > now)
end

local function version_of(rec)
  if not rec then return 0 end
  return tonumber(string.match(rec, '^(%d+)')) or 0
end

local function unindex(pk)
  local rec = redis.call('HGET', KEYS[2], pk)
  local pos = rec and string.find(rec, '|', 1, true)
  if not pos then return end
  pos = pos + 1
  local parts = {}
  while pos <= #rec do
    -- A record that is not ours stops here: its entries stay, and filters skip them since
    -- they check every object they load.
    local colon = string.find(rec, ':', pos, true)
    local n = colon and tonumber(string.sub(rec, pos, colon - 1))
    if not n then break end
    parts[#parts + 1] = string.sub(rec, colon + 1, colon + n)
    pos = colon + n + 1
  end
  for i = 1, #parts - 1, 2 do
    local key = index[parts[i]]
    if key then redis.call('ZREM', key, parts[i + 1]) end
  end
end

local function drop(pk)
  unindex(pk)
  redis.call('HDEL', KEYS[2], pk)
  redis.call('ZREM', KEYS[1], pk)
  if hashed then redis.call('HDEL', KEYS[3], pk) end
end

-- Append pk, version[, JSON] of a live object to out. With the JSON (hash layout), an
-- entry without data is no object (damaged or stray): it is dropped instead.
local function emit(out, pk, with_data)
  local data = with_data and redis.call('HGET', KEYS[3], pk)
  if with_data and not data then
    drop(pk)
    return
  end
  out[#out + 1] = pk
  out[#out + 1] = version_of(redis.call('HGET', KEYS[2], pk))
  if with_data then out[#out + 1] = data end
end

local function answer(result)
  return {repaired, result or false, broken}
end
