"""Parse ``transient.*`` ini settings into a frozen :class:`TransientSettings`.

Every key is parsed through an explicit table (:data:`SETTINGS`) of key to parser:
nothing is guessed from how a value looks, so a password ``"0123"`` stays a string.
Defaults live once, on the dataclasses below, and are documented in
``docs/settings.rst`` (a test checks that every key of the table appears there).

A bad value fails at startup with a :class:`~pyramid_transient.exceptions.ConfigurationError`
that names the full key, shows the value with ``!r`` and says what is accepted.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .exceptions import ConfigurationError

PREFIX = "transient."

#: Names that capabilities ask the manager for. Asking for one of these when it is not
#: mapped by ``transient.db.<name>`` falls back to ``default``; asking for any other
#: unmapped name is an error.
KNOWN_DATABASE_NAMES = ("default", "sessions", "cache", "store", "models", "safe")

MAX_DB = 15
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_URL_SCHEMES = ("redis", "rediss", "unix", "memory")
SSL_CERT_REQS = ("none", "optional", "required")
SESSION_SERIALIZERS = ("json", "pickle")
DEFAULT_MESSAGE_KINDS = ("info", "success", "warning", "error")

Node = tuple[str, int]


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class SessionSettings:
    """``transient.sessions.*``: what sessions add to pyramid_session_redis's settings."""

    #: Largest encoded session accepted, in bytes.
    max_bytes: int = 64 * 1024
    #: ``json`` (our codec, the default) or ``pickle`` (opt-in, trusts Redis fully).
    serializer: str = "json"
    #: Save a changed session before the response leaves, answering 503
    #: (``SessionUnavailable``) when the save fails, instead of after it (logged).
    save_before_response: bool = False
    #: Replicas each session save waits for (Redis ``WAIT``); 0 waits for none.
    wait_replicas: int = 0
    #: Seconds to wait for those replicas before the save counts as failed.
    wait_timeout: float = 1.0


@dataclass(frozen=True)
class MessageSettings:
    """``transient.messages.*``: flash messages."""

    #: Accepted kinds; ``transient.messages.kinds`` adds to the four defaults.
    kinds: tuple[str, ...] = DEFAULT_MESSAGE_KINDS


@dataclass(frozen=True)
class CacheSettings:
    """``transient.cache.*``: invalidation tokens and cache regions."""

    #: Dotted name of a SQLAlchemy session or sessionmaker to bind the hooks to.
    sqlalchemy_session: str | None = None
    #: Seconds a token lives; bounds the staleness a lost invalidation can cause.
    token_ttl: int = 24 * 3600
    #: Region names to configure (``default`` is always there).
    regions: tuple[str, ...] = ("default",)
    #: Default expiration of a region, in seconds.
    expiration: int = 3600
    #: Per-region expiration overrides from ``transient.cache.region.<name>.expiration``.
    region_expiration: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    #: Seconds after which a region's dogpile lock expires if its holder died.
    lock_timeout: int = 30
    #: Replicas each commit's invalidation waits for (Redis ``WAIT``), so that a failover
    #: cannot lose it; 0 waits for none.
    wait_replicas: int = 0
    #: Seconds to wait for those replicas before the invalidation counts as unconfirmed.
    wait_timeout: float = 1.0


@dataclass(frozen=True)
class StoreSettings:
    """``transient.store.*``: the nested-dict store."""

    #: Seconds ``acquire()`` waits for a tree lock before raising ``LockTimeout`` (the
    #: locks' ``blocking_timeout``): about the socket timeout, so a request fails fast.
    lock_acquire_timeout: float = 0.5
    #: Seconds after which a tree lock expires if its holder died or its release was lost
    #: (the locks' ``timeout``).
    lock_expire_timeout: float = 5.0


@dataclass(frozen=True)
class SafeSettings:
    """``transient.safe.*``: module safes."""

    #: Replicas each write waits for (Redis ``WAIT``); 0 waits for none.
    wait_replicas: int = 0
    #: Seconds to wait for those replicas before raising.
    wait_timeout: float = 1.0


@dataclass(frozen=True)
class TransientSettings:
    """Everything ``transient.*`` configures, parsed and checked."""

    #: ``redis://``, ``rediss://``, ``unix://`` or ``memory://`` (embedded, for development).
    url: str = "memory://"
    sentinel_service: str | None = None
    sentinel_nodes: tuple[Node, ...] = ()
    sentinel_password: str | None = None
    cluster_nodes: tuple[Node, ...] = ()
    #: ACL user and password of the data servers under Sentinel or Cluster (with
    #: ``transient.url`` they belong in the URL).
    username: str | None = None
    password: str | None = None
    #: Namespace put in front of every key we write; empty for none.
    key_prefix: str = ""
    #: ``transient.db.<name>`` mappings; ``default`` is always present.
    databases: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({"default": 0}))
    max_connections: int = 64
    #: Seconds a caller waits for a free pooled connection when all ``max_connections``
    #: are in use, before :class:`~pyramid_transient.exceptions.Unavailable`.
    pool_timeout: float = 2.0
    #: Seconds; fail fast rather than hang a request on a dead server.
    socket_timeout: float = 0.5
    socket_connect_timeout: float = 0.5
    #: Seconds between PINGs on an idle pooled connection (0: never).
    health_check_interval: int = 0
    #: Retry idempotent reads and full-value writes once after a connection error.
    retry_idempotent: bool = True
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: str = "required"
    ssl_check_hostname: bool = True
    sessions: SessionSettings = field(default_factory=SessionSettings)
    messages: MessageSettings = field(default_factory=MessageSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    safe: SafeSettings = field(default_factory=SafeSettings)

    @property
    def mode(self) -> str:
        """``"cluster"``, ``"sentinel"``, ``"memory"`` or ``"standalone"``."""
        if self.cluster_nodes:
            return "cluster"
        if self.sentinel_service:
            return "sentinel"
        if self.url.startswith("memory:"):
            return "memory"
        return "standalone"


# --------------------------------------------------------------------------- parsers

Parser = Callable[[str, Any], Any]


def _fail(key: str, value: Any, accepted: str) -> ConfigurationError:
    return ConfigurationError(f"{key} must be {accepted}, not {value!r}", key=key, value=value)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else str(value)


def string(key: str, value: Any) -> str:
    return _text(value)


def optional_string(key: str, value: Any) -> str | None:
    if value is None:
        return None
    text = _text(value)
    return text or None


def optional(parse: Parser, *, zero_is_none: bool = False) -> Parser:
    """``parse``, reading ``None``, an empty value and ``"None"`` (any case) as None: the
    setting's default. With ``zero_is_none``, a parsed 0 is None too (pyramid_session_redis
    reads ``0`` as "no value" for its timeouts)."""

    def parse_optional(key: str, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        result = parse(key, value)
        return None if zero_is_none and result == 0 else result

    return parse_optional


def integer(low: int, high: int | None = None) -> Parser:
    accepted = (
        f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"
    )

    def parse(key: str, value: Any) -> int:
        if isinstance(value, bool):
            raise _fail(key, value, accepted)
        if isinstance(value, int):
            number = value
        else:
            text = _text(value)
            if not re.fullmatch(r"[+-]?\d+", text):
                raise _fail(key, value, accepted)
            number = int(text)
        if number < low or (high is not None and number > high):
            raise _fail(key, value, accepted)
        return number

    return parse


def number(low: float, *, allow_zero: bool = True) -> Parser:
    accepted = f"a number of seconds {'of at least' if allow_zero else 'greater than'} {low:g}"

    def parse(key: str, value: Any) -> float:
        if isinstance(value, bool):
            raise _fail(key, value, accepted)
        try:
            result = float(value if isinstance(value, int | float) else _text(value))
        except ValueError:
            raise _fail(key, value, accepted) from None
        if result != result or result in (float("inf"), float("-inf")):
            raise _fail(key, value, accepted)
        if result < low or (not allow_zero and result <= low):
            raise _fail(key, value, accepted)
        return result

    return parse


_TRUE = ("true", "yes", "on", "1", "t", "y")
_FALSE = ("false", "no", "off", "0", "f", "n")


def boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _fail(key, value, "a boolean (true/false, yes/no, on/off, 1/0)")


def choice(*options: str, canonical: Callable[[str], str] | None = None) -> Parser:
    """One of ``options`` (compared in lower case); ``canonical`` spells the result (for
    example :meth:`str.capitalize`), lower case by default."""
    shown = ", ".join(repr(canonical(o) if canonical else o) for o in options)

    def parse(key: str, value: Any) -> str:
        text = _text(value).lower()
        if text not in options:
            raise _fail(key, value, "one of " + shown)
        return canonical(text) if canonical else text

    return parse


def python_object(key: str, value: Any) -> Any:
    """A dotted name (``pkg.module.attr`` or ``pkg.module:attr``) resolved to its object; an
    object given as is (settings built in Python) is kept; empty is None."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return None
    from pyramid.path import DottedNameResolver

    try:
        return DottedNameResolver().maybe_resolve(text)
    except (ImportError, AttributeError, ValueError) as exc:
        raise _fail(key, value, f"a dotted name of an importable object ({exc})") from None


def python_only(hint: str) -> Parser:
    """A key that cannot be given in an ini file (it needs a Python object): always refused,
    saying what to do instead (``hint``)."""

    def parse(key: str, value: Any) -> Any:
        raise ConfigurationError(
            f"{key} cannot be set in settings (it needs a Python object), not {value!r}; {hint}",
            key=key,
            value=value,
        )

    return parse


def words(key: str, value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else _text(value).split()
    result = tuple(_text(item) for item in items if _text(item))
    for item in result:
        if not _NAME_RE.match(item):
            raise _fail(
                key, value, "a whitespace-separated list of names (letters, digits, _ and -)"
            )
    return result


def nodes(key: str, value: Any) -> tuple[Node, ...]:
    accepted = (
        "a whitespace-separated list of host:port pairs, e.g. '127.0.0.1:7000 127.0.0.1:7001'"
    )
    items = value if isinstance(value, list | tuple) else _text(value).replace(",", " ").split()
    result = []
    for item in items:
        host, sep, port = _text(item).rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _fail(key, value, accepted)
        result.append((host, int(port)))
    if not result:
        raise _fail(key, value, accepted)
    return tuple(result)


def url(key: str, value: Any) -> str:
    """The server URL, without a database: databases come from ``transient.db.*``.

    redis-py lets a database in the URL (``/0`` or ``?db=0``) win over the one a pool is
    built for, which would put every named database in that one; so it is dropped here.
    """
    text = _text(value)
    accepted = "a URL starting with redis://, rediss://, unix:// or memory://"
    try:
        parts = urlsplit(text)
        port = parts.port  # raises for a port that is not a number in 0-65535
    except ValueError as exc:
        raise _fail(
            key,
            value,
            f"a valid URL ({exc}) starting with redis://, rediss://, unix:// or memory://",
        ) from None
    if parts.scheme not in _URL_SCHEMES or "://" not in text:
        raise _fail(key, value, accepted)
    if parts.scheme in ("redis", "rediss") and (not parts.hostname or port == 0):
        raise _fail(key, value, f"{parts.scheme}://[user:password@]host[:port]")
    if parts.scheme == "unix" and not parts.path:
        raise _fail(key, value, "unix:///path/to/redis.sock")
    if parts.scheme == "memory":
        return text
    query = "&".join(q for q in parts.query.split("&") if q and not q.startswith("db="))
    path = parts.path if parts.scheme == "unix" else ""
    clean = parts._replace(path=path, query=query)
    if parts.scheme == "unix":  # urlunsplit would drop the empty authority: "unix:/path"
        return f"unix://{clean.netloc}{clean.path}" + (f"?{query}" if query else "")
    return urlunsplit(clean)


def key_prefix(key: str, value: Any) -> str:
    text = _text(value)
    # Braces would open a Cluster hash tag and break co-location; whitespace and glob
    # characters would make SCAN patterns ambiguous.
    if re.search(r"[{}\s*?\[\]\\]", text):
        raise _fail(key, value, "a key prefix without braces, whitespace or glob characters")
    return text.rstrip(":")


def dotted_name(key: str, value: Any) -> str | None:
    text = _text(value)
    if not text:
        return None
    if not re.fullmatch(r"[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?", text):
        raise _fail(key, value, "a dotted Python name such as 'myapp.models.DBSession'")
    return text


def message_kinds(key: str, value: Any) -> tuple[str, ...]:
    extra = words(key, value)
    return DEFAULT_MESSAGE_KINDS + tuple(k for k in extra if k not in DEFAULT_MESSAGE_KINDS)


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    key: str
    #: Attribute path on :class:`TransientSettings`, e.g. ``("cache", "token_ttl")``.
    path: tuple[str, ...]
    parse: Parser


def _row(key: str, parse: Parser, path: str | None = None) -> Setting:
    attr = path or key.replace(".", "_")
    section, _, name = attr.partition(":")
    return Setting(PREFIX + key, (section, name) if name else (section,), parse)


#: The table: every fixed ``transient.*`` key and its parser.
SETTINGS: dict[str, Setting] = {
    row.key: row
    for row in (
        _row("url", url),
        _row("sentinel.service", optional_string),
        _row("sentinel.nodes", nodes),
        _row("sentinel.password", optional_string),
        _row("cluster.nodes", nodes),
        _row("username", optional_string),
        _row("password", optional_string),
        _row("key_prefix", key_prefix),
        _row("max_connections", integer(1)),
        _row("pool_timeout", number(0, allow_zero=False)),
        _row("socket_timeout", number(0, allow_zero=False)),
        _row("socket_connect_timeout", number(0, allow_zero=False)),
        _row("health_check_interval", integer(0)),
        _row("retry_idempotent", boolean),
        _row("ssl.ca_certs", optional_string),
        _row("ssl.certfile", optional_string),
        _row("ssl.keyfile", optional_string),
        _row("ssl.cert_reqs", choice(*SSL_CERT_REQS)),
        _row("ssl.check_hostname", boolean),
        _row("sessions.max_bytes", integer(256), "sessions:max_bytes"),
        _row("sessions.serializer", choice(*SESSION_SERIALIZERS), "sessions:serializer"),
        _row("sessions.save_before_response", boolean, "sessions:save_before_response"),
        _row("sessions.wait_replicas", integer(0), "sessions:wait_replicas"),
        _row("sessions.wait_timeout", number(0, allow_zero=False), "sessions:wait_timeout"),
        _row("messages.kinds", message_kinds, "messages:kinds"),
        _row("cache.sqlalchemy_session", dotted_name, "cache:sqlalchemy_session"),
        _row("cache.token_ttl", integer(1), "cache:token_ttl"),
        _row("cache.regions", words, "cache:regions"),
        _row("cache.expiration", integer(1), "cache:expiration"),
        _row("cache.lock_timeout", integer(1), "cache:lock_timeout"),
        _row("cache.wait_replicas", integer(0), "cache:wait_replicas"),
        _row("cache.wait_timeout", number(0, allow_zero=False), "cache:wait_timeout"),
        _row("store.lock_acquire_timeout", number(0), "store:lock_acquire_timeout"),
        _row(
            "store.lock_expire_timeout", number(0, allow_zero=False), "store:lock_expire_timeout"
        ),
        _row("safe.wait_replicas", integer(0), "safe:wait_replicas"),
        _row("safe.wait_timeout", number(0, allow_zero=False), "safe:wait_timeout"),
    )
}

#: Keys with a free name in them; documented as patterns.
PATTERN_KEYS = ("transient.db.<name>", "transient.cache.region.<name>.expiration")
_DB_KEY = re.compile(r"^transient\.db\.(?P<name>.+)$")
_REGION_KEY = re.compile(r"^transient\.cache\.region\.(?P<name>[^.]+)\.expiration$")

_db_number = integer(0, MAX_DB)
_seconds = integer(1)


def _nearest(key: str) -> str:
    # The pattern keys are offered with the free name the user wrote (transient.dbs.celery
    # is nearest to transient.db.celery, not to a fixed key that happens to look alike).
    parts = key.split(".")
    candidates = [*SETTINGS, "transient.db.default", "transient.cache.region.default.expiration"]
    if len(parts) >= 3:
        candidates.append("transient.db." + ".".join(parts[2:]))
    if len(parts) >= 4:
        candidates.append(f"transient.cache.region.{parts[-2]}.expiration")
    candidates = [c for c in candidates if c != key]
    match = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _check_name(key: str, name: str) -> None:
    if not _NAME_RE.match(name):
        raise ConfigurationError(
            f"{key}: {name!r} is not a valid name (letters, digits, _ and -, not starting "
            "with a digit)",
            key=key,
            value=name,
        )


def parse_settings(settings: Mapping[str, Any]) -> TransientSettings:
    """Parse every ``transient.*`` key of ``settings`` (other keys are ignored)."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    databases: dict[str, int] = {"default": 0}
    region_expiration: dict[str, int] = {}
    for key in sorted(settings):
        if not key.startswith(PREFIX):
            continue
        value = settings[key]
        row = SETTINGS.get(key)
        if row is not None:
            parsed = row.parse(key, value)
            if len(row.path) == 1:
                top[row.path[0]] = parsed
            else:
                sections.setdefault(row.path[0], {})[row.path[1]] = parsed
            continue
        if m := _DB_KEY.match(key):
            _check_name(key, m["name"])
            databases[m["name"]] = _db_number(key, value)
            continue
        if m := _REGION_KEY.match(key):
            _check_name(key, m["name"])
            region_expiration[m["name"]] = _seconds(key, value)
            continue
        raise ConfigurationError(
            f"{key} is not a pyramid_transient setting{_nearest(key)} "
            "(see the settings reference for the accepted keys)",
            key=key,
            value=value,
        )

    defaults = TransientSettings()
    built: dict[str, Any] = {}
    for f in fields(TransientSettings):
        if f.name in sections:
            built[f.name] = replace(getattr(defaults, f.name), **sections[f.name])
    if region_expiration:
        cache = built.get("cache", defaults.cache)
        regions = tuple(dict.fromkeys(("default", *cache.regions, *region_expiration)))
        built["cache"] = replace(
            cache, regions=regions, region_expiration=MappingProxyType(region_expiration)
        )
    elif "cache" in built:
        cache = built["cache"]
        built["cache"] = replace(cache, regions=tuple(dict.fromkeys(("default", *cache.regions))))
    result = TransientSettings(**top, **built, databases=MappingProxyType(databases))
    _check_consistency(settings, result)
    return result


def _check_consistency(raw: Mapping[str, Any], parsed: TransientSettings) -> None:
    given_url = "transient.url" in raw
    if parsed.cluster_nodes and given_url:
        raise ConfigurationError(
            "transient.url and transient.cluster.nodes are both set; a Cluster is reached "
            f"through its nodes only, so remove one of them (url={raw['transient.url']!r})",
            key="transient.cluster.nodes",
            value=raw.get("transient.cluster.nodes"),
        )
    if parsed.cluster_nodes and parsed.sentinel_service:
        raise ConfigurationError(
            "transient.sentinel.service and transient.cluster.nodes are both set; "
            "choose Sentinel or Cluster",
            key="transient.cluster.nodes",
            value=raw.get("transient.cluster.nodes"),
        )
    if parsed.sentinel_service and given_url:
        raise ConfigurationError(
            "transient.url and transient.sentinel.service are both set; with Sentinel the "
            "master is found through transient.sentinel.nodes, so remove transient.url",
            key="transient.url",
            value=raw.get("transient.url"),
        )
    if given_url and (parsed.password or parsed.username):
        raise ConfigurationError(
            "transient.username and transient.password are for Sentinel and Cluster; with "
            "transient.url put them in the URL (redis://user:password@host:port)",
            key="transient.password" if parsed.password else "transient.username",
            value="***",
        )
    if parsed.sentinel_service and not parsed.sentinel_nodes:
        raise ConfigurationError(
            "transient.sentinel.service is set but transient.sentinel.nodes is empty; list "
            "the sentinels as host:port pairs",
            key="transient.sentinel.nodes",
            value=raw.get("transient.sentinel.nodes"),
        )
    if parsed.sentinel_nodes and not parsed.sentinel_service:
        raise ConfigurationError(
            "transient.sentinel.nodes is set but transient.sentinel.service is not; name the "
            "monitored master (e.g. 'mymaster')",
            key="transient.sentinel.service",
            value=None,
        )


def settings_keys() -> Iterable[str]:
    """Every documented key: the table's and the patterns."""
    return (*SETTINGS, *PATTERN_KEYS)
