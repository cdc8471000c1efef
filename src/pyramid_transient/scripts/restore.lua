-- Writes a batch of backup entries (the portable form of docs/cli.rst), each key
-- atomically: it is written whole, with its expiry, or not at all.
--
-- KEYS[i]     the key to write entry i to (the app's key prefix and namespace today)
-- ARGV[1]     "1" to replace existing keys, "0" to leave them alone
-- ARGV[1+i]   entry i: the backup line's JSON ("t" type, "v" value, "exp" absolute expiry
--             in Unix milliseconds or 0, "enc" = "latin1" when each character of its
--             strings is one byte, "b64" when they are base64)
--
-- Returns {codes, refusals}: codes has one character per key, "o" written, "e" exists
-- (kept: no replace), "x" expired (its expiry has passed since the backup), "r" refused;
-- refusals the server's error for each "r", in order (a DUMP payload the server does
-- not accept, a value it refuses). One short reply, not one element per key.
local replace = ARGV[1] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local DEC = {}
for i = 1, 64 do DEC[string.byte(B64, i)] = i - 1 end
local function unb64(s)
  local out, n = {}, 0
  for i = 1, #s - 3, 4 do
    local a, b, c, d = string.byte(s, i, i + 3)
    local x = DEC[a] * 262144 + DEC[b] * 4096 + (DEC[c] or 0) * 64 + (DEC[d] or 0)
    local chunk = string.char(math.floor(x / 65536), math.floor(x / 256) % 256, x % 256)
    if d == 61 then chunk = string.sub(chunk, 1, c == 61 and 1 or 2) end
    n = n + 1
    out[n] = chunk
  end
  return table.concat(out)
end

-- cjson decodes \u0080 .. \u00ff into two UTF-8 bytes: back to the one byte they stand for
local BYTE = {}
for byte = 128, 255 do
  BYTE[string.char(192 + math.floor(byte / 64), 128 + byte % 64)] = string.char(byte)
end
local function unlatin1(s)
  return (string.gsub(s, '[\194\195][\128-\191]', BYTE))
end

local function each(list, f)  -- f(list[i]) for every string of a (possibly nested) list
  for i = 1, #list do
    if type(list[i]) == 'table' then each(list[i], f) else list[i] = f(list[i]) end
  end
end

local function chunks(key, command, items, step)  -- command key items... (8000 at most)
  for i = 1, #items, step do
    redis.call(command, key, unpack(items, i, math.min(i + step - 1, #items)))
  end
end

local function write(key, e)
  local v = e.v
  if e.t == 'string' then
    redis.call('SET', key, v)
  elseif e.t == 'hash' then
    chunks(key, 'HSET', v, 1000)
  elseif e.t == 'list' then
    chunks(key, 'RPUSH', v, 1000)
  elseif e.t == 'set' then
    chunks(key, 'SADD', v, 1000)
  elseif e.t == 'zset' then
    local pairs_ = {}
    for i = 1, #v, 2 do
      pairs_[i] = v[i + 1]
      pairs_[i + 1] = v[i]
    end
    chunks(key, 'ZADD', pairs_, 1000)
  elseif e.t == 'stream' then
    for _, entry in ipairs(v.entries) do
      redis.call('XADD', key, entry[1], unpack(entry[2]))
    end
    for _, group in ipairs(v.groups) do
      redis.call('XGROUP', 'CREATE', key, group[1], group[2], 'MKSTREAM')
    end
    if redis.call('EXISTS', key) == 0 then
      -- an empty stream: XADD then XDEL makes it, XSETID below gives its last id
      redis.call('XADD', key, '0-1', 'x', 'x')
      redis.call('XDEL', key, '0-1')
    end
    redis.call('XSETID', key, v.last)
  elseif e.t == 'dump' then
    -- RESTORE replaces only once the server accepted the payload: a refused one leaves
    -- the key as it was
    return redis.pcall('RESTORE', key, 0, v, 'REPLACE')
  else
    return {err = 'unknown type ' .. tostring(e.t)}
  end
end

local statuses, refusals = {}, {}
for i, key in ipairs(KEYS) do
  local e = cjson.decode(ARGV[i + 1])  -- Python checked that every line is JSON
  local exp = tonumber(e.exp) or 0
  if exp > 0 and exp <= now then
    statuses[i] = 'x'
  elseif not replace and redis.call('EXISTS', key) == 1 then
    statuses[i] = 'e'
  else
    local decode = (e.enc == 'b64' and unb64) or (e.enc == 'latin1' and unlatin1) or nil
    if decode then
      if e.t == 'stream' then
        each(e.v.entries, decode)
        each(e.v.groups, decode)
        e.v.last = decode(e.v.last)
      elseif type(e.v) == 'table' then
        each(e.v, decode)
      else
        e.v = decode(e.v)
      end
    end
    if replace and e.t ~= 'dump' then redis.call('DEL', key) end  -- else: it is not there
    local ok, result = pcall(write, key, e)
    if not ok or (type(result) == 'table' and result.err) then
      if e.t ~= 'dump' then redis.call('DEL', key) end  -- nothing half-written
      local why = ok and result.err or (type(result) == 'table' and result.err) or result
      statuses[i] = 'r'
      refusals[#refusals + 1] = tostring(why)
    else
      if exp > 0 then redis.call('PEXPIREAT', key, string.format('%.0f', exp)) end
      statuses[i] = 'o'
    end
  end
end
return {table.concat(statuses), refusals}
