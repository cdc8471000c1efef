"""Pydantic models persisted in Redis, with indexes, per-object expiry and optimistic writes.

::

    class User(RedisModel):
        __expire__ = 3600                 # seconds each saved object lives
        __indexes__ = ("age", "role")     # filter on these without loading every object

        id: int
        name: str
        age: int | None = None
        role: Role = Role.member

    User.bind(redis.Redis(...))           # scripts and workers; Pyramid apps need not bind
    User(id=1, name="Ann", age=31).save() # one round trip, indexes included
    User.get(1)                           # one round trip
    User.filter(age__gte=30, role="admin")  # at most two round trips, cost ~ matches

Storage (``{prefix}:model:{Name}:...``; every key of a class shares the Cluster hash tag
``{Name}``, so each operation is one script on one slot):

``all``
    sorted set, primary key -> deadline in ms on the server's clock (``inf``: never). The
    class's own list of objects: ``all()``, ``count()`` and unindexed filters iterate it, never
    the keyspace; liveness is judged by it, so one object's expiry never depends on another's.
``meta``
    hash, primary key -> the object's version and the index entries it owns, so a save or a
    clean-up removes exactly the old entries. Field ``"\\0seq"`` is the class's version counter.
``data`` (``"hash"`` layout)
    hash, primary key -> the object's JSON.
``obj:<pk>`` (``"key"`` layout)
    string, the object's JSON, with a Redis TTL at its deadline.
``idx:<field>``
    sorted set per indexed field: score = the value for numbers, dates and datetimes
    (member = pk); score 0 and member = ``value NUL pk`` for str, bool, Enum and UUID, so
    equality, ``__in``, ``__startswith`` and ranges are ``ZRANGEBYLEX`` slices.

Values are encoded with pydantic's JSON mode (``model_dump_json`` / ``model_validate_json``):
the field annotations are the schema, so datetimes (with their offset), decimals, nested
models, enums, UUIDs, bytes (base64) and non-finite floats round-trip exactly, decoding never
runs code, and both directions run in pydantic's compiled core. A payload that fails to
decode is logged and treated as missing.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import os
import threading
import types
import typing
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from decimal import Decimal
from typing import Any, ClassVar, Literal, Self, cast

import redis
from pydantic import BaseModel, ConfigDict, PrivateAttr, TypeAdapter, ValidationError

from .connection import Binding, RedisManager, bind
from .exceptions import ConflictError, FullScanRefused, MultipleFound, NotFound
from .keys import KeySpace, quote
from .lua import ScriptSet
from .transactions import after_commit

log = logging.getLogger(__name__)

__all__ = ["FullScanRefused", "RedisModel", "includeme"]

#: Objects each unindexed page (``all()``, ``exclude()``, unindexed ``filter()``) loads.
SCAN_BATCH = 500
#: Expired objects each save cleans up, so the hash layout never accumulates dead objects.
PURGE_BATCH = 16
#: Capability name in keys (``{prefix}:model:...``) and the named database used.
CAPABILITY = "model"
DATABASE = "models"

LOOKUPS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "startswith", "isnull")


# --------------------------------------------------------------------------- Lua

# Prepended to every script.
# KEYS[1]   all:  sorted set, pk -> deadline in ms on the server clock ('inf': never)
# KEYS[2]   meta: hash, pk -> '<version>|' then '<len>:<field><len>:<member>' per index entry;
#                 field "\0seq" holds the class's version counter
# KEYS[3]   data: hash layout: the hash pk -> JSON; key layout: the object's key in
#                 single-object scripts, unused otherwise
# KEYS[4 .. 3+n]  the sorted set of each indexed field
# ARGV[1]   'h' (hash layout) or 'k' (key layout)
# ARGV[2]   n, the number of indexed fields
# ARGV[3 .. 2+n]  the indexed fields' names, in the order of their KEYS
# Each script's own ARGV start at ARGV[base] (base = 3 + n).
_PRELUDE = """
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
"""

# Save one object with its index entries.
# ARGV[base]     pk
# ARGV[base+1]   the object's JSON
# ARGV[base+2]   time to live in ms, or '' to never expire
# ARGV[base+3]   the version the caller read ('0': must not exist), or '' to skip the check
# ARGV[base+4]   how many expired objects of the class to clean up on the way
# ARGV[base+5 ..] (field, member, score) per index entry
# Returns {1, new version}, or {0, current version} when the check failed.
_SAVE = (
    _PRELUDE
    + """
local limit = tonumber(ARGV[base + 4])
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, old in ipairs(stale) do drop(old) end
local pk = ARGV[base]
local current = 0
local deadline = redis.call('ZSCORE', KEYS[1], pk)
if deadline then
  if live(deadline) then current = version_of(redis.call('HGET', KEYS[2], pk)) else drop(pk) end
end
if ARGV[base + 3] ~= '' and tonumber(ARGV[base + 3]) ~= current then return {0, current} end
unindex(pk)
-- after the clean-ups, which may have emptied (so deleted) keys that are now recreated
local existed = {}
for i = 1, 3 + nidx do existed[i] = redis.call('EXISTS', KEYS[i]) == 1 end
local version = redis.call('HINCRBY', KEYS[2], '\\0seq', 1)
if version == 1 then
  -- A new counter: the class's keys were deleted or expired. Start it at the server time in
  -- microseconds, above every version handed out before, so that none is ever reused.
  version = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
  redis.call('HSET', KEYS[2], '\\0seq', string.format('%d', version))
end
local parts = {string.format('%d', version), '|'}
for i = base + 5, #ARGV, 3 do
  local field, member = ARGV[i], ARGV[i + 1]
  redis.call('ZADD', index[field], ARGV[i + 2], member)
  parts[#parts + 1] = #field .. ':' .. field .. #member .. ':' .. member
end
redis.call('HSET', KEYS[2], pk, table.concat(parts))
local ttl = ARGV[base + 2]
local until_ms = 'inf'
if ttl ~= '' then until_ms = now + tonumber(ttl) end
if hashed then
  redis.call('HSET', KEYS[3], pk, ARGV[base + 1])
elseif ttl == '' then
  redis.call('SET', KEYS[3], ARGV[base + 1])
else
  redis.call('SET', KEYS[3], ARGV[base + 1], 'PXAT', until_ms)
end
redis.call('ZADD', KEYS[1], until_ms, pk)
-- The class's keys live at least as long as their longest-lived object, so a class
-- nobody writes any more disappears by itself once all of its objects expired.
for i = 1, 3 + nidx do
  if hashed or i ~= 3 then
    local pttl = redis.call('PTTL', KEYS[i])
    if pttl ~= -2 then
      if ttl == '' then
        if pttl >= 0 then redis.call('PERSIST', KEYS[i]) end
      elseif (pttl >= 0 and now + pttl < until_ms) or (pttl == -1 and not existed[i]) then
        redis.call('PEXPIREAT', KEYS[i], until_ms)
      end
    end
  end
end
return {1, version}
"""
)

# Read one object.
# ARGV[base]  pk
# Returns {JSON, version}, or nil when it does not exist or has expired (then cleaned).
_GET = (
    _PRELUDE
    + """
local pk = ARGV[base]
local deadline = redis.call('ZSCORE', KEYS[1], pk)
if not deadline then return nil end
if not live(deadline) then drop(pk) return nil end
local data
if hashed then data = redis.call('HGET', KEYS[3], pk) else data = redis.call('GET', KEYS[3]) end
if not data then drop(pk) return nil end
return {data, version_of(redis.call('HGET', KEYS[2], pk))}
"""
)

# Delete objects.
# ARGV[base]      'check': an object written since the caller read it fails the call (one
#                 object only); 'skip': such an object is left alone; '': no check
# ARGV[base+1 ..] (pk, the version the caller read or '') pairs; key layout: KEYS[4+n ..] are
#                 the objects' keys, in the same order
# Returns {1, number of live objects deleted}, or {0, current version} when 'check' failed.
_DELETE = (
    _PRELUDE
    + """
local mode = ARGV[base]
local removed, n = 0, 0
for i = base + 1, #ARGV, 2 do
  n = n + 1
  local pk = ARGV[i]
  local alive = live(redis.call('ZSCORE', KEYS[1], pk))
  local current = 0
  if alive then current = version_of(redis.call('HGET', KEYS[2], pk)) end
  local unchanged = mode == '' or tonumber(ARGV[i + 1]) == current
  if not unchanged and mode == 'check' then return {0, current} end
  if unchanged then
    drop(pk)
    if not hashed then redis.call('DEL', KEYS[3 + nidx + n]) end
    if alive then removed = removed + 1 end
  end
end
return {1, removed}
"""
)

# Find objects through the indexes.
# ARGV[base]    'd': return each object's JSON too (hash layout); 'p': pks and versions only
# ARGV[base+1]  the number of conditions
# then per condition: its field, 's' (score) or 'l' (lexical), the number of ranges, and
#               each range's min and max (ZRANGEBYSCORE / ZRANGEBYLEX syntax)
# Walks the condition with the fewest entries (the caller checks the others) and returns
# pk, version[, JSON] of each live object listed; entries of dead objects are cleaned.
_FIND = (
    _PRELUDE
    + """
local with_data = ARGV[base] == 'd'
local best = nil
local pos = base + 2
for c = 1, tonumber(ARGV[base + 1]) do
  local key, kind, count = index[ARGV[pos]], ARGV[pos + 1], tonumber(ARGV[pos + 2])
  local ranges, total = {}, 0
  pos = pos + 3
  for r = 1, count do
    local lo, hi = ARGV[pos], ARGV[pos + 1]
    pos = pos + 2
    if kind == 's' then
      total = total + redis.call('ZCOUNT', key, lo, hi)
    else
      total = total + redis.call('ZLEXCOUNT', key, lo, hi)
    end
    ranges[#ranges + 1] = {lo, hi}
  end
  if best == nil or total < best[4] then best = {key, kind, ranges, total} end
end
local out, seen = {}, {}
for _, range in ipairs(best[3]) do
  local members
  if best[2] == 's' then
    members = redis.call('ZRANGEBYSCORE', best[1], range[1], range[2])
  else
    members = redis.call('ZRANGEBYLEX', best[1], range[1], range[2])
  end
  for _, member in ipairs(members) do
    local pk = member
    if best[2] == 'l' then
      local nul = string.find(member, '\\0', 1, true)
      pk = nul and string.sub(member, nul + 1)
    end
    if not pk then
      redis.call('ZREM', best[1], member)  -- without NUL: not a member we wrote
    elseif not seen[pk] then
      seen[pk] = true
      local deadline = redis.call('ZSCORE', KEYS[1], pk)
      if live(deadline) then
        out[#out + 1] = pk
        out[#out + 1] = version_of(redis.call('HGET', KEYS[2], pk))
        if with_data then out[#out + 1] = redis.call('HGET', KEYS[3], pk) or '' end
      elseif deadline then
        drop(pk)
      else
        redis.call('ZREM', best[1], member)
      end
    end
  end
end
return out
"""
)

# One page of every object of the class.
# ARGV[base]    the ZSCAN cursor over KEYS[1]
# ARGV[base+1]  ZSCAN COUNT
# ARGV[base+2]  'd': return each object's JSON too (hash layout); 'p': pks and versions only
# Returns {next cursor, pk, version[, JSON], ...}; expired objects met are cleaned.
_SCAN = (
    _PRELUDE
    + """
local with_data = ARGV[base + 2] == 'd'
local reply = redis.call('ZSCAN', KEYS[1], ARGV[base], 'COUNT', ARGV[base + 1])
local out = {reply[1]}
local items = reply[2]
for i = 1, #items - 1, 2 do
  local pk = items[i]
  if live(items[i + 1]) then
    out[#out + 1] = pk
    out[#out + 1] = version_of(redis.call('HGET', KEYS[2], pk))
    if with_data then out[#out + 1] = redis.call('HGET', KEYS[3], pk) or '' end
  else
    drop(pk)
  end
end
return out
"""
)

# Count the live objects. No own ARGV. Returns an integer.
_COUNT = (
    _PRELUDE
    + """
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""
)

# Delete every key of the class (KEYS[1 .. 3+n]); in the key layout the caller deleted the
# objects' keys first. No own ARGV. Returns the number of live objects there were.
_CLEAR = (
    _PRELUDE
    + """
local n = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
redis.call('DEL', unpack(KEYS))
return n
"""
)

SCRIPTS = ScriptSet(
    save=_SAVE, get=_GET, delete=_DELETE, find=_FIND, scan=_SCAN, count=_COUNT, clear=_CLEAR
)


# --------------------------------------------------------------------------- types

_NONE_TYPE = type(None)
_BOOL: TypeAdapter[bool] = TypeAdapter(bool)
_STR: TypeAdapter[str] = TypeAdapter(str)


def _strip(annotation: Any) -> Any:
    """The annotation without ``Annotated`` and without ``None`` in an optional union."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not _NONE_TYPE]
        if len(args) == 1:
            return _strip(args[0])
    return annotation


def _generated_id_type(pk_fields: tuple[str, ...], fields: Mapping[str, Any]) -> type | None:
    """``str`` or ``int`` for a key that is one optional ``id`` field of that type."""
    if pk_fields != ("id",):
        return None
    annotation = fields["id"].annotation
    base = _strip(annotation)
    if base not in (str, int) or base is annotation:
        return None  # not optional: an id of None is a mistake to report, not to fill in
    return cast(type, base)


def _new_text_id() -> str:
    """A new text key: 128 random bits, distinct across processes without asking Redis."""
    return uuid.uuid4().hex


#: How many int keys a process takes from Redis at once (one INCRBY per block).
ID_BLOCK = 1000


class _IdBlocks:
    """Int keys handed out from blocks reserved with one ``INCRBY`` of a per-class
    counter: distinct across processes and threads, one round trip per :data:`ID_BLOCK`
    new objects. A forked child never reuses its parent's block."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: dict[str, tuple[int, int, int]] = {}  # key -> (pid, next, end)

    def take(self, client: Any, key: str) -> int:
        with self._lock:
            pid = os.getpid()
            owner, nxt, end = self._blocks.get(key, (pid, 0, 0))
            if owner != pid or nxt >= end:
                end = int(client.incrby(key, ID_BLOCK)) + 1
                nxt = end - ID_BLOCK
            self._blocks[key] = (pid, nxt + 1, end)
            return nxt


def _index_kind(annotation: Any) -> str | None:
    """``"score"``, ``"text"`` (str: ranges and prefixes too), ``"lex"`` or None."""
    base = _strip(annotation)
    if not isinstance(base, type):
        return None
    if issubclass(base, bool | enum.Enum | uuid.UUID):
        return "lex"
    if issubclass(base, int | float | Decimal | dt.date):
        return "score"
    if issubclass(base, str):
        return "text"
    return None


def _score(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return float(value.timestamp())
    if isinstance(value, dt.date):
        return float(value.toordinal())
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range sorts at its end
        return float("inf") if value > 0 else float("-inf")
    return None if number != number else number  # NaN cannot be a score


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, enum.Enum):
        return _text(value.value)
    return str(value)


def _lex(value: Any) -> bytes:
    # \0 separates value and pk in a member, so values carry no \0: \1 escapes \0 and itself.
    # UTF-8 preserves code point order, so byte ranges are string ranges.
    return _text(value).replace("\x01", "\x01\x02").replace("\x00", "\x01\x01").encode()


def _score_text(score: float) -> str:
    return repr(score)


# --------------------------------------------------------------------------- class meta


@dataclass(frozen=True)
class _Index:
    field: str
    kind: str  # "score", "lex" or "text"


@dataclass
class _Meta:
    storage_name: str
    layout: str
    expire_ms: int | None
    pk_fields: tuple[str, ...]
    #: Per primary-key field: whether its text values are JSON-quoted in the key (fields
    #: whose values are not all of one class, e.g. ``int | str``, where 1 and "1" differ).
    pk_json: tuple[bool, ...]
    indexes: tuple[_Index, ...]
    index_by_field: dict[str, _Index]
    strict: bool
    optimistic: bool
    adapters: dict[str, TypeAdapter[Any]]
    #: Per field, for lookup values: the annotation without None, and its item type.
    value_adapters: dict[str, TypeAdapter[Any]]
    item_adapters: dict[str, TypeAdapter[Any] | None]
    #: Key names per key space (names are built once, not on every call).
    names: dict[KeySpace, tuple[str, str, str, tuple[str, ...]]]
    #: ``str`` or ``int`` when the key is an optional ``id`` field (``id: str | None =
    #: None``) that gets a generated value on first use, else None.
    generated_id: type | None = None
    id_blocks: _IdBlocks = dc_field(default_factory=_IdBlocks)


@dataclass(frozen=True)
class _Keys:
    binding: Binding
    client: Any
    all: str
    meta: str
    data: str
    indexes: tuple[str, ...]
    keyspace: KeySpace
    tag: str

    def obj(self, pk: str) -> str:
        return self.keyspace.tagged(self.tag, "obj", pk)


#: What :meth:`RedisModel.bind` gave each class (subclasses inherit it).
_bindings: weakref.WeakKeyDictionary[type, Binding] = weakref.WeakKeyDictionary()


def _expire_ms(owner: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise TypeError(
            f"{owner}.__expire__ must be a positive number of seconds or None, not {value!r}"
        )
    return max(1, round(value * 1000))


# --------------------------------------------------------------------------- lookups


@dataclass(frozen=True)
class _Cond:
    field: str
    op: str
    value: Any

    def test(self, obj: Any) -> bool:
        actual = getattr(obj, self.field, None)
        op, value = self.op, self.value
        try:
            if op == "eq":
                return bool(actual == value)
            if op == "isnull":
                return (actual is None) is bool(value)
            if actual is None:
                return False
            if op == "ne":
                return value is None or bool(actual != value)
            if op == "lt":
                return bool(actual < value)
            if op == "lte":
                return bool(actual <= value)
            if op == "gt":
                return bool(actual > value)
            if op == "gte":
                return bool(actual >= value)
            if op == "in":
                return actual in value
            if op == "contains":
                return value in actual
            if op == "startswith":
                return isinstance(actual, str) and actual.startswith(value)
        except TypeError:  # e.g. an aware and a naive datetime: not a match, not a crash
            return False
        raise AssertionError(op)  # pragma: no cover  (ops are checked when parsed)

    def ranges(self, kind: str) -> list[tuple[Any, Any]] | None:
        """Index ranges holding every match, or None when the index cannot serve it."""
        op, value = self.op, self.value
        if op == "eq" and value is None:
            return None
        if op == "isnull":
            return None if value else ([("-inf", "+inf")] if kind == "score" else [("-", "+")])
        if op == "in":  # None is in no index, and test() matches it with nothing
            value = [v for v in value if v is not None]
        elif value is None:  # a comparison with None: test() matches nothing
            return [] if op in ("lt", "lte", "gt", "gte", "startswith") else None
        if kind == "score":
            if op in ("eq", "in"):
                scores = (_score(v) for v in (value if op == "in" else [value]))
                return [(_score_text(s), _score_text(s)) for s in scores if s is not None]
            if op in ("lt", "lte", "gt", "gte"):
                # Bounds are inclusive: float() of a Decimal or a datetime is monotonic but
                # may round, and the exact comparison runs on the loaded objects.
                score = _score(value)
                if score is None:
                    return []
                text = _score_text(score)
                return [("-inf", text)] if op in ("lt", "lte") else [(text, "+inf")]
            return None
        if op in ("eq", "in"):
            return [
                (b"[" + _lex(v) + b"\x00", b"(" + _lex(v) + b"\x01")
                for v in (value if op == "in" else [value])
            ]
        if kind != "text":
            return None
        lex = _lex(value)
        if op == "startswith":
            return [(b"[" + lex, b"(" + lex + b"\xff")]  # no UTF-8 byte is 0xff
        if op == "lt":
            return [(b"-", b"(" + lex)]
        if op == "lte":
            return [(b"-", b"(" + lex + b"\x01")]
        if op == "gt":
            return [(b"(" + lex + b"\x01", b"+")]
        if op == "gte":
            return [(b"[" + lex, b"+")]
        return None


def _item_annotation(annotation: Any) -> Any:
    base = _strip(annotation)
    if isinstance(base, type) and issubclass(base, str):
        return base
    origin = typing.get_origin(base)
    args = typing.get_args(base)
    if origin in (list, set, frozenset, tuple) and args:
        return args[0]
    if origin is dict and args:
        return args[0]
    return Any


# --------------------------------------------------------------------------- transactions


def _defer(what: str, action: Callable[[], None]) -> None:
    """Run ``action`` after the commit of pyramid_tm's ``request.tm`` inside a request,
    else of the thread's current ``transaction``."""
    from pyramid.threadlocal import get_current_request

    # request.tm is pyramid_tm's manager (tm.manager_hook may make it other than the
    # thread's default); a request without pyramid_tm has no such attribute.
    tm = getattr(get_current_request(), "tm", None)
    after_commit(what, action, transaction_manager=tm)


# --------------------------------------------------------------------------- the model


class RedisModel(BaseModel):
    """Base class of models persisted in Redis.

    Class options (all optional):

    ``__expire__``
        Seconds each saved object lives (each save restarts its own clock); ``None``
        (default) keeps objects until deleted.
    ``__unique_together__``
        Field names whose values form the primary key. Without it the ``id`` field is the
        key; a class with neither gets a generated key per object (``obj.pk``). An
        optional ``id: str | None`` or ``id: int | None`` left at None is generated at
        the first save.
    ``__layout__``
        ``"hash"`` (default): the objects of a class in one Redis hash; ``"key"``: one Redis
        key per object, with its own TTL.
    ``__indexes__``
        Field names to index: int, float, Decimal, date and datetime fields in a sorted set
        by value; str, bool, Enum and UUID fields in a sorted set by text.
    ``__strict__``
        When true, a lookup no index can serve raises
        :class:`~pyramid_transient.exceptions.FullScanRefused` instead of
        iterating every object (``all()`` and ``delete_all()`` stay allowed).
    ``__optimistic__``
        Default of ``save(if_unmodified=...)`` and ``delete(if_unmodified=...)``.
    ``__storage_name__``
        The name in keys (default: the class name).
    """

    model_config = ConfigDict(
        validate_assignment=True,
        ser_json_inf_nan="constants",
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )

    __expire__: ClassVar[float | None] = None
    __unique_together__: ClassVar[tuple[str, ...]] = ()
    __layout__: ClassVar[Literal["hash", "key"]] = "hash"
    __indexes__: ClassVar[tuple[str, ...]] = ()
    __strict__: ClassVar[bool] = False
    __optimistic__: ClassVar[bool] = False
    __storage_name__: ClassVar[str | None] = None
    __transient_meta__: ClassVar[_Meta]

    _pk: str | None = PrivateAttr(default=None)
    # True from the moment an optional id is filled in until the first save: that save
    # must create the object, never overwrite another one that drew the same id.
    _id_generated: bool = PrivateAttr(default=False)
    _version: int = PrivateAttr(default=0)
    # Versions this object's own deferred writes moved it from and to: a deferred write
    # checks the version it was requested on, followed through these (its own earlier
    # deferred writes of the transaction), never a version read in between.
    _deferred_moves: dict[int, int] = PrivateAttr(default_factory=dict)

    def _deferred_base(self, version: int) -> int:
        while version in self._deferred_moves:
            version = self._deferred_moves[version]
        return version

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        name = cls.__qualname__
        fields = cls.model_fields
        layout = cls.__dict__.get("__layout__", cls.__layout__)
        if layout not in ("hash", "key"):
            raise TypeError(f"{name}.__layout__ must be 'hash' or 'key', not {layout!r}")
        unique = tuple(cls.__unique_together__)
        for field in unique:
            if field not in fields:
                raise TypeError(
                    f"{name}.__unique_together__ names {field!r}, which is not a field of "
                    f"{name} (fields: {', '.join(fields)})"
                )
        pk_fields = unique or (("id",) if "id" in fields else ())
        indexes = []
        for field in cls.__indexes__:
            if field not in fields:
                raise TypeError(
                    f"{name}.__indexes__ names {field!r}, which is not a field of {name} "
                    f"(fields: {', '.join(fields)})"
                )
            kind = _index_kind(fields[field].annotation)
            if kind is None:
                raise TypeError(
                    f"{name}.__indexes__: field {field!r} of type "
                    f"{fields[field].annotation!r} cannot be indexed; index int, float, "
                    "Decimal, date, datetime, str, bool, Enum or UUID fields"
                )
            indexes.append(_Index(field, kind))
        storage = cls.__dict__.get("__storage_name__") or cls.__name__
        cls.__transient_meta__ = _Meta(
            storage_name=storage,
            layout=layout,
            expire_ms=_expire_ms(name, cls.__expire__),
            pk_fields=pk_fields,
            pk_json=tuple(not isinstance(_strip(fields[f].annotation), type) for f in pk_fields),
            indexes=tuple(indexes),
            index_by_field={i.field: i for i in indexes},
            strict=bool(cls.__strict__),
            optimistic=bool(cls.__optimistic__),
            adapters={f: TypeAdapter(cast(Any, info.annotation)) for f, info in fields.items()},
            value_adapters={
                f: TypeAdapter(cast(Any, _strip(info.annotation))) for f, info in fields.items()
            },
            item_adapters={
                f: None if item is Any else TypeAdapter(item)
                for f, info in fields.items()
                for item in [_item_annotation(info.annotation)]
            },
            names={},
            generated_id=_generated_id_type(pk_fields, fields),
        )

    # ------------------------------------------------------------------ binding

    @classmethod
    def bind(cls, target: redis.Redis | RedisManager | Any) -> None:
        """Use ``target`` for this class and its subclasses, instead of the running app's
        manager.

        ``target`` is a :class:`~pyramid_transient.connection.RedisManager`, a Pyramid
        registry or request (its app's manager), or a bare ``redis.Redis`` /
        ``RedisCluster``. A manager gives its ``models`` database and key prefix, asking
        for the client on every use (so a forked worker gets its own connections); a bare
        client gets keys without a prefix (``model:...``).
        """
        _bindings[cls] = bind(target, CAPABILITY, DATABASE)

    @classmethod
    def unbind(cls) -> None:
        """Forget what :meth:`bind` gave this class (back to the running app's manager)."""
        _bindings.pop(cls, None)

    @classmethod
    def _keys(cls) -> _Keys:
        binding = None
        for klass in cls.__mro__:
            binding = _bindings.get(klass)
            if binding is not None:
                break
        if binding is None:  # the running app's, found now (never cached: apps differ)
            binding = bind(None, CAPABILITY, DATABASE)
        meta = cls.__transient_meta__
        ks, tag = binding.keyspace, meta.storage_name
        names = meta.names.get(ks)
        if names is None:
            names = meta.names[ks] = (
                ks.tagged(tag, "all"),
                ks.tagged(tag, "meta"),
                ks.tagged(tag, "data"),
                tuple(ks.tagged(tag, "idx", i.field) for i in meta.indexes),
            )
        return _Keys(binding, binding.client, *names, keyspace=ks, tag=tag)

    @classmethod
    def _run(cls, keys: _Keys, name: str, data_key: str, extra_keys: Sequence[str],
             args: Sequence[Any]) -> Any:  # fmt: skip
        meta = cls.__transient_meta__
        all_keys = [keys.all, keys.meta, data_key, *keys.indexes, *extra_keys]
        head = ["h" if meta.layout == "hash" else "k", len(meta.indexes)]
        head.extend(i.field for i in meta.indexes)
        return keys.binding.run(SCRIPTS, name, all_keys, [*head, *args], client=keys.client)

    # ------------------------------------------------------------------ keys

    @property
    def pk(self) -> str:
        """The primary key, as it appears in Redis keys."""
        cls = type(self)
        meta = cls.__transient_meta__
        if meta.pk_fields:
            values = [getattr(self, f) for f in meta.pk_fields]
            if values[0] is None and meta.generated_id is not None:
                values = [cls._new_id()]
                setattr(self, "id", values[0])  # noqa: B010 (a field, unknown to the base)
                self._id_generated = True
            elif meta.pk_fields == ("id",) and values[0] is None:
                raise ValueError(
                    f"{cls.__name__}.id is None: set it, or remove the id field to get "
                    "generated keys"
                )
            return cls._pk_text(values)
        if self._pk is None:
            self._pk = uuid.uuid4().hex
        return self._pk

    @classmethod
    def _new_id(cls) -> str | int:
        """A value for an optional ``id`` left at None: text ids are random, int ids come
        from the class's counter in Redis, a block at a time."""
        meta = cls.__transient_meta__
        if meta.generated_id is str:
            return _new_text_id()
        keys = cls._keys()
        counter = keys.keyspace.tagged(keys.tag, "ids")
        with keys.binding.errors(counter):
            return meta.id_blocks.take(keys.client, counter)

    @classmethod
    def _pk_text(cls, values: Sequence[Any]) -> str:
        meta = cls.__transient_meta__
        parts = []
        for field, value, as_json in zip(meta.pk_fields, values, meta.pk_json, strict=True):
            if value is None:
                parts.append("%")  # quote() never makes a lone "%": no value's text is this
                continue
            plain = meta.adapters[field].dump_python(value, mode="json")
            if isinstance(plain, str) and not as_json:
                text = plain
            else:
                text = json.dumps(plain, separators=(",", ":"), ensure_ascii=False)
            parts.append(quote(text))
        return ":".join(parts)

    @classmethod
    def _coerce_pk(cls, pk: Any) -> str:
        meta = cls.__transient_meta__
        if not meta.pk_fields:
            if not isinstance(pk, str):
                raise ValueError(
                    f"{cls.__name__} has generated keys: give obj.pk (a str), not {pk!r}"
                )
            return pk
        values: list[Any] | None
        if isinstance(pk, Mapping):
            values = [pk[f] for f in meta.pk_fields] if set(pk) >= set(meta.pk_fields) else None
        elif len(meta.pk_fields) > 1:
            ok = isinstance(pk, list | tuple) and len(pk) == len(meta.pk_fields)
            values = list(pk) if ok else None
        else:
            values = [pk]
        if values is None:
            raise ValueError(
                f"{cls.__name__}'s primary key is {', '.join(meta.pk_fields)}: give a tuple or "
                f"a dict of those values, not {pk!r}"
            )
        coerced = [cls._coerce(f, v, "eq") for f, v in zip(meta.pk_fields, values, strict=True)]
        return cls._pk_text(coerced)

    # ------------------------------------------------------------------ encoding

    def _index_args(self) -> list[Any]:
        meta = type(self).__transient_meta__
        args: list[Any] = []
        pk = self.pk
        for idx in meta.indexes:
            value = getattr(self, idx.field)
            if value is None:
                continue
            if idx.kind == "score":
                # NaN has no place in an order: it is indexed at +inf, so that isnull=False
                # finds it, and every comparison with it is false once the object is loaded.
                score = _score(value)
                args += [idx.field, pk, _score_text(float("inf") if score is None else score)]
            else:
                args += [idx.field, _lex(value) + b"\x00" + pk.encode(), 0]
        return args

    @classmethod
    def _load(cls, pk: str, version: int, data: bytes | None) -> Self | None:
        if not data:
            return None
        try:
            obj = cls.model_validate_json(data)
        except ValidationError as exc:
            log.warning(
                "skipping stored %s %r: its data does not validate (%s)",
                cls.__name__, pk, exc.error_count(),
            )  # fmt: skip
            return None
        if not cls.__transient_meta__.pk_fields:
            obj._pk = pk
        obj._version = int(version)
        return obj

    # ------------------------------------------------------------------ writes

    def save(
        self,
        *,
        if_unmodified: bool | None = None,
        on_commit: bool = False,
        expire: float | Literal["default"] | None = "default",
    ) -> Self:
        """Write the object and its index entries (one round trip); return it.

        ``if_unmodified`` (default ``__optimistic__``): refuse with
        :class:`~pyramid_transient.exceptions.ConflictError` if someone wrote or deleted the
        object since it was read (for an object never read: if it exists). ``on_commit``:
        write only when the current transaction commits (pyramid_tm's ``request.tm`` inside
        a request, else the thread's; dropped on abort or a rolled-back savepoint).
        ``expire``: seconds, overriding ``__expire__`` for this save.
        """
        cls = type(self)
        meta = cls.__transient_meta__
        ttl = meta.expire_ms if expire == "default" else _expire_ms(cls.__name__, expire)
        pk = self.pk  # first: a generated id must be in the payload
        payload = self.model_dump_json()
        check = meta.optimistic if if_unmodified is None else if_unmodified
        if self._id_generated and self._version == 0:
            check = True  # "must not exist yet": a generated id never overwrites
        index_args = self._index_args()
        requested_on = self._version  # the version the payload was built on

        def write() -> None:
            keys = cls._keys()
            data_key = keys.data if meta.layout == "hash" else keys.obj(pk)
            base = self._deferred_base(requested_on) if on_commit else requested_on
            expected = str(base) if check else ""
            args = [pk, payload, "" if ttl is None else ttl, expected, PURGE_BATCH, *index_args]
            ok, version = cls._run(keys, "save", data_key, (), args)
            if not ok:
                raise ConflictError(
                    f"{cls.__name__} {pk!r} was changed since it was read (version "
                    f"{base}, now {version}); reload it and try again"
                )
            if on_commit:
                self._deferred_moves[base] = int(version)
            self._version = int(version)

        if on_commit:
            _defer(f"deferred save of {cls.__name__} {pk!r}", write)
        else:
            write()
        return self

    set = save

    def delete(self, *, if_unmodified: bool | None = None, on_commit: bool = False) -> bool | None:
        """Delete the object (one round trip); return whether it existed.

        ``if_unmodified`` and ``on_commit`` as for :meth:`save`; a deferred delete returns
        None (the outcome is known only at the commit).
        """
        cls = type(self)
        meta = cls.__transient_meta__
        check = meta.optimistic if if_unmodified is None else if_unmodified
        pk = self.pk
        result: list[bool] = [False]
        requested_on = self._version

        def remove() -> None:
            keys = cls._keys()
            extra = [keys.obj(pk)] if meta.layout == "key" else []
            base = self._deferred_base(requested_on) if on_commit else requested_on
            args = ["check", pk, base] if check else ["", pk, ""]
            ok, n = cls._run(keys, "delete", keys.data, extra, args)
            if not ok:
                raise ConflictError(
                    f"{cls.__name__} {pk!r} was changed since it was read (version "
                    f"{base}, now {n}); reload it and try again"
                )
            self._version = 0
            result[0] = bool(n)

        if on_commit:
            _defer(f"deferred delete of {cls.__name__} {pk!r}", remove)
            return None
        remove()
        return result[0]

    def refresh(self) -> Self:
        """Reload the object's fields from Redis;
        :class:`~pyramid_transient.exceptions.NotFound` if it is gone."""
        fresh = type(self)._get_pk(self.pk)
        if fresh is None:
            raise NotFound(f"{type(self).__name__} {self.pk!r} does not exist (any more)")
        self.__dict__.update(fresh.__dict__)
        object.__setattr__(self, "__pydantic_fields_set__", set(fresh.model_fields_set))
        self._version = fresh._version
        return self

    # ------------------------------------------------------------------ reads

    @classmethod
    def _get_pk(cls, pk: str) -> Self | None:
        keys = cls._keys()
        data_key = keys.data if cls.__transient_meta__.layout == "hash" else keys.obj(pk)
        reply = cls._run(keys, "get", data_key, (), [pk])
        if reply is None:
            return None
        return cls._load(pk, reply[1], reply[0])

    @classmethod
    def get(cls, pk: Any) -> Self:
        """The object with primary key ``pk`` (one round trip);
        :class:`~pyramid_transient.exceptions.NotFound` if none.

        ``pk`` is the ``id`` value, a tuple (or dict) of the ``__unique_together__`` values,
        or the generated ``obj.pk``; values are coerced to the fields' types.
        """
        text = cls._coerce_pk(pk)
        obj = cls._get_pk(text)
        if obj is None:
            raise NotFound(f"no {cls.__name__} has primary key {pk!r}")
        return obj

    match_for_pk = get

    @classmethod
    def match(cls, **lookups: Any) -> Self:
        """The one object matching every lookup, the primary key included.

        With the primary key (``pk=...`` or every key field) it costs one round trip;
        otherwise as :meth:`filter`. Raises :class:`~pyramid_transient.exceptions.NotFound` or
        :class:`~pyramid_transient.exceptions.MultipleFound`.
        """
        meta = cls.__transient_meta__
        pk_value: Any = None
        rest = dict(lookups)
        if "pk" in rest:
            pk_value = cls._coerce_pk(rest.pop("pk"))
        elif meta.pk_fields and all(f in lookups for f in meta.pk_fields):
            values = [cls._coerce(f, lookups[f], "eq") for f in meta.pk_fields]
            if not (meta.pk_fields == ("id",) and values[0] is None):
                pk_value = cls._pk_text(values)
        if pk_value is None:
            return cls.match_for_values(**lookups)
        conds = cls._parse(rest)
        obj = cls._get_pk(pk_value)
        if obj is None or not all(c.test(obj) for c in conds):
            raise NotFound(f"no {cls.__name__} matches {lookups!r}")
        return obj

    @classmethod
    def match_for_values(cls, **lookups: Any) -> Self:
        """The one object :meth:`filter` finds;
        :class:`~pyramid_transient.exceptions.NotFound` or
        :class:`~pyramid_transient.exceptions.MultipleFound`."""
        found = cls.filter(**lookups)
        if not found:
            raise NotFound(f"no {cls.__name__} matches {lookups!r}")
        if len(found) > 1:
            raise MultipleFound(f"{len(found)} {cls.__name__} objects match {lookups!r}")
        return found[0]

    @classmethod
    def filter(cls, **lookups: Any) -> list[Self]:
        """Every object matching all lookups (``field=v``, ``field__gte=v``, ...).

        With a lookup an index can serve: at most two round trips (one in the hash layout),
        cost proportional to the entries of the most selective indexed lookup. Otherwise the
        class's own objects are iterated in batches of :data:`SCAN_BATCH`.
        """
        conds = cls._parse(lookups)
        if any(c.op == "in" and not c.value for c in conds):
            return []
        meta = cls.__transient_meta__
        indexed = []
        for cond in conds:
            idx = meta.index_by_field.get(cond.field)
            ranges = cond.ranges(idx.kind) if idx is not None else None
            if idx is not None and ranges is not None:
                indexed.append((idx, ranges))
        if indexed:
            found: Iterable[Self] = cls._find(indexed)
        else:
            cls._refuse_scan(lookups)
            found = cls._scan()
        return [obj for obj in found if all(c.test(obj) for c in conds)]

    @classmethod
    def exclude(cls, **lookups: Any) -> list[Self]:
        """Every object that does not match all lookups (iterates every object)."""
        conds = cls._parse(lookups)
        cls._refuse_scan(lookups)
        return [obj for obj in cls._scan() if not all(c.test(obj) for c in conds)]

    @classmethod
    def all(cls) -> list[Self]:
        """Every live object of the class, loaded in batches of :data:`SCAN_BATCH`."""
        return list(cls._scan())

    @classmethod
    def iterate(cls) -> Iterator[Self]:
        """Like :meth:`all`, one batch in memory at a time."""
        return cls._scan()

    @classmethod
    def count(cls, **lookups: Any) -> int:
        """How many live objects match (all of them: one round trip)."""
        if lookups:
            return len(cls.filter(**lookups))
        keys = cls._keys()
        return int(cls._run(keys, "count", keys.data, (), []))

    @classmethod
    def delete_all(cls) -> int:
        """Delete every object of the class; return how many were alive."""
        meta = cls.__transient_meta__
        keys = cls._keys()
        deleted = 0
        if meta.layout == "key":
            while True:
                with keys.binding.errors(keys.all):
                    pks = [p.decode() for p in keys.client.zrange(keys.all, 0, SCAN_BATCH - 1)]
                if not pks:
                    break
                deleted += cls._delete_pks(keys, [(pk, "") for pk in pks])
        return deleted + int(cls._run(keys, "clear", keys.data, (), []))

    @classmethod
    def delete_filter(cls, **lookups: Any) -> int:
        """Delete every object :meth:`filter` finds (one more round trip per
        :data:`SCAN_BATCH` of them); return how many.

        An object written by someone else between the filter and the delete is left alone:
        it may no longer match.
        """
        found = cls.filter(**lookups)
        if not found:
            return 0
        keys = cls._keys()
        total = 0
        for start in range(0, len(found), SCAN_BATCH):
            batch = found[start : start + SCAN_BATCH]
            total += cls._delete_pks(keys, [(o.pk, o._version) for o in batch], "skip")
        return total

    @classmethod
    def _delete_pks(cls, keys: _Keys, pks: Sequence[tuple[str, Any]], mode: str = "") -> int:
        """Delete ``(pk, version read)`` pairs; ``mode`` as the delete script's."""
        layout = cls.__transient_meta__.layout
        extra = [keys.obj(pk) for pk, _ in pks] if layout == "key" else []
        args: list[Any] = [mode]
        for pk, version in pks:
            args += [pk, version]
        _ok, n = cls._run(keys, "delete", keys.data, extra, args)
        return int(n)

    # ------------------------------------------------------------------ internals

    @classmethod
    def _refuse_scan(cls, lookups: Mapping[str, Any]) -> None:
        if cls.__transient_meta__.strict:
            indexed = ", ".join(cls.__transient_meta__.index_by_field) or "none"
            raise FullScanRefused(
                f"{cls.__name__} is strict and no index serves {sorted(lookups)!r} "
                f"(indexed fields: {indexed}); add an indexed lookup or index the field"
            )

    @classmethod
    def _parse(cls, lookups: Mapping[str, Any]) -> list[_Cond]:
        conds = []
        fields = cls.model_fields
        for name, value in lookups.items():
            field, _, op = name.partition("__")
            op = op or "eq"
            if field not in fields:
                raise ValueError(
                    f"{cls.__name__} has no field {field!r} (lookup {name!r}); fields are "
                    f"{', '.join(fields)}"
                )
            if op not in LOOKUPS:
                raise ValueError(
                    f"{name!r}: unknown lookup {op!r}; accepted: "
                    + ", ".join(f"__{o}" for o in LOOKUPS if o != "eq")
                )
            conds.append(_Cond(field, op, cls._coerce(field, value, op)))
        return conds

    @classmethod
    def _coerce(cls, field: str, value: Any, op: str) -> Any:
        annotation = cls.model_fields[field].annotation
        meta = cls.__transient_meta__
        try:
            if op == "isnull":
                return _BOOL.validate_python(value)
            if op == "in":
                if isinstance(value, str | bytes) or not isinstance(value, Iterable):
                    raise ValueError("expected a list, tuple or set of values")
                adapter = meta.value_adapters[field]
                return [None if v is None else adapter.validate_python(v) for v in value]
            if value is None:
                return None
            if op == "startswith":
                return _STR.validate_python(value)
            if op == "contains":
                item = meta.item_adapters[field]
                return value if item is None else item.validate_python(value)
            return meta.value_adapters[field].validate_python(value)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise ValueError(
                f"{cls.__name__}.{field}__{op}: {value!r} is not a valid value for a field "
                f"of type {annotation!r} ({str(exc).splitlines()[-1].strip()})"
            ) from None

    @classmethod
    def _find(cls, indexed: list[tuple[_Index, list[tuple[Any, Any]]]]) -> list[Self]:
        meta = cls.__transient_meta__
        keys = cls._keys()
        args: list[Any] = ["d" if meta.layout == "hash" else "p", len(indexed)]
        for idx, ranges in indexed:
            args += [idx.field, "s" if idx.kind == "score" else "l", len(ranges)]
            for lo, hi in ranges:
                args += [lo, hi]
        reply = cls._run(keys, "find", keys.data, (), args)
        return cls._collect(keys, reply)

    @classmethod
    def _collect(cls, keys: _Keys, reply: list[Any]) -> list[Self]:
        out: list[Self] = []
        if cls.__transient_meta__.layout == "hash":
            for i in range(0, len(reply), 3):
                obj = cls._load(reply[i].decode(), reply[i + 1], reply[i + 2])
                if obj is not None:
                    out.append(obj)
            return out
        pks = [reply[i].decode() for i in range(0, len(reply), 2)]
        if not pks:
            return out
        with keys.binding.errors():
            datas = keys.client.mget([keys.obj(pk) for pk in pks])
        for n, (pk, data) in enumerate(zip(pks, datas, strict=True)):
            obj = cls._load(pk, reply[2 * n + 1], data)
            if obj is not None:
                out.append(obj)
        return out

    @classmethod
    def _scan(cls) -> Iterator[Self]:
        meta = cls.__transient_meta__
        keys = cls._keys()
        mode = "d" if meta.layout == "hash" else "p"
        cursor: Any = 0
        seen: set[str] = set()
        while True:
            reply = cls._run(keys, "scan", keys.data, (), [cursor, SCAN_BATCH, mode])
            cursor = int(reply[0])
            for obj in cls._collect(keys, reply[1:]):
                if obj.pk not in seen:  # ZSCAN may return an element twice
                    seen.add(obj.pk)
                    yield obj
            if cursor == 0:
                return


# --------------------------------------------------------------------------- Pyramid


def includeme(config: Any) -> None:
    """Register the manager; models then use its ``models`` database when not bound."""
    from .connection import include_manager

    include_manager(config)
