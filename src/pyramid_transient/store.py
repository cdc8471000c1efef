"""Nested dicts at dotted paths, with tree locks and expiry.

A :class:`Proxy` addresses a node of one tree by a dotted path (``"users.42.cart"``). The
first element of a path names a *section*; everything below one section lives in a few
Redis keys that share one Cluster hash tag, so every operation on a subtree is one Lua
script call: atomic, and one round trip whatever the size of the subtree or the database.

Layout of one section ``S`` (``ks`` is the store's :class:`~pyramid_transient.keys.KeySpace`):

``ks.tagged(S, "data")``
    HASH: encoded node path -> codec-encoded leaf value.
``ks.tagged(S, "paths")``
    ZSET, every score 0: the same paths, for ``ZRANGEBYLEX`` over a subtree.
``ks.tagged(S, "expiry")``
    ZSET: path of a node with an expiry -> deadline (server milliseconds).
``ks.tagged(S, "expiring")``
    ZSET, every score 0: the same paths, to find the expiries inside a subtree.
``ks.tagged(S, "locks")``, ``ks.tagged(S, "lockpaths")``, ``ks.tagged(S, "fences")``
    HASH of held tree locks, their lexicographic index, and the fencing counters.

A node path inside a section is its elements after the first, each followed by ``.``
(``users.42.cart`` is ``"42.cart."`` in section ``users``; the section node itself is
``""``). Because every stored path ends with the separator, the subtree of ``42.`` is
exactly the range ``["42." , "42/")``: it never includes ``420.``. User text never reaches
a glob pattern: paths are only compared as strings.
"""

from __future__ import annotations

import logging
import math
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.commands.core import Script

from .codec import decode, encode
from .connection import Binding, add_request_attribute, bind, get_manager, include_manager
from .exceptions import CodecError, LockNotOwned, LockTimeout
from .keys import KeySpace
from .lua import ScriptSet

log = logging.getLogger(__name__)

__all__ = [
    "Lock",
    "Proxy",
    "current_owner",
    "get_store",
    "includeme",
    "root",
    "section",
]

#: Defaults when neither an argument nor ``transient.store.*`` gives a value.
DEFAULT_LOCK_ACQUIRE_TIMEOUT = 10.0
DEFAULT_LOCK_EXPIRE_TIMEOUT = 30.0

# Module-level clock and sleep, so tests can patch them (as redis-py's lock tests do).
mod_time = time

SEPARATOR = "."

# ---------------------------------------------------------------------- Lua

# Helpers shared by the data scripts. Every data script is called with
#   KEYS[1] data HASH, KEYS[2] paths ZSET, KEYS[3] expiry ZSET, KEYS[4] expiring ZSET,
#   KEYS[5] locks HASH (only read, by writes made under a lock)
# all tagged with the section, so they share one Cluster slot.
_LUA_COMMON = r"""
local H, Z, XT, XL, L = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- lexicographic range of p's subtree, p included (p ends with '.' or is '')
local function bounds(p)
  if p == '' then return '-', '+' end
  return '[' .. p, '(' .. string.sub(p, 1, -2) .. '/'
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

-- drop every subtree whose deadline has passed
local function purge(now)
  local dead = redis.call('ZRANGEBYSCORE', XT, '-inf', now)
  for _, p in ipairs(dead) do drop(p, true) end
end

-- writes made under a lock carry (flag, lock path, owner): refuse them once the lock is lost
local function guard(flag, gpath, owner, now)
  if flag ~= '1' then return true end
  local v = redis.call('HGET', L, gpath)
  if not v then return false end
  local o, c, d = string.match(v, '^(%S+) (%d+) (%d+) (%d+)$')
  return o == owner and tonumber(d) > now
end

local function remove_ancestor_leaves(p)
  for _, a in ipairs(ancestors(p)) do
    if redis.call('HDEL', H, a) == 1 then redis.call('ZREM', Z, a) end
  end
end
"""

# Replace the subtree at a node.
# KEYS: data, paths, expiry, expiring, locks
# ARGV[1] node path, ARGV[2] expiry in ms or '', ARGV[3] guard flag '1'/'0',
# ARGV[4] guard lock path, ARGV[5] guard owner, ARGV[6..] leaf path, encoded value pairs
_SET = (
    _LUA_COMMON
    + r"""
local now = now_ms()
purge(now)
if not guard(ARGV[3], ARGV[4], ARGV[5], now) then return redis.error_reply('LOCKLOST') end
local p = ARGV[1]
drop(p, false)
remove_ancestor_leaves(p)
local kv, members = {}, {}
for i = 6, #ARGV, 2 do
  kv[#kv + 1] = ARGV[i]
  kv[#kv + 1] = ARGV[i + 1]
  members[#members + 1] = 0
  members[#members + 1] = ARGV[i]
end
chunked('HSET', H, kv)
chunked('ZADD', Z, members)
if ARGV[2] ~= '' then
  local d = now + tonumber(ARGV[2])
  redis.call('ZADD', XT, d, p)
  redis.call('ZADD', XL, 0, p)
end
retime()
return 1
"""
)

# Read a subtree as flat (path, encoded value) pairs.
# KEYS: data, paths, expiry, expiring, locks; ARGV[1] node path
_GET = (
    _LUA_COMMON
    + r"""
purge(now_ms())
local p = ARGV[1]
if p == '' then return redis.call('HGETALL', H) end
local v = redis.call('HGET', H, p)
if v then return {p, v} end
local lo, hi = bounds(p)
local fields = redis.call('ZRANGEBYLEX', Z, lo, hi)
local out = {}
for i = 1, #fields, 1000 do
  local last = math.min(i + 999, #fields)
  local vals = redis.call('HMGET', H, unpack(fields, i, last))
  for j = i, last do
    out[#out + 1] = fields[j]
    out[#out + 1] = vals[j - i + 1]
  end
end
return out
"""
)

# KEYS: data, paths, expiry, expiring, locks; ARGV[1] node path
_EXISTS = (
    _LUA_COMMON
    + r"""
purge(now_ms())
if has_leaves(ARGV[1]) then return 1 end
return 0
"""
)

# Delete a subtree; returns 1 if it existed.
# KEYS: data, paths, expiry, expiring, locks
# ARGV[1] node path, ARGV[2] guard flag, ARGV[3] guard lock path, ARGV[4] guard owner
_DELETE = (
    _LUA_COMMON
    + r"""
local now = now_ms()
purge(now)
if not guard(ARGV[2], ARGV[3], ARGV[4], now) then return redis.error_reply('LOCKLOST') end
local p = ARGV[1]
if not has_leaves(p) then return 0 end
drop(p, true)
return 1
"""
)

# Give a subtree an expiry; returns 1, or 0 if the node does not exist.
# KEYS: data, paths, expiry, expiring, locks
# ARGV[1] node path, ARGV[2] milliseconds, ARGV[3] guard flag, ARGV[4] guard lock path,
# ARGV[5] guard owner
_EXPIRE = (
    _LUA_COMMON
    + r"""
local now = now_ms()
purge(now)
if not guard(ARGV[3], ARGV[4], ARGV[5], now) then return redis.error_reply('LOCKLOST') end
local p = ARGV[1]
if not has_leaves(p) then return 0 end
redis.call('ZADD', XT, now + tonumber(ARGV[2]), p)
redis.call('ZADD', XL, 0, p)
retime()
return 1
"""
)

# Milliseconds until the node expires (its own expiry or an ancestor's, the earliest);
# -1 without expiry, -2 when the node does not exist.
# KEYS: data, paths, expiry, expiring, locks; ARGV[1] node path
_TTL = (
    _LUA_COMMON
    + r"""
local now = now_ms()
purge(now)
local p = ARGV[1]
if not has_leaves(p) then return -2 end
local best = redis.call('ZSCORE', XT, p)
for _, a in ipairs(ancestors(p)) do
  local d = redis.call('ZSCORE', XT, a)
  if d and (not best or tonumber(d) < tonumber(best)) then best = d end
end
if not best then return -1 end
return math.max(0, tonumber(best) - now)
"""
)

# Add a number to a leaf (created from nothing as the number itself).
# KEYS: data, paths, expiry, expiring, locks
# ARGV[1] node path, ARGV[2] 'i' (int) or 'f' (float), ARGV[3] the number as text,
# ARGV[4] guard flag, ARGV[5] guard lock path, ARGV[6] guard owner
# Returns the new encoded value; errors NOTNUM (not a number) or RANGE (int64 overflow).
_ADD = (
    _LUA_COMMON
    + r"""
local now = now_ms()
purge(now)
if not guard(ARGV[4], ARGV[5], ARGV[6], now) then return redis.error_reply('LOCKLOST') end
local p, kind, n = ARGV[1], ARGV[2], ARGV[3]
local cur = redis.call('HGET', H, p)
if not cur then
  if has_leaves(p) then return redis.error_reply('NOTNUM') end
  remove_ancestor_leaves(p)
  redis.call('HSET', H, p, n)
  redis.call('ZADD', Z, 0, p)
  retime()
  return n
end
if kind == 'i' and string.match(cur, '^%-?%d+$') then
  local r = redis.pcall('HINCRBY', H, p, n)
  if type(r) == 'table' and r.err then return redis.error_reply('RANGE') end
  -- the reply became a Lua double: read the exact 64-bit text back instead
  return redis.call('HGET', H, p)
end
if not (string.match(cur, '^%-?%d+$') or string.match(cur, '^%-?%d+%.%d+$')
        or string.match(cur, '^%-?%d+%.?%d*[eE][%-+]?%d+$')) then
  return redis.error_reply('NOTNUM')
end
-- Lua numbers are IEEE doubles: the same sum Python computes; %.17g reads back exactly
local r = tonumber(cur) + tonumber(n)
if r ~= r or r == math.huge or r == -math.huge then return redis.error_reply('RANGE') end
local s = string.format('%.17g', r)
if not string.find(s, '[%.eE]') then s = s .. '.0' end
redis.call('HSET', H, p, s)
return s
"""
)

# Names of the direct children of a node, in order (one range lookup per child).
# KEYS: data, paths, expiry, expiring, locks; ARGV[1] node path
_CHILDREN = (
    _LUA_COMMON
    + r"""
purge(now_ms())
local p = ARGV[1]
local lo, hi = bounds(p)
local out = {}
while true do
  local r = redis.call('ZRANGEBYLEX', Z, lo, hi, 'LIMIT', 0, 1)
  if #r == 0 then break end
  local name = string.match(string.sub(r[1], #p + 1), '^([^.]*)%.')
  if name then
    out[#out + 1] = name
    lo = '[' .. p .. name .. '/'
  else
    -- p's own leaf, or a path we never write (no separator): step past it
    lo = '(' .. r[1]
  end
end
return out
"""
)

# Helpers of the lock scripts. KEYS[1] locks HASH (path -> 'owner count deadline token'),
# KEYS[2] lockpaths ZSET (score 0, for ranges), KEYS[3] fences HASH (path -> last token),
# KEYS[4] released LIST (wake-ups for waiters), all tagged with the section.
_LUA_LOCK_COMMON = r"""
local now
do
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- the live record of lock q, or nil (an expired record is removed on the way)
local function holder(q)
  local v = redis.call('HGET', KEYS[1], q)
  if not v then return nil end
  local o, c, d, t = string.match(v, '^(%S+) (%d+) (%d+) (%d+)$')
  if tonumber(d) <= now then
    redis.call('HDEL', KEYS[1], q)
    redis.call('ZREM', KEYS[2], q)
    return nil
  end
  return o, tonumber(c), tonumber(d), tonumber(t)
end

local function record(q, o, c, d, t)
  redis.call('HSET', KEYS[1], q, o .. ' ' .. string.format('%d %d %d', c, d, t))
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
  for _, q in ipairs(redis.call('ZRANGEBYLEX', KEYS[2], lo, hi)) do
    local o, c, d = holder(q)
    if o and o ~= me then return d - now end
  end
  return nil
end
"""

# Acquire (or re-enter) the lock of a path.
# KEYS: locks, lockpaths, fences, released; ARGV[1] lock path, ARGV[2] owner, ARGV[3] expiry in ms
# Returns {1, fencing token} or {0, ms until the blocking lock expires}.
_ACQUIRE = (
    _LUA_LOCK_COMMON
    + r"""
local p, me = ARGV[1], ARGV[2]
local wait = conflict(p, me)
if wait then return {0, wait} end
local o, c, d, t = holder(p)
if o == me then
  c = c + 1
else
  c = 1
  t = redis.call('HINCRBY', KEYS[3], p, 1)
  redis.call('ZADD', KEYS[2], 0, p)
end
record(p, me, c, now + tonumber(ARGV[3]), t)
return {1, t}
"""
)

# Release once. KEYS: locks, lockpaths, fences, released; ARGV[1] lock path, ARGV[2] owner
# Returns the remaining count, or -1 when the owner does not hold the lock.
_RELEASE = (
    _LUA_LOCK_COMMON
    + r"""
local p, me = ARGV[1], ARGV[2]
local o, c, d, t = holder(p)
if o ~= me then return -1 end
if c > 1 then
  record(p, me, c - 1, d, t)
  return c - 1
end
redis.call('HDEL', KEYS[1], p)
redis.call('ZREM', KEYS[2], p)
-- wake a waiter blocked on the section (BLPOP); a few wake-ups at most, gone in a second
redis.call('RPUSH', KEYS[4], 1)
redis.call('LTRIM', KEYS[4], -4, -1)
redis.call('PEXPIRE', KEYS[4], 1000)
return 0
"""
)

# Extend. KEYS: locks, lockpaths, fences, released; ARGV[1] lock path, ARGV[2] owner, ARGV[3] ms
# ARGV[4] '1' to add to the remaining time, '0' to reset it. Returns 1, or 0 if not owned.
_EXTEND = (
    _LUA_LOCK_COMMON
    + r"""
local p, me = ARGV[1], ARGV[2]
local o, c, d, t = holder(p)
if o ~= me then return 0 end
local base = now
if ARGV[4] == '1' then base = d end
record(p, me, c, base + tonumber(ARGV[3]), t)
return 1
"""
)

# State. KEYS: locks, lockpaths, fences, released; ARGV[1] lock path, ARGV[2] owner
# Returns {held by anyone on p/ancestor/descendant 0/1, count held by owner on p, token}.
_STATE = (
    _LUA_LOCK_COMMON
    + r"""
local p, me = ARGV[1], ARGV[2]
local o, c, d, t = holder(p)
local mine = 0
if o == me then mine = c end
local busy = 0
-- '' is nobody's owner token, so every live lock around p counts
if o or conflict(p, '') then busy = 1 end
return {busy, mine, t or 0}
"""
)

SCRIPTS = ScriptSet(
    set=_SET,
    get=_GET,
    exists=_EXISTS,
    delete=_DELETE,
    expire=_EXPIRE,
    ttl=_TTL,
    add=_ADD,
    children=_CHILDREN,
    acquire=_ACQUIRE,
    release=_RELEASE,
    extend=_EXTEND,
    state=_STATE,
)


def _is_cluster(client: Any) -> bool:
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


# ---------------------------------------------------------------------- paths


def _split(path: str, what: str = "path") -> tuple[str, ...]:
    """The elements of a dotted path; ValueError for an empty path or element."""
    if not isinstance(path, str):
        raise TypeError(f"store {what} must be a str, not {type(path).__name__}: {path!r}")
    parts = tuple(path.split(SEPARATOR))
    if not path or any(not p for p in parts):
        raise ValueError(
            f"store {what} {path!r} is not valid: use dot-separated, non-empty elements "
            "such as 'a.b.c' (no leading, trailing or doubled dots)"
        )
    return parts


def _node(elements: tuple[str, ...]) -> str:
    """The stored form of a node path below its section: ``("a", "b")`` -> ``"a.b."``."""
    return "".join(e + SEPARATOR for e in elements)


def _is_subtree(value: Any) -> bool:
    """A dict whose keys can all be path elements is stored as a subtree; any other dict
    (non-string keys, keys with dots, empty keys, or no keys at all) is one leaf."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and k and SEPARATOR not in k for k in value)
    )


def _flatten(value: Any, prefix: str, out: list[bytes | str]) -> None:
    if _is_subtree(value):
        for k, v in value.items():
            _flatten(v, prefix + k + SEPARATOR, out)
    else:
        out.append(prefix)
        out.append(encode(value))


def _stored_path(raw: bytes | str, node: str) -> list[str] | None:
    """The elements of stored path ``raw`` below ``node`` (``[]`` for the node itself), or
    None, logged, for a field that is not a path we write (not UTF-8, not ending with the
    separator, an empty element, outside ``node``): written by something else."""
    try:
        field = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        field = None
    if field == node:
        return []
    if field is not None and field.startswith(node) and field.endswith(SEPARATOR):
        rest = field[len(node) :].split(SEPARATOR)[:-1]
        if all(rest):
            return rest
    log.warning("ignoring a corrupt store path %r below %r", raw, node)
    return None


def _build(node: str, flat: list[Any]) -> tuple[bool, Any]:
    """Rebuild the value of ``node`` from flat (path, encoded value) pairs."""
    tree: dict[str, Any] = {}
    found = False
    for i in range(0, len(flat), 2):
        rest = _stored_path(flat[i], node)
        raw = flat[i + 1]
        if raw is None or rest is None:
            continue
        try:
            value = decode(raw)
        except CodecError as exc:
            log.warning("ignoring a corrupt store value at %r: %s", flat[i], exc)
            continue
        if not rest:
            return True, value
        branch = tree
        for part in rest[:-1]:
            nxt = branch.get(part)
            if not isinstance(nxt, dict):
                nxt = branch[part] = {}
            branch = nxt
        branch[rest[-1]] = value
        found = True
    return found, tree


# ---------------------------------------------------------------------- owners


class _Owner(threading.local):
    token: str = ""
    pid: int = 0


_OWNER = _Owner()


def current_owner() -> str:
    """This thread's random owner token (a fresh one in a forked child).

    Locks taken by one thread are re-entrant across every proxy and :class:`Lock` of that
    thread; two threads, processes or hosts are always different owners.
    """
    pid = os.getpid()
    if _OWNER.pid != pid or not _OWNER.token:
        _OWNER.token = secrets.token_hex(16)
        _OWNER.pid = pid
    return _OWNER.token


# ---------------------------------------------------------------------- binding


@dataclass(frozen=True)
class _Binding:
    """Where a store lives (:class:`~pyramid_transient.binding.Binding`: its client,
    asked for at each use so a forked child gets its own connections, and its keys), with
    the lock timeouts that apply there."""

    where: Binding
    acquire_timeout: float
    expire_timeout: float

    @property
    def client(self) -> Any:
        return self.where.client

    @property
    def keyspace(self) -> KeySpace:
        return self.where.keyspace

    def data_keys(self, section: str) -> list[str]:
        ks = self.keyspace
        return [
            ks.tagged(section, "data"),
            ks.tagged(section, "paths"),
            ks.tagged(section, "expiry"),
            ks.tagged(section, "expiring"),
            ks.tagged(section, "locks"),
        ]

    def lock_keys(self, section: str) -> list[str]:
        ks = self.keyspace
        return [
            ks.tagged(section, "locks"),
            ks.tagged(section, "lockpaths"),
            ks.tagged(section, "fences"),
            ks.tagged(section, "released"),
        ]

    @property
    def registry(self) -> str:
        return self.keyspace.key("sections")

    def script(self, name: str, client: Any = None) -> Script:
        return SCRIPTS.on(self.client if client is None else client)[name]

    def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        with self.where.errors(script_errors=_SCRIPT_ERRORS):
            return self.where.run(SCRIPTS, name, keys, args)

    def run_registered(self, section: str, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script that may create ``section``, listing the section for root reads.

        On a single server both go in one pipeline: one round trip. The listing is never
        removed (a few bytes per section name ever used), so it can never miss a section.
        """
        with self.where.errors(script_errors=_SCRIPT_ERRORS):
            client = self.client
            if _is_cluster(client):
                client.sadd(self.registry, section)
                return self.where.run(SCRIPTS, name, keys, args, client=client)
            script = self.script(name, client)
            for attempt in (1, 2):
                pipe = client.pipeline(transaction=False)
                pipe.sadd(self.registry, section)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                results = pipe.execute(raise_on_error=False)
                result = results[-1]
                if isinstance(result, redis.exceptions.NoScriptError) and attempt == 1:
                    client.script_load(script.script)
                    continue
                if isinstance(result, Exception):
                    raise result
                return result
        raise AssertionError("unreachable")  # pragma: no cover


#: The store scripts' own error replies, and what the caller gets for each.
_SCRIPT_ERRORS: dict[str, Callable[[], Exception]] = {
    "LOCKLOST": lambda: LockNotOwned(
        "the lock this proxy held has expired or was taken by another owner; nothing was written"
    ),
    "NOTNUM": lambda: ValueError("add() needs a number stored at the path (or nothing)"),
    "RANGE": lambda: ValueError("add() result is out of range (64-bit integers, finite floats)"),
}


def _bind(
    target: Any, db_name: str | None, acquire: float | None, expire: float | None
) -> _Binding:
    """Bind to ``target`` (see :func:`~pyramid_transient.binding.bind`): a manager's
    ``transient.store.*`` settings give the lock timeouts not passed as arguments."""
    where = bind(target, "store", db_name)
    acquire_default, expire_default = DEFAULT_LOCK_ACQUIRE_TIMEOUT, DEFAULT_LOCK_EXPIRE_TIMEOUT
    if where.manager is not None:
        settings = where.manager.settings.store
        acquire_default = settings.lock_acquire_timeout
        expire_default = settings.lock_expire_timeout
    return _Binding(
        where,
        acquire_default if acquire is None else acquire,
        expire_default if expire is None else expire,
    )


#: The longest expiry or lock time accepted (about 317 years): deadlines must stay integers
#: that Lua prints without an exponent, or PEXPIREAT refuses them after a script has
#: already written.
MAX_SECONDS = 10**10


def _ms(seconds: float, what: str) -> int:
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 < seconds <= MAX_SECONDS
    ):
        raise ValueError(
            f"{what} must be a positive number of seconds up to {MAX_SECONDS}, not {seconds!r}"
        )
    return max(1, round(seconds * 1000))


# ---------------------------------------------------------------------- the lock


class Lock:
    """A tree lock on a dotted path (re-entrant per owner, with expiry and fencing tokens).

    While one owner holds ``a.b``, no other owner can take ``a.b``, anything below it
    (``a.b.c``) or any ancestor (``a``). The owner is the calling thread, identified by a
    random token (:func:`current_owner`), so locks nest freely within a thread and the same
    path may be re-entered; release as often as acquired.

    :param redis: a bare client (keys ``store:{section}:...``, as :class:`Proxy` uses with
        one), or a :class:`~pyramid_transient.connection.RedisManager`, registry or request
        (that app's key prefix and ``store`` database); ``keyspace`` overrides the keys.
    :param path: a dotted path (``"section"`` or below).
    :param expire_timeout: seconds after which the lock frees itself if not extended.
    :param acquire_timeout: seconds :meth:`acquire` waits before raising ``LockTimeout``.
    :param sleep: the longest pause between two attempts while waiting (at most 0.1 s
        is spent blocked at a time); a release in the same section ends a pause early.
    """

    def __init__(
        self,
        redis: Any,
        path: str,
        *,
        expire_timeout: float = DEFAULT_LOCK_EXPIRE_TIMEOUT,
        acquire_timeout: float = DEFAULT_LOCK_ACQUIRE_TIMEOUT,
        sleep: float = 0.05,
        keyspace: KeySpace | None = None,
    ) -> None:
        _split(path)  # a bad path is a ValueError before anything else
        where = bind(redis, "store")
        if keyspace is not None:
            where = Binding(keyspace, manager=where.manager, client=where.client, name=where.name)
        self._setup(_Binding(where, acquire_timeout, expire_timeout), path, sleep)

    def _setup(self, binding: _Binding, path: str, sleep: float) -> None:
        elements = _split(path)
        expire_timeout, acquire_timeout = binding.expire_timeout, binding.acquire_timeout
        self.path = path
        self.name = path
        self._section = elements[0]
        self._node = _node(elements[1:])
        self._binding = binding
        self._expire_ms = _ms(expire_timeout, "lock expire_timeout")
        if acquire_timeout < 0:
            raise ValueError(f"lock acquire_timeout must be 0 or more, not {acquire_timeout!r}")
        self.acquire_timeout = acquire_timeout
        self.expire_timeout = expire_timeout
        self.sleep = sleep
        self._local = threading.local()

    @classmethod
    def _from_binding(cls, binding: _Binding, elements: tuple[str, ...]) -> Lock:
        lock = cls.__new__(cls)
        lock._setup(binding, SEPARATOR.join(elements), 0.05)
        return lock

    def __repr__(self) -> str:
        return f"<Lock {self.path!r}>"

    def _keys(self) -> list[str]:
        return self._binding.lock_keys(self._section)

    @property
    def token(self) -> int | None:
        """The fencing token of this thread's current hold, or None when not held."""
        return cast(int | None, getattr(self._local, "token", None))

    @property
    def held(self) -> int:
        """How many times this thread acquired (and has not yet released) this lock here."""
        return cast(int, getattr(self._local, "count", 0))

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> int:
        """Take the lock, waiting up to ``timeout`` (default ``acquire_timeout``) seconds.

        Returns the fencing token: greater than every token issued before for this path
        (re-entering returns the token of the current hold). Raises
        :class:`~pyramid_transient.exceptions.LockTimeout` when the wait runs out (at once
        with ``blocking=False``).
        """
        wait = self.acquire_timeout if timeout is None else timeout
        deadline = mod_time.monotonic() + (wait if blocking else 0)
        owner = current_owner()
        pause = 0.002
        where = self._binding.where
        with where.errors():
            client = self._binding.client
            script = self._binding.script("acquire", client)
        keys = self._keys()
        args: list[Any] = [self._node, owner, self._expire_ms]
        while True:
            with where.errors(keys[0]):
                ok, value = script(keys=keys, args=args, client=client)
            if ok == 1:
                self._local.token = int(value)
                self._local.count = self.held + 1
                return int(value)
            left = deadline - mod_time.monotonic()
            if left <= 0:
                raise LockTimeout(
                    f"could not acquire the store lock on {self.path!r} within {wait!r} "
                    "seconds: another owner holds it, an ancestor or a descendant",
                    lock_name=self.path,
                )
            # Back off exponentially (with jitter) up to `sleep`, never past the deadline
            # nor past the moment the blocking lock would expire; a release in the section
            # ends the wait early.
            pause = min(pause * 2, self.sleep)
            self._wait(
                client, min(left, max(0.001, int(value) / 1000), pause * random.uniform(0.5, 1))
            )

    def _wait(self, client: Any, seconds: float) -> None:
        # BLPOP on the section's wake-up list instead of sleeping: the releaser's script
        # pushes to it. Capped well below the clients' socket timeout.
        try:
            with self._binding.where.errors():
                client.blpop([self._keys()[3]], timeout=max(0.001, min(seconds, 0.1)))
        except redis.exceptions.NoPermissionError:  # BLPOP denied by an ACL: plain sleep
            mod_time.sleep(seconds)

    def release(self) -> None:
        """Release once. Raises :class:`~pyramid_transient.exceptions.LockNotOwned` if this
        thread does not hold the lock (it expired, or it was never taken): nothing is freed."""
        result = self._binding.run("release", self._keys(), [self._node, current_owner()])
        count = self.held
        if count:
            self._local.count = count - 1
            if count == 1:
                self._local.token = None
        if result == -1:
            self._local.count = 0
            self._local.token = None
            raise LockNotOwned(
                f"cannot release the store lock on {self.path!r}: this owner does not hold "
                "it (never acquired, already released, or expired)",
                lock_name=self.path,
            )

    def extend(self, additional_time: float | None = None, *, replace_ttl: bool = False) -> None:
        """Push the expiry back: to ``expire_timeout`` from now by default; with
        ``additional_time``, by that many seconds added to the time left (as redis-py's
        ``Lock.extend``), or to that many seconds from now with ``replace_ttl=True``.
        Raises :class:`~pyramid_transient.exceptions.LockNotOwned` if the lock was lost."""
        ms = self._expire_ms if additional_time is None else _ms(additional_time, "extend time")
        add = "0" if replace_ttl or additional_time is None else "1"
        if self._binding.run("extend", self._keys(), [self._node, current_owner(), ms, add]) != 1:
            raise LockNotOwned(
                f"cannot extend the store lock on {self.path!r}: it is no longer held by "
                "this owner (it expired or was never taken)",
                lock_name=self.path,
            )

    def _state(self) -> tuple[int, int, int]:
        busy, mine, token = self._binding.run("state", self._keys(), [self._node, current_owner()])
        return int(busy), int(mine), int(token)

    def owned(self) -> bool:
        """True while this thread holds the lock: False once it expired (the lost-lock
        check a long-running holder makes before it writes elsewhere)."""
        return self._state()[1] > 0

    def locked(self) -> bool:
        """True if anyone holds this path, an ancestor or a descendant."""
        return self._state()[0] == 1

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ---------------------------------------------------------------------- the proxy

_LOCK_CREATION = threading.Lock()


class Proxy:
    """A node of the store at a dotted path.

    :param path: the dotted path (``"section"``, ``"section.a.b"``).
    :param redis: a client to use (scripts, workers, tests); keys then have no prefix
        (``KeySpace("", "store")``). A :class:`~pyramid_transient.connection.RedisManager`,
        a registry or a request may be given instead: that app's ``store`` database (or
        ``db_name``) and key prefix are used, and its client is asked for at each use (a
        forked worker gets its own connections). Without any, the running Pyramid app's
        manager is looked up at first use.
    :param lock_acquire_timeout: seconds :meth:`acquire` waits (default
        ``transient.store.lock_acquire_timeout``, else 10).
    :param lock_expire_timeout: seconds a lock lives unless extended (default
        ``transient.store.lock_expire_timeout``, else 30).

    Nothing is read when a proxy is made: every method is one round trip.
    """

    def __init__(
        self,
        path: str,
        *,
        redis: Any = None,
        db_name: str | None = None,
        lock_acquire_timeout: float | None = None,
        lock_expire_timeout: float | None = None,
    ) -> None:
        self._path = _split(path)
        self._redis = redis
        self._db_name = db_name
        self._acquire_timeout = lock_acquire_timeout
        self._expire_timeout = lock_expire_timeout
        self._binding_: _Binding | None = None
        self._lock_: Lock | None = None
        self._guards: tuple[Proxy, ...] = ()

    @classmethod
    def _make(cls, path: tuple[str, ...], binding: _Binding | None, like: Proxy) -> Proxy:
        proxy = cls.__new__(cls)
        proxy._path = path
        proxy._redis = like._redis
        proxy._db_name = like._db_name
        proxy._acquire_timeout = like._acquire_timeout
        proxy._expire_timeout = like._expire_timeout
        proxy._binding_ = binding
        proxy._lock_ = None
        proxy._guards = ()
        return proxy

    def __repr__(self) -> str:
        return f"<Proxy {self.key()!r}>"

    @property
    def _binding(self) -> _Binding:
        if self._binding_ is None:
            self._binding_ = _bind(
                self._redis, self._db_name, self._acquire_timeout, self._expire_timeout
            )
        return self._binding_

    # ------------------------------------------------------------------ paths

    def key(self) -> str:
        """The dotted path of this node (``""`` for the root)."""
        return SEPARATOR.join(self._path)

    def get(self, key: str) -> Proxy:
        """The proxy of the node at ``key`` below this one (nothing is read)."""
        child = self._make(self._path + _split(key, "key"), self._binding_, self)
        # Looked up at write time, so a lock taken on this proxy later still guards them.
        child._guards = (self, *self._guards)
        return child

    __getitem__ = get

    def _target(self, key: str | None = None) -> tuple[tuple[str, ...], str, str]:
        path = self._path + (_split(key, "key") if key is not None else ())
        if not path:
            raise ValueError("this operation needs a section: use root().get(name)")
        return path, path[0], _node(path[1:])

    def _guard(self) -> list[Any]:
        owner = None
        for proxy in (self, *self._guards):
            lock = proxy._lock_
            if lock is not None and lock.held:
                owner = lock
                break
        if owner is None:
            return ["0", "", ""]
        return ["1", owner._node, current_owner()]

    # ------------------------------------------------------------------ values

    def set(self, key: str, value: Any, expire: float | None = None) -> Proxy:
        """Store ``value`` at ``key`` below this node, replacing its whole subtree.

        A dict whose keys are non-empty strings without dots becomes a subtree (its
        entries are addressable by path); any other value is one leaf. ``expire`` (seconds)
        applies to the whole new subtree. A value the codec refuses raises ``TypeError``
        before anything is written. Returns this proxy.
        """
        _path, section, node = self._target(key)
        flat: list[bytes | str] = []
        _flatten(value, node, flat)
        ms = "" if expire is None else _ms(expire, "expire")
        args = [node, ms, *self._guard(), *flat]
        self._binding.run_registered(section, "set", self._binding.data_keys(section), args)
        return self

    __setitem__ = set

    def val(self, default: Any = None) -> Any:
        """The value at this node: a leaf value or the nested dict of its subtree;
        ``default`` when nothing is stored (a stored ``None`` is returned as ``None``:
        tell them apart with :meth:`exists`)."""
        if not self._path:
            return self._root_val(default)
        _path, section, node = self._target()
        flat = self._binding.run("get", self._binding.data_keys(section), [node])
        found, value = _build(node, flat)
        return value if found else default

    def exists(self) -> bool:
        """True if a value (a leaf, even ``None``, or a subtree) is stored here."""
        if not self._path:
            return any(self._per_section("exists", lambda s: [""]))
        _path, section, node = self._target()
        return bool(self._binding.run("exists", self._binding.data_keys(section), [node]))

    def add(self, count: int | float) -> int | float:
        """Add ``count`` to the number stored here (atomically) and return the result.

        A missing value counts as 0. ``ValueError`` if ``count`` or the stored value is
        not an ``int`` or ``float``. Integers stay exact (64-bit range).
        """
        if isinstance(count, bool) or not isinstance(count, int | float):
            raise ValueError(f"add() takes an int or a float, not {count!r}")
        if isinstance(count, float) and not math.isfinite(count):
            raise ValueError(f"add() takes a finite number, not {count!r}")
        _path, section, node = self._target()
        kind = "i" if isinstance(count, int) else "f"
        args = [node, kind, encode(count), *self._guard()]
        raw = self._binding.run_registered(section, "add", self._binding.data_keys(section), args)
        return cast(int | float, decode(raw))

    def delete(self, key: str) -> None:
        """Delete the node at ``key`` below this one, with its subtree."""
        self.get(key).clear()

    __delitem__ = delete

    def clear(self) -> None:
        """Delete this node and its whole subtree (the root: every section)."""
        if not self._path:
            self._per_section("delete", lambda s: ["", "0", "", ""])
            return
        _path, section, node = self._target()
        self._binding.run("delete", self._binding.data_keys(section), [node, *self._guard()])

    def iter_children(self) -> Iterator[Proxy]:
        """Proxies of the *direct* children of this node, in path order (empty for a leaf
        or a missing node). One round trip (a few more for the root: see the docs)."""
        if not self._path:
            names = sorted(self._sections())
            flags = self._per_section("exists", lambda s: [""], names)
            children = [n for n, f in zip(names, flags, strict=True) if f]
        else:
            _path, section, node = self._target()
            raw = self._binding.run("children", self._binding.data_keys(section), [node])
            children = []
            for c in raw:
                rest = _stored_path(c + b"." if isinstance(c, bytes) else c + ".", "")
                if rest is not None and len(rest) == 1:
                    children.append(rest[0])
        for name in children:
            child = self._make((*self._path, name), self._binding_, self)
            child._guards = (self, *self._guards)  # as get(): writes check our locks
            yield child

    def expire(self, seconds: float) -> bool:
        """Expire this node and its whole subtree in ``seconds``; False if it does not
        exist. Writing below the node later keeps the expiry; :meth:`set` of the node
        itself replaces it."""
        _path, section, node = self._target()
        ms = _ms(seconds, "expire")
        result = self._binding.run(
            "expire", self._binding.data_keys(section), [node, ms, *self._guard()]
        )
        return bool(result)

    def time_to_live(self) -> float | None:
        """Seconds until this node expires (its own expiry or an ancestor's, whichever
        is first); ``-1`` if it has none; ``None`` if nothing is stored here."""
        _path, section, node = self._target()
        ms = int(self._binding.run("ttl", self._binding.data_keys(section), [node]))
        if ms == -2:
            return None
        if ms == -1:
            return -1
        return ms / 1000

    # ------------------------------------------------------------------ root

    def _sections(self) -> list[str]:
        with self._binding.where.errors(self._binding.registry):
            raw = self._binding.client.smembers(self._binding.registry)
        return [n.decode("utf-8") if isinstance(n, bytes) else n for n in raw]

    def _per_section(self, name: str, args: Any, names: list[str] | None = None) -> list[Any]:
        """Run a script on every section: atomic per section, not across sections."""
        b = self._binding
        names = self._sections() if names is None else names
        if not names:
            return []
        with b.where.errors(script_errors=_SCRIPT_ERRORS):
            client = b.client
            if _is_cluster(client):
                return [b.run(name, b.data_keys(s), args(s)) for s in names]
            script = b.script(name, client)
            for attempt in (1, 2):
                pipe = client.pipeline(transaction=False)
                for s in names:
                    keys = b.data_keys(s)
                    pipe.evalsha(script.sha, len(keys), *keys, *args(s))
                results = pipe.execute(raise_on_error=False)
                if attempt == 1 and any(
                    isinstance(r, redis.exceptions.NoScriptError) for r in results
                ):
                    client.script_load(script.script)
                    continue
                for r in results:
                    if isinstance(r, Exception):
                        raise r
                return list(results)
        raise AssertionError("unreachable")  # pragma: no cover

    def _root_val(self, default: Any) -> Any:
        names = sorted(self._sections())
        flats = self._per_section("get", lambda s: [""], names)
        tree: dict[str, Any] = {}
        for name, flat in zip(names, flats, strict=True):
            found, value = _build("", flat)
            if found:
                tree[name] = value
        return tree if tree else default

    # ------------------------------------------------------------------ locks

    @property
    def lock(self) -> Lock:
        """The :class:`Lock` of this node (made on first use)."""
        if self._lock_ is None:
            if not self._path:
                raise ValueError("the root cannot be locked: lock a section or a path below")
            # Module-level proxies are shared by threads: one Lock object, or a thread's
            # hold would be counted on a Lock the proxy no longer uses (and unguarded).
            with _LOCK_CREATION:
                if self._lock_ is None:
                    self._lock_ = Lock._from_binding(self._binding, self._path)
        return self._lock_

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> int:
        """Lock this node and its subtree; returns the fencing token (see :class:`Lock`).

        While this thread holds the lock, writes made through this proxy (and proxies got
        from it) are refused with ``LockNotOwned`` if the lock has expired meanwhile.
        """
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        """Release the lock once (``LockNotOwned`` if this thread does not hold it)."""
        self.lock.release()

    def extend(self, additional_time: float | None = None) -> None:
        """Push the lock's expiry back (``LockNotOwned`` if it was lost)."""
        self.lock.extend(additional_time)

    def is_locked(self) -> bool:
        """True if anyone holds a lock on this node, an ancestor or a descendant."""
        return self.lock.locked()

    def owns_lock(self) -> bool:
        """True while this thread still holds this node's lock."""
        return self.lock.owned()

    def __enter__(self) -> Proxy:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def root(redis: Any = None, **kwargs: Any) -> Proxy:
    """The proxy of the whole tree (its children are the sections)."""
    proxy = Proxy("_", redis=redis, **kwargs)
    proxy._path = ()
    return proxy


def section(name: str, redis: Any = None, **kwargs: Any) -> Proxy:
    """The proxy of a first-level section, e.g. ``section(__name__.replace(".", "_"))``.

    ``name`` is one path element: it may not contain dots.
    """
    if SEPARATOR in name or not name:
        raise ValueError(
            f"store section name {name!r} is not valid: one non-empty element, no dots"
        )
    return Proxy(name, redis=redis, **kwargs)


# ---------------------------------------------------------------------- Pyramid


def get_store(request_or_registry: Any, db_name: str | None = None) -> Proxy:
    """The root of the app's store, from a request or a registry."""
    proxy = root()
    proxy._binding_ = _bind(get_manager(request_or_registry), db_name, None, None)
    return proxy


def includeme(config: Any) -> None:
    """Register the manager and ``request.store`` (the root :class:`Proxy` of the app)."""
    include_manager(config)
    template = get_store(config.registry)

    def request_store(request: Any) -> Proxy:
        # A new root per request (a proxy holds the locks it took); the binding is shared.
        return Proxy._make((), template._binding_, template)

    add_request_attribute(config, "store", request_store)
