"""Cache keys that change by themselves when the data behind them changes, and cache regions.

``request.cache_key(*fragments)`` (a :class:`CacheKeyGenerator`) turns fragments into a
key: model instances and classes, :class:`~pyramid_transient.invalidation.Identity`
strings and ``Table`` objects stand for their tokens; every other fragment is a plain value
(``str``, ``int``, ``float``, ``bool``, ``None``, lists, tuples, dicts, and the other types
of :mod:`pyramid_transient.codec`) that enters the key deterministically. One round trip
reads every token of a key, creating missing ones.

Regions are dogpile.cache regions configured from ``transient.cache.*``, storing values
with our JSON codec in the ``cache`` database, with a distributed fill lock that always
has a timeout. :meth:`TransientRegion.get_or_create_for` builds the key *before* it runs
the creator, so a fill that raced a commit lands under a key nobody computes again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import secrets
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, cast

import redis
from dogpile.cache import register_backend
from dogpile.cache.api import NO_VALUE, CantDeserializeException
from dogpile.cache.backends.redis import RedisBackend
from dogpile.cache.region import CacheRegion
from zope.interface import Interface

from . import codec
from .connection import (
    RedisManager,
    add_request_attribute,
    bind,
    get_manager,
    include_manager,
)
from .exceptions import (
    CodecError,
    ConfigurationError,
    CorruptData,
    InvalidArgument,
    TransientError,
    Unavailable,
    UnknownRegion,
)
from .invalidation import (
    Identity,
    InvalidationListener,
    TokenStore,
    identities_of,
    register,
    token_store,
)
from .keys import KeySpace, quote

log = logging.getLogger(__name__)

__all__ = [
    "BACKEND",
    "CacheKeyGenerator",
    "TransientRedisBackend",
    "TransientRegion",
    "get_region",
    "includeme",
    "make_regions",
]

#: JSON's own C function for a string's text (what ``json.dumps(text, ensure_ascii=False)``
#: returns, without building an encoder at every call).
_quoted: Callable[[str], str] = json.encoder.encode_basestring

_PLAIN = frozenset({str, int, float, bool, type(None), list, tuple, dict})
_VALUES = (
    str, int, float, list, tuple, dict, set, frozenset, bytes, Decimal,
    dt.date, dt.time, dt.timedelta, uuid.UUID,
)  # fmt: skip

# Patched by tests: how often an outage is logged at WARNING (seconds).
OUTAGE_LOG_INTERVAL = 60.0
mod_time = time


# --------------------------------------------------------------------------- plain values


def _canonical(value: Any, depth: int = 0) -> str:
    # An injective text for a plain value: types are marked, strings JSON-quoted, dict and
    # set items sorted, so equal values give equal text whatever their order.
    if depth > codec.MAX_DEPTH:
        raise InvalidArgument(
            f"cache key fragments cannot nest deeper than {codec.MAX_DEPTH} levels"
        )
    if value is None:
        return "n"
    if value is True:
        return "T"
    if value is False:
        return "F"
    cls = type(value)
    if cls is str:
        return _quoted(value)  # json.dumps(value, ensure_ascii=False), without its set-up
    if cls is int:
        return f"i{value}"
    if cls is float:
        return f"f{value!r}"
    if isinstance(value, list | tuple):
        open_, close = ("[", "]") if isinstance(value, list) else ("(", ")")
        return open_ + ",".join(_canonical(v, depth + 1) for v in value) + close
    if isinstance(value, dict):
        items = sorted(
            f"{_canonical(k, depth + 1)}:{_canonical(v, depth + 1)}" for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, set | frozenset):
        return "<" + ",".join(sorted(_canonical(v, depth + 1) for v in value)) + ">"
    if isinstance(value, bytes | Decimal | dt.date | dt.time | dt.timedelta | uuid.UUID):
        return "c" + codec.encode_str(value)
    # Subclasses (str and int enums, bool-likes) enter as their base value.
    if isinstance(value, str):
        return _canonical(value[:], depth)
    if isinstance(value, int):
        return _canonical(int(value), depth)
    if isinstance(value, float):
        return _canonical(float(value), depth)
    raise InvalidArgument(
        f"cannot use a {cls.__module__}.{cls.__qualname__} as a cache key fragment: give "
        "model instances or classes, identities, or plain values (str, int, float, bool, "
        "None, lists, tuples, dicts, sets, bytes, Decimal, dates, UUID)"
    )


# --------------------------------------------------------------------------- keys


class _Outage:
    """Rate-limits the log of an outage: one warning, then one per interval.

    One per token store target (the manager, or a bare client), shared by every generator
    on it: ``request.cache_key`` is a new generator per request.
    """

    def __init__(self, what: str = "cache_key", degraded: str = "returning fresh keys") -> None:
        self._lock = threading.Lock()
        self._since: float | None = None
        self._logged = 0.0
        self._what = what
        self._degraded = degraded

    def failed(self, exc: BaseException) -> None:
        now = mod_time.monotonic()
        with self._lock:
            first = self._since is None
            if first:
                self._since = now
            due = first or now - self._logged >= OUTAGE_LOG_INTERVAL
            if due:
                self._logged = now
        if due:
            log.warning(
                "%s could not reach Redis (%s); %s (cache misses) until it is back",
                self._what,
                exc,
                self._degraded,
            )

    def recovered(self) -> None:
        if self._since is None:
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.info(
                "%s reaches Redis again after %.1fs", self._what, mod_time.monotonic() - since
            )


_OUTAGES: weakref.WeakKeyDictionary[Any, _Outage] = weakref.WeakKeyDictionary()
_OUTAGES_LOCK = threading.Lock()


def _outage(target: Any) -> _Outage:
    outage = _OUTAGES.get(target)
    if outage is None:
        with _OUTAGES_LOCK:
            outage = _OUTAGES.get(target)
            if outage is None:
                outage = _OUTAGES[target] = _Outage()
    return outage


# Session classes known to carry invalidation hooks (a sessionmaker's class, a scoped
# session's factory class, a Session subclass), and those already warned about.
_HOOKED: weakref.WeakSet[type] = weakref.WeakSet()
_WARNED: weakref.WeakSet[type] = weakref.WeakSet()


def _describe_factory(session: Any) -> str:
    cls = type(session)
    bind = getattr(session, "bind", None)
    where = f", bound to {bind!r}" if bind is not None else ""
    return f"{cls.__module__}.{cls.__qualname__} (a sessionmaker's session class{where})"


def _check_hooked(state: Any, instance: Any) -> None:
    """Warn, once per session factory, when a key is taken over an instance whose session
    has no invalidation hooks: its commits would never move the key (staleness up to the
    token's time to live, a day by default)."""
    session = state.session
    if session is None:
        return  # detached: no session to ask
    cls = type(session)
    if cls in _HOOKED or cls in _WARNED:
        return
    for fn in session.dispatch.after_commit:
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, InvalidationListener):
            if owner.target is not session:
                _HOOKED.add(cls)  # hooked on the factory: every session of it is
            return
    _WARNED.add(cls)
    log.warning(
        "cache_key over %s instance %r: its session, from %s, has no pyramid_transient "
        "invalidation hooks, so its commits never change this key and the cached value "
        "stays stale up to transient.cache.token_ttl; call "
        "pyramid_transient.invalidation.register(session_factory, config.registry) where "
        "the sessionmaker is built (the starter's models.includeme), or set "
        "transient.cache.sqlalchemy_session to a module-level sessionmaker",
        type(instance).__name__,
        instance,
        _describe_factory(session),
    )


class CacheKeyGenerator:
    """Builds cache keys from fragments; ``generator(*fragments) -> str``.

    ``redis`` is a ``redis.Redis`` (tokens under ``key_prefix``), a
    :class:`~pyramid_transient.connection.RedisManager` (its ``cache`` database and
    prefix), a registry or request (their app's manager), or a
    :class:`~pyramid_transient.invalidation.TokenStore`.

    The key is a 40-character hex digest of the fragments, in order, with each model
    fragment replaced by its current token(s). Any number of fragments costs one round
    trip, first-time token creation included. If Redis cannot be reached the call does not
    raise: it logs and returns a key never seen before, so the cache misses rather than
    serving stale data.
    """

    def __init__(
        self,
        redis: Any,
        *,
        key_prefix: str = "",
        token_ttl: int | None = None,
    ) -> None:
        if isinstance(redis, TokenStore):
            self.store = redis
        else:
            self.store = token_store(redis, key_prefix=key_prefix, ttl=token_ttl)
        self._outage = _outage(self.store.target)

    def __call__(self, *fragments: Any) -> str:
        parts: list[Any] = []
        identities: dict[Identity, int] = {}
        for fragment in fragments:
            cls = type(fragment)
            if cls in _PLAIN:
                parts.append(_canonical(fragment))
                continue
            if cls is Identity:
                ids: Sequence[Identity] = (fragment,)
            elif isinstance(fragment, _VALUES):
                parts.append(_canonical(fragment))
                continue
            else:
                state = getattr(fragment, "_sa_instance_state", None)
                if state is not None and not isinstance(fragment, type):
                    _check_hooked(state, fragment)
                ids = identities_of(fragment)
            parts.append(tuple(identities.setdefault(i, len(identities)) for i in ids))
        digest = hashlib.blake2b(digest_size=20)
        if identities:
            try:
                tokens = self.store.digest(list(identities))
            except Unavailable as exc:
                self._outage.failed(exc)
                digest.update(b"nonce\x1f" + secrets.token_bytes(16))
                return digest.hexdigest()
            except CorruptData as exc:
                # Another program wrote a token key: delete (invalidate) the tokens, which
                # is always safe, so the next key gets fresh ones; this one misses.
                log.warning("a cache token is corrupt (%s); invalidating it", exc)
                self.store.invalidate(list(identities))
                digest.update(b"nonce\x1f" + secrets.token_bytes(16))
                return digest.hexdigest()
            self._outage.recovered()
            digest.update(b"tokens\x1f" + tokens)
        for part in parts:
            if isinstance(part, tuple):
                digest.update(b"\x1et" + ",".join(map(str, part)).encode("ascii"))
            else:
                digest.update(b"\x1ev")
                digest.update(part.encode("utf-8"))
        return digest.hexdigest()


# --------------------------------------------------------------------------- regions


def _deserialize(data: bytes) -> Any:
    try:
        return codec.decode(data)
    except CodecError as exc:
        log.warning("ignoring a corrupt cached value (treated as missing): %s", exc)
        raise CantDeserializeException() from None


class TransientRedisBackend(RedisBackend):
    """dogpile's Redis backend on a client we already have, with our key layout.

    Arguments: ``client`` (a :class:`~pyramid_transient.connection.RedisManager`, a
    registry, a :class:`~pyramid_transient.binding.Binding` or a bare ``redis.Redis``:
    whatever :func:`~pyramid_transient.binding.bind` takes; a manager's ``cache``
    client is asked for on every use, so nothing connects at configuration time and a
    forked worker gets its own pool), ``keyspace`` (values under
    ``<keyspace>:<region>:v:<key>``, locks under ``...:l:<key>``; by default the
    binding's, ``{prefix}:cache``), ``region`` (name), ``lock_timeout`` (seconds;
    required: a fill lock always expires) and ``redis_expiration_time``. Multi-key
    operations are pipelines of single-key commands, so they are legal on a Cluster.

    Values are encoded with :mod:`pyramid_transient.codec` even in a region configured
    without a serializer (dogpile's Redis backend would pickle them, and unpickle whatever
    it reads back).
    """

    # A region takes the backend's (de)serializer when it is given none: never pickle.
    serializer = staticmethod(codec.encode)
    deserializer = staticmethod(_deserialize)

    def __init__(self, arguments: dict[str, Any]) -> None:
        arguments = dict(arguments)
        if "client" not in arguments:
            raise ConfigurationError(
                "TransientRedisBackend needs arguments['client']: a RedisManager, a Pyramid "
                "registry or request, a Binding, or a redis.Redis client"
            )
        if "lock_prefix" in arguments:
            raise ConfigurationError(
                "TransientRedisBackend does not take lock_prefix: its fill locks sit beside "
                "the values, under <keyspace>:<region>:l:<key>; pass keyspace to move both"
            )
        target = arguments.pop("client")
        self._binding = bind(target, "cache")
        # One outage log per backend: a region whose server is down builds values with
        # its creator and serves them uncached (DESIGN section 7: caches fail open).
        self._outage = _Outage(
            f"cache region {arguments.get('region')!r}", "serving values uncached"
        )
        keyspace: KeySpace = arguments.pop("keyspace", None) or self._binding.keyspace
        region = quote(arguments.pop("region"))
        self._values = keyspace.key(region, "v") + ":"
        self._locks = keyspace.key(region, "l") + ":"
        timeout: Any = arguments.get("lock_timeout")
        if type(timeout) not in (int, float) or not math.isfinite(timeout) or timeout <= 0:
            # A fill lock must expire, or a creator that died would block its key for good.
            raise InvalidArgument(
                f"TransientRedisBackend's lock_timeout must be a positive number of seconds "
                f"(a fill lock always expires), not {timeout!r}"
            )
        arguments.setdefault("distributed_lock", True)
        arguments.setdefault("thread_local_lock", False)
        super().__init__(arguments)  # type: ignore[no-untyped-call]

    def _imports(self) -> None:
        pass

    def _create_client(self) -> None:
        pass  # the client comes from the binding, on every use

    # dogpile's backend keeps the clients it made in these attributes; ours are asked of
    # the binding on every use (its _create_client, which would set them, is replaced).
    @property
    def writer_client(self) -> Any:  # type: ignore[override]
        return self._binding.client

    @property
    def reader_client(self) -> Any:  # type: ignore[override]
        return self._binding.client

    def key_mangler(self, key: Any) -> str:
        return self._values + _key_text(key)

    def _full(self, key: Any) -> str:
        # dogpile hands us keys mangled by the region's key_mangler, which is ours unless
        # the region was given its own (sha1_mangle_key, say): keep those under our
        # prefix too.
        if isinstance(key, str) and key.startswith(self._values):
            return key
        return self._values + _key_text(key)

    def get_mutex(self, key: Any) -> Any:
        if not self.distributed_lock:
            return None  # dogpile then uses its own lock, per process
        # Our lock key sits next to the value's.
        own = self._full(key)[len(self._values) :]
        return _LockWrapper(
            self.writer_client.lock(
                self._locks + own,
                timeout=self.lock_timeout,
                sleep=self.lock_sleep,
                thread_local=self.thread_local_lock,
                blocking=self.lock_blocking,
                blocking_timeout=self.lock_blocking_timeout,
            ),
            self,
        )

    def _failed(self, exc: TransientError, key: str | None) -> None:
        """An outage is logged once per outage; a corrupt value once per read."""
        if isinstance(exc, CorruptData):
            log.warning("ignoring a corrupt cache entry %r (treated as missing): %s", key, exc)
        else:
            self._outage.failed(exc)

    def get_serialized(self, key: Any) -> Any:
        key = self._full(key)
        try:
            with self._binding.errors(key):
                value = self.reader_client.get(key)
        except (Unavailable, CorruptData) as exc:
            self._failed(exc, key)
            return NO_VALUE
        self._outage.recovered()
        return NO_VALUE if value is None else self._checked(key, value)

    def get_serialized_multi(self, keys: Iterable[Any]) -> list[Any]:
        keys = [self._full(k) for k in keys]
        if not keys:
            return []
        try:
            with self._binding.errors():
                pipe = self.reader_client.pipeline(transaction=False)
                for key in keys:
                    pipe.get(key)
                values = pipe.execute(raise_on_error=False)
        except Unavailable as exc:
            self._failed(exc, None)
            return [NO_VALUE] * len(keys)
        self._outage.recovered()
        found = []
        for k, v in zip(keys, values, strict=True):
            if isinstance(v, Exception):  # WRONGTYPE: another program's key
                log.warning("ignoring a corrupt cache entry %r (treated as missing): %s", k, v)
                found.append(NO_VALUE)
            else:
                found.append(NO_VALUE if v is None else self._checked(k, v))
        return found

    @staticmethod
    def _checked(key: str, value: Any) -> Any:
        # dogpile parses the metadata before our deserializer runs, and then does
        # arithmetic on its creation time: check both here so a corrupt entry is a miss,
        # not an error (or, with an infinite time, a value that never expires).
        metadata, sep, _ = value.partition(b"|")
        try:
            if not sep:
                raise ValueError("no metadata")
            parsed = json.loads(metadata)
            if not isinstance(parsed, dict) or "v" not in parsed:
                raise ValueError("metadata is not a dict with a version")
            created: Any = parsed.get("ct")
            if type(created) not in (int, float) or not math.isfinite(created):
                raise ValueError(f"creation time {created!r} is not a finite number")
        except (ValueError, RecursionError) as exc:
            log.warning("ignoring a corrupt cache entry %r (treated as missing): %s", key, exc)
            return NO_VALUE
        return value

    # Writes fail open too: a value that cannot be stored is served uncached. (SET
    # replaces a value of any type, so a foreign key is repaired by the next write.)

    def set_serialized(self, key: Any, value: bytes) -> None:
        key = self._full(key)
        try:
            with self._binding.errors(key):
                self.writer_client.set(key, value, ex=self.redis_expiration_time or None)
        except Unavailable as exc:
            self._failed(exc, key)

    def set_serialized_multi(self, mapping: Mapping[Any, bytes]) -> None:
        try:
            with self._binding.errors():
                pipe = self.writer_client.pipeline(transaction=False)
                for key, value in mapping.items():
                    pipe.set(self._full(key), value, ex=self.redis_expiration_time or None)
                pipe.execute()
        except Unavailable as exc:
            self._failed(exc, None)

    def delete(self, key: Any) -> None:
        # A delete that does not reach Redis leaves a value that expires on its own: like
        # any invalidation during an outage (docs/cache.rst), it raises Unavailable.
        with self._binding.errors(self._full(key)):
            self.writer_client.delete(self._full(key))

    def delete_multi(self, keys: Iterable[Any]) -> None:
        with self._binding.errors():
            pipe = self.writer_client.pipeline(transaction=False)
            for key in keys:
                pipe.delete(self._full(key))
            pipe.execute()


def _key_text(key: Any) -> str:
    """A region key as one key part: text as it is; any other key dogpile accepts (an int,
    a tuple) by its type and repr, so ``1`` and ``"1"`` stay distinct entries."""
    if isinstance(key, str):
        return quote(key)
    # "%" only ever starts a two-digit escape in quoted text, so "%%" marks a non-str key.
    return "%%" + quote(f"{type(key).__name__}:{key!r}")


class _LockWrapper:
    """A fill lock that fails open: while Redis is unreachable every process fills its own
    value (served uncached) instead of failing the request."""

    def __init__(self, lock: Any, backend: TransientRedisBackend) -> None:
        self.lock = lock
        self.backend = backend
        self.failed_open = False

    def acquire(self, wait: bool = True) -> bool:
        try:
            with self.backend._binding.errors():
                return bool(self.lock.acquire(blocking=wait))
        except Unavailable as exc:
            self.backend._failed(exc, None)
            self.failed_open = True
            return True

    def release(self) -> None:
        if self.failed_open:
            self.failed_open = False
            return
        try:
            with self.backend._binding.errors():
                self.lock.release()
        except Unavailable as exc:
            self.backend._failed(exc, None)
        except redis.exceptions.LockError as exc:
            # The lock expired (lock_timeout) while the creator ran, or was never taken
            # because Redis was down; the value is stored anyway.
            log.warning("a cache fill outlived its lock (transient.cache.lock_timeout): %s", exc)

    def locked(self) -> bool:
        try:
            with self.backend._binding.errors():
                return bool(self.lock.locked())
        except Unavailable:
            return False


#: The dogpile backend name of :class:`TransientRedisBackend`.
BACKEND = "pyramid_transient.redis"
register_backend(BACKEND, __name__, "TransientRedisBackend")  # type: ignore[no-untyped-call]


class TransientRegion(CacheRegion):
    """A dogpile :class:`~dogpile.cache.region.CacheRegion` with cache-key helpers."""

    def get_or_create_for(
        self,
        cache_key: Callable[..., str],
        fragments: Sequence[Any],
        creator: Callable[[], Any],
        *,
        expiration_time: float | None = None,
        should_cache_fn: Callable[[Any], bool] | None = None,
    ) -> Any:
        """The cached value for ``cache_key(*fragments)``, created by ``creator`` on a miss.

        The key is computed first, before the creator reads any data: if a commit changes
        that data meanwhile, the value lands under the old key, which nobody computes
        again, instead of stale data under the new key.
        """
        key = cache_key(*fragments)
        return self.get_or_create(
            key, creator, expiration_time=expiration_time, should_cache_fn=should_cache_fn
        )


def make_regions(manager: RedisManager) -> dict[str, TransientRegion]:
    """The regions ``transient.cache.regions`` names, on the manager's ``cache`` database."""
    cache = manager.settings.cache
    regions: dict[str, TransientRegion] = {}
    for name in cache.regions:
        expiration = cache.region_expiration.get(name, cache.expiration)
        region = TransientRegion(name=name, serializer=codec.encode, deserializer=_deserialize)
        region.configure(
            BACKEND,
            expiration_time=expiration,
            arguments={
                "client": bind(manager, "cache"),
                "region": name,
                "lock_timeout": cache.lock_timeout,
                # Redis keeps a value a while past its soft expiration, so dogpile can
                # serve it to others while one process refills it.
                "redis_expiration_time": expiration * 2 + cache.lock_timeout,
            },
        )
        regions[name] = region
    return regions


# --------------------------------------------------------------------------- Pyramid glue


class _IRegions(Interface):  # type: ignore[misc]
    """Registry utility holding the app's cache regions."""


class _Regions:
    def __init__(self, regions: dict[str, TransientRegion]) -> None:
        self.regions = regions


def get_region(request_or_registry: Any, name: str = "default") -> TransientRegion:
    """The cache region ``name`` of the app, from a request or a registry."""
    registry = getattr(request_or_registry, "registry", request_or_registry)
    holder = cast(_Regions | None, registry.queryUtility(_IRegions))
    if holder is None:
        holder = _Regions(make_regions(get_manager(registry)))
        registry.registerUtility(holder, _IRegions)
    try:
        return holder.regions[name]
    except KeyError:
        names = ", ".join(repr(n) for n in holder.regions)
        raise UnknownRegion(
            f"no cache region is named {name!r}; configured regions are {names} "
            f"(add it to transient.cache.regions)",
            name=name,
        ) from None


def includeme(config: Any) -> None:
    """Add ``request.cache_key``, the regions, and the SQLAlchemy hooks when
    ``transient.cache.sqlalchemy_session`` names a session."""
    include_manager(config)
    manager = get_manager(config.registry)
    wait = manager.settings.cache.wait_replicas
    if wait and manager.settings.mode == "memory":
        raise ConfigurationError(
            f"transient.cache.wait_replicas is {wait!r}, but the memory:// backend has no "
            "replicas; set it to 0 or point transient.url at a Redis server that has replicas",
            key="transient.cache.wait_replicas",
            value=wait,
        )
    if config.registry.queryUtility(_IRegions) is None:
        config.registry.registerUtility(_Regions(make_regions(manager)), _IRegions)
    # A generator per request, on one token store built here.
    store = token_store(manager)
    add_request_attribute(config, "cache_key", lambda request: CacheKeyGenerator(store))
    dotted = manager.settings.cache.sqlalchemy_session
    if dotted:
        register(resolve_session_setting(config, dotted), manager)


def resolve_session_setting(config: Any, dotted: str) -> Any:
    """The object ``transient.cache.sqlalchemy_session`` names, checked at startup: it
    must import and be something the hooks can bind to."""
    from .invalidation._listener import ACCEPTED_TARGETS, hookable

    key = "transient.cache.sqlalchemy_session"
    try:
        target = config.maybe_dotted(dotted)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"{key} = {dotted!r} cannot be imported ({type(exc).__name__}: {exc}); it must "
            f"name {ACCEPTED_TARGETS} at module level (a sessionmaker built at run time, as "
            "in the Pyramid starter's models.includeme, is registered there instead: "
            "register(session_factory, config.registry))",
            key=key,
            value=dotted,
        ) from None
    if not hookable(target):
        hint = ""
        if callable(target) and not isinstance(target, type):
            hint = (
                " It names a function: in the Pyramid starter layout, call "
                "pyramid_transient.invalidation.register(session_factory, config.registry) "
                "in models.includeme, on the sessionmaker get_session_factory returns, and "
                "remove this setting."
            )
        raise ConfigurationError(
            f"{key} = {dotted!r} names {target!r}, not {ACCEPTED_TARGETS} (the objects "
            f"SQLAlchemy's session events bind to).{hint}",
            key=key,
            value=dotted,
        )
    return target
