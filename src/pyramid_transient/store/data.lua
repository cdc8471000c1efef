-- Helpers of the data scripts (after the prelude). Every data script is called with
--   KEYS[1] data HASH, KEYS[2] paths ZSET, KEYS[3] expiry ZSET, KEYS[4] expiring ZSET,
--   KEYS[5] locks HASH (only read, by writes made under a lock)
-- all tagged with the section, so they share one Cluster slot; and the writes that may
-- create the section (set, add) take
--   KEYS[6] the listing SET of section names that root operations read: the app-wide one
--   on a single server, on a Cluster the one of the section's slot (a key of that slot)
-- ARGV: the script's own (see each file).

local H, Z, XT, XL, L = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

-- lexicographic range of p's subtree, p included (p ends with '.' or is '')
local function bounds(p)
  if p == '' then return '-', '+' end
  return '[' .. p, '(' .. string.sub(p, 1, -2) .. '/'
end

-- a node path as the store writes it: '' or ending with the separator
local function is_path(p)
  return p == '' or string.sub(p, -1) == '.'
end

-- proper ancestors of p, the section node ('') first
local function ancestors(p)
  local out = {}
  if p == '' then return out end
  out[1] = ''
  local i = 1
  while true do
    local j = string.find(p, '.', i, true)
    if not j or j == #p then break end
    out[#out + 1] = string.sub(p, 1, j)
    i = j + 1
  end
  return out
end

-- cmd key items... in slices (Lua's unpack has a stack limit); 1000 keeps pairs whole
local function chunked(cmd, key, items)
  for i = 1, #items, 1000 do
    redis.call(cmd, key, unpack(items, i, math.min(i + 999, #items)))
  end
end

-- Keys of the wrong type (another program wrote them). The indexes are repaired: paths
-- rebuilt from data, expiring from expiry, expiry dropped (its deadlines are lost). The
-- data hash is a value: a read answers as for an empty section (returns false), a write
-- replaces it with the section's indexes.
local function check_keys(write)
  local h = kind(H)
  if h ~= 'hash' and h ~= 'none' then
    if not write then
      note('store key ' .. H .. ' holds a ' .. h .. ', not a hash: read as empty')
      return false
    end
    redis.call('DEL', H, Z, XT, XL)
    note('store key ' .. H .. ' held a ' .. h .. ', not a hash: replaced, with its indexes')
    return true
  end
  local z = kind(Z)
  if z ~= 'zset' and z ~= 'none' then
    redis.call('DEL', Z)
    local members = {}
    if h == 'hash' then
      for _, f in ipairs(redis.call('HKEYS', H)) do
        members[#members + 1] = 0
        members[#members + 1] = f
      end
    end
    chunked('ZADD', Z, members)
    note('store key ' .. Z .. ' held a ' .. z .. ', not a sorted set: rebuilt from ' .. H)
  end
  local xt = kind(XT)
  if xt ~= 'zset' and xt ~= 'none' then
    redis.call('DEL', XT, XL)
    note('store key ' .. XT .. ' held a ' .. xt .. ', not a sorted set: dropped (expiries lost)')
  end
  local xl = kind(XL)
  if xl ~= 'zset' and xl ~= 'none' then
    redis.call('DEL', XL)
    local members = {}
    for _, p in ipairs(redis.call('ZRANGE', XT, 0, -1)) do
      members[#members + 1] = 0
      members[#members + 1] = p
    end
    chunked('ZADD', XL, members)
    note('store key ' .. XL .. ' held a ' .. xl .. ', not a sorted set: rebuilt from ' .. XT)
  end
  return true
end

local function has_leaves(p)
  if p == '' then return redis.call('EXISTS', H) == 1 end
  local lo, hi = bounds(p)
  return #redis.call('ZRANGEBYLEX', Z, lo, hi, 'LIMIT', 0, 1) > 0
end

-- an expiry of the section node also bounds the keys themselves, so Redis frees them
local function retime()
  local d = redis.call('ZSCORE', XT, '')
  if d then
    for i = 1, 4 do
      if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('PEXPIREAT', KEYS[i], d) end
    end
  end
end

-- remove p's subtree (and the expiries inside it); with tidy, also forget the expiry of
-- ancestors that no longer hold anything (a node that ceased to exist loses its expiry)
local function drop(p, tidy)
  if p == '' then
    redis.call('DEL', H, Z, XT, XL)
    return
  end
  local lo, hi = bounds(p)
  local fields = redis.call('ZRANGEBYLEX', Z, lo, hi)
  if #fields > 0 then
    chunked('HDEL', H, fields)
    redis.call('ZREMRANGEBYLEX', Z, lo, hi)
  end
  local timed = redis.call('ZRANGEBYLEX', XL, lo, hi)
  if #timed > 0 then
    chunked('ZREM', XT, timed)
    redis.call('ZREMRANGEBYLEX', XL, lo, hi)
  end
  if tidy then
    if redis.call('EXISTS', H) == 0 then
      redis.call('DEL', XT, XL)
      return
    end
    for _, a in ipairs(ancestors(p)) do
      if redis.call('ZSCORE', XT, a) and not has_leaves(a) then
        redis.call('ZREM', XT, a)
        redis.call('ZREM', XL, a)
      end
    end
  end
end

-- drop every subtree whose deadline has passed; a member that is not a node path (a
-- truncated or foreign one, whose range could span other nodes) is only removed
local function purge(now)
  local dead = redis.call('ZRANGEBYSCORE', XT, '-inf', now)
  for _, p in ipairs(dead) do
    if is_path(p) then
      drop(p, true)
    else
      redis.call('ZREM', XT, p)
      redis.call('ZREM', XL, p)
      note('store key ' .. XT .. ' held a member that is not a path: removed')
    end
  end
end

-- writes made under a lock carry (flag, lock path, owner): refuse them once the lock is
-- lost; a lock record that cannot be read is a lost lock
local function guard(flag, gpath, owner, now)
  if flag ~= '1' then return true end
  if kind(L) ~= 'hash' then return false end
  local v = redis.call('HGET', L, gpath)
  if not v then return false end
  local o, c, d = parse_lock(v)
  return o == owner and d > now
end

-- list section name in KEYS[6] (a no-op once listed: nothing is replicated then); a
-- listing of another type is left as it is, for root operations to report (emptying it
-- would hide the other sections it lists), and the write goes on
local function list_section(name)
  local r = redis.pcall('SADD', KEYS[6], name)
  if type(r) == 'table' and r.err then
    note('store key ' .. KEYS[6] .. ' holds another type than a set: root operations '
      .. 'cannot list sections (repair: DEL ' .. KEYS[6] .. ')')
  end
end

local function remove_ancestor_leaves(p)
  for _, a in ipairs(ancestors(p)) do
    if redis.call('HDEL', H, a) == 1 then redis.call('ZREM', Z, a) end
  end
end
