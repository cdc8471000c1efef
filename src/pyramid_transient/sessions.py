"""``request.session`` kept in Redis: our own :class:`~pyramid.interfaces.ISession`.

``config.include("pyramid_transient.sessions")`` (or the whole ``pyramid_transient``) sets
a session factory from the ``redis.sessions.*`` settings users know from
pyramid_session_redis 1.8 (same names, same meanings) and ``transient.sessions.*``:

* the client is the manager's ``sessions`` database (one shared pool; Sentinel and
  Cluster included), unless ``redis.sessions.redis_url`` (or a host, or a
  ``redis_client_callable``) names another server; every command goes through the spine
  (:mod:`pyramid_transient.binding`), which turns redis-py's failures into
  :class:`~pyramid_transient.exceptions.Unavailable` or
  :class:`~pyramid_transient.exceptions.CorruptData`;
* keys follow our layout, ``{key_prefix}:session:{id}``; the cookie carries only the id,
  signed by webob's ``SignedSerializer`` exactly as pyramid_session_redis signs it;
* payloads are our codec (JSON) behind an HMAC keyed by ``redis.sessions.secret`` and bound
  to the key, so a payload written by anyone else, copied from another session, larger
  than ``transient.sessions.max_bytes`` or nested too deep to be saved again is treated as
  corrupt: a fresh empty session, one WARNING naming the (redacted) key, and the key
  deleted with the request's save;
* loading is one ``GETEX`` (the TTL refresh rides along), a request that changed nothing
  writes nothing, and a save is one round trip;
* a save never recreates a key that is gone: a loaded session is written with
  ``SET ... XX`` (rotation: one script that moves it only if the old key is still
  there), a new session only with ``SET ... NX`` of a fresh id. A logout or a rotation is
  never undone by a concurrent request holding the old cookie;
* nothing is written for an attempt that pyramid_retry will retry, or for a request that
  produced no response; a value the codec cannot store, or a session larger than
  ``transient.sessions.max_bytes``, is an error raised during the request (before
  pyramid_tm commits), naming the key;
* Redis being unreachable when the session is loaded raises
  :class:`~pyramid_transient.exceptions.SessionUnavailable`; views that never touch
  ``request.session`` do not connect at all.
"""

from __future__ import annotations

import difflib
import hashlib
import hmac
import logging
import math
import pickle
import re
import secrets
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast
from urllib.parse import quote as urlquote

from pyramid.interfaces import ISession
from webob.cookies import SignedSerializer
from zope.interface import implementer

from . import codec
from .binding import Binding, bind, send_on_one_connection
from .connection import RedisManager, TransientRedis, get_manager
from .exceptions import (
    ConfigurationError,
    CorruptData,
    InvalidArgument,
    ObjectNotFound,
    SessionTooLarge,
    SessionUnavailable,
    TransientError,
    Unavailable,
    UnsupportedValue,
)
from .keys import KeySpace, quote
from .lua import ScriptSet
from .settings import (
    Parser,
    boolean,
    choice,
    integer,
    number,
    optional,
    optional_string,
    python_object,
    python_only,
)

log = logging.getLogger(__name__)

__all__ = [
    "LEGACY_KEYS",
    "SESSION_SETTINGS",
    "TransientSession",
    "TransientSessionFactory",
    "includeme",
    "parse_session_settings",
    "rotate_session",
    "session_factory_from_settings",
]

PREFIX = "redis.sessions."

# The salt pyramid_session_redis signs its cookies with: keeping it means a cookie
# signer configured for it keeps verifying ours, and its cookies keep naming their ids.
_COOKIE_SALT = "pyramid_session_redis."
_SEAL_VERSION = b"t1."
_MAC_SIZE = 32  # sha256
#: The payload format version pyramid_session_redis writes ("v"), which we keep.
_PAYLOAD_VERSION = 1
_CSRF_KEY = "_csrft_"
_FLASH = "_f_"

#: The clock of sessions (whole seconds, rounded up as pyramid_session_redis rounds):
#: tests replace ``_time``.
_time = time.time


def _int_time() -> int:
    return math.ceil(_time())


# --------------------------------------------------------------------------- settings


def _cookie_samesite(key: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return cast(str, choice("strict", "lax", "none", canonical=str.capitalize)(key, value))


_optional_bool = optional(boolean)
_seconds_or_none = optional(integer(0), zero_is_none=True)

#: Every ``redis.sessions.*`` option of pyramid_session_redis 1.8 and its parser (from the
#: settings toolkit, :mod:`pyramid_transient.settings`), called with the full key and the
#: value.
SESSION_SETTINGS: dict[str, Parser] = {
    "secret": optional_string,
    "timeout": _seconds_or_none,  # None: never expire (absent: the default, 1200)
    "cookie_name": optional_string,
    "cookie_max_age": _seconds_or_none,
    "cookie_path": optional_string,
    "cookie_domain": optional_string,
    "cookie_secure": _optional_bool,
    "cookie_httponly": _optional_bool,
    "cookie_samesite": _cookie_samesite,
    "cookie_comment": optional_string,
    "cookie_on_exception": _optional_bool,
    "cookie_expires": python_only("pass cookie_max_age instead"),
    "cookie_signer": python_object,
    "redis_url": optional_string,
    "redis_host": optional_string,
    "redis_port": optional(integer(1, 65535)),
    "redis_db": optional(integer(0)),
    "redis_password": optional_string,
    "redis_unix_socket_path": optional_string,
    "redis_socket_timeout": optional(number(0, allow_zero=False)),
    "redis_encoding": optional_string,
    "redis_encoding_errors": optional_string,
    "redis_connection_pool": python_only("use redis_client_callable instead"),
    "redis_client_callable": python_object,
    "serialize": python_object,
    "deserialize": python_object,
    "id_generator": python_object,
    "prefix": optional_string,
    "set_redis_ttl": _optional_bool,
    "set_redis_ttl_readheavy": _optional_bool,
    "detect_changes": _optional_bool,
    "deserialized_fails_new": _optional_bool,
    "func_check_response_allow_cookies": python_object,
    "func_invalid_logger": python_object,
    "timeout_trigger": _seconds_or_none,
    "python_expires": _optional_bool,
    "invalidate_empty_session": _optional_bool,
}

#: The settings whose value is a Python object (given as a dotted name in an ini file):
#: ``includeme`` writes the resolved objects back into the registry's settings, as
#: pyramid_session_redis does.
DOTTED_SETTINGS = tuple(name for name, parse in SESSION_SETTINGS.items() if parse is python_object)

#: Websauna-era (pyramid_redis_sessions) names and the pyramid_session_redis name each is
#: translated to, with a :class:`DeprecationWarning`.
LEGACY_KEYS: dict[str, str] = {
    "url": "redis_url",
    "host": "redis_host",
    "port": "redis_port",
    "db": "redis_db",
    "password": "redis_password",
    "socket_timeout": "redis_socket_timeout",
    "connection_pool": "redis_connection_pool",
    "charset": "redis_encoding",
    "errors": "redis_encoding_errors",
    "unix_socket_path": "redis_unix_socket_path",
    "client_callable": "redis_client_callable",
}


def _modern_name(key: str, value: Any, settings: Mapping[str, Any]) -> str:
    name = key[len(PREFIX) :]
    if name not in LEGACY_KEYS:
        return name
    modern = LEGACY_KEYS[name]
    warnings.warn(
        f"{key} is a pyramid_redis_sessions (Websauna) setting; it is read as "
        f"{PREFIX}{modern}: rename it"
        + (
            ", or drop it to use the manager's 'sessions' database "
            "(transient.url, transient.db.sessions)"
            if modern != "redis_client_callable"
            else ""
        ),
        DeprecationWarning,
        stacklevel=4,
    )
    if PREFIX + modern in settings:
        raise ConfigurationError(
            f"{key} and {PREFIX}{modern} are both set (to {value!r} and "
            f"{settings[PREFIX + modern]!r}); keep only {PREFIX}{modern}",
            key=key,
            value=value,
        )
    return modern


def parse_session_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``redis.sessions.*`` settings as keyword arguments of :class:`TransientSessionFactory`.

    Values are parsed by an explicit table (:data:`SESSION_SETTINGS`); an unknown key is a
    :class:`~pyramid_transient.exceptions.ConfigurationError` naming the nearest valid one;
    the Websauna-era keys of :data:`LEGACY_KEYS` are translated with a
    :class:`DeprecationWarning`. ``transient.sessions.*`` adds ``max_bytes``,
    ``serializer``, ``save_before_response``, ``wait_replicas`` and ``wait_timeout``.
    """
    options: dict[str, Any] = {}
    for key in sorted(settings):
        if not key.startswith(PREFIX):
            continue
        value = settings[key]
        name = _modern_name(key, value, settings)
        parse = SESSION_SETTINGS.get(name)
        if parse is None:
            match = difflib.get_close_matches(name, [*SESSION_SETTINGS, *LEGACY_KEYS], n=1)
            hint = f"; did you mean {PREFIX + match[0]!r}?" if match else ""
            raise ConfigurationError(
                f"{key} is not a pyramid_session_redis setting{hint} (see the settings "
                "reference for the accepted keys)",
                key=key,
                value=value,
            )
        parsed = parse(PREFIX + name, value)
        if parsed is not None or name == "timeout":
            options[name] = parsed
    if "prefix" in options and "id_generator" in options:
        raise ConfigurationError(
            f"{PREFIX}prefix and {PREFIX}id_generator are both set "
            f"({options['prefix']!r}, {settings.get(PREFIX + 'id_generator')!r}); "
            "use one of them",
            key=PREFIX + "prefix",
            value=options["prefix"],
        )
    if ("serialize" in options) != ("deserialize" in options):
        given = "serialize" if "serialize" in options else "deserialize"
        raise ConfigurationError(
            f"{PREFIX}{given} is set without its counterpart; set both "
            f"{PREFIX}serialize and {PREFIX}deserialize, or neither",
            key=PREFIX + given,
            value=settings.get(PREFIX + given),
        )
    if not options.get("secret"):
        raise ConfigurationError(
            f"{PREFIX}secret is missing or empty (got {settings.get(PREFIX + 'secret')!r}): "
            "sessions need a long random secret to sign their cookies and payloads",
            key=PREFIX + "secret",
            value=settings.get(PREFIX + "secret"),
        )
    return options


def session_factory_from_settings(
    settings: Mapping[str, Any], manager: RedisManager | None = None
) -> TransientSessionFactory:
    """A :class:`TransientSessionFactory` from ini settings.

    ``manager`` defaults to one built from the same settings' ``transient.*`` keys.
    """
    options = parse_session_settings(settings)
    if manager is None:
        manager = RedisManager.from_settings(dict(settings))
    s = manager.settings.sessions
    if s.wait_replicas and manager.settings.mode == "memory":
        raise ConfigurationError(
            f"transient.sessions.wait_replicas is {s.wait_replicas!r}, but the memory:// "
            "backend has no replicas; set it to 0 or point transient.url at a Redis server "
            "that has replicas",
            key="transient.sessions.wait_replicas",
            value=s.wait_replicas,
        )
    return TransientSessionFactory(
        manager=manager,
        max_bytes=s.max_bytes,
        serializer=s.serializer,
        save_before_response=s.save_before_response,
        wait_replicas=s.wait_replicas,
        wait_timeout=s.wait_timeout,
        **options,
    )


# --------------------------------------------------------------------------- payloads


def _codec_loads(raw: bytes) -> dict[str, Any]:
    return cast(dict[str, Any], codec.decode(raw))


def _pickle_dumps(data: dict[str, Any]) -> bytes:
    return pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)


def _pickle_loads(raw: bytes) -> dict[str, Any]:
    # Only reached for payloads whose HMAC verified, and only when the app opted in
    # (transient.sessions.serializer = pickle): written by an app holding the secret.
    return cast(dict[str, Any], pickle.loads(raw))


def _check_shape(data: Any) -> dict[str, Any]:
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("m"), dict)
        or not isinstance(data.get("c"), int)
        or not isinstance(data.get("v"), int)
        or not isinstance(data.get("t", 0) or 0, int)
        or not isinstance(data.get("x", 0) or 0, int)
    ):
        raise ValueError("not a session payload")
    return data


def _fits_depth(payload: bytes, data: dict[str, Any]) -> bool:
    """Whether ``data`` (decoded from ``payload``) is shallow enough to be encoded again.

    Nesting needs one bracket per level: a payload with fewer brackets than the codec's
    limit (nearly every session) is shallow enough without walking it.
    """
    if payload.count(b"[") + payload.count(b"{") <= codec.MAX_DEPTH:
        return True
    try:
        codec.check(data)
    except TypeError:
        return False
    return True


class _StringSerializer:
    """The id as UTF-8, for webob's ``SignedSerializer`` (the cookie holds a str id)."""

    def dumps(self, value: str) -> bytes:
        return value.encode("utf-8")

    def loads(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"session id is not UTF-8: {exc}") from None


def _generate_session_id() -> str:
    # 48 random bytes (64 URL-safe characters), as pyramid_session_redis.
    return secrets.token_urlsafe(48)


# Lua: move a loaded session to its new id (rotation) only if its old key is still there.
# KEYS[1] the old key, KEYS[2] the new one; ARGV[1] the sealed payload, ARGV[2] its TTL in
# seconds ("0": none). Returns 1 if moved, 0 if the old key was gone (logged out or
# rotated by a concurrent request: nothing is written) or the new id was taken.
ROTATE = """
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
local ok
if ARGV[2] ~= '0' then
  ok = redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2], 'NX')
else
  ok = redis.call('SET', KEYS[2], ARGV[1], 'NX')
end
if ok then return 1 end
return 0
"""

SCRIPTS = ScriptSet(rotate=ROTATE)


# --------------------------------------------------------------------------- session

#: Values a caller cannot change in place: handing one out does not make the session
#: need a comparison at the end of the request.
_IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes})
#: Values the codec stores whatever they hold (an int may be too long for JSON).
_ALWAYS_STORABLE = frozenset({str, float, bool, type(None), bytes})


@implementer(ISession)
class TransientSession:
    """One request's session: Pyramid's :class:`~pyramid.interfaces.ISession` (a dict with
    flash queues and a CSRF token) plus the methods pyramid_session_redis's session offers
    (:meth:`adjust_session_timeout`, :meth:`adjust_cookie_max_age`, :meth:`do_persist` ...)
    and :meth:`rotate`.

    Created by :class:`TransientSessionFactory` for each request that touches
    ``request.session``, which loads it (one ``GETEX``) at once.
    """

    def __init__(self, factory: TransientSessionFactory, binding: Binding, request: Any) -> None:
        self._factory = factory
        self._binding = binding
        #: The client, asked of the binding once per request.
        self._client: Any = None
        #: Keys deleted by the next save (invalidated ids, corrupt keys).
        self._doomed: list[str] = []
        #: The id whose key holds this session in Redis (loaded, or written by this
        #: request), and the payload bytes it holds; ``None`` for a session never stored.
        self._stored_id: str | None = None
        self._stored: bytes | None = None
        #: Changed through a method (or rotated): the end of the request saves it.
        self._changed = False
        #: A value that can be changed in place was handed out: compare at the end.
        self._exposed = False
        #: The load already refreshed the TTL (GETEX).
        self._refreshed = False
        #: The TTL the load's GETEX gave differs from the session's own timeout.
        self._ttl_differs = False
        #: Invalidated, and nothing stored since: the cookie is removed.
        self._invalidated = False
        self._recookie = False
        self._cookie_overrides: dict[str, Any] = {}
        #: What the save will write, decided once by :meth:`_prepare`, and whether the
        #: session changed since.
        self._plan: list[tuple[Any, ...]] | None = None
        self._stale = False
        self._responded = False
        #: Refused at pyramid_tm's commit: not saved, and not raised again.
        self._failed = False
        self._committed = False
        #: Saved (or refused) already: later callbacks do nothing.
        self._done = False
        self._fresh()
        self._cookie_was_valid = False
        session_id = factory._read_cookie(request)
        if session_id is not None and self._load(request, session_id):
            self._cookie_was_valid = True

    # ------------------------------------------------------------------ state

    def _fresh(self) -> None:
        factory = self._factory
        now = _int_time()
        self._id: str | None = None  # generated when first needed
        self._data: dict[Any, Any] = {}
        self._created = now
        self._timeout: int | None = factory.timeout
        self._expires: int | None = (
            now + factory.timeout if factory.timeout and factory.python_expires else None
        )
        self._new = True

    def _load(self, request: Any, session_id: str) -> bool:
        """Load ``session_id`` (one round trip); False (and a fresh session) if it is
        missing, expired or corrupt."""
        factory = self._factory
        key = factory.key(session_id)
        try:
            client = self._redis()
            if factory.refresh_on_load:
                raw = self._binding.call(
                    key, "GETEX", key, "EX", factory.timeout, idempotent=True, client=client
                )
            else:
                raw = self._binding.call(key, "GET", key, idempotent=True, client=client)
        except CorruptData as exc:
            return self._discard(request, key, exc, "holds a value that is not a string")
        except Unavailable as exc:
            raise SessionUnavailable(
                "the session store is unreachable while loading session key "
                f"{factory.redact(key)!r}: {exc}",
                database=factory.database,
            ) from (exc.__cause__ or exc)
        except UnicodeDecodeError as exc:
            # Payloads start with a binary HMAC, which a decoding client cannot return.
            raise ConfigurationError(
                "the session client decodes responses (decode_responses=True), so it "
                "cannot read session payloads; have redis.sessions.redis_client_callable "
                "return a client without decode_responses",
                key=PREFIX + "redis_client_callable",
                value=factory._client_callable,
            ) from exc
        self._refreshed = factory.refresh_on_load
        if raw is None:
            shown = factory.redact(key)
            log.info("session key %r is not in Redis (expired?); starting a fresh session", shown)
            return self._invalid(request, ObjectNotFound(f"session key {shown!r} is not in Redis"))
        if isinstance(raw, str):  # decoded by a client with encoding_errors=surrogateescape
            raw = raw.encode("utf-8", "surrogateescape")
        payload = factory.unseal(key, raw)
        if payload is None:
            return self._discard(
                request,
                key,
                None,
                "holds a payload that fails HMAC verification (written by something "
                "without the session secret, or for another key)",
            )
        if len(payload) > factory.max_bytes:
            return self._discard(
                request,
                key,
                None,
                f"holds {len(payload)} bytes, more than transient.sessions.max_bytes "
                f"({factory.max_bytes}), so it could not be saved again",
            )
        try:
            data = _check_shape(factory.loads(payload))
        except Exception as exc:  # any deserializer's error: the payload is corrupt
            return self._discard(
                request, key, None, f"holds a payload that does not decode ({exc})"
            )
        if factory.checks_values and not _fits_depth(payload, data):
            return self._discard(
                request,
                key,
                None,
                f"holds a value nested deeper than {codec.MAX_DEPTH} levels, so it could "
                "not be saved again",
            )
        expires = data.get("x")
        if expires and _int_time() > expires:
            shown = factory.redact(key)
            log.info("session key %r expired by its python_expires stamp", shown)
            return self._invalid(request, ObjectNotFound(f"session key {shown!r} expired"))
        if data["v"] < _PAYLOAD_VERSION:
            shown = factory.redact(key)
            log.info("session key %r is in a legacy format; starting a fresh session", shown)
            return self._invalid(request, ObjectNotFound(f"session key {shown!r} is legacy"))
        self._id = self._stored_id = session_id
        self._stored = payload
        self._data = data["m"]
        self._created = data["c"]
        self._timeout = data.get("t")
        self._expires = expires
        self._new = False
        if self._refreshed and self._timeout != factory.timeout:
            # adjust_session_timeout() gave this session its own timeout, which the GETEX
            # (sent before the payload was known) replaced: the end of the request restores it.
            self._refreshed = False
            self._ttl_differs = True
        return True

    def _redis(self) -> Any:
        client = self._client
        if client is None:
            client = self._client = self._binding.client
        return client

    def _discard(self, request: Any, key: str, exc: BaseException | None, why: str) -> bool:
        shown = self._factory.redact(key)
        log.warning("session key %r %s; starting a fresh session and deleting the key", shown, why)
        self._doomed.append(key)
        error = exc or CorruptData(
            f"session key {shown!r} {why}", key=shown, database=self._factory.database
        )
        return self._invalid(request, error)

    def _invalid(self, request: Any, exc: BaseException) -> bool:
        if self._factory._func_invalid_logger is not None:
            self._factory._func_invalid_logger(request, exc)
        return False

    def _touch(self, value: Any) -> Any:
        if type(value) not in _IMMUTABLE:
            self._exposed = True
        return value

    def _change(self) -> None:
        self._changed = True
        self._invalidated = False
        self._stale = True  # a save prepared earlier must be prepared again

    def _check_value(self, key: Any, value: Any) -> None:
        if self._factory.checks_values and type(value) not in _ALWAYS_STORABLE:
            try:
                codec.check(value)
            except TypeError as exc:
                raise UnsupportedValue(
                    f"session value for key {key!r} cannot be stored: {exc}"
                ) from None

    # ------------------------------------------------------------------ ISession

    @property
    def created(self) -> int:
        """When the session was created (seconds since the epoch)."""
        return self._created

    @property
    def new(self) -> bool:
        """Whether the session was created by this request (no valid cookie came in)."""
        return self._new

    @property
    def session_id(self) -> str:
        """The session's id (generated now for a new session that has none yet)."""
        if self._id is None:
            self._id = self._factory.generate_id()
        return self._id

    @property
    def managed_dict(self) -> dict[Any, Any]:
        """The session's data (pyramid_session_redis's name)."""
        self._exposed = True
        return self._data

    @property
    def timeout(self) -> int | None:
        """The session's timeout in seconds (``None``: never)."""
        return self._timeout

    @property
    def expires(self) -> int | None:
        """The python_expires stamp, when there is one."""
        return self._expires

    @property
    def version(self) -> int:
        return _PAYLOAD_VERSION

    def __getitem__(self, key: Any) -> Any:
        return self._touch(self._data[key])

    def get(self, key: Any, default: Any = None) -> Any:
        return self._touch(self._data.get(key, default))

    def __contains__(self, key: Any) -> bool:
        return key in self._data

    def has_key(self, key: Any) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def keys(self) -> Any:
        return self._data.keys()

    def values(self) -> list[Any]:
        self._exposed = True
        return list(self._data.values())

    def items(self) -> Any:
        self._exposed = True
        return self._data.items()

    def __setitem__(self, key: Any, value: Any) -> None:
        self._check_value(key, value)
        self._data[key] = value
        self._change()

    def __delitem__(self, key: Any) -> None:
        del self._data[key]
        self._change()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key in self._data:
            return self._touch(self._data[key])
        self._check_value(key, default)
        self._data[key] = default
        self._change()
        return self._touch(default)

    def pop(self, key: Any, default: Any = None) -> Any:
        if key in self._data:
            self._change()
        return self._data.pop(key, default)

    def popitem(self) -> tuple[Any, Any]:
        item = self._data.popitem()
        self._change()
        return item

    def update(self, other: Any = (), **kwargs: Any) -> None:
        items = dict(other, **kwargs)
        for key, value in items.items():
            self._check_value(key, value)
        self._data.update(items)
        self._change()

    def clear(self) -> None:
        self._data.clear()
        self._change()

    def changed(self) -> None:
        """Mark the session changed (a value was changed in place): it is saved."""
        self._change()

    def invalidate(self) -> None:
        """Forget the session; its key is deleted by the request's save (one ``DEL``).

        The session is empty afterwards; what is stored in it from then on is a new
        session, with a new id.
        """
        if self._stored_id is not None:
            self._doomed.append(self._factory.key(self._stored_id))
            self._stored_id = None
            self._stored = None
        self._fresh()
        self._changed = False
        self._exposed = False
        self._refreshed = False
        self._ttl_differs = False
        self._invalidated = True
        self._stale = True

    def new_csrf_token(self) -> str:
        token = secrets.token_hex(32)
        self[_CSRF_KEY] = token
        return token

    def get_csrf_token(self) -> str:
        token = self._data.get(_CSRF_KEY)
        if not isinstance(token, str):
            token = self.new_csrf_token()
        return token

    def flash(self, msg: Any, queue: str = "", allow_duplicate: bool = True) -> None:
        storage = self.setdefault(_FLASH + queue, [])
        if allow_duplicate or msg not in storage:
            self._check_value(_FLASH + queue, msg)
            storage.append(msg)
            self._change()

    def peek_flash(self, queue: str = "") -> Any:
        return self.get(_FLASH + queue, [])

    def pop_flash(self, queue: str = "") -> Any:
        return self.pop(_FLASH + queue, [])

    # ------------------------------------------------------------------ pyramid_session_redis

    def rotate(self, new_csrf_token: bool = True) -> None:
        """Give the session a new id, keeping its data; the old id stops working.

        Call it when privileges change (login), against session fixation. With
        ``new_csrf_token`` (the default) the session also gets a new CSRF token, so a
        token known to whoever planted the session is refused afterwards. The request's
        save moves the data to the new key in one round trip, and only if the old key is
        still there (a concurrent logout wins); the response carries the new cookie.
        """
        self._id = self._factory.generate_id()
        self._recookie = True
        self._change()
        if new_csrf_token:
            self.new_csrf_token()

    def please_recookie(self) -> None:
        """Send the cookie again with this response."""
        self._recookie = True

    def adjust_cookie_expires(self, expires: Any) -> None:
        """The cookie's ``Expires`` for this response (a datetime, a timedelta or None)."""
        self._cookie_overrides["expires"] = expires
        self._recookie = True

    def adjust_cookie_max_age(self, max_age: Any) -> None:
        """The cookie's ``Max-Age`` for this response (seconds, a timedelta or None)."""
        self._cookie_overrides["max_age"] = max_age
        self._recookie = True

    def adjust_session_expires(self, expires_epoch: int) -> None:
        """Move the python_expires stamp of the session."""
        self._expires = expires_epoch
        self._change()

    def adjust_session_timeout(self, timeout_seconds: int) -> None:
        """Give this session its own timeout, kept for as long as it lives."""
        self._timeout = timeout_seconds
        self._change()

    adjust_expires_for_session = adjust_session_expires
    adjust_timeout_for_session = adjust_session_timeout

    def ensure_id(self) -> str:
        """The session's id, generated now if it has none."""
        return self.session_id

    def payload(self) -> bytes:
        """The encoded session, checked: the bytes a save would store (before the HMAC).

        Raises :class:`TypeError` naming the first key whose value cannot be stored, and
        :class:`~pyramid_transient.exceptions.SessionTooLarge` beyond
        ``transient.sessions.max_bytes``.
        """
        return self._checked_size(self._encoded())

    def do_persist(self) -> None:
        """Save the session now (one round trip), rather than at the end of the request."""
        self._changed = True
        self._execute(self._make_plan(force=True))
        self._changed = False
        self._plan = None

    def do_refresh(self, force_redis_ttl: int | None = None) -> None:
        """Refresh the key's TTL now (one round trip)."""
        ttl = force_redis_ttl if force_redis_ttl is not None else self._ttl()
        if ttl and self._stored_id is not None:
            self._execute([("expire", self._factory.key(self._stored_id), ttl)])

    def from_redis(self, session_id: str | None = None) -> dict[str, Any] | None:
        """Deprecated (pyramid_session_redis's loader, kept for one release): the stored
        payload of ``session_id`` (this session's by default) as a dict, or None.

        One ``GET``; nothing is refreshed or changed. Read the session itself instead.
        """
        warnings.warn(
            "TransientSession.from_redis() is deprecated: read the session itself "
            "(request.session), which is loaded when first used",
            DeprecationWarning,
            stacklevel=2,
        )
        factory = self._factory
        sid = session_id or self._stored_id
        if sid is None:
            return None
        key = factory.key(sid)
        raw = self._binding.call(key, "GET", key, idempotent=True, client=self._redis())
        payload = None if raw is None else factory.unseal(key, raw)
        return None if payload is None else _check_shape(factory.loads(payload))

    # ------------------------------------------------------------------ encoding

    def _payload_dict(self) -> dict[str, Any]:
        factory = self._factory
        data: dict[str, Any] = {"m": self._data, "c": self._created, "v": _PAYLOAD_VERSION}
        if self._expires and factory.python_expires:
            data["x"] = self._expires
        if self._timeout:
            data["t"] = self._timeout
            if factory.python_expires:
                now = _int_time()
                trigger = factory.timeout_trigger
                if not trigger or now >= (self._expires or 0) - trigger:
                    data["x"] = now + self._timeout
        return data

    def _encoded(self) -> bytes:
        try:
            return self._factory.dumps(self._payload_dict())
        except TypeError as exc:
            for key, value in self._data.items():
                self._check_value(key, value)
            raise UnsupportedValue(f"the session cannot be stored: {exc}") from None

    def _checked_size(self, data: bytes) -> bytes:
        limit = self._factory.max_bytes
        if len(data) > limit:
            raise SessionTooLarge(
                f"the session is {len(data)} bytes encoded, more than "
                f"transient.sessions.max_bytes ({limit}); keep large data in the database "
                "or the cache and only its id in the session"
            )
        return data

    def _ttl(self) -> int | None:
        return self._timeout if self._timeout and self._factory.set_redis_ttl else None

    def _expiry_moves(self) -> bool:
        """Whether a save would move the python_expires stamp (so the payload changes)."""
        factory = self._factory
        if not (factory.python_expires and self._timeout):
            return False
        trigger = factory.timeout_trigger
        return not trigger or _int_time() >= (self._expires or 0) - trigger

    def _make_plan(self, force: bool = False) -> list[tuple[Any, ...]]:
        """The commands the save sends (encoded and checked now; raises here)."""
        factory = self._factory
        plan: list[tuple[Any, ...]] = [("del", key) for key in self._doomed]
        ttl = self._ttl()
        stored_id = self._stored_id
        if stored_id is None:
            # A session Redis does not hold: written (under a fresh id, with SET NX) only
            # if it has data, or was changed and empty sessions are kept.
            if self._data or self._changed or force:
                payload = self.payload()
                key = factory.key(self.session_id)
                plan.append(("create", key, factory.seal(key, payload), ttl, payload))
            return plan
        old_key = factory.key(stored_id)
        if self._id != stored_id:  # rotated: move it, if the old key is still there
            payload = self.payload()
            key = factory.key(self.session_id)
            plan.append(("rotate", old_key, key, factory.seal(key, payload), ttl, payload))
            return plan
        if (
            force
            or self._changed
            or (factory.detect_changes and self._exposed)
            or self._expiry_moves()
        ):
            encoded = self._encoded()
            if force or encoded != self._stored:
                payload = self._checked_size(encoded)
                plan.append(("update", old_key, factory.seal(old_key, payload), ttl, payload))
                return plan
        if ttl and (self._ttl_differs or (factory.refresh_on_exit and not self._refreshed)):
            plan.append(("expire", old_key, ttl))
        return plan

    # ------------------------------------------------------------------ saving

    def _execute(self, plan: list[tuple[Any, ...]]) -> None:
        """Send ``plan`` (one round trip: a command, a pipeline or a script)."""
        if not plan:
            return
        factory = self._factory
        binding = self._binding
        client = self._redis()
        if factory.wait_replicas:
            replies = self._send_waiting(client, plan)
        elif len(plan) == 1 and plan[0][0] == "rotate":
            replies = [self._rotate(client, plan[0])]
        else:
            if len(plan) > 1:
                # One round trip; not a MULTI, since on a Cluster the keys may live on
                # different nodes.
                pipe = client.pipeline(transaction=False)
                for step in plan:
                    _queue(pipe, step)
                replies = binding.execute(pipe)
            else:
                step = plan[0]
                idempotent = step[0] in ("del", "expire")
                replies = [
                    binding.call(step[1], *_command(step), idempotent=idempotent, client=client)
                ]
        self._doomed = []
        for step, reply in zip(plan, replies, strict=True):
            self._settle(step, reply)

    def _rotate(self, client: Any, step: tuple[Any, ...]) -> Any:
        _, old_key, key, sealed, ttl, _payload = step
        binding = self._binding
        if _same_slot(client, old_key, key):
            return binding.run(
                SCRIPTS, "rotate", [old_key, key], [sealed, ttl or 0], client=client
            )
        # On a Cluster the two keys may live on different nodes, where no script can see
        # both: delete first, and move only if the old key was there (two round trips).
        with binding.errors(old_key):
            if not client.delete(old_key):
                return 0
        with binding.errors(key):
            return 1 if client.set(key, sealed, ex=ttl, nx=True) else 0

    def _send_waiting(self, client: Any, plan: list[tuple[Any, ...]]) -> list[Any]:
        """``plan`` and a ``WAIT`` on the connection that wrote (one round trip; on a
        Cluster, commands for keys on other nodes go first, in a pipeline)."""
        factory = self._factory
        binding = self._binding
        write = next((s for s in plan if s[0] != "del"), plan[-1])
        main_key = write[2] if write[0] == "rotate" else write[1]
        replies: dict[int, Any] = {}
        elsewhere = [
            i
            for i, s in enumerate(plan)
            if s is not write and not _same_slot(client, s[1], main_key)
        ]
        if elsewhere:
            pipe = client.pipeline(transaction=False)
            for i in elsewhere:
                _queue(pipe, plan[i])
            replies.update(zip(elsewhere, binding.execute(pipe), strict=True))
        here = [i for i in range(len(plan)) if i not in replies]
        commands = []
        for i in here:
            step = plan[i]
            if step[0] == "rotate" and not _same_slot(client, step[1], step[2]):
                # No script sees keys of two nodes: delete first, move only if it was there.
                with binding.errors(step[1]):
                    if not client.delete(step[1]):
                        replies[i] = 0
                        continue
                step = ("create", step[2], step[3], step[4], step[5])
            commands.append((i, _command(step)))
        wait_ms = max(1, int(factory.wait_timeout * 1000))
        with binding.errors(main_key):
            sent = send_on_one_connection(
                client,
                main_key,
                [*(c for _, c in commands), ("WAIT", factory.wait_replicas, wait_ms)],
                read_timeout=factory.wait_read_timeout,
            )
        *answers, acknowledged = sent
        for reply in (*answers, acknowledged):
            if isinstance(reply, Exception):
                with binding.errors(main_key):
                    raise reply
        replies.update(zip((i for i, _ in commands), answers, strict=True))
        if acknowledged < factory.wait_replicas:
            raise SessionUnavailable(
                f"the session save of key {factory.redact(main_key)!r} was applied on the "
                f"master but only {acknowledged} of transient.sessions.wait_replicas = "
                f"{factory.wait_replicas} replicas acknowledged it within "
                f"transient.sessions.wait_timeout = {factory.wait_timeout:g} s",
                database=factory.database,
            )
        return [replies[i] for i in range(len(plan))]

    def _settle(self, step: tuple[Any, ...], reply: Any) -> None:
        """Record what a step did (the key now stored, or a write refused)."""
        kind = step[0]
        factory = self._factory
        if kind in ("create", "update", "rotate"):
            key = step[2] if kind == "rotate" else step[1]
            if reply:
                self._stored_id = self._id
                self._stored = step[-1]
                self._refreshed = True
                return
            if kind == "create":
                log.error(
                    "the new session key %r exists already (an id collision, or an "
                    "id_generator that repeats itself); the session is not saved",
                    factory.redact(key),
                )
            else:
                log.info(
                    "session key %r was deleted while this request held it (logged out or "
                    "rotated by a concurrent request); its changes are not saved",
                    factory.redact(step[1]),
                )
            self._stored_id = self._stored = None

    def _prepare(self) -> None:
        """Decide, encode and check the save once, during the request (raises here)."""
        self._plan = self._make_plan()
        self._stale = False

    def _will_save(self, request: Any) -> bool:
        """Whether this request's outcome is one whose session is saved."""
        exc = getattr(request, "exception", None)
        if exc is not None and _will_retry(request, exc):
            log.debug("session not saved: the attempt will be retried (%r)", exc)
            return False
        if self._failed:
            log.debug("session not saved: it failed its check at the commit")
            return False
        if (
            exc is not None
            and not self._factory._cookie_on_exception
            and not self._invalidated
            and (self._new or self._id != self._stored_id)
        ):
            # The browser got no cookie for the new id: saving would write a key nobody
            # names and (after a rotation) delete the one its cookie names.
            log.warning(
                "session not saved: its id is new (rotated or created) but "
                "redis.sessions.cookie_on_exception = false sent no cookie with this "
                "exception response (%r); return such responses instead of raising them",
                exc,
            )
            return False
        return True

    def _save(self, request: Any) -> None:
        """Send the prepared save (raises the library's errors)."""
        if self._plan is None or self._stale:
            self._prepare()
        plan, self._plan = self._plan or [], []
        self._execute(plan)

    # ------------------------------------------------------------------ request hooks

    def _on_response(self, request: Any, response: Any) -> None:
        """Response callback: the cookie, and the save prepared (checked) now."""
        if self._done:
            return
        self._set_cookie(request, response)
        if self._failed:
            pass  # refused at the commit; the exception view answers
        elif self._plan is None or self._stale:
            if self._committed and self._plan is not None:
                self._prepare_after_commit()
            else:
                self._prepare()
        self._responded = True

    def _on_finished(self, request: Any) -> None:
        """Finished callback: save once, if the request produced a response to keep."""
        if self._done:
            return
        self._done = True
        if not self._responded and sys.exc_info()[0] is not None:
            # Finished callbacks run in the router's ``finally``: an exception is on its
            # way out and no response was produced (a retried attempt, an unhandled error).
            log.debug("session not saved: the request produced no response")
            return
        if not self._will_save(request):
            return
        try:
            self._save(request)  # prepared now if touched after the response callbacks
        except (TransientError, TypeError) as exc:
            # The response is built; raising here would only break the WSGI server.
            log.error("the session could not be saved (its changes are lost): %s", exc)

    def _save_before_response(self, request: Any, response: Any) -> None:
        """transient.sessions.save_before_response: cookie and save now; a failed save
        raises :class:`~pyramid_transient.exceptions.SessionUnavailable`."""
        if self._done:
            return
        self._on_response(request, response)
        self._done = True
        if not self._will_save(request):
            return
        try:
            self._save(request)
        except SessionUnavailable:
            raise
        except Unavailable as exc:
            raise SessionUnavailable(
                f"the session could not be saved: {exc}", database=self._factory.database
            ) from (exc.__cause__ or exc)

    def _before_commit(self) -> None:
        # Runs inside pyramid_tm's commit: an error aborts the SQL transaction, and
        # pyramid_tm renders it with the app's exception view.
        try:
            self._prepare()
        except BaseException:
            self._failed = True
            raise

    def _after_commit(self, committed: bool) -> None:
        self._committed = committed

    def _prepare_after_commit(self) -> None:
        # Changed after the database committed (an on_commit flash): raising now would
        # turn a committed request into an error page, so a change that cannot be saved
        # is logged and the session is saved as it was prepared at the commit.
        committed_plan = self._plan
        try:
            self._prepare()
        except (TypeError, TransientError) as exc:
            self._plan, self._stale = committed_plan, False
            log.error(
                "the session's changes made after the transaction committed are not saved "
                "(it is saved as it was at the commit): %s",
                exc,
            )

    def _set_cookie(self, request: Any, response: Any) -> None:
        """Set or delete the cookie, as pyramid_session_redis's cookie callback does."""
        factory = self._factory
        check = factory._func_check_response_allow_cookies
        if check is not None and not check(response):
            return
        if factory._invalidate_empty_session and not self._invalidated and not self._data:
            if self._new:
                self._changed = False  # nothing to keep: write nothing
            else:
                self.invalidate()
        if self._invalidated:
            if self._cookie_was_valid:
                self._delete_cookie(response)
            return
        if self._new:
            if not self._data:
                return
        elif not self._recookie:
            return
        if request.exception is None or factory._cookie_on_exception:
            value = factory._cookie_signer.dumps(self.session_id)
            if isinstance(value, bytes):
                value = value.decode()
            response.set_cookie(
                factory._cookie_name, value, **{**factory._cookie_kwargs, **self._cookie_overrides}
            )
            vary = set(response.vary or ())
            vary.add("Cookie")
            response.vary = tuple(sorted(vary))
        elif self._new and self._cookie_was_valid:
            self._delete_cookie(response)

    def _delete_cookie(self, response: Any) -> None:
        factory = self._factory
        response.delete_cookie(
            factory._cookie_name, path=factory._cookie_path, domain=factory._cookie_domain
        )


def _queue(target: Any, step: tuple[Any, ...]) -> None:
    kind = step[0]
    if kind == "del":
        target.delete(step[1])
    elif kind == "expire":
        target.expire(step[1], step[2])
    elif kind == "create":
        target.set(step[1], step[2], ex=step[3], nx=True)
    elif kind == "update":
        target.set(step[1], step[2], ex=step[3], xx=True)
    else:  # pragma: no cover - rotations are sent alone
        raise AssertionError(kind)


def _command(step: tuple[Any, ...]) -> tuple[Any, ...]:
    """``step`` as a raw command (for one connection, with a WAIT after it)."""
    kind = step[0]
    if kind == "del":
        return ("DEL", step[1])
    if kind == "expire":
        return ("EXPIRE", step[1], step[2])
    if kind == "rotate":
        _, old_key, key, sealed, ttl, _payload = step
        return ("EVAL", ROTATE, 2, old_key, key, sealed, ttl or 0)
    ex = ("EX", step[3]) if step[3] else ()
    return ("SET", step[1], step[2], *ex, "NX" if kind == "create" else "XX")


def _same_slot(client: Any, a: str, b: str) -> bool:
    keyslot = getattr(client, "keyslot", None)
    if keyslot is None or not hasattr(client, "get_node_from_key"):
        return True  # not a Cluster: every key is on the one server
    return bool(keyslot(a) == keyslot(b))


def _will_retry(request: Any, exc: BaseException) -> bool:
    try:
        from pyramid_retry import is_error_retryable
    except ImportError:  # pragma: no cover - pyramid_retry is optional
        return False
    return bool(is_error_retryable(request, exc))


# --------------------------------------------------------------------------- factory


# RFC 6265's cookie-name token: what webob accepts when it sets the cookie.
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _check_cookie(name: str, samesite: str | None, secure: bool) -> None:
    """Refuse at startup what webob would refuse on every response (a 500 each time)."""
    if not isinstance(name, str) or not _COOKIE_NAME.fullmatch(name):
        raise ConfigurationError(
            f"{PREFIX}cookie_name must be a cookie name (letters, digits and "
            f"!#$%&'*+-.^_`|~), not {name!r}",
            key=PREFIX + "cookie_name",
            value=name,
        )
    if samesite is not None and samesite.lower() == "none" and not secure:
        raise ConfigurationError(
            f"{PREFIX}cookie_samesite = None needs {PREFIX}cookie_secure = true: browsers "
            "drop, and webob refuses to set, a SameSite=None cookie that is not Secure",
            key=PREFIX + "cookie_samesite",
            value=samesite,
        )


class TransientSessionFactory:
    """A Pyramid session factory: ``config.set_session_factory(TransientSessionFactory(...))``.

    The keyword arguments are those of pyramid_session_redis's ``RedisSessionFactory``
    (see the settings reference), with our defaults (``cookie_samesite="Lax"``,
    ``python_expires=False``), plus ``manager`` (the
    :class:`~pyramid_transient.connection.RedisManager` whose ``sessions`` database holds
    the sessions; the running app's by default), ``max_bytes``, ``serializer`` (``"json"``
    or ``"pickle"``), ``save_before_response``, ``wait_replicas`` and ``wait_timeout``
    (the ``transient.sessions.*`` settings). ``save_before_response`` needs the tween
    :func:`save_tween_factory`, which ``includeme`` adds when the setting is on; a factory
    built by hand with it (and without the tween) saves after the response.
    """

    #: The manager's database name sessions use.
    database = "sessions"

    def __init__(
        self,
        *,
        secret: str,
        manager: RedisManager | None = None,
        timeout: int | None = 1200,
        cookie_name: str = "session",
        cookie_max_age: int | None = None,
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        cookie_secure: bool = False,
        cookie_httponly: bool = True,
        cookie_samesite: str | None = "Lax",
        cookie_comment: str | None = None,
        cookie_on_exception: bool = True,
        cookie_signer: Any = None,
        redis_url: str | None = None,
        redis_host: str | None = None,
        redis_port: int | None = None,
        redis_db: int | None = None,
        redis_password: str | None = None,
        redis_unix_socket_path: str | None = None,
        redis_socket_timeout: float | None = None,
        redis_encoding: str | None = None,
        redis_encoding_errors: str | None = None,
        redis_client_callable: Callable[..., Any] | None = None,
        serialize: Callable[[dict[str, Any]], bytes] | None = None,
        deserialize: Callable[[bytes], dict[str, Any]] | None = None,
        id_generator: Callable[[], str] | None = None,
        prefix: str | None = None,
        set_redis_ttl: bool = True,
        set_redis_ttl_readheavy: bool | None = None,
        detect_changes: bool = True,
        deserialized_fails_new: bool | None = None,
        func_check_response_allow_cookies: Callable[[Any], bool] | None = None,
        func_invalid_logger: Callable[..., Any] | None = None,
        timeout_trigger: int | None = None,
        python_expires: bool = False,
        invalidate_empty_session: bool = True,
        max_bytes: int = 64 * 1024,
        serializer: str = "json",
        save_before_response: bool = False,
        wait_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        if not secret:
            raise ConfigurationError(
                f"{PREFIX}secret is missing or empty (got {secret!r}): sessions need a long "
                "random secret to sign their cookies and payloads",
                key=PREFIX + "secret",
                value=secret,
            )
        _check_cookie(cookie_name, cookie_samesite, cookie_secure)
        if cookie_signer is not None and not (
            callable(getattr(cookie_signer, "dumps", None))
            and callable(getattr(cookie_signer, "loads", None))
        ):
            raise ConfigurationError(
                f"{PREFIX}cookie_signer must be an object with dumps() and loads() (such as "
                f"webob.cookies.SignedSerializer), not {cookie_signer!r}",
                key=PREFIX + "cookie_signer",
                value=cookie_signer,
            )
        self._manager = manager
        self.timeout = timeout or None
        self.set_redis_ttl = set_redis_ttl
        self.detect_changes = detect_changes
        self.timeout_trigger = timeout_trigger or None
        self.python_expires = bool(python_expires or self.timeout_trigger)
        self.max_bytes = max_bytes
        ttl_in_redis = bool(self.timeout and set_redis_ttl and not self.python_expires)
        #: Refresh the TTL with the load (GETEX) rather than with an EXPIRE at the end.
        self.refresh_on_load = ttl_in_redis and set_redis_ttl_readheavy is not False
        #: Refresh it with an EXPIRE at the end of a request that wrote nothing.
        self.refresh_on_exit = bool(self.timeout and set_redis_ttl) and not self.refresh_on_load
        if serialize is not None and deserialize is not None:
            self.dumps, self.loads, self.checks_values = serialize, deserialize, False
        elif serializer == "pickle":
            self.dumps, self.loads, self.checks_values = _pickle_dumps, _pickle_loads, False
        elif serializer == "json":
            self.dumps, self.loads, self.checks_values = codec.encode, _codec_loads, True
        else:
            raise ConfigurationError(
                f"transient.sessions.serializer must be one of 'json', 'pickle', not "
                f"{serializer!r}",
                key="transient.sessions.serializer",
                value=serializer,
            )
        #: Save before the response leaves, and answer 503 when that fails.
        self.save_before_response = bool(save_before_response)
        #: Replicas each save waits for, and for how long.
        self.wait_replicas = wait_replicas
        self.wait_timeout = wait_timeout
        self._own_socket_timeout = redis_socket_timeout
        mac_key = hashlib.sha256(b"pyramid_transient.sessions\x00" + secret.encode()).digest()
        # Keyed once; each seal copies it (cheaper than keying a new HMAC every time).
        self._mac = hmac.new(mac_key, digestmod=hashlib.sha256)
        self._cookie_signer = cookie_signer or SignedSerializer(
            secret, _COOKIE_SALT, "sha512", serializer=_StringSerializer()
        )
        self._cookie_name = cookie_name
        self._cookie_path = cookie_path
        self._cookie_domain = cookie_domain
        self._cookie_on_exception = cookie_on_exception
        self._cookie_kwargs: dict[str, Any] = {
            "max_age": cookie_max_age,
            "path": cookie_path,
            "domain": cookie_domain,
            "secure": cookie_secure,
            "httponly": cookie_httponly,
        }
        if cookie_comment is not None:
            self._cookie_kwargs["comment"] = cookie_comment
        if cookie_samesite is not None:
            self._cookie_kwargs["samesite"] = cookie_samesite
        self._id_generator = id_generator or _generate_session_id
        self._id_prefix = prefix or ""
        self._func_invalid_logger = func_invalid_logger
        self._func_check_response_allow_cookies = func_check_response_allow_cookies
        self._invalidate_empty_session = invalidate_empty_session
        self._client_callable = redis_client_callable
        self._redis_options: dict[str, Any] = {
            "host": redis_host or "localhost",
            "port": redis_port or 6379,
            "db": redis_db or 0,
            "password": redis_password,
            "socket_timeout": redis_socket_timeout,
            "connection_pool": None,
            "unix_socket_path": redis_unix_socket_path,
        }
        if redis_encoding is not None:
            self._redis_options["encoding"] = redis_encoding
        if redis_encoding_errors is not None:
            self._redis_options["encoding_errors"] = redis_encoding_errors
        self._own_url = _own_url(
            redis_url, redis_host, redis_port, redis_db, redis_password, redis_unix_socket_path
        )
        self._own_binding: Binding | None = None
        self._own_lock = threading.Lock()
        self._binding: Binding | None = None
        self._key_head: str | None = None

    # ------------------------------------------------------------------ parts

    @property
    def binding(self) -> Binding:
        """The ``sessions`` database and ``session`` keys of :attr:`manager`.

        Resolved on first use (the running app's manager when none was given); its
        client is asked of the manager on every use, so a forked worker connects anew.
        """
        if self._binding is None:
            self._binding = bind(self._manager, "session", self.database)
        return self._binding

    @property
    def manager(self) -> RedisManager:
        """The manager whose ``sessions`` database (and key prefix) sessions use."""
        return cast(RedisManager, self.binding.manager)

    @property
    def keyspace(self) -> KeySpace:
        return self.binding.keyspace

    @property
    def wait_read_timeout(self) -> float | None:
        """How long the reply of a save's ``WAIT`` is awaited (it may outlast the socket
        timeout: the server answers at ``wait_timeout``)."""
        socket_timeout = self._own_socket_timeout or self.manager.settings.socket_timeout
        return self.wait_timeout + max(socket_timeout or 0, 0.5)

    def key(self, session_id: Any) -> str:
        """The Redis key of ``session_id``: ``{key_prefix}:session:{id}``."""
        head = self._key_head
        if head is None:
            head = self._key_head = self.keyspace.key("")
        return head + quote(str(session_id))

    def redact(self, key: str) -> str:
        """``key`` with most of its session id hidden, for logs and error messages."""
        base = len(self.keyspace.base) + 1
        return key[: base + 6] + "..." if len(key) > base + 6 else key

    def generate_id(self) -> str:
        """A new session id (48 random bytes by default); nothing is written yet."""
        return self._id_prefix + self._id_generator()

    def seal(self, key: str, payload: bytes) -> bytes:
        """``payload`` behind an HMAC of the secret over the key and the payload."""
        mac = self._mac.copy()
        mac.update(key.encode() + b"\x00" + payload)
        return _SEAL_VERSION + mac.digest() + payload

    def unseal(self, key: str, raw: bytes) -> bytes | None:
        """The payload of ``raw`` if its HMAC verifies for ``key``, else None."""
        head = len(_SEAL_VERSION)
        mac, payload = raw[head : head + _MAC_SIZE], raw[head + _MAC_SIZE :]
        expected = self._mac.copy()
        expected.update(key.encode() + b"\x00" + payload)
        if not raw.startswith(_SEAL_VERSION) or not hmac.compare_digest(mac, expected.digest()):
            return None
        return payload

    def client(self, request: Any) -> Any:
        """The client sessions of ``request`` use."""
        return self.binding_for(request).client

    def binding_for(self, request: Any) -> Binding:
        """The :class:`~pyramid_transient.binding.Binding` sessions of ``request`` use: the
        manager's, or one over the server ``redis.sessions.*`` names."""
        if self._client_callable is not None:
            client = self._client_callable(request, **self._redis_options)
            return Binding(self.keyspace, client=client, name=self.database)
        if self._own_url is not None:
            if self._own_binding is None:
                with self._own_lock:  # concurrent first requests build one client
                    if self._own_binding is None:
                        self._own_binding = Binding(
                            self.keyspace,
                            client=self._make_own_client(self._own_url),
                            name=self.database,
                        )
            return self._own_binding
        return self.binding

    def _make_own_client(self, url: str) -> Any:
        s = self.manager.settings
        timeout = self._own_socket_timeout or s.socket_timeout
        client = cast(
            TransientRedis,
            TransientRedis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=s.socket_connect_timeout,
                max_connections=s.max_connections,
            ),
        )
        client.retry_idempotent = s.retry_idempotent
        return client

    def _read_cookie(self, request: Any) -> str | None:
        value = request.cookies.get(self._cookie_name)
        if value is None:
            return None
        try:
            session_id = self._cookie_signer.loads(value.encode("utf-8", "surrogateescape"))
        except Exception as exc:  # any signer's refusal: tampered, truncated, foreign
            log.warning(
                "session cookie %r failed signature verification (tampered, truncated or "
                "signed with another secret: %s); starting a fresh session",
                self._cookie_name,
                exc,
            )
            return None
        return session_id if isinstance(session_id, str) and session_id else None

    # ------------------------------------------------------------------ per request

    def __call__(self, request: Any) -> TransientSession:
        session = TransientSession(self, self.binding_for(request), request)
        request.add_response_callback(session._on_response)
        request.add_finished_callback(session._on_finished)
        if request.environ.get("tm.active"):
            _join_transaction(request, session)
        return session


def _join_transaction(request: Any, session: TransientSession) -> None:
    try:
        txn = request.tm.get()
    except Exception:  # NoTransaction: the app ended pyramid_tm's transaction itself
        return
    txn.addBeforeCommitHook(session._before_commit)
    txn.addAfterCommitHook(session._after_commit)


def _own_url(
    url: str | None,
    host: str | None,
    port: int | None,
    db: int | None,
    password: str | None,
    unix_socket_path: str | None,
) -> str | None:
    """The URL of a server named by ``redis.sessions.*`` rather than by the manager."""
    if url:
        return url
    # Quoted, or a password holding "@", "/" or "#" would be read as part of the host.
    auth = f":{urlquote(password, safe='')}@" if password else ""
    if unix_socket_path:
        return f"unix://{auth}{unix_socket_path}?db={db or 0}"
    if host or port or db is not None:
        return f"redis://{auth}{host or 'localhost'}:{port or 6379}/{db or 0}"
    return None


def rotate_session(request: Any, new_csrf_token: bool = True) -> None:
    """Give ``request.session`` a new id, keeping its data (call it at login).

    With ``new_csrf_token`` (the default) it also gets a new CSRF token. The old id stops
    working at the end of the request.
    """
    session = request.session
    if not isinstance(session, TransientSession):
        raise InvalidArgument(
            f"rotate_session needs a pyramid_transient session, not {type(session).__name__}"
        )
    session.rotate(new_csrf_token=new_csrf_token)


def save_tween_factory(handler: Callable[[Any], Any], registry: Any) -> Callable[[Any], Any]:
    """The tween of ``transient.sessions.save_before_response``: over pyramid_tm (so the
    database has committed) and the exception view, it saves a session the request
    touched before the response leaves; a failed save is rendered by the exception view of
    :class:`~pyramid_transient.exceptions.SessionUnavailable` (the 503 page)."""

    def save_before_response(request: Any) -> Any:
        response = handler(request)
        session = request.__dict__.get("session")  # set only if the request touched it
        if isinstance(session, TransientSession):
            try:
                session._save_before_response(request, response)
            except SessionUnavailable:
                log.error("the session could not be saved: answering 503", exc_info=True)
                return request.invoke_exception_view(sys.exc_info(), reraise=True)
        return response

    return save_before_response


def includeme(config: Any) -> None:
    """Set the session factory from ``redis.sessions.*`` and ``transient.sessions.*``.

    Raises :class:`~pyramid_transient.exceptions.ConfigurationError` at once for a missing
    secret or a bad value. Dotted ``redis.sessions.*`` settings are resolved, and the
    objects written back into the registry's settings (as pyramid_session_redis does).
    """
    from pyramid.tweens import EXCVIEW

    from .connection import include_manager

    include_manager(config)
    settings = config.get_settings()
    for name in DOTTED_SETTINGS:
        key = PREFIX + name
        if key in settings:
            settings[key] = python_object(key, settings[key])
    factory = session_factory_from_settings(settings, get_manager(config.registry))
    config.set_session_factory(factory)
    if factory.save_before_response:
        config.add_tween(
            "pyramid_transient.sessions.save_tween_factory",
            over=("pyramid_tm.tm_tween_factory", EXCVIEW),
        )
