"""Tokens that change when SQL data changes: identities, the token store, SQLAlchemy hooks.

A *token* is a short random string kept in Redis for each row and each table the
application caches. Cache keys are built from tokens (:mod:`pyramid_transient.cache`);
when a transaction that changed a row commits, the row's token and its table's token are
deleted, the next reader creates new random ones with ``SET NX`` semantics, and every key
built from the old tokens is never computed again.

Identities name what a token belongs to:

* a row: ``r:<table>:<pk>[:<pk>...]``, see :func:`row_identity`;
* a table: ``t:<table>``, see :func:`table_identity`.

The table name is schema-qualified (``schema.table``) and every part goes through
:func:`~pyramid_transient.keys.quote` (dots in names escaped as well), so two rows or two
tables never share an identity, whatever their primary key types or names.

Every read or invalidation is one round trip, on a single server and on a Cluster alike:

* one token (a key over one instance, the common case) is one ``SET key <new> NX GET EX
  <ttl>``: it returns the existing token untouched, or sets ours, with its time to live,
  and returns nil;
* several tokens, or a read carrying retried invalidations, are one call of
  :data:`TOKENS_SCRIPT`;
* an invalidation is one ``DEL`` of every token a commit changed.

All tokens of one key prefix share the Cluster hash tag ``{tokens}``, so the script and
the ``DEL`` may name any set of them and each stays one command to one node.

Hooks: :func:`register` binds an :class:`InvalidationListener` to a SQLAlchemy session,
``scoped_session``, ``sessionmaker`` or ``Session`` class. Changes are recorded in memory
per transaction (a savepoint's own changes are dropped when it rolls back) and the
tokens are deleted after the commit, in one round trip. Nothing here raises into the
application after the database has committed: a failed invalidation is logged and kept in
a bounded in-memory backlog per manager (or bare client), retried with its next round trip
and by a background timer. What it cannot retry (a process that dies) is bounded by the
token's time to live.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import threading
import uuid
import weakref
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any, cast

import redis

from .connection import Binding, RedisManager, bind
from .keys import KeySpace, quote
from .lua import ScriptSet

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TOKEN_TTL",
    "TOKENS_SCRIPT",
    "Identity",
    "InvalidationListener",
    "TokenStore",
    "get_token",
    "identities_of",
    "pending_invalidations",
    "register",
    "row_identity",
    "table_identity",
    "token_store",
]

#: Seconds a token lives unless ``transient.cache.token_ttl`` says otherwise.
DEFAULT_TOKEN_TTL = 24 * 3600

#: The hash tag every token key carries, so that one script or one ``DEL`` may touch any
#: set of them (on a Cluster they all live in one slot).
TOKEN_TAG = "tokens"

#: Most token keys kept for retry after failed invalidations; older ones are dropped (and
#: logged): their staleness is then bounded by the token time to live.
MAX_BACKLOG = 100_000

#: Seconds between background retries of failed invalidations (the last one repeats).
RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

# Deletes the tokens whose invalidation failed earlier (the retry backlog), then reads
# (creating when missing) the tokens a cache key needs, atomically and in one round trip.
# Deleting first lets a read that carries retried invalidations never see the old tokens.
# Used to read two tokens or more, or any number with retried invalidations: a single
# token without them is one SET NX GET EX instead (TokenStore._read), and a commit's
# invalidation one DEL (_delete).
#
# Why a script rather than a pipeline of SET NX GET EX, one per token (the same one round
# trip, the same semantics): redis-py packs and parses every command of a pipeline in
# Python, several microseconds each, while the script answers with one short digest.
# Measured (benchmarks/bench_cache.py), the pipeline runs at 0.9x the script's speed for
# 2 tokens, 0.5x for 10 and 0.2x for 100; only for one token does a plain command win.
#
# KEYS[1..ARGV[1]]          token keys to invalidate (deleted)
# KEYS[ARGV[1]+1..#KEYS]    token keys to read; a missing one is created with SET NX EX
# ARGV[1]                   how many of KEYS to invalidate
# ARGV[2]                   token time to live, in seconds
# ARGV[3]                   random base of new tokens: KEYS[i] gets ARGV[3] .. i
# ARGV[4]                   optional: "digest" to return the SHA1 (hex) of the tokens
#                           read, joined with ",", instead of the tokens (a cache key
#                           needs no more, and one short reply is cheaper to parse than N)
#
# Returns the tokens of the keys read, in order, or their digest. A server without
# redis.sha1hex (fakeredis, behind memory:// URLs) returns the tokens even when asked for
# the digest; TokenStore hashes them the same way. Every key shares the {tokens} hash tag.
TOKENS_SCRIPT = """
local n = tonumber(ARGV[1])
for i = 1, n, 1000 do
  redis.call('DEL', unpack(KEYS, i, math.min(i + 999, n)))
end
local tokens = {}
for i = n + 1, #KEYS do
  local token = redis.call('GET', KEYS[i])
  if not token then
    token = ARGV[3] .. i
    redis.call('SET', KEYS[i], token, 'NX', 'EX', ARGV[2])
  end
  tokens[#tokens + 1] = token
end
if ARGV[4] == 'digest' and redis.sha1hex then
  return redis.sha1hex(table.concat(tokens, ','))
end
return tokens
"""


# --------------------------------------------------------------------------- identities


class Identity(str):
    """The identity of a row (``r:...``) or a table (``t:...``): a ``str`` that names a token.

    Built by :func:`row_identity`, :func:`table_identity` or :func:`identities_of`. As a
    cache key fragment an ``Identity`` stands for its token, while a plain ``str`` is a
    value.
    """

    __slots__ = ()

    @property
    def is_row(self) -> bool:
        return self.startswith("r:")


def _name(text: str) -> str:
    # Dots separate schema and table, so a dot inside a name must not read as one.
    return quote(text).replace(".", "%2E")


def _qualified(name: str, schema: str | None) -> str:
    return f"{_name(schema)}.{_name(name)}" if schema else _name(name)


def _table_parts(table: Any, schema: str | None) -> tuple[str, str | None]:
    if isinstance(table, str):
        return table, schema
    name = getattr(table, "name", None)
    if not isinstance(name, str):
        raise TypeError(
            f"a table must be a name (str) or a SQLAlchemy Table, not {type(table).__name__}"
        )
    return name, getattr(table, "schema", None) if schema is None else schema


def _pk_part(value: Any) -> str:
    # One text per primary key value. The types of one column do not change, so this only
    # has to be injective per type; equal values of the usual types give the same text
    # (row_identity("users", 42) and row_identity("users", "42") name the same row).
    if type(value) is int:
        return str(value)
    if value is None:
        raise ValueError("a primary key value is None: the row has no identity yet (flush it)")
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return str(int(value))
        return format(value.normalize(), "f")
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, bytes):
        return "x" + value.hex()
    if isinstance(value, dt.date | dt.time):
        return quote(value.isoformat())
    return quote(str(value))


def table_identity(table: Any, *, schema: str | None = None) -> Identity:
    """The identity of a table: a SQLAlchemy ``Table`` or a name (with ``schema``)."""
    name, schema = _table_parts(table, schema)
    return Identity("t:" + _qualified(name, schema))


def row_identity(table: Any, *pk: Any, schema: str | None = None) -> Identity:
    """The identity of the row of ``table`` whose primary key is ``pk`` (one value or more).

    >>> row_identity("users", 42)
    'r:users:42'
    >>> row_identity("a:b", "x y", 3, schema="s")
    'r:s.a%3Ab:x%20y:3'
    """
    name, schema = _table_parts(table, schema)
    if not pk or None in pk:
        raise ValueError(
            f"row_identity() needs every primary key value of a row of {name!r}, not "
            f"{pk!r}: a row whose key is None has no identity yet (flush it first)"
        )
    return Identity("r:" + _qualified(name, schema) + ":" + ":".join(map(_pk_part, pk)))


class _MapperInfo:
    __slots__ = ("_parents", "mapper", "prefix", "tables")

    def __init__(self, mapper: Any) -> None:
        # Weakly: this object is the value of a weak map keyed by the mapper.
        self.mapper = weakref.ref(mapper)
        # The row's table is the base mapper's: its primary key is the identity.
        name, schema = _table_parts(mapper.base_mapper.local_table, None)
        self.prefix = "r:" + _qualified(name, schema) + ":"
        #: Every table a change through this mapper may write (joined inheritance: all).
        self.tables = tuple(dict.fromkeys(table_identity(t) for t in mapper.tables))
        self._parents: tuple[tuple[tuple[str, ...], _MapperInfo], ...] | None = None

    @property
    def parents(self) -> tuple[tuple[tuple[str, ...], _MapperInfo], ...]:
        """Each many-to-one relationship to a parent's primary key: the attribute keys of
        the local foreign-key columns (in the parent's primary key order), and the parent.
        Worked out at the first flush, when the mappers are configured."""
        if self._parents is None:
            from sqlalchemy.orm import MANYTOONE

            mapper: Any = self.mapper()
            found = []
            for prop in mapper.relationships if mapper is not None else ():
                if prop.direction is not MANYTOONE:
                    continue
                local_of = {remote: local for local, remote in prop.local_remote_pairs}
                try:
                    columns = [local_of[c] for c in prop.mapper.primary_key]
                    keys = tuple(mapper.get_property_by_column(c).key for c in columns)
                except Exception:  # joins on something other than the parent's primary key
                    continue
                found.append((keys, _mapper_info(prop.mapper)))
            self._parents = tuple(found)
        return self._parents

    def row(self, pk: Sequence[Any]) -> Identity:
        if len(pk) == 1:
            return Identity(self.prefix + _pk_part(pk[0]))
        return Identity(self.prefix + ":".join(map(_pk_part, pk)))


_MAPPERS: weakref.WeakKeyDictionary[Any, _MapperInfo] = weakref.WeakKeyDictionary()


class _TableInfo:
    """What :meth:`InvalidationListener.after_execute` needs of a ``Table``, worked out
    once: it runs for every statement of the hooked engines."""

    __slots__ = ("identity", "pk", "row_prefix")

    def __init__(self, table: Any) -> None:
        name, schema = _table_parts(table, None)
        self.identity = table_identity(table)
        self.row_prefix = "r:" + _qualified(name, schema) + ":"
        #: (bind label, column key) of each primary key column.
        self.pk = tuple((c._label, c.key) for c in table.primary_key.columns)


_TABLES: weakref.WeakKeyDictionary[Any, _TableInfo] = weakref.WeakKeyDictionary()


def _mapper_info(mapper: Any) -> _MapperInfo:
    info = _MAPPERS.get(mapper)
    if info is None:
        info = _MAPPERS[mapper] = _MapperInfo(mapper)
    return info


def identities_of(obj: Any) -> tuple[Identity, ...]:
    """The identities a cache key fragment stands for.

    * an :class:`Identity` (or, here only, any ``str``): itself;
    * a persistent mapped instance: its row;
    * a mapped class: every table it maps (for joined inheritance, the parent tables too);
    * a SQLAlchemy ``Table``: that table.

    Raises :class:`TypeError` for anything else and :class:`ValueError` for an instance
    that has no primary key yet (a pending or transient object).
    """
    if isinstance(obj, str):
        return (obj if type(obj) is Identity else Identity(obj),)
    # Fast path for mapped instances (the common fragment): their state is an attribute.
    state = None if isinstance(obj, type) else getattr(obj, "_sa_instance_state", None)
    if state is not None:
        key = state.key
        if key is None:
            raise ValueError(
                f"{type(obj).__name__} instance {obj!r} has no identity yet: flush the "
                "session before building a cache key from it"
            )
        info = _MAPPERS.get(state.mapper)
        if info is None:
            info = _mapper_info(state.mapper)
        return (info.row(key[1]),)
    from sqlalchemy import Table, inspect  # lazily: SQLAlchemy is an optional dependency

    if isinstance(obj, Table):
        return (table_identity(obj),)
    insp = inspect(obj, raiseerr=False)
    if insp is None or not getattr(insp, "is_mapper", False):
        raise TypeError(
            f"cannot take the identity of a {type(obj).__name__}: give a mapped instance, "
            "a mapped class, a Table or an identity string"
        )
    return _mapper_info(insp).tables


# --------------------------------------------------------------------------- token store


#: This module's Lua, registered once per client.
SCRIPTS = ScriptSet(tokens=TOKENS_SCRIPT)


def _delete(client: Any, keys: Sequence[str]) -> None:
    # One DEL for every key: one command, one round trip. The keys share the {tokens}
    # hash tag, so on a Cluster it goes to the one node that owns their slot.
    client.execute_command("DEL", *keys)


def _sha1(data: bytes) -> bytes:
    # The digest TOKENS_SCRIPT computes with redis.sha1hex: lower-case hex, as bytes.
    return hashlib.sha1(data).hexdigest().encode("ascii")


def _text(token: Any) -> bytes:
    # A client made with decode_responses=True answers str.
    return token.encode("utf-8") if isinstance(token, str) else cast(bytes, token)


#: Clients whose server refuses ``SET NX GET`` (Redis before 7.0): they read one token
#: with the script, like several.
_NO_SET_NX_GET: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


class _Backlog:
    """Token keys whose invalidation failed, per target, retried until they succeed.

    The target is a store's manager (so that an outage in which the manager cannot even
    build its client, a Cluster's, still keeps the work), else its bare client.
    """

    def __init__(self, target: Any, name: str) -> None:
        self._target = weakref.ref(target)
        self._name = name
        self._lock = threading.Lock()
        self._keys: dict[str, None] = {}  # ordered, for dropping the oldest first
        self._timer: threading.Timer | None = None
        self._attempt = 0

    def __len__(self) -> int:
        return len(self._keys)

    def take(self) -> list[str]:
        with self._lock:
            keys, self._keys = list(self._keys), {}
            return keys

    def put_back(self, keys: Iterable[str]) -> None:
        with self._lock:
            merged = dict.fromkeys(keys)
            merged.update(self._keys)
            overflow = len(merged) - MAX_BACKLOG
            if overflow > 0:
                for key in list(merged)[:overflow]:
                    del merged[key]
                log.error(
                    "dropped %d token invalidations after failing to reach Redis (backlog "
                    "limit %d); data cached under them may be stale until their tokens expire",
                    overflow,
                    MAX_BACKLOG,
                )
            self._keys = merged
            self._schedule()

    def succeeded(self) -> None:
        self._attempt = 0

    def _schedule(self) -> None:
        # Called with the lock held.
        if self._timer is not None or not self._keys:
            return
        delay = RETRY_DELAYS[min(self._attempt, len(RETRY_DELAYS) - 1)]
        self._attempt += 1
        timer = threading.Timer(delay, self._retry)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _retry(self) -> None:
        with self._lock:
            self._timer = None
        target = self._target()
        if target is None:
            return
        keys = self.take()
        if not keys:
            return
        try:
            client = target.get(self._name) if isinstance(target, RedisManager) else target
            _delete(client, keys)
        except Exception as exc:
            log.warning("retrying %d token invalidations failed again: %s", len(keys), exc)
            self.put_back(keys)
        else:
            self.succeeded()
            log.info("retried %d token invalidations successfully", len(keys))

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


# target (manager or bare client) -> database name -> backlog
_BACKLOGS: weakref.WeakKeyDictionary[Any, dict[str, _Backlog]] = weakref.WeakKeyDictionary()
_BACKLOGS_LOCK = threading.Lock()


def _backlog(target: Any, name: str = "cache") -> _Backlog:
    backlog = _BACKLOGS.get(target, {}).get(name)
    if backlog is None:
        with _BACKLOGS_LOCK:
            per_name = _BACKLOGS.setdefault(target, {})
            backlog = per_name.get(name)
            if backlog is None:
                backlog = per_name[name] = _Backlog(target, name)
    return backlog


def _waiting(target: Any, name: str) -> _Backlog | None:
    # The backlog of target, if it holds anything (no lock: a hint, taken under its lock).
    backlog = _BACKLOGS.get(target, {}).get(name)
    return backlog if backlog is not None and len(backlog) else None


def pending_invalidations(redis_or_manager: Any) -> int:
    """How many token invalidations wait for a retry (for monitoring, tests).

    Give what the invalidations go to: the ``RedisManager`` of a store or listener bound
    to a manager (or to the running app), the ``redis.Redis`` of one bound to a client.
    """
    return sum(len(backlog) for backlog in _BACKLOGS.get(redis_or_manager, {}).values())


class TokenStore:
    """Reads, creates and invalidates tokens in one Redis database.

    ``client`` is a ``redis.Redis`` (or ``RedisCluster``), or a
    :class:`~pyramid_transient.binding.Binding` whose client is asked for on every use
    (so a forked worker gets its own connections); ``keyspace`` the
    :class:`~pyramid_transient.keys.KeySpace` of the tokens (by default the binding's, or
    ``KeySpace("", "token")`` for a client). :func:`token_store` builds one for an app.
    """

    def __init__(
        self,
        client: redis.Redis | Binding,
        keyspace: KeySpace | None = None,
        *,
        ttl: int = DEFAULT_TOKEN_TTL,
    ) -> None:
        if isinstance(client, Binding):
            self.binding = client
        else:
            self.binding = Binding(keyspace or KeySpace("", "token"), client=client, name="cache")
        #: The keys of the tokens.
        self.keyspace = keyspace or self.binding.keyspace
        #: Seconds a new token lives.
        self.ttl = ttl
        self._tag = "{" + TOKEN_TAG + "}"
        self._base = self.keyspace.base

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` (or ``RedisCluster``) the tokens live on, resolved now."""
        return self.binding.client

    @property
    def target(self) -> Any:
        """The ``RedisManager`` the store is bound to, else its client: failed
        invalidations wait for a retry per target (see :func:`pending_invalidations`)."""
        manager = self.binding.manager
        return manager if manager is not None else self.binding.client

    def key(self, identity: str) -> str:
        """The Redis key of the token of ``identity``."""
        return f"{self._base}:{self._tag}:{identity}"

    def tokens(self, identities: Sequence[str]) -> list[bytes]:
        """The tokens of ``identities``, created where missing, in one round trip.

        Invalidations waiting for a retry on the same :attr:`target` go in the same round
        trip, before the reads. Raises :class:`~pyramid_transient.exceptions.Unavailable`
        when Redis cannot be reached, and
        :class:`~pyramid_transient.exceptions.CorruptData` when a token key holds another
        type (deleting it, as :meth:`invalidate` does, repairs it).
        """
        return cast(list[bytes], self._read(identities, digest=False))

    def digest(self, identities: Sequence[str]) -> bytes:
        """The SHA1 (hex) of the tokens of ``identities`` joined with ``,``, as
        :meth:`tokens` reads them; the same whichever way they are read."""
        return cast(bytes, self._read(identities, digest=True))

    def _read(self, identities: Sequence[str], *, digest: bool) -> Any:
        # The spine's vocabulary: Unavailable for an outage, CorruptData for a token key
        # that holds another type.
        with self.binding.errors(self.key(identities[0]) if len(identities) == 1 else None):
            return self._read_tokens(identities, digest=digest)

    def _read_tokens(self, identities: Sequence[str], *, digest: bool) -> Any:
        client = self.client  # first: a client that cannot be built must not drop a retry
        waiting = _waiting(self.target, self.binding.name)
        retried = waiting.take() if waiting is not None else []
        if len(identities) == 1 and not retried and client not in _NO_SET_NX_GET:
            # One token, the common case: SET NX GET EX answers the existing token and
            # leaves it (and its time to live) alone, or sets ours with the time to live
            # and answers nil. One plain command costs the server a tenth of a script call.
            # execute_command skips set()'s argument checks.
            new = secrets.token_hex(12) + "-1"
            try:
                token = client.execute_command(
                    "SET", self.key(identities[0]), new, "NX", "GET", "EX", self.ttl, get=True
                )
            except redis.ResponseError as exc:
                if "syntax error" not in str(exc).lower():
                    raise
                # Redis < 7.0 refuses NX with GET: this client reads with the script.
                _NO_SET_NX_GET[client] = True
                log.info("Redis refuses SET NX GET (before 7.0): tokens read by script")
            else:
                token = new.encode("ascii") if token is None else _text(token)
                return _sha1(token) if digest else [token]
        keys = [self.key(i) for i in identities]
        try:
            result = SCRIPTS.on(client)["tokens"](
                keys=[*retried, *keys],
                args=[
                    len(retried),
                    self.ttl,
                    secrets.token_hex(12) + "-",
                    *(("digest",) if digest else ()),
                ],
                client=client,
            )
        except Exception:
            if retried:
                _backlog(self.target, self.binding.name).put_back(retried)
            raise
        if retried:
            _backlog(self.target, self.binding.name).succeeded()
        if not isinstance(result, list):
            return _text(result)  # the digest
        tokens = result if not result or type(result[0]) is bytes else list(map(_text, result))
        return _sha1(b",".join(tokens)) if digest else tokens

    def invalidate(self, identities: Iterable[str]) -> bool:
        """Delete the tokens of ``identities`` in one round trip (one ``DEL``); never raises.

        Returns ``False`` when Redis could not be reached: the keys are then kept for a
        retry (logged), with the next round trip on this :attr:`target` or by a background
        timer.
        """
        keys = [self.key(i) for i in identities]
        waiting = _waiting(self.target, self.binding.name)
        if waiting is not None:
            keys = list(dict.fromkeys([*waiting.take(), *keys]))
        if not keys:
            return True
        try:
            _delete(self.client, keys)  # the client too: a Cluster's is built on first use
        except Exception as exc:
            log.warning(
                "could not invalidate %d cache tokens (kept for retry; staleness is bounded "
                "by transient.cache.token_ttl = %ss): %s",
                len(keys),
                self.ttl,
                exc,
            )
            _backlog(self.target, self.binding.name).put_back(keys)
            return False
        if waiting is not None:
            waiting.succeeded()
        return True


def token_store(
    redis_or_manager: Any, *, key_prefix: str = "", ttl: int | None = None
) -> TokenStore:
    """A :class:`TokenStore` on the ``cache`` database of a ``RedisManager``, a registry
    or a request (their app's manager), ``None`` (the running app's), or a bare
    ``redis.Redis``.

    A manager's tokens take its prefix and ``transient.cache.token_ttl``, and its client is
    asked for on every use. With a bare client the keys are ``{key_prefix}:token:...``;
    pass the app's ``transient.key_prefix`` so that a worker writes the tokens the app
    reads.
    """
    binding = bind(redis_or_manager, "token", "cache")
    if binding.manager is not None:
        return TokenStore(binding, ttl=ttl or binding.manager.settings.cache.token_ttl)
    return TokenStore(binding, KeySpace(key_prefix, "token"), ttl=ttl or DEFAULT_TOKEN_TTL)


def get_token(redis_or_manager: Any, instance_or_identity: Any, *, key_prefix: str = "") -> str:
    """The current token of a row or table (created if missing), as text.

    ``instance_or_identity`` is anything :func:`identities_of` accepts that names one
    token (an instance, a single-table class, a ``Table`` or an identity string). Raises
    :class:`redis.RedisError` if Redis cannot be reached.
    """
    identities = identities_of(instance_or_identity)
    if len(identities) != 1:
        raise ValueError(
            f"{instance_or_identity!r} names {len(identities)} tokens; give one table or row"
        )
    store = token_store(redis_or_manager, key_prefix=key_prefix)
    return store.tokens(identities)[0].decode("ascii")


# --------------------------------------------------------------------------- SQLAlchemy hooks


def _current(session: Any) -> Any:
    # The transaction that owns work done now: the innermost savepoint, else the root.
    # Flush runs in an internal subtransaction; its work belongs to the enclosing one.
    return session.get_nested_transaction() or session.get_transaction()


def _owner(transaction: Any) -> Any:
    parent = transaction.parent
    while parent is not None and not parent.nested and parent.parent is not None:
        parent = parent.parent
    return parent


def _parent_rows(state: Any, *, whole: bool) -> set[Identity]:
    """The rows a flushed row points to through its many-to-one relationships, before and
    after the flush: moving a child (``book.author_id = 2`` or ``book.author = other``)
    changes the parent it left and the one it joined, as appending to a collection does.

    ``whole`` (an insert or a delete) counts the foreign keys as they are; an update only
    the ones it changed.
    """
    found: set[Identity] = set()
    for keys, parent in _mapper_info(state.mapper).parents:
        old: list[Any] = []
        new: list[Any] = []
        changed = False
        for key in keys:
            added, unchanged, deleted = state.attrs[key].history
            same = unchanged[0] if unchanged else None
            new.append(added[0] if added else same)
            old.append(deleted[0] if deleted else same)
            changed = changed or bool(added or deleted)
        if changed or whole:
            for values in (old, new):
                if None not in values:
                    found.add(parent.row(values))
    return found


class InvalidationListener:
    """Records what each transaction changed and invalidates its tokens once it commits.

    Made by :func:`register`; its methods are named after the SQLAlchemy session events
    they handle. Pending changes live in memory, per session transaction: nothing is
    written to Redis before the commit, so a session elsewhere committing in between never
    sees, consumes or discards them.
    """

    #: The events bound by :func:`register`, in order.
    EVENTS = (
        "after_begin",
        "after_flush",
        "do_orm_execute",
        "after_commit",
        "after_transaction_end",
    )

    def __init__(
        self,
        target: Any,
        redis: Any = None,
        *,
        key_prefix: str = "",
        token_ttl: int | None = None,
    ) -> None:
        #: The session, sessionmaker or class the events are bound to.
        self.target = target
        self._redis = redis
        self._key_prefix = key_prefix
        self._token_ttl = token_ttl
        self._store: TokenStore | None = None
        self._pending: weakref.WeakKeyDictionary[Any, set[Identity]] = weakref.WeakKeyDictionary()
        self._early: weakref.WeakKeyDictionary[Any, set[Identity]] = weakref.WeakKeyDictionary()
        # The session each connection serves (for after_execute), and the engines whose
        # statements after_execute sees.
        self._sessions: weakref.WeakKeyDictionary[Any, weakref.ref[Any]] = (
            weakref.WeakKeyDictionary()
        )
        self._engines: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ where to

    def store(self) -> TokenStore:
        """The token store invalidations go to (the running app's, when none was given)."""
        if self._redis is None:
            return token_store(None, ttl=self._token_ttl)  # whichever app runs now
        if self._store is None:
            self._store = token_store(
                self._redis, key_prefix=self._key_prefix, ttl=self._token_ttl
            )
        return self._store

    # ------------------------------------------------------------------ recording

    def mark_changed(self, session: Any, *objects: Any) -> None:
        """Record changes SQLAlchemy cannot see (raw SQL): instances, classes, tables,
        identities. They are invalidated when the current transaction commits."""
        found: set[Identity] = set()
        for obj in objects:
            if isinstance(obj, str):
                found.add(Identity(obj))
                continue
            found.update(self._changed_identities(obj))
        self._record(session, found)

    def _record(self, session: Any, identities: Iterable[Identity]) -> None:
        transaction = _current(session)
        with self._lock:
            if transaction is None:
                # A statement that begins the transaction runs its event before the
                # transaction exists; after_begin hands these to it.
                self._early.setdefault(session, set()).update(identities)
                return
            pending = self._pending.get(transaction)
            if pending is None:
                pending = self._pending[transaction] = set()
            pending.update(identities)

    @staticmethod
    def _changed_identities(obj: Any) -> tuple[Identity, ...]:
        from sqlalchemy import inspect

        insp = inspect(obj, raiseerr=False)
        if insp is not None and not getattr(insp, "is_mapper", True):
            info = _mapper_info(insp.mapper)
            found = list(info.tables)
            if insp.key is not None:
                found.append(info.row(insp.key[1]))
            pk = insp.mapper.primary_key_from_instance(obj)
            if None not in pk:
                found.append(info.row(pk))
            return tuple(found)
        return identities_of(obj)

    # ------------------------------------------------------------------ events

    def after_flush(self, session: Any, flush_context: Any) -> None:
        """Record the rows and tables written by a flush (into the current savepoint)."""
        found: set[Identity] = set()
        for state, (is_delete, list_only) in list(flush_context.states.items()):
            if list_only:
                continue
            obj = state.obj()
            if obj is None:
                continue
            if not is_delete and state.key is not None and not session.is_modified(obj):
                continue  # in the flush for bookkeeping only: no row written
            found.update(self._changed_identities(obj))
            found.update(_parent_rows(state, whole=is_delete or state.key is None))
        if found:
            self._record(session, found)

    def do_orm_execute(self, orm_execute_state: Any) -> None:
        """Record the tables (and rows named by primary key) of bulk INSERT/UPDATE/DELETE."""
        state = orm_execute_state
        if not (state.is_update or state.is_delete or state.is_insert):
            return
        found: set[Identity] = set()
        mapper = state.bind_mapper
        if mapper is not None:
            info = _mapper_info(mapper)
            found.update(info.tables)
            params = state.parameters
            if isinstance(params, list):
                # Bulk by primary key: the parameters are named after the attributes,
                # which may differ from the columns' names.
                keys = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
                for row in params:
                    if isinstance(row, dict) and all(k in row for k in keys):
                        found.add(info.row([row[k] for k in keys]))
        table = getattr(state.statement, "table", None)
        if isinstance(getattr(table, "name", None), str):
            found.add(table_identity(table))
        self._record(state.session, found)

    def after_begin(self, session: Any, transaction: Any, connection: Any) -> None:
        """Hand what a transaction's first statement recorded to that transaction, and
        watch the statements of its connection (see :meth:`after_execute`)."""
        from sqlalchemy import event

        engine = connection.engine
        with self._lock:
            early = self._early.pop(session, None)
            self._sessions[connection] = weakref.ref(session)
            hook = engine not in self._engines
            if hook:
                self._engines.add(engine)
        if hook:
            event.listen(engine, "after_execute", self.after_execute)
        if early:
            self._record(session, early)

    def after_execute(
        self,
        connection: Any,
        statement: Any,
        multiparams: Any,
        params: Any,
        execution_options: Any,
        result: Any,
    ) -> None:
        """Record the table (and the rows named by primary key) of an INSERT, UPDATE or
        DELETE sent on a session's connection where the ORM events do not see it: the
        legacy ``bulk_insert_mappings``, ``bulk_update_mappings`` and ``bulk_save_objects``,
        and Core statements run through ``session.connection()``. (An engine event: the
        flush's own statements pass here too and change nothing more.)"""
        if not getattr(statement, "is_dml", False):
            return
        ref = self._sessions.get(connection)
        session = ref() if ref is not None else None
        table: Any = getattr(statement, "table", None)
        if session is None or not isinstance(getattr(table, "name", None), str):
            return
        info = _TABLES.get(table)
        if info is None:
            info = _TABLES[table] = _TableInfo(table)
        found = {info.identity}
        if not statement.is_insert and info.pk:
            # By primary key (bulk_update_mappings binds it as "<table>_<column>").
            for row in multiparams or [params]:
                if isinstance(row, dict):
                    values = [row.get(label, row.get(key)) for label, key in info.pk]
                    if None not in values:
                        found.add(Identity(info.row_prefix + ":".join(map(_pk_part, values))))
        self._record(session, found)

    def after_commit(self, session: Any) -> None:
        """A savepoint's release hands its changes to its parent; the root's commit
        invalidates every change in one round trip. Never raises."""
        transaction = _current(session)
        if transaction is None:
            return
        with self._lock:
            pending = self._pending.pop(transaction, None)
            if pending and transaction.nested:
                owner = _owner(transaction)
                if owner is not None:
                    self._pending.setdefault(owner, set()).update(pending)
                return
        if not pending or transaction.nested:
            return
        try:
            self.store().invalidate(pending)
        except Exception:  # the database has committed: log, never raise into the app
            log.exception("could not invalidate %d cache tokens after a commit", len(pending))

    def after_transaction_end(self, session: Any, transaction: Any) -> None:
        """Whatever a transaction still holds when it ends was not committed: drop it."""
        with self._lock:
            self._pending.pop(transaction, None)

    def pending(self, session: Any) -> frozenset[Identity]:
        """The identities recorded so far in the session's current transaction (or savepoint)."""
        transaction = _current(session)
        with self._lock:
            return frozenset(self._pending.get(transaction, ())) if transaction else frozenset()

    # ------------------------------------------------------------------ binding

    def listen(self) -> None:
        from sqlalchemy import event

        for name in self.EVENTS:
            event.listen(self.target, name, getattr(self, name))

    def remove(self) -> None:
        """Unbind the events."""
        from sqlalchemy import event

        for name in self.EVENTS:
            if event.contains(self.target, name, getattr(self, name)):
                event.remove(self.target, name, getattr(self, name))
        with self._lock:
            engines = list(self._engines)
            self._engines = weakref.WeakSet()
        for engine in engines:
            if event.contains(engine, "after_execute", self.after_execute):
                event.remove(engine, "after_execute", self.after_execute)
        with _REGISTERED_LOCK:
            if _REGISTERED.get(id(self.target)) is self:
                del _REGISTERED[id(self.target)]


# The listener of each target, to replace it on a second register(). Held weakly: SQLAlchemy
# keeps a listener alive as long as its target, and a session registered per request
# (as with zope.sqlalchemy) must not be kept alive, with its identity map, by this table.
_REGISTERED: weakref.WeakValueDictionary[int, InvalidationListener] = weakref.WeakValueDictionary()
_REGISTERED_LOCK = threading.Lock()


def register(
    session_or_sessionmaker: Any,
    redis: Any = None,
    *,
    key_prefix: str = "",
    token_ttl: int | None = None,
) -> InvalidationListener:
    """Bind the invalidation hooks to a session, ``scoped_session``, ``sessionmaker`` or
    ``Session`` class, and return the :class:`InvalidationListener`.

    ``redis`` is where invalidations go: a ``redis.Redis`` (keys under ``key_prefix``, as
    in scripts, workers and tests), a
    :class:`~pyramid_transient.connection.RedisManager` or a registry (its ``cache``
    database, asked for at each commit); ``None`` means the running app's manager at
    commit time. Registering a target again replaces its previous listener.
    """
    with _REGISTERED_LOCK:
        previous = _REGISTERED.get(id(session_or_sessionmaker))
    if previous is not None and previous.target is session_or_sessionmaker:
        previous.remove()
    listener = InvalidationListener(
        session_or_sessionmaker, redis, key_prefix=key_prefix, token_ttl=token_ttl
    )
    listener.listen()
    with _REGISTERED_LOCK:
        _REGISTERED[id(session_or_sessionmaker)] = listener
    return listener
