-- One SCAN page of a backup, read into backup lines (the portable form of docs/cli.rst)
-- on the server, in one round trip: Python only writes the text this returns. Used on a
-- single server (standalone, Sentinel); on a Cluster the keys of one page lie in many
-- slots, which one script may not touch, and ptransient reads them with pipelines.
--
-- KEYS                  none (the keys come from SCAN)
-- ARGV[1]               the SCAN cursor
-- ARGV[2]               the SCAN MATCH pattern (the app's prefix, escaped, then *)
-- ARGV[3]               the SCAN COUNT
-- ARGV[4]               how many characters to cut from each key (the prefix and its ":")
-- ARGV[5]               how many (segment, capability, database name) triples follow
-- ARGV[6 .. 5+3n]       the triples: a key's first segment after the prefix gives its
--                       capability and named database; capability "" means "not taken";
--                       segment "*" stands for any segment not listed
--
-- Never taken: tokens (derived data) and lock records (a store section's "locks" and
-- "lockpaths", dogpile's "cache:<region>:l:" keys); keys gone or expired since SCAN.
--
-- Returns {next cursor, keys scanned, text, later}: text holds one JSON line per key
-- ("\n" after each), later the keys left to Python: streams, module types, and keys
-- with bytes above 127 (Python checks them for UTF-8). A value with a byte above 127
-- (a sealed session, binary data; UTF-8 text too) is written with "enc": "latin1": each
-- byte above 127 as the JSON escape \u0080 .. \u00ff, so the file stays ASCII.
-- "exp" is the key's absolute expiry in Unix milliseconds by this server's clock (0: none).
local page = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local cut = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local map = {}
for i = 0, n - 1 do
  local cap, name = ARGV[7 + 3 * i], ARGV[8 + 3 * i]
  -- each line's head, encoded once per segment rather than once per key
  map[ARGV[6 + 3 * i]] = {cap, name, '{"db":' .. cjson.encode(name) .. ',"cap":' ..
    cjson.encode(cap) .. ',"key":'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local READ = {
  string = function(key) return redis.call('GET', key) end,
  hash = function(key) return redis.call('HGETALL', key) end,
  list = function(key) return redis.call('LRANGE', key, 0, -1) end,
  set = function(key) return redis.call('SMEMBERS', key) end,
  zset = function(key) return redis.call('ZRANGE', key, 0, -1, 'WITHSCORES') end,
}
-- A byte above 127 inside cjson's output, as the JSON escape of the code point of the
-- same number: the "latin1" encoding of a line (each character of its strings is one byte)
local LATIN1 = {}
for byte = 128, 255 do LATIN1[string.char(byte)] = string.format('\\u%04x', byte) end

local function high(value)  -- a byte above 127 anywhere in the value
  if type(value) == 'string' then return string.find(value, '[\128-\255]') ~= nil end
  for i = 1, #value do
    if string.find(value[i], '[\128-\255]') then return true end
  end
  return false
end
local lines, later = {}, {}
for _, key in ipairs(page[2]) do
  local rel = string.sub(key, cut + 1)
  local segment = string.match(rel, '^[^:]*')
  local where = map[segment] or map['*']
  if where[1] ~= '' and segment ~= 'token'
      and not (segment == 'store' and (string.find(rel, ':locks$') or string.find(rel, ':lockpaths$')))
      and not (segment == 'cache' and string.find(rel, '^cache:[^:]*:l:')) then
    local kind = redis.call('TYPE', key)['ok']
    local read = READ[kind]
    if kind == 'none' then
      -- gone since SCAN saw it
    elseif read == nil or string.find(key, '[\128-\255]') then
      later[#later + 1] = key
    else
      local ttl = redis.call('PTTL', key)
      local value = read(key)
      if ttl == -2 then
        -- expired meanwhile
      else
        -- Written field by field, in the order Python writes them, so that a restore
        -- can read a line's head (db, cap, key, t, exp, enc) without parsing its value.
        local v = cjson.encode(value)
        local enc = ''
        if high(value) then  -- binary (a sealed session): escaped, as Python writes it
          enc = '"enc":"latin1",'
          v = string.gsub(v, '[\128-\255]', LATIN1)
        end
        lines[#lines + 1] = where[3] .. cjson.encode(rel) .. ',"t":"' .. kind ..
          '","exp":' .. string.format('%.0f', ttl > 0 and now + ttl or 0) .. ',' .. enc ..
          '"v":' .. v .. '}'
      end
    end
  end
end
lines[#lines + 1] = ''
return {page[1], #page[2], table.concat(lines, '\n'), later}
