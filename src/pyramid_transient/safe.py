"""Module safes: a private, persistent dict per module, every operation atomic.

::

    from pyramid_transient.safe import get_safe

    safe = get_safe(__name__)          # at import time: nothing connects yet

    def view(request):
        safe["last_seen"] = request.remote_addr        # one HSET
        for attempt in safe.atomic():                  # read-modify-write, retried
            with attempt as s:
                s["visits"] = s.get("visits", 0) + 1

Layout: one Redis hash per safe, ``{key_prefix}:safe:{<name>}`` in the ``safe`` named
database (``default`` when unmapped). Each key of the safe is a field of that hash, each
value its :mod:`~pyramid_transient.codec` encoding. The name is a Cluster hash tag, so the
whole safe lives on one slot and every operation, scripts included, is legal on a Cluster.

Every operation of the mapping is one round trip and atomic: a single hash command (HGET,
HSET with all the fields of an ``update``, HDEL, HLEN, HEXISTS, HKEYS, HGETALL, DEL) or one
small Lua script (``pop``, ``popitem``, ``setdefault``, the commit of :meth:`Safe.atomic`).
With ``transient.safe.wait_replicas = N`` each write is followed by ``WAIT`` in the same
round trip and raises :class:`~pyramid_transient.exceptions.ReplicationTimeout` when fewer
than N replicas acknowledge it within ``transient.safe.wait_timeout``.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
import weakref
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    Sequence,
    ValuesView,
)
from types import TracebackType
from typing import Any, cast

import redis
from redis.cluster import RedisCluster

from . import codec
from .binding import Binding, bind, guard, send_on_one_connection
from .connection import RedisManager, get_manager, include_manager
from .exceptions import (
    CodecError,
    ConfigurationError,
    ConflictError,
    CorruptData,
    InvalidArgument,
    ReplicationTimeout,
    UsageError,
)
from .lua import ScriptSet
from .settings import SafeSettings, TransientSettings

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_RETRIES",
    "Atomic",
    "Attempt",
    "Safe",
    "Transaction",
    "get_safe",
    "includeme",
]

#: The capability part of every key a safe writes.
CAPABILITY = "safe"
#: The named database safes live in (``default`` when ``transient.db.safe`` is not set).
DATABASE = "safe"
#: How many times ``for attempt in safe.atomic():`` runs a block again after a conflict.
DEFAULT_RETRIES = 10

# Module-level so tests can patch them (no real sleeping in the suite).
mod_sleep: Callable[[float], None] = time.sleep
mod_random: Callable[[], float] = random.random

# KEYS[1]  the safe's hash
# ARGV[1]  the field
# Returns the value it removed, or nil when the field was absent.
POP_SCRIPT = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if value then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return value
"""

# KEYS[1]  the safe's hash
# Returns {field, value} of the entry it removed, or nil when the safe is empty.
# HSCAN rather than HKEYS: the first non-empty page, not the whole hash.
POPITEM_SCRIPT = """
local cursor = '0'
repeat
  local page = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', 16)
  cursor = page[1]
  local entries = page[2]
  if #entries > 0 then
    redis.call('HDEL', KEYS[1], entries[1])
    return {entries[1], entries[2]}
  end
until cursor == '0'
return nil
"""

# KEYS[1]  the safe's hash
# ARGV[1]  the field
# ARGV[2]  the encoded default
# ARGV[3]  (optional) a corrupt value the caller saw: a field holding exactly these bytes
#          is treated as absent and replaced
# Returns {1, default} when it stored the default, {0, value} when the field had a value.
SETDEFAULT_SCRIPT = """
local value = redis.call('HGET', KEYS[1], ARGV[1])
if (not value) or (ARGV[3] and value == ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return {1, ARGV[2]}
end
return {0, value}
"""

# The commit of an atomic block: check what the block read, then apply what it wrote.
# KEYS[1]  the safe's hash
# ARGV[1]  the number of fields the hash must have, or -1 when the block did not iterate
#          or count it
# ARGV[2]  n, then n triples (field, "1" present / "0" absent, value as read)
# then     "1" to delete the whole hash before writing (the block called clear()), else "0"
# then     d, then d fields to delete
# then     field, value pairs to set (up to the end of ARGV)
# Returns 1 when applied; 0, writing nothing, when what the block read has changed.
COMMIT_SCRIPT = """
local hash = KEYS[1]
local expected_len = tonumber(ARGV[1])
if expected_len >= 0 and redis.call('HLEN', hash) ~= expected_len then
  return 0
end
local n = tonumber(ARGV[2])
local i = 3
for _ = 1, n do
  local current = redis.call('HGET', hash, ARGV[i])
  if ARGV[i + 1] == '1' then
    if current ~= ARGV[i + 2] then
      return 0
    end
  elseif current then
    return 0
  end
  i = i + 3
end
if ARGV[i] == '1' then
  redis.call('DEL', hash)
end
local d = tonumber(ARGV[i + 1])
i = i + 2
-- in chunks: unpack() of very many arguments would overflow Lua's stack
for s = i, i + d - 1, 1000 do
  redis.call('HDEL', hash, unpack(ARGV, s, math.min(s + 999, i + d - 1)))
end
i = i + d
for s = i, #ARGV, 1000 do
  redis.call('HSET', hash, unpack(ARGV, s, math.min(s + 999, #ARGV)))
end
return 1
"""

SCRIPTS = ScriptSet(
    pop=POP_SCRIPT,
    popitem=POPITEM_SCRIPT,
    setdefault=SETDEFAULT_SCRIPT,
    commit=COMMIT_SCRIPT,
)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()

Client = redis.Redis | RedisCluster
_CLIENT_TYPES = (redis.Redis, RedisCluster)


# ---------------------------------------------------------------------- helpers


def _field(key: Any) -> bytes:
    if not isinstance(key, str):
        raise InvalidArgument(f"safe keys must be strings, not {type(key).__name__} {key!r}")
    return key.encode("utf-8")


def _text(field: bytes | str) -> str | None:
    if isinstance(field, str):
        return field
    try:
        return field.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _pairs(raw: Any) -> Iterable[tuple[Any, Any]]:
    """Field/value pairs of an HGETALL reply (a dict from redis-py, a flat list if raw)."""
    if isinstance(raw, dict):
        return raw.items()
    return zip(raw[::2], raw[1::2], strict=True)


def _check_wait(settings: TransientSettings) -> None:
    if settings.safe.wait_replicas and settings.mode == "memory":
        raise ConfigurationError(
            f"transient.safe.wait_replicas is {settings.safe.wait_replicas!r}, but the "
            "memory:// backend has no replicas; set it to 0 or point transient.url at a Redis "
            "server that has replicas",
            key="transient.safe.wait_replicas",
            value=settings.safe.wait_replicas,
        )


def _config_value(reply: Any) -> str | None:
    if isinstance(reply, dict):
        values = list(reply.values())
    elif isinstance(reply, list) and len(reply) == 2:
        values = [reply[1]]
    else:
        return None
    if not values:
        return None
    value = values[0]
    return value.decode() if isinstance(value, bytes) else str(value)


#: ``(host, port)`` of servers that are meant to persist nothing (the test server that
#: :mod:`pyramid_transient.testing` starts): no "persists nothing" warning for them.
THROWAWAY_SERVERS: set[tuple[str, int]] = set()


def _address(client: Any) -> tuple[str, int] | None:
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    host, port = kwargs.get("host"), kwargs.get("port")
    return (host, int(port)) if isinstance(host, str) and port is not None else None


class _Target:
    """Where one safe lives for one manager (or one bare client), and how it writes."""

    def __init__(
        self,
        key: str,
        get_client: Callable[[], Client],
        *,
        wait_replicas: int,
        wait_timeout: float,
        socket_timeout: float | None,
        check_durability: bool,
        db_name: str = DATABASE,
    ) -> None:
        self.key = key
        self.client = get_client
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        # WAIT blocks on the server up to wait_timeout, and the server notices the timeout
        # on its timer (every 100 ms at the default hz 10): its reply may come later than
        # the socket timeout allows for ordinary commands.
        self.wait_read_timeout = (
            None if socket_timeout is None else wait_timeout + max(socket_timeout, 0.5)
        )
        self.check = check_durability
        self.prepared = False
        self.db_name = db_name

    def errors(self) -> Any:
        """Redis errors of any call on this safe leave as the library's (the spine)."""
        return guard(
            self.db_name,
            self.key,
            repair=f"DEL {self.key} (another program wrote it; it is not a safe's hash)",
        )

    def read(self, fn: Callable[[Any], Any], empty: Any) -> Any:
        """``fn(client)`` for a read; a key of the wrong type reads as an empty safe, with
        a warning naming the key and its repair (the next write raises CorruptData)."""
        try:
            with self.errors():
                return fn(self.client())
        except CorruptData as exc:
            log.warning("reading safe key %r as empty: %s", self.key, exc)
            return empty

    def prepare(self, name: str) -> None:
        """At first use, in one round trip: load the scripts, check the server's persistence.

        Warns when the server would lose every write on restart.
        """
        # Loading the scripts now saves a NOSCRIPT round trip at their first call.
        commands: list[tuple[Any, ...]] = [
            ("SCRIPT", "LOAD", source) for source in SCRIPTS.sources.values()
        ]
        if self.check:
            commands += [("CONFIG", "GET", "appendonly"), ("CONFIG", "GET", "save")]
        with self.errors():
            replies = send_on_one_connection(self.client(), self.key, commands)
        self.prepared = True
        if not self.check:
            return
        appendonly, save = (_config_value(r) for r in replies[-2:])
        if appendonly is None or save is None:
            # CONFIG is disabled or renamed (managed services do that): we cannot tell.
            log.debug("safe %r: cannot read the server's persistence settings", name)
            return
        if appendonly == "yes":
            return
        if not save.strip():
            if _address(self.client()) in THROWAWAY_SERVERS:
                log.debug("safe %r: the test server persists nothing, as it should", name)
                return
            log.warning(
                "safe %r (%s): the Redis server persists nothing (appendonly no, save ''): "
                "every safe is lost when it restarts; enable appendonly yes, or replicas "
                "with transient.safe.wait_replicas",
                name,
                self.key,
            )
        else:
            log.info(
                "safe %r (%s): the Redis server only saves snapshots (save %r): writes since "
                "the last snapshot are lost if it crashes; enable appendonly yes",
                name,
                self.key,
                save,
            )


# ---------------------------------------------------------------------- the safe


class Safe(MutableMapping[str, Any]):
    """A module's private, persistent dict: one Redis hash, every operation atomic.

    Prefer :func:`get_safe`. ``redis`` is where the safe lives:

    * ``None`` (the usual case, at module level): the running application's manager, looked
      up at each use through Pyramid's current registry (inside a request, or after
      ``pyramid.paster.bootstrap``), so creating the safe at import time connects nothing;
    * a :class:`~pyramid_transient.connection.RedisManager`, a registry or a request:
      that application's ``safe`` database and settings;
    * a bare :class:`redis.Redis` (or ``RedisCluster``): keys without a prefix
      (``safe:{<name>}``), and ``wait_replicas`` / ``wait_timeout`` from the arguments.

    ``db_name`` names the manager's database that holds it (``transient.db.<db_name>``;
    default ``safe``, which falls back to ``default`` when unmapped).

    ``wait_replicas`` and ``wait_timeout`` override ``transient.safe.wait_replicas`` and
    ``transient.safe.wait_timeout``.

    Keys are strings (anything else raises :class:`TypeError`); values are anything the
    :mod:`~pyramid_transient.codec` stores, checked before anything is written. A stored
    value that does not decode is logged and read as missing.
    """

    def __init__(
        self,
        name: str,
        redis: Any = None,
        *,
        wait_replicas: int | None = None,
        wait_timeout: float | None = None,
        db_name: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"a safe's name must be a non-empty string, not {name!r}")
        if wait_replicas is not None and (
            isinstance(wait_replicas, bool)
            or not isinstance(wait_replicas, int)
            or wait_replicas < 0
        ):
            raise InvalidArgument(
                f"wait_replicas must be an integer of at least 0, not {wait_replicas!r}"
            )
        if wait_timeout is not None and (
            isinstance(wait_timeout, bool)
            or not isinstance(wait_timeout, int | float)
            or not 0 < wait_timeout < math.inf
        ):
            raise InvalidArgument(
                f"wait_timeout must be a finite number of seconds above 0, not {wait_timeout!r}"
            )
        #: The safe's name, usually its module's ``__name__``.
        self.name = name
        self._wait_replicas = wait_replicas
        self._wait_timeout = wait_timeout
        #: The named database of a manager's that holds the safe (``safe`` by default).
        self.db_name = db_name or DATABASE
        self._lock = threading.Lock()
        self._manager: RedisManager | None = None
        self._fixed: _Target | None = None
        self._targets: weakref.WeakKeyDictionary[RedisManager, _Target] = (
            weakref.WeakKeyDictionary()
        )
        if redis is None:
            pass  # bound at each use: see _target()
        elif isinstance(redis, (RedisManager, *_CLIENT_TYPES)) or (
            hasattr(redis, "queryUtility") or hasattr(redis, "registry")
        ):
            where = bind(redis, CAPABILITY, self.db_name)
            if where.manager is not None:
                self._manager = where.manager
            else:
                self._fixed = self._client_target(where)
        else:
            raise InvalidArgument(
                f"safe {name!r}: redis must be a redis.Redis or RedisCluster client, a "
                "RedisManager, a Pyramid registry or request, or None (the running app), "
                f"not {type(redis).__name__} {redis!r}"
            )

    def __repr__(self) -> str:
        return f"<Safe {self.name!r}>"

    # ------------------------------------------------------------------ binding

    def _client_target(self, where: Binding) -> _Target:
        client = where.client
        defaults = SafeSettings()
        wait = self._wait_replicas if self._wait_replicas is not None else defaults.wait_replicas
        timeout = self._wait_timeout if self._wait_timeout is not None else defaults.wait_timeout
        pool = getattr(client, "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", None) or getattr(
            getattr(client, "nodes_manager", None), "connection_kwargs", {}
        )
        return _Target(
            where.keyspace.tagged(self.name),
            lambda: client,
            wait_replicas=wait,
            wait_timeout=timeout,
            socket_timeout=kwargs.get("socket_timeout"),
            check_durability=True,
        )

    def _manager_target(self, manager: RedisManager) -> _Target:
        s = manager.settings.safe
        wait = self._wait_replicas if self._wait_replicas is not None else s.wait_replicas
        timeout = self._wait_timeout if self._wait_timeout is not None else s.wait_timeout
        if wait and manager.mode == "memory":
            raise ConfigurationError(
                f"safe {self.name!r}: wait_replicas={wait!r}, but the memory:// backend has "
                "no replicas; use 0",
                key="transient.safe.wait_replicas",
                value=wait,
            )
        # A weak reference: the target is a value of a WeakKeyDictionary keyed by this
        # manager, and a strong one (a connection.Binding holds one) would keep every app's
        # manager alive for ever. Asking it at each use gives a forked child its own client.
        ref = weakref.ref(manager)

        def get_client() -> Client:
            alive = ref()
            if alive is None:  # pragma: no cover - the entry goes with its manager
                raise ConfigurationError(f"safe {self.name!r}: its application has gone")
            return alive.get(self.db_name)

        return _Target(
            manager.keyspace(CAPABILITY, self.db_name).tagged(self.name),
            get_client,
            wait_replicas=wait,
            wait_timeout=timeout,
            socket_timeout=manager.settings.socket_timeout,
            check_durability=manager.mode != "memory",
            db_name=self.db_name,
        )

    def _target(self) -> _Target:
        target: _Target | None = self._fixed
        if target is None:
            manager = self._manager
            if manager is None:
                try:
                    manager = cast(RedisManager, bind(None, CAPABILITY, self.db_name).manager)
                except ConfigurationError:
                    raise ConfigurationError(
                        f"safe {self.name!r} has no Redis client and no application is "
                        "running: use it inside a request or after pyramid.paster.bootstrap, "
                        "or pass one: get_safe(name, redis=client_or_manager)"
                    ) from None
            target = self._targets.get(manager)
            if target is None:
                with self._lock:
                    target = self._targets.get(manager)
                    if target is None:
                        target = self._targets[manager] = self._manager_target(manager)
        if not target.prepared:
            target.prepare(self.name)
        return target

    @property
    def key(self) -> str:
        """The Redis key of this safe's hash (for the application it is bound to now)."""
        return self._target().key

    # ------------------------------------------------------------------ sending

    def _write(self, t: _Target, *command: Any) -> Any:
        if not t.wait_replicas:
            client: Any = t.client()
            with t.errors():
                return client.execute_command(*command)
        return self._send_waiting(t, command)

    def _run(self, t: _Target, name: str, args: Sequence[Any]) -> Any:
        client = t.client()
        script = SCRIPTS.on(client)[name]
        with t.errors():
            if not t.wait_replicas:
                return script(keys=[t.key], args=args, client=client)
            try:
                return self._send_waiting(t, ("EVALSHA", script.sha, 1, t.key, *args))
            except redis.exceptions.NoScriptError:
                # The script did not run, so sending it again cannot apply it twice: whole,
                # with EVAL (which caches it there), still with its WAIT in one round trip
                # and on the key's node only (lua.py says why not SCRIPT LOAD).
                return self._send_waiting(t, ("EVAL", script.script, 1, t.key, *args))

    def _send_waiting(self, t: _Target, command: tuple[Any, ...]) -> Any:
        wait_ms = max(1, int(t.wait_timeout * 1000))
        with t.errors():
            reply, acknowledged = send_on_one_connection(
                t.client(),
                t.key,
                [command, ("WAIT", t.wait_replicas, wait_ms)],
                read_timeout=t.wait_read_timeout,
            )
            if isinstance(reply, Exception):
                raise reply
            if isinstance(acknowledged, Exception):
                raise acknowledged
        if acknowledged < t.wait_replicas:
            raise ReplicationTimeout(
                f"safe {self.name!r}: the write was applied on the master but only "
                f"{acknowledged} of transient.safe.wait_replicas = {t.wait_replicas} replicas "
                f"acknowledged it within transient.safe.wait_timeout = {t.wait_timeout:g} s",
                wanted=t.wait_replicas,
                acknowledged=acknowledged,
            )
        return reply

    def _decode(self, key: str, raw: bytes | str) -> Any:
        try:
            return codec.decode(raw)
        except CodecError as exc:
            log.warning(
                "safe %r: the stored value of %r does not decode (%s); reading it as missing",
                self.name,
                key,
                exc,
            )
            return _MISSING

    # ------------------------------------------------------------------ reads

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``: one HGET."""
        field = _field(key)
        t = self._target()
        raw = t.read(lambda c: c.hget(t.key, field), None)
        if raw is None:
            return default
        value = self._decode(key, raw)
        return default if value is _MISSING else value

    def __contains__(self, key: object) -> bool:
        field = _field(key)
        t = self._target()
        return bool(t.read(lambda c: c.hexists(t.key, field), False))

    def __len__(self) -> int:
        t = self._target()
        return int(t.read(lambda c: c.hlen(t.key), 0))

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def keys(self) -> KeysView[str]:
        """The keys, read in one HKEYS (a snapshot: later writes do not change it)."""
        t = self._target()
        names = (_text(f) for f in t.read(lambda c: c.hkeys(t.key), []))
        return dict.fromkeys(n for n in names if n is not None).keys()

    def items(self) -> ItemsView[str, Any]:
        """The items, read in one HGETALL (a snapshot)."""
        return self.snapshot().items()

    def values(self) -> ValuesView[Any]:
        """The values, read in one HGETALL (a snapshot)."""
        return self.snapshot().values()

    def snapshot(self) -> dict[str, Any]:
        """A plain dict of the whole safe, read atomically in one HGETALL.

        Use it rather than ``dict(safe)``, which reads the keys and then each value on its
        own (one round trip per key, not a consistent view).
        """
        t = self._target()
        result: dict[str, Any] = {}
        everything = t.read(lambda c: c.hgetall(t.key), {})
        for field, raw in _pairs(everything):
            key = _text(field)
            if key is None:
                log.warning("safe %r: skipping a field that is not UTF-8: %r", self.name, field)
                continue
            value = self._decode(key, raw)
            if value is not _MISSING:
                result[key] = value
        return result

    def scan(self, count: int = 1000) -> Iterator[tuple[str, Any]]:
        """Iterate over the items with HSCAN, ``count`` at a time, for very large safes.

        Several round trips and not a snapshot: an item changed during the scan may be
        seen in either state, and an item present for the whole scan is seen at least once.
        """
        t = self._target()
        items = t.read(lambda c: c.hscan_iter(t.key, count=count), iter(()))
        while True:
            try:
                with t.errors():
                    field, raw = next(items)
            except StopIteration:
                return
            except CorruptData as exc:  # the first HSCAN runs at the first next()
                log.warning("reading safe key %r as empty: %s", t.key, exc)
                return
            key = _text(field)
            if key is None:
                continue
            value = self._decode(key, raw)
            if value is not _MISSING:
                yield key, value

    # ------------------------------------------------------------------ writes

    def __setitem__(self, key: str, value: Any) -> None:
        field = _field(key)
        data = codec.encode(value)
        t = self._target()
        self._write(t, "HSET", t.key, field, data)

    def __delitem__(self, key: str) -> None:
        field = _field(key)
        t = self._target()
        if not self._write(t, "HDEL", t.key, field):
            raise KeyError(key)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Set several keys at once, all or nothing: one HSET with every field.

        Every key and value is checked before anything is sent, so a bad one writes none.
        """
        if isinstance(other, Mapping):
            pairs = list(other.items())
        elif hasattr(other, "keys"):
            pairs = [(k, other[k]) for k in other.keys()]  # noqa: SIM118  (dict's protocol)
        else:
            pairs = list(other)
        pairs.extend(kwargs.items())
        if not pairs:
            return
        flat: list[bytes] = []
        for key, value in pairs:
            flat.append(_field(key))
            flat.append(codec.encode(value))
        t = self._target()
        self._write(t, "HSET", t.key, *flat)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value (or ``default``): one script, atomic."""
        field = _field(key)
        t = self._target()
        raw = self._run(t, "pop", [field])
        value = _MISSING if raw is None else self._decode(key, raw)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return value

    def popitem(self) -> tuple[str, Any]:
        """Remove and return some item: one script, atomic.

        Raises :class:`KeyError` when the safe is empty.
        """
        t = self._target()
        while True:
            reply = self._run(t, "popitem", [])
            if reply is None:
                raise KeyError(f"popitem(): safe {self.name!r} is empty")
            key = _text(reply[0])
            if key is None:
                continue
            value = self._decode(key, reply[1])
            if value is not _MISSING:
                return key, value

    def setdefault(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, storing ``default`` first if it has none: one script."""
        field = _field(key)
        data = codec.encode(default)
        t = self._target()
        stored, raw = self._run(t, "setdefault", [field, data])
        if stored:
            return default
        value = self._decode(key, raw)
        if value is not _MISSING:
            return value
        # A corrupt value reads as missing: replace it, unless someone just did.
        stored, raw = self._run(t, "setdefault", [field, data, raw])
        value = default if stored else self._decode(key, raw)
        return default if value is _MISSING else value

    def clear(self) -> None:
        """Remove every key of this safe (one DEL of its hash; nothing else is touched)."""
        t = self._target()
        self._write(t, "DEL", t.key)

    # ------------------------------------------------------------------ atomic

    def atomic(self, retries: int = DEFAULT_RETRIES) -> Atomic:
        """Several reads and writes that commit together, optimistically.

        ``with safe.atomic() as s:`` runs the block once: ``s`` is a mutable mapping whose
        reads come from one snapshot of the safe (one HGETALL, at the first read) and
        whose writes are kept until the block ends, then applied in one script together
        with a check that nothing the block read has changed since. If something has,
        nothing is written and :class:`~pyramid_transient.exceptions.ConflictError` is
        raised. An exception in the block discards its writes.

        ``for attempt in safe.atomic(retries=10): with attempt as s: ...`` runs the block
        again after a conflict, up to ``retries`` more times with a short random backoff,
        then raises :class:`~pyramid_transient.exceptions.ConflictError`.
        """
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidArgument(f"retries must be an integer of at least 0, not {retries!r}")
        return Atomic(self, retries)


# ---------------------------------------------------------------------- atomic blocks


class Transaction(MutableMapping[str, Any]):
    """The mapping an atomic block works on: a snapshot plus the block's own writes.

    Reads cost one HGETALL for the whole block (at the first read); writes cost nothing
    until the commit. Only what the block actually read is checked at the commit, so
    writes by others to keys the block did not read never conflict with it; iterating
    or counting the safe reads all of it.
    """

    def __init__(self, safe: Safe, target: _Target) -> None:
        self._safe = safe
        self._t = target
        self._snapshot: dict[bytes, bytes] | None = None
        self._reads: dict[bytes, bytes | None] = {}
        self._whole = False
        self._cleared = False
        self._writes: dict[bytes, bytes | None] = {}
        self._done = False

    def __repr__(self) -> str:
        return f"<Transaction of {self._safe!r}>"

    def _load(self) -> dict[bytes, bytes]:
        if self._snapshot is None:
            raw = self._t.read(lambda c: c.hgetall(self._t.key), {})
            self._snapshot = {
                f if isinstance(f, bytes) else f.encode("utf-8"): v
                if isinstance(v, bytes)
                else v.encode("utf-8")
                for f, v in _pairs(raw)
            }
        return self._snapshot

    def _raw(self, field: bytes) -> bytes | None:
        if field in self._writes:
            return self._writes[field]
        if self._cleared:
            return None
        raw = self._load().get(field)
        self._reads.setdefault(field, raw)
        return raw

    def _visible(self) -> dict[bytes, bytes]:
        if self._cleared:
            base: dict[bytes, bytes] = {}
        else:
            base = dict(self._load())
            self._whole = True
        for field, raw in self._writes.items():
            if raw is None:
                base.pop(field, None)
            else:
                base[field] = raw
        return base

    def _check_open(self) -> None:
        if self._done:
            raise UsageError(f"the atomic block of {self._safe!r} has ended; use the safe")

    def __getitem__(self, key: str) -> Any:
        self._check_open()
        raw = self._raw(_field(key))
        value = _MISSING if raw is None else self._safe._decode(key, raw)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_open()
        self._writes[_field(key)] = codec.encode(value)

    def __delitem__(self, key: str) -> None:
        self[key]  # KeyError when absent; records the read
        self._writes[_field(key)] = None

    def _readable(self) -> list[str]:
        # As Safe.snapshot(): a field whose name is not UTF-8 or whose value does not
        # decode (logged) reads as missing, so iterating never meets a key it cannot read.
        names = []
        for field, raw in self._visible().items():
            name = _text(field)
            if name is not None and self._safe._decode(name, raw) is not _MISSING:
                names.append(name)
        return names

    def __iter__(self) -> Iterator[str]:
        self._check_open()
        return iter(self._readable())

    def __len__(self) -> int:
        self._check_open()
        return len(self._readable())

    def clear(self) -> None:
        self._check_open()
        self._cleared = True
        self._writes = {}

    def commit(self) -> None:
        """Apply the block's writes if what it read is unchanged (used by the block's end)."""
        self._check_open()
        self._done = True
        if not self._writes and not self._cleared:
            return  # read-only: the snapshot was consistent, nothing to apply
        if self._whole:
            assert self._snapshot is not None
            expected_len = len(self._snapshot)
            checks: dict[bytes, bytes | None] = {**self._reads, **self._snapshot}
        else:
            expected_len = -1
            checks = self._reads
        args: list[Any] = [expected_len, len(checks)]
        for field, raw in checks.items():
            args += [field, b"0", b""] if raw is None else [field, b"1", raw]
        deletes = [f for f, raw in self._writes.items() if raw is None]
        sets = [(f, raw) for f, raw in self._writes.items() if raw is not None]
        args += [b"1" if self._cleared else b"0", len(deletes), *deletes]
        for field, raw in sets:
            args += [field, raw]
        if not self._safe._run(self._t, "commit", args):
            read = (
                "the whole safe"
                if self._whole
                else repr(sorted(_text(f) or repr(f) for f in self._reads))
            )
            raise ConflictError(
                f"safe {self._safe.name!r}: another writer changed {read} after this atomic "
                "block read it, so nothing was written; run the block again "
                "(for attempt in safe.atomic(): with attempt as s: ...)"
            )


class _Block:
    """``with block as s:``: a :class:`Transaction` on entry, committed by
    :meth:`_commit` when the block ends without an exception."""

    def __init__(self, safe: Safe) -> None:
        self.safe = safe
        self._tx: Transaction | None = None

    def __enter__(self) -> Transaction:
        self._tx = Transaction(self.safe, self.safe._target())
        return self._tx

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tx, self._tx = self._tx, None
        if exc_type is None and tx is not None:
            self._commit(tx)

    def _commit(self, tx: Transaction) -> None:
        tx.commit()


class Atomic(_Block):
    """What :meth:`Safe.atomic` returns: a context manager (one attempt) and an iterable of
    :class:`Attempt` (retried after conflicts)."""

    def __init__(self, safe: Safe, retries: int) -> None:
        super().__init__(safe)
        #: How many times the block runs again after a conflict.
        self.retries = retries

    def __iter__(self) -> Iterator[Attempt]:
        for number in range(self.retries + 1):
            if number:
                # Random backoff, growing, capped: spreads writers that collided.
                mod_sleep(mod_random() * min(0.05, 0.001 * 2**number))
            attempt = Attempt(self.safe, number + 1)
            yield attempt
            if attempt.committed:
                return
            if attempt.conflict is None:
                raise UsageError(
                    "for attempt in safe.atomic(): the loop body must use "
                    "`with attempt as s:` and let it end"
                )
        raise ConflictError(
            f"safe {self.safe.name!r}: the atomic block conflicted with other writers "
            f"{self.retries + 1} times in a row (retries={self.retries}); raise retries or "
            "make fewer writers read and write the same keys"
        )


class Attempt(_Block):
    """One run of a retried atomic block: ``with attempt as s:``."""

    def __init__(self, safe: Safe, number: int) -> None:
        super().__init__(safe)
        #: 1 for the first run, 2 for the first retry, ...
        self.number = number
        #: Whether the block's writes were applied.
        self.committed = False
        #: The :class:`~pyramid_transient.exceptions.ConflictError` of a failed commit.
        self.conflict: ConflictError | None = None

    def _commit(self, tx: Transaction) -> None:
        # A conflict ends this attempt quietly; Atomic's loop runs the block again.
        try:
            tx.commit()
        except ConflictError as conflict:
            self.conflict = conflict
        else:
            self.committed = True


# ---------------------------------------------------------------------- public glue


def get_safe(
    name: str,
    redis: Any = None,
    *,
    wait_replicas: int | None = None,
    wait_timeout: float | None = None,
    db_name: str | None = None,
) -> Safe:
    """The safe called ``name`` (usually ``__name__``): see :class:`Safe` for ``redis`` and
    ``db_name``.

    Creating it connects nothing, so it belongs at module level::

        safe = get_safe(__name__)
    """
    return Safe(
        name, redis, wait_replicas=wait_replicas, wait_timeout=wait_timeout, db_name=db_name
    )


def includeme(config: Any) -> None:
    """Register the manager and check the ``transient.safe.*`` settings at startup."""
    include_manager(config)
    _check_wait(get_manager(config.registry).settings)
