-- Helpers of the lock scripts (after the prelude). Every lock script is called with
--   KEYS[1] locks HASH (path -> 'owner count deadline token'), KEYS[2] lockpaths ZSET
--   (the same paths, score 0, for ranges), KEYS[3] fences HASH (path -> last token),
--   KEYS[4] released LIST (wake-ups for waiters)
-- all tagged with the section. ARGV: the script's own (see each file).

local LK, LP, F, R = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = now_ms()

-- A lock hash of the wrong type holds no lock we can read: every lock of the section is
-- free, so it is dropped with its index; an index of the wrong type is rebuilt.
do
  local lk = kind(LK)
  if lk ~= 'hash' and lk ~= 'none' then
    redis.call('DEL', LK, LP)
    note('store key ' .. LK .. ' held a ' .. lk .. ', not a hash: dropped (its locks are free)')
  end
  local lp = kind(LP)
  if lp ~= 'zset' and lp ~= 'none' then
    redis.call('DEL', LP)
    for _, q in ipairs(redis.call('HKEYS', LK)) do redis.call('ZADD', LP, 0, q) end
    note('store key ' .. LP .. ' held a ' .. lp .. ', not a sorted set: rebuilt from ' .. LK)
  end
end

-- the wake-up list of the wrong type is dropped (its content is only ever popped)
local function check_released()
  local r = kind(R)
  if r ~= 'list' and r ~= 'none' then
    redis.call('DEL', R)
    note('store key ' .. R .. ' held a ' .. r .. ', not a list: dropped')
  end
end

-- the live record of lock q, or nil: an expired record, or one that cannot be parsed, is
-- removed on the way (a lock nobody can prove to hold is free)
local function holder(q)
  local v = redis.call('HGET', LK, q)
  if not v then return nil end
  local o, c, d, t = parse_lock(v)
  if not o then
    note('store key ' .. LK .. ' held an unreadable lock record: treated as free')
  end
  if not o or d <= now then
    redis.call('HDEL', LK, q)
    redis.call('ZREM', LP, q)
    return nil
  end
  return o, c, d, t
end

local function record(q, o, c, d, t)
  redis.call('HSET', LK, q, o .. ' ' .. string.format('%d %d %d', c, d, t))
end

-- another owner's lock on p, an ancestor or a descendant: returns its remaining ms, or nil
local function conflict(p, me)
  local lo, hi = '(' .. p, '+'
  if p ~= '' then
    lo, hi = '(' .. p, '(' .. string.sub(p, 1, -2) .. '/'
    local i = 1
    local anc = {''}
    while true do
      local j = string.find(p, '.', i, true)
      if not j then break end
      anc[#anc + 1] = string.sub(p, 1, j)
      i = j + 1
    end
    for _, a in ipairs(anc) do
      local o, c, d = holder(a)
      if o and o ~= me then return d - now end
    end
  else
    local o, c, d = holder('')
    if o and o ~= me then return d - now end
  end
  for _, q in ipairs(redis.call('ZRANGEBYLEX', LP, lo, hi)) do
    local o, c, d = holder(q)
    if o and o ~= me then return d - now end
    -- an index member without a record (a truncated or foreign one): forget it
    if not o and redis.call('HEXISTS', LK, q) == 0 then redis.call('ZREM', LP, q) end
  end
  return nil
end
