-- Reads a batch of keys into backup lines (the portable form of docs/cli.rst), on the
-- server, in one round trip: Python only writes the text this returns. Used on a single
-- server (standalone, Sentinel): on a Cluster the keys of one batch lie in many slots,
-- which a script may not touch together, and ptransient reads them with pipelines.
--
-- KEYS                  none (the keys are not declared: see above)
-- ARGV[1]               how many characters to cut from each key (the key prefix, its ":")
-- ARGV[2]               how many (segment, capability, database name) triples follow
-- ARGV[3 .. 2+3n]       the triples: a key's first segment after the prefix gives its
--                       capability and named database; "*" is the fallback triple
-- ARGV[3+3n ..]         the keys to read
--
-- Returns {text, later}: text holds one JSON line per key read ("\n" after each), later
-- the keys this script leaves to Python (streams and types it cannot write portably).
-- A key gone or expired since SCAN saw it is left out. "exp" is the key's absolute
-- expiry in Unix milliseconds by this server's clock (0: none).
local cut = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local map = {}
for i = 0, n - 1 do
  map[ARGV[3 + 3 * i]] = {ARGV[4 + 3 * i], ARGV[5 + 3 * i]}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lines, later = {}, {}
for i = 3 + 3 * n, #ARGV do
  local key = ARGV[i]
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' then
    local ttl = redis.call('PTTL', key)
    local value
    if kind == 'string' then
      value = redis.call('GET', key)
    elseif kind == 'hash' then
      value = redis.call('HGETALL', key)
    elseif kind == 'list' then
      value = redis.call('LRANGE', key, 0, -1)
    elseif kind == 'set' then
      value = redis.call('SMEMBERS', key)
    elseif kind == 'zset' then
      value = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    end
    if value == nil then
      later[#later + 1] = key
    elseif ttl ~= -2 then
      local rel = string.sub(key, cut + 1)
      local where = map[string.match(rel, '^[^:]*')] or map['*']
      lines[#lines + 1] = cjson.encode({
        db = where[2], cap = where[1], key = rel, t = kind, v = value,
        exp = ttl > 0 and now + ttl or 0,
      })
    end
  end
end
lines[#lines + 1] = ''
return {table.concat(lines, '\n'), later}
