-- Prepended to every script.
-- KEYS[1]   all:  sorted set, pk -> deadline in ms on the server clock ('inf': never)
-- KEYS[2]   meta: hash, pk -> '<version>|' then '<len>:<field><len>:<member>' per index entry;
--                 field "\0seq" holds the class's version counter
-- KEYS[3]   data: hash layout: the hash pk -> JSON; key layout: the object's key in
--                 single-object scripts, unused otherwise
-- KEYS[4 .. 3+n]  the sorted set of each indexed field
-- ARGV[1]   'h' (hash layout) or 'k' (key layout)
-- ARGV[2]   n, the number of indexed fields
-- ARGV[3 .. 2+n]  the indexed fields' names, in the order of their KEYS
-- Each script's own ARGV start at ARGV[base] (base = 3 + n).
local hashed = ARGV[1] == 'h'
local nidx = tonumber(ARGV[2])
local base = 3 + nidx
local index = {}
for i = 1, nidx do index[ARGV[2 + i]] = KEYS[3 + i] end
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
