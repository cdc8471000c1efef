-- Prelude of every store script: scripts.py puts it in front of each one.
-- KEYS, ARGV: those of the script that follows (the prelude reads neither).
-- It gives the server clock, the type of a key, the lock-record format, the codec's
-- number forms, and the notes: repairs a script made on its way (a key of the wrong type
-- rebuilt, an unreadable record dropped), returned after its result for the caller to log.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- 'hash', 'zset', 'list', 'set', 'string', ... or 'none' for a missing key
local function kind(k)
  return redis.call('TYPE', k)['ok']
end

local NOTES = {}
local function note(text)
  NOTES[#NOTES + 1] = text
end

-- every script returns reply(result): {result, note...}
local function reply(result)
  local out = {result}
  for i = 1, #NOTES do out[i + 1] = NOTES[i] end
  return out
end

-- a lock record 'owner count deadline token' -> owner, count, deadline, token (numbers);
-- nil for a record that cannot be parsed (truncated, foreign): callers treat it as free
local function parse_lock(v)
  local o, c, d, t = string.match(v, '^(%S+) (%d+) (%d+) (%d+)$')
  if not o then return nil end
  return o, tonumber(c), tonumber(d), tonumber(t)
end

-- the codec's numbers: an int is JSON digits, a float JSON's forms of a double
local function codec_int(s)
  return string.match(s, '^%-?%d+$') ~= nil
end
local function codec_number(s)
  return codec_int(s) or string.match(s, '^%-?%d+%.%d+$') ~= nil
    or string.match(s, '^%-?%d+%.?%d*[eE][%-+]?%d+$') ~= nil
end
