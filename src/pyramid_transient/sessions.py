"""``request.session`` kept in Redis, built on pyramid_session_redis.

``config.include("pyramid_transient.sessions")`` (or the whole ``pyramid_transient``) sets
a session factory from the ``redis.sessions.*`` settings of pyramid_session_redis, with
these differences:

* the client is the manager's ``sessions`` database (one shared pool; Sentinel and
  Cluster included), unless ``redis.sessions.redis_url`` (or a host, or a
  ``redis_client_callable``) names another server;
* keys follow our layout, ``{key_prefix}:session:{id}``; the cookie carries only the
  signed id;
* payloads are our codec (JSON) behind an HMAC keyed by ``redis.sessions.secret`` and bound
  to the key, so a payload written by anyone else, or copied from another session, is
  treated like a corrupt one: a fresh empty session and a log line, never a 500;
* ``HttpOnly`` and ``SameSite=Lax`` cookies by default; a missing secret is a
  :class:`~pyramid_transient.exceptions.ConfigurationError` at startup;
* loading is one ``GETEX`` (the TTL refresh rides along), a request that changed nothing
  writes nothing, and a save (with the deletion of a rotated or invalidated id) is one
  round trip;
* nothing is written for an attempt that pyramid_retry will retry, or for a request that
  produced no response; a value the codec cannot store, or a session larger than
  ``transient.sessions.max_bytes``, is an error raised during the request (before
  pyramid_tm commits), naming the key;
* Redis being unreachable when the session is loaded raises
  :class:`~pyramid_transient.exceptions.SessionUnavailable`; views that never touch
  ``request.session`` do not connect at all.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import functools
import hashlib
import hmac
import logging
import math
import pickle
import re
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import quote as urlquote

import redis
from pyramid.interfaces import ISession
from pyramid.path import DottedNameResolver
from pyramid_session_redis import _cookie_callback, _delete_cookie, _set_cookie
from pyramid_session_redis.exceptions import (
    InvalidSession,
    InvalidSession_DeserializationError,
    InvalidSession_Lazycreate,
    InvalidSession_NotInBackend,
    InvalidSession_PayloadLegacy,
    InvalidSession_PayloadTimeout,
)
from pyramid_session_redis.session import RedisSession
from pyramid_session_redis.util import (
    LazyCreateSession,
    _generate_session_id,
    _StringSerializer,
    empty_session_payload,
)
from webob.cookies import SignedSerializer
from zope.interface import implementer

from . import codec
from .connection import Binding, RedisManager, TransientRedis, bind, get_manager
from .exceptions import (
    ConfigurationError,
    InvalidArgument,
    SessionTooLarge,
    SessionUnavailable,
    TransientError,
    UnsupportedValue,
)
from .keys import KeySpace, quote

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
# signer configured for it keeps verifying ours.
_COOKIE_SALT = "pyramid_session_redis."
_SEAL_VERSION = b"t1."
_MAC_SIZE = 32  # sha256


# --------------------------------------------------------------------------- settings

_resolver = DottedNameResolver()


def _fail(name: str, value: Any, accepted: str) -> ConfigurationError:
    key = PREFIX + name
    return ConfigurationError(f"{key} must be {accepted}, not {value!r}", key=key, value=value)


def _as_str(name: str, value: Any) -> str | None:
    if value is None:
        return None
    text = value.strip() if isinstance(value, str) else str(value)
    return text or None


def _as_bool(name: str, value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1", "t", "y"):
        return True
    if text in ("false", "no", "off", "0", "f", "n"):
        return False
    if text in ("none", ""):
        return None
    raise _fail(name, value, "a boolean (true/false, yes/no, on/off, 1/0)")


def _as_int_or_none(name: str, value: Any) -> int | None:
    # pyramid_session_redis reads "None" and 0 as "no value" for these.
    if value is None or (isinstance(value, str) and value.strip() in ("", "None", "none")):
        return None
    if isinstance(value, bool):
        raise _fail(name, value, "a whole number of seconds (or None)")
    try:
        number = int(value if isinstance(value, int) else str(value).strip())
    except ValueError:
        raise _fail(name, value, "a whole number of seconds (or None)") from None
    if number < 0:
        raise _fail(name, value, "a whole number of seconds (or None)")
    return number or None


#: ``redis.sessions.timeout = 0`` or ``None``: sessions that never expire (distinct from
#: the setting being absent, which gives the default of 1200 seconds).
_NEVER = object()


def _as_timeout(name: str, value: Any) -> Any:
    number = _as_int_or_none(name, value)
    return _NEVER if number is None else number


def _as_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value if isinstance(value, int) else str(value).strip())
    except ValueError:
        raise _fail(name, value, "an integer") from None


def _as_float(name: str, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() in ("", "None", "none")):
        return None
    try:
        number = float(value)
    except ValueError:
        raise _fail(name, value, "a positive number of seconds") from None
    if not (math.isfinite(number) and number > 0):
        raise _fail(name, value, "a positive number of seconds")
    return number


def _as_samesite(name: str, value: Any) -> str | None:
    text = _as_str(name, value)
    if text is None:
        return None
    if text.lower() not in ("strict", "lax", "none"):
        raise _fail(name, value, "one of 'Strict', 'Lax' or 'None'")
    return text.capitalize()


def _as_dotted(name: str, value: Any) -> Any:
    if value is None or callable(value):
        return value
    text = str(value).strip()
    if not text:
        return None
    try:
        return _resolver.maybe_resolve(text)
    except (ImportError, AttributeError, ValueError) as exc:
        raise _fail(name, value, f"a dotted name of an importable object ({exc})") from None


def _unsupported(name: str, value: Any) -> Any:
    raise ConfigurationError(
        f"{PREFIX}{name} cannot be set in settings (it needs a Python object), not {value!r}; "
        "pass it to TransientSessionFactory instead",
        key=PREFIX + name,
        value=value,
    )


#: Every ``redis.sessions.*`` option of pyramid_session_redis 1.8 and its parser.
SESSION_SETTINGS: dict[str, Callable[[str, Any], Any]] = {
    "secret": _as_str,
    "timeout": _as_timeout,
    "cookie_name": _as_str,
    "cookie_max_age": _as_int_or_none,
    "cookie_path": _as_str,
    "cookie_domain": _as_str,
    "cookie_secure": _as_bool,
    "cookie_httponly": _as_bool,
    "cookie_samesite": _as_samesite,
    "cookie_comment": _as_str,
    "cookie_on_exception": _as_bool,
    "cookie_expires": _unsupported,
    "cookie_signer": _as_dotted,
    "redis_url": _as_str,
    "redis_host": _as_str,
    "redis_port": _as_int,
    "redis_db": _as_int,
    "redis_password": _as_str,
    "redis_unix_socket_path": _as_str,
    "redis_socket_timeout": _as_float,
    "redis_encoding": _as_str,
    "redis_encoding_errors": _as_str,
    "redis_connection_pool": _unsupported,
    "redis_client_callable": _as_dotted,
    "serialize": _as_dotted,
    "deserialize": _as_dotted,
    "id_generator": _as_dotted,
    "prefix": _as_str,
    "set_redis_ttl": _as_bool,
    "set_redis_ttl_readheavy": _as_bool,
    "detect_changes": _as_bool,
    "deserialized_fails_new": _as_bool,
    "func_check_response_allow_cookies": _as_dotted,
    "func_invalid_logger": _as_dotted,
    "timeout_trigger": _as_int_or_none,
    "python_expires": _as_bool,
    "invalidate_empty_session": _as_bool,
}

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


def parse_session_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``redis.sessions.*`` settings as keyword arguments of :class:`TransientSessionFactory`.

    Values are parsed by an explicit table (:data:`SESSION_SETTINGS`); an unknown key is a
    :class:`~pyramid_transient.exceptions.ConfigurationError` naming the nearest valid one;
    the Websauna-era keys of :data:`LEGACY_KEYS` are translated with a
    :class:`DeprecationWarning`. ``transient.sessions.*`` adds ``max_bytes`` and
    ``serializer``.
    """
    options: dict[str, Any] = {}
    for key in sorted(settings):
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX) :]
        value = settings[key]
        if name in LEGACY_KEYS:
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
                stacklevel=3,
            )
            if PREFIX + modern in settings:
                raise ConfigurationError(
                    f"{key} and {PREFIX}{modern} are both set (to {value!r} and "
                    f"{settings[PREFIX + modern]!r}); keep only {PREFIX}{modern}",
                    key=key,
                    value=value,
                )
            name = modern
        parser = SESSION_SETTINGS.get(name)
        if parser is None:
            match = difflib.get_close_matches(name, [*SESSION_SETTINGS, *LEGACY_KEYS], n=1)
            hint = f"; did you mean {PREFIX + match[0]!r}?" if match else ""
            raise ConfigurationError(
                f"{key} is not a pyramid_session_redis setting{hint} (see the settings "
                "reference for the accepted keys)",
                key=key,
                value=value,
            )
        parsed = parser(name, value)
        if parsed is _NEVER:
            options[name] = None
        elif parsed is not None:
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
    sessions = manager.settings.sessions
    return TransientSessionFactory(
        manager=manager, max_bytes=sessions.max_bytes, serializer=sessions.serializer, **options
    )


# --------------------------------------------------------------------------- payloads


def _codec_dumps(data: dict[str, Any]) -> bytes:
    return codec.encode(data)


def _codec_loads(raw: bytes) -> dict[str, Any]:
    return cast(dict[str, Any], codec.decode(raw))


def _pickle_dumps(data: dict[str, Any]) -> bytes:
    return pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)


def _pickle_loads(raw: bytes) -> dict[str, Any]:
    # Only reached for payloads whose HMAC verified: written by an app holding the secret.
    return cast(dict[str, Any], pickle.loads(raw))


def _check_shape(data: Any) -> dict[str, Any]:
    # pyramid_session_redis does arithmetic on "c", "t" (timeout) and "x" (expiry stamp).
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


class _CookieSigner(SignedSerializer):  # type: ignore[misc]  # webob is untyped
    """webob's ``SignedSerializer``, giving and accepting the very same cookies, faster.

    webob hands ``hmac.new`` a lambda as the digest, which makes Python compute the HMAC
    in pure Python for every request that carries a cookie; :func:`hmac.digest` with the
    algorithm's name is one call into OpenSSL.
    """

    def dumps(self, appstruct: Any) -> bytes:
        cstruct: bytes = self.serializer.dumps(appstruct)
        sig = hmac.digest(self.salted_secret, cstruct, self.hashalg)
        return base64.urlsafe_b64encode(sig + cstruct).rstrip(b"=")

    def loads(self, bstruct: bytes) -> Any:
        try:
            fstruct = base64.urlsafe_b64decode(bstruct + b"=" * (-len(bstruct) % 4))
        except (binascii.Error, TypeError) as exc:
            raise ValueError(f"badly formed base64 data: {exc}") from None
        sig, cstruct = fstruct[: self.digest_size], fstruct[self.digest_size :]
        expected = hmac.digest(self.salted_secret, cstruct, self.hashalg)
        if not hmac.compare_digest(sig, expected):
            raise ValueError("invalid signature")
        return self.serializer.loads(cstruct)


# --------------------------------------------------------------------------- session


@implementer(ISession)
class TransientSession(RedisSession):
    """A pyramid_session_redis ``RedisSession`` with our keys, payloads and saving rules.

    Created by :class:`TransientSessionFactory` for each request that touches
    ``request.session``; an app only ever sees it as ``request.session`` (Pyramid's
    ``ISession``), plus :meth:`rotate`.
    """

    def __init__(
        self,
        factory: TransientSessionFactory,
        client: redis.Redis,
        session_id: Any,
        new: bool,
    ) -> None:
        self._factory = factory
        #: Ids whose keys are deleted by the next save (rotated or invalidated ones).
        self._doomed: list[str] = []
        #: A response was produced: the only requests whose session is saved.
        self._responded = False
        #: The check at pyramid_tm's commit refused the session: it is not saved, and the
        #: response callback must not raise the same error again.
        self._failed = False
        #: The load already refreshed the TTL (GETEX), so no EXPIRE is needed.
        self._refreshed = False
        #: The load's GETEX gave the factory's timeout to a session that has its own.
        self._ttl_differs = False
        #: ``(session id, its Redis key)``: see :meth:`_key`.
        self._key_of: tuple[Any, str] | None = None
        #: The request's transaction (pyramid_tm) has committed.
        self._committed = False
        #: What the save will write, decided once by :meth:`_prepare`.
        self._prepared: tuple[bytes | None, int | None] | None = None
        super().__init__(
            redis=client,
            session_id=session_id,
            new=new,
            new_session=factory.generate_id,
            new_payload_func=factory.new_payload,
            serialize=factory.dumps,
            deserialize=factory.loads,
            set_redis_ttl=factory.set_redis_ttl,
            detect_changes=factory.detect_changes,
            deserialized_fails_new=True,
            timeout=factory.timeout,
            timeout_trigger=factory.timeout_trigger,
            python_expires=factory.python_expires,
            _set_redis_ttl_onexit=factory.refresh_on_exit,
        )

    # ------------------------------------------------------------------ loading

    def from_redis(self, session_id: Any = None, persisted_hash: Any = None) -> Any:
        """Load, verify and decode the payload of ``session_id`` (one round trip)."""
        sid = session_id or self.session_id
        if sid is LazyCreateSession:
            raise InvalidSession_Lazycreate("`session_id` is LazyCreateSession")
        factory = self._factory
        key = self._key(sid)
        try:
            if factory.refresh_on_load:
                raw = self.redis.getex(key, ex=self._timeout)
                self._refreshed = True
            else:
                raw = self.redis.get(key)
        except redis.ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise SessionUnavailable(
                    "the session store refused to load session key "
                    f"{factory.redact(key)!r}: {exc}",
                    database="sessions",
                ) from exc
            # Something else wrote a hash, list... under the key: corrupt, not an outage.
            log.warning(
                "session key %r holds a value that is not a string (written by something "
                "else); starting a fresh session",
                factory.redact(key),
            )
            raise InvalidSession_DeserializationError(
                f"session key {factory.redact(key)!r} is not a string"
            ) from None
        except redis.RedisError as exc:
            raise SessionUnavailable(
                "the session store is unreachable while loading session key "
                f"{factory.redact(key)!r}: {exc}",
                database="sessions",
            ) from exc
        except UnicodeDecodeError as exc:
            # Payloads start with a binary HMAC, which a decoding client cannot return.
            raise ConfigurationError(
                "the session client decodes responses (decode_responses=True), so it "
                "cannot read session payloads; have redis.sessions.redis_client_callable "
                "return a client without decode_responses",
                key=PREFIX + "redis_client_callable",
                value=factory._client_callable,
            ) from exc
        if raw is None:
            raise InvalidSession_NotInBackend(
                f"session key {factory.redact(key)!r} is not in Redis"
            )
        if isinstance(raw, str):  # decoded by a client with encoding_errors=surrogateescape
            raw = raw.encode("utf-8", "surrogateescape")
        payload = factory.unseal(key, raw)
        try:
            data = _check_shape(self.deserialize(payload))
        except Exception as exc:
            shown = factory.redact(key)
            log.warning("session key %r holds a payload that does not decode (%s)", shown, exc)
            raise InvalidSession_DeserializationError(f"session key {shown!r} is corrupt") from exc
        if self._refreshed and data.get("t") != self._timeout:
            # adjust_session_timeout() gave this session its own timeout, which the GETEX
            # (sent before the payload was known) replaced: the end of the request restores it.
            self._refreshed = False
            self._ttl_differs = True
        if persisted_hash is True:
            # Kept whole rather than as pyramid_session_redis's MD5 of it: comparing the
            # bytes at the end of the request is cheaper than hashing twice.
            return (data, payload)
        if persisted_hash is False:
            return (data, None)
        return data

    # ------------------------------------------------------------------ values

    def _check_value(self, key: Any, value: Any) -> None:
        if self._factory.checks_values:
            try:
                codec.check(value)
            except TypeError as exc:
                raise UnsupportedValue(
                    f"session value for key {key!r} cannot be stored: {exc}"
                ) from None

    def __setitem__(self, key: Any, value: Any) -> None:
        self._check_value(key, value)
        super().__setitem__(key, value)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self.managed_dict:
            self._check_value(key, default)
        return super().setdefault(key, default)

    def update(self, other: Any = (), **kwargs: Any) -> None:
        items = dict(other, **kwargs)
        for key, value in items.items():
            self._check_value(key, value)
        super().update(items)

    def payload(self) -> bytes:
        """The encoded session, checked: the bytes a save would store (before the HMAC).

        Raises :class:`TypeError` naming the first key whose value cannot be stored, and
        :class:`~pyramid_transient.exceptions.SessionTooLarge` beyond
        ``transient.sessions.max_bytes``.
        """
        return self._checked_size(self._encoded())

    def _encoded(self) -> bytes:
        try:
            return self.to_redis()
        except TypeError as exc:
            for key, value in self.managed_dict.items():
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

    def _prepare(self) -> None:
        """Decide, encode and check the save once, during the request (raises here).

        The session is encoded once per request; a change made through the session's
        methods after this point (``please_persist``) makes the save prepare again.
        """
        self._prepared = self._pending_save()
        if "_session_state" in self.__dict__:
            self._session_state.please_persist = False

    # ------------------------------------------------------------------ ids

    def rotate(self) -> None:
        """Give the session a new id, keeping its data; the old id stops working.

        Call it when privileges change (login), against session fixation. The old key
        is deleted and the new one written by the request's save (one round trip); the
        response carries the new cookie.
        """
        state = self._session_state
        old = state.session_id
        if old is not LazyCreateSession and not state.new:
            self._doomed.append(cast(str, old))
        state.session_id = self.new_session()
        state.please_persist = True
        state.please_recookie = True

    def invalidate(self) -> None:
        """Forget the session; its key is deleted by the request's save."""
        if "_session_state" in self.__dict__:
            sid = self._session_state.session_id
            if sid is not LazyCreateSession and not self._session_state.new:
                self._doomed.append(cast(str, sid))
            del self._session_state

    # ------------------------------------------------------------------ saving

    def _key(self, session_id: Any = None) -> str:
        """The Redis key of ``session_id`` (the current id by default), built once per id."""
        sid = self.session_id if session_id is None else session_id
        cached = self._key_of
        if cached is None or cached[0] != sid:
            cached = self._key_of = (sid, self._factory.key(sid))
        return cached[1]

    def _write_command(self, pipe: Any, payload: bytes) -> None:
        key = self._key()
        sealed = self._factory.seal(key, payload)
        if self.timeout is not None and self._set_redis_ttl:
            pipe.set(key, sealed, ex=self.timeout)
        else:
            pipe.set(key, sealed)

    def do_persist(self, serialized_session: bytes | None = None) -> None:
        """Write the session now (one round trip), deleting rotated or invalidated ids."""
        self.ensure_id()
        payload = serialized_session if serialized_session is not None else self.payload()
        self._execute(payload, None)
        self._session_state.please_persist = False
        self._session_state.dont_refresh = True

    def do_refresh(self, force_redis_ttl: int | None = None) -> None:
        """Refresh the key's TTL now (one round trip)."""
        ttl = force_redis_ttl if force_redis_ttl is not None else self.timeout
        if ttl is not None and (self._set_redis_ttl or force_redis_ttl is not None):
            self._execute(None, ttl)
        self._session_state.please_refresh = False

    def _execute(self, payload: bytes | None, expire: int | None) -> None:
        doomed = [self._factory.key(sid) for sid in self._doomed]
        commands = len(doomed) + (payload is not None) + (expire is not None)
        if not commands:
            return
        # One round trip whatever the mix; not a MULTI, since on a Cluster the old and the
        # new key may live on different nodes.
        target: Any = self.redis.pipeline(transaction=False) if commands > 1 else self.redis
        if payload is not None:
            self._write_command(target, payload)
        if expire is not None:
            target.expire(self._key(), expire)
        for key in doomed:  # one DEL each: on a Cluster the keys may be on other nodes
            target.delete(key)
        if commands > 1:
            target.execute()
        self._doomed = []

    def _pending_save(self) -> tuple[bytes | None, int | None]:
        """What the end of the request must write: a payload, a TTL refresh, or neither."""
        if "_session_state" not in self.__dict__:
            return None, None
        state = self._session_state
        payload: bytes | None = None
        if not state.dont_persist:
            if state.please_persist:
                if state.managed_dict or not state.new:
                    encoded = self._encoded()  # once: compared, then saved
                    if not self._same_as_loaded(state, encoded):
                        payload = self._checked_size(encoded)
            elif self.session_id_safecheck:
                payload = self._changed_payload(state)
        if payload is not None:
            self.ensure_id()
            return payload, None
        if (
            not state.dont_refresh
            and (state.please_refresh or self._ttl_differs)
            and not self._refreshed
            and state.session_id is not LazyCreateSession
            and self.timeout is not None
            and self._set_redis_ttl
        ):
            return None, self.timeout
        return None, None

    def _trigger_due(self, state: Any) -> bool:
        return bool(
            state.expires
            and self._timeout_trigger
            and self.timestamp >= state.expires - self._timeout_trigger
        )

    def _same_as_loaded(self, state: Any, encoded: bytes) -> bool:
        """Whether a session marked changed still encodes to the bytes it was loaded from.

        pyramid_session_redis marks every call of ``setdefault``, ``pop``, ``flash``... as a
        change, even ``setdefault`` of a key that is there: such a request writes nothing.
        """
        return (
            not state.new
            and not self._doomed
            and state.persisted_hash is not None
            and not self._trigger_due(state)
            and encoded == state.persisted_hash
        )

    def _changed_payload(self, state: Any) -> bytes | None:
        """The payload if the session differs from what was loaded, else ``None``.

        pyramid_session_redis's ``should_persist``, comparing the loaded bytes rather than
        MD5 digests of them; the size limit applies only to a payload that will be saved.
        """
        if self._trigger_due(state):
            state.please_persist = True
            return self.payload()
        if not self._detect_changes:
            return None
        encoded = self._encoded()
        if encoded == state.persisted_hash:
            return None
        return self._checked_size(encoded)

    def _deferred_callback(self, request: Any) -> None:
        """Finished callback: save once, if the request produced a response to keep."""
        if not self._responded and sys.exc_info()[0] is not None:
            # Finished callbacks run in the router's ``finally``: an exception is on its
            # way out and no response was produced (a retried attempt, an unhandled error).
            log.debug("session not saved: the request produced no response")
            return
        # (Not responded and no exception: the session was first touched after the response
        # callbacks, e.g. by a NewResponse subscriber; save it like any other.)
        exc = getattr(request, "exception", None)
        if exc is not None and _will_retry(request, exc):
            log.debug("session not saved: the attempt will be retried (%r)", exc)
            return
        if self._failed:
            log.debug("session not saved: it failed its check at the commit")
            return
        if (
            exc is not None
            and not self._factory._cookie_options["cookie_on_exception"]
            and "_session_state" in self.__dict__
            and (self._session_state.new or self._doomed)
        ):
            # The browser got no cookie for the new id: saving would write a key nobody
            # names and (after a rotation) delete the one its cookie names.
            log.warning(
                "session not saved: its id is new (rotated or created) but "
                "redis.sessions.cookie_on_exception = false sent no cookie with this "
                "exception response (%r); return such responses instead of raising them",
                exc,
            )
            return
        try:
            alive = "_session_state" in self.__dict__
            if (alive and self._session_state.please_persist) or self._prepared is None:
                self._prepare()
            payload, expire = self._prepared or (None, None)
            if not alive or self._session_state.dont_persist:
                payload = expire = None  # emptied and invalidated by the cookie callback
            self._execute(payload, expire)
        except redis.RedisError as exc:
            # The response is built; raising here would only break the WSGI server.
            log.error("the session could not be saved (its changes are lost): %s", exc)
        except (TransientError, TypeError) as exc:
            log.error("the session was not saved: %s", exc)

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

    def _on_response(
        self, request: Any, response: Any, *, cookie_was_valid: bool, **cookie_options: Any
    ) -> None:
        _cookie_callback(
            self, request, response, session_cookie_was_valid=cookie_was_valid, **cookie_options
        )
        alive = "_session_state" in self.__dict__
        if self._failed:
            pass  # refused at the commit; the exception view answers
        elif self._prepared is None or (alive and self._session_state.please_persist):
            if self._committed and self._prepared is not None:
                self._prepare_after_commit()
            else:
                self._prepare()
        self._responded = True

    def _prepare_after_commit(self) -> None:
        # Changed after the database committed (an on_commit flash): raising now would
        # turn a committed request into an error page, so a change that cannot be saved
        # is logged and the session is saved as it was prepared at the commit.
        try:
            self._prepare()
        except (TypeError, TransientError) as exc:
            if "_session_state" in self.__dict__:
                self._session_state.please_persist = False
            log.error(
                "the session's changes made after the transaction committed are not saved "
                "(it is saved as it was at the commit): %s",
                exc,
            )


_DISCARD_REASONS: dict[type[InvalidSession], str] = {
    InvalidSession_PayloadTimeout: "expired by its python_expires stamp",
    InvalidSession_PayloadLegacy: "written in a legacy pyramid_session_redis format",
}


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
    :class:`~pyramid_transient.connection.RedisManager` whose
    ``sessions`` database holds the sessions; the running app's by default),
    ``max_bytes`` and ``serializer`` (``"json"`` or ``"pickle"``).
    """

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
        redis_client_callable: Callable[..., redis.Redis] | None = None,
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
    ) -> None:
        if not secret:
            raise ConfigurationError(
                f"{PREFIX}secret is missing or empty (got {secret!r}): sessions need a long "
                "random secret to sign their cookies and payloads",
                key=PREFIX + "secret",
                value=secret,
            )
        _check_cookie(cookie_name, cookie_samesite, cookie_secure)
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
        self.refresh_on_exit = ttl_in_redis and not self.refresh_on_load
        if serialize is not None and deserialize is not None:
            self.dumps, self.loads, self.checks_values = serialize, deserialize, False
        elif serializer == "pickle":
            self.dumps, self.loads, self.checks_values = _pickle_dumps, _pickle_loads, False
        elif serializer == "json":
            self.dumps, self.loads, self.checks_values = _codec_dumps, _codec_loads, True
        else:
            raise ConfigurationError(
                f"transient.sessions.serializer must be one of 'json', 'pickle', not "
                f"{serializer!r}",
                key="transient.sessions.serializer",
                value=serializer,
            )
        mac_key = hashlib.sha256(b"pyramid_transient.sessions\x00" + secret.encode()).digest()
        # Keyed once; each seal copies it (cheaper than keying a new HMAC every time).
        self._mac = hmac.new(mac_key, digestmod=hashlib.sha256)
        self._cookie_signer = cookie_signer or _CookieSigner(
            secret, _COOKIE_SALT, "sha512", serializer=_StringSerializer()
        )
        self._cookie_name = cookie_name
        self._id_generator = id_generator or _generate_session_id
        self._id_prefix = prefix or ""
        self._func_invalid_logger = func_invalid_logger
        cookie_kwargs: dict[str, Any] = {
            "max_age": cookie_max_age,
            "path": cookie_path,
            "domain": cookie_domain,
            "secure": cookie_secure,
            "httponly": cookie_httponly,
        }
        if cookie_comment is not None:
            cookie_kwargs["comment"] = cookie_comment
        if cookie_samesite is not None:
            cookie_kwargs["samesite"] = cookie_samesite
        self._set_cookie = functools.partial(
            _set_cookie,
            cookie_signer=self._cookie_signer,
            cookie_name=cookie_name,
            **cookie_kwargs,
        )
        self._cookie_options: dict[str, Any] = {
            "cookie_on_exception": cookie_on_exception,
            "delete_cookie_func": functools.partial(
                _delete_cookie,
                cookie_name=cookie_name,
                cookie_path=cookie_path,
                cookie_domain=cookie_domain,
            ),
            "func_check_response_allow_cookies": func_check_response_allow_cookies,
            "invalidate_empty_session": invalidate_empty_session,
        }
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
        self._own_url = _own_url(
            redis_url, redis_host, redis_port, redis_db, redis_password, redis_unix_socket_path
        )
        self._own_socket_timeout = redis_socket_timeout
        self._own_client: redis.Redis | None = None
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
            self._binding = bind(self._manager, "session", "sessions")
        return self._binding

    @property
    def manager(self) -> RedisManager:
        """The manager whose ``sessions`` database (and key prefix) sessions use."""
        return cast(RedisManager, self.binding.manager)

    @property
    def keyspace(self) -> KeySpace:
        return self.binding.keyspace

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

    def new_payload(self) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            empty_session_payload(timeout=self.timeout or 0, python_expires=self.python_expires),
        )

    def seal(self, key: str, payload: bytes) -> bytes:
        """``payload`` behind an HMAC of the secret over the key and the payload."""
        mac = self._mac.copy()
        mac.update(key.encode() + b"\x00" + payload)
        return _SEAL_VERSION + mac.digest() + payload

    def unseal(self, key: str, raw: bytes) -> bytes:
        """The payload of ``raw`` if its HMAC verifies for ``key``, else an invalid session."""
        head = len(_SEAL_VERSION)
        mac, payload = raw[head : head + _MAC_SIZE], raw[head + _MAC_SIZE :]
        expected = self._mac.copy()
        expected.update(key.encode() + b"\x00" + payload)
        if not raw.startswith(_SEAL_VERSION) or not hmac.compare_digest(mac, expected.digest()):
            log.warning(
                "session key %r holds a payload that fails HMAC verification (written by "
                "something without the session secret, or for another key); starting a "
                "fresh session",
                self.redact(key),
            )
            raise InvalidSession_DeserializationError(
                f"session key {self.redact(key)!r} failed verification"
            )
        return payload

    def client(self, request: Any) -> redis.Redis:
        """The client sessions of ``request`` use."""
        if self._client_callable is not None:
            return self._client_callable(request, **self._redis_options)
        if self._own_url is not None:
            if self._own_client is None:
                with self._own_lock:  # concurrent first requests build one client
                    if self._own_client is None:
                        self._own_client = self._make_own_client(self._own_url)
            return self._own_client
        return cast(redis.Redis, self.binding.client)

    def _make_own_client(self, url: str) -> redis.Redis:
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
        except Exception as exc:
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
        client = self.client(request)
        session_id = self._read_cookie(request)
        session: TransientSession | None = None
        if session_id is not None:
            try:
                session = TransientSession(self, client, session_id, new=False)
            except InvalidSession as exc:
                if isinstance(exc, InvalidSession_NotInBackend):
                    log.info("session cookie names no stored session (expired?): %s", exc)
                elif not isinstance(exc, InvalidSession_DeserializationError):
                    # pyramid_session_redis's own messages carry the whole id: not logged.
                    log.info(
                        "session key %r discarded (%s); starting a fresh session",
                        self.redact(self.key(session_id)),
                        _DISCARD_REASONS.get(type(exc), type(exc).__name__),
                    )
                if self._func_invalid_logger is not None:
                    self._func_invalid_logger(request, exc)
        was_valid = session is not None
        if session is None:
            session = TransientSession(self, client, LazyCreateSession, new=True)
        set_cookie = functools.partial(self._set_cookie, session)
        request.add_response_callback(
            functools.partial(
                session._on_response,
                cookie_was_valid=was_valid,
                set_cookie_func=set_cookie,
                **self._cookie_options,
            )
        )
        request.add_finished_callback(session._deferred_callback)
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


def rotate_session(request: Any) -> None:
    """Give ``request.session`` a new id, keeping its data (call it at login).

    The old id stops working at the end of the request.
    """
    session = request.session
    if not isinstance(session, TransientSession):
        raise InvalidArgument(
            f"rotate_session needs a pyramid_transient session, not {type(session).__name__}"
        )
    session.rotate()


def includeme(config: Any) -> None:
    """Set the session factory from ``redis.sessions.*`` and ``transient.sessions.*``.

    Raises :class:`~pyramid_transient.exceptions.ConfigurationError` at once for a missing
    secret or a bad value.
    """
    from .connection import include_manager

    include_manager(config)
    factory = session_factory_from_settings(config.get_settings(), get_manager(config.registry))
    config.set_session_factory(factory)
