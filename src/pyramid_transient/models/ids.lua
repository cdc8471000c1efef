-- Reserve a block of generated int ids.
-- KEYS[1]  the class's id counter: a string holding an integer
-- ARGV[1]  how many ids to reserve
-- ARGV[2]  '1': first move the counter to the server time in microseconds, if that is above
--          it (an id it handed out was found taken: the counter was set back); else ''
-- Returns {the counter's new value, 1 if it was repaired else 0}. A counter that does not
-- hold an integer (another type, or text that is not a number) is reset to the server time
-- in microseconds: above any block handed out before, so no id is handed out twice.
local repaired = 0
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' then
  local text = kind == 'string' and redis.call('GET', KEYS[1])
  if not (text and string.match(text, '^%d+$') and #text < 19) then
    local clock = redis.call('TIME')
    redis.call('DEL', KEYS[1])
    redis.call('SET', KEYS[1], string.format('%d', tonumber(clock[1]) * 1000000 + tonumber(clock[2])))
    repaired = 1
  end
end
if ARGV[2] == '1' then
  local clock = redis.call('TIME')
  local ahead = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  if ahead > tonumber(redis.call('GET', KEYS[1]) or '0') then
    redis.call('SET', KEYS[1], string.format('%d', ahead), 'KEEPTTL')
  end
end
return {redis.call('INCRBY', KEYS[1], ARGV[1]), repaired}
