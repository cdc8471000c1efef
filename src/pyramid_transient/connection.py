"""The connection manager: named databases over standalone, Sentinel, Cluster or memory.

One :class:`RedisManager` lives in the Pyramid registry. It maps names (``sessions``,
``cache``, ``celery``, ...) to database numbers from ``transient.db.<name>``, and holds one
client (one connection pool) per database, created on first use: nothing connects at
configuration time. After ``fork`` the child builds its own pools, so it never reuses a
socket of its parent.

Failure behaviour is chosen rather than inherited from redis-py:

* connect and socket timeouts default to half a second (``transient.socket_timeout``,
  ``transient.socket_connect_timeout``), so a dead server fails a request quickly;
* redis-py's own automatic retry is switched off, because re-sending a command whose reply
  was lost applies it twice (an ``INCR`` counted twice). :class:`TransientRedis` retries
  once, after a *connection* error only, and only commands that give the same result when
  applied twice: reads and full-value writes (:data:`IDEMPOTENT_COMMANDS`). A timeout is
  never retried: the command may have run, and waiting twice would double the latency.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import quote as urlquote
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from zope.interface import Interface

from .exceptions import ConfigurationError, UnknownDatabase
from .keys import KeySpace
from .settings import KNOWN_DATABASE_NAMES, TransientSettings, parse_settings

log = logging.getLogger(__name__)

__all__ = [
    "IDEMPOTENT_COMMANDS",
    "Binding",
    "IRedisManager",
    "RedisManager",
    "TransientRedis",
    "TransientRedisCluster",
    "bind",
    "current_manager",
    "get_manager",
    "get_redis",
]

#: Commands that :class:`TransientRedis` may send again after a connection error.
IDEMPOTENT_COMMANDS = frozenset(
    {
        # GETEX only resets the expiry it is given: sent twice, same state and reply
        "GET", "GETEX", "MGET", "GETRANGE", "STRLEN", "EXISTS", "TYPE", "TTL", "PTTL",
        "HGET", "HMGET", "HGETALL", "HKEYS", "HVALS", "HLEN", "HEXISTS", "HSTRLEN",
        "SMEMBERS", "SISMEMBER", "SMISMEMBER", "SCARD",
        "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYSCORE", "ZSCORE", "ZMSCORE",
        "ZCARD", "ZCOUNT", "ZRANK", "ZREVRANK", "ZRANGEBYLEX", "ZREVRANGEBYLEX", "ZLEXCOUNT",
        "LRANGE", "LLEN", "LINDEX", "LPOS", "SINTER", "SUNION", "SDIFF",
        "SCAN", "HSCAN", "SSCAN", "ZSCAN", "GETBIT", "BITCOUNT", "BITPOS",
        "XRANGE", "XREVRANGE", "XLEN", "EXPIRETIME", "PEXPIRETIME",
        "PING", "ECHO", "INFO", "DBSIZE", "TIME", "SCRIPT EXISTS",
        # read-only scripts cannot write, and loading a script twice gives the same SHA
        "EVAL_RO", "EVALSHA_RO", "FCALL_RO", "SCRIPT LOAD",
        # full-value writes: applying them twice leaves the same state and reply
        "SETEX", "PSETEX", "MSET",
    }
)  # fmt: skip

# SET is a full-value write when its only options set an expiry. Any other option makes
# its reply or effect depend on the previous state (NX, XX, GET, KEEPTTL, and redis-py 8's
# compare-and-set IFEQ/IFNE/IFDEQ/IFDNE, which a second send would answer with nil): an
# allow-list, so that an option added later is not retried by default.
_SET_SAFE_OPTIONS = frozenset({b"EX", b"PX", b"EXAT", b"PXAT"})

_NO_RETRY = Retry(NoBackoff(), 0)


def _word(arg: Any) -> bytes:
    return arg.upper() if isinstance(arg, bytes) else str(arg).upper().encode()


def _is_idempotent(args: tuple[Any, ...]) -> bool:
    name = _word(args[0]).decode()
    if name == "SET":
        # Nothing but pairs of an expiry option and its number: SET k v EX 60.
        options = [_word(a) for a in args[3:]]
        return len(options) % 2 == 0 and all(o in _SET_SAFE_OPTIONS for o in options[::2])
    return name in IDEMPOTENT_COMMANDS


def _send_under_policy(client: Any, send: Callable[..., Any], args: Any, options: Any) -> Any:
    # The one retry we allow (see the module docstring): once, after a connection error,
    # for a command that gives the same result when applied twice.
    try:
        return send(*args, **options)
    except redis.ConnectionError as exc:
        if not client.retry_idempotent or not _is_idempotent(args):
            raise
        log.info("retrying %s once after a connection error: %s", args[0], exc)
        return send(*args, **options)


_recorder: Any
try:  # redis-py's per-command metrics (OpenTelemetry), off unless the app enables them
    from redis.observability import recorder as _recorder
except ImportError:  # pragma: no cover - a redis-py without observability
    _recorder = None

_LEAN_POOLS = (redis.ConnectionPool, redis.BlockingConnectionPool)
_LEAN_CONNECTIONS = (redis.Connection, redis.SSLConnection, redis.UnixDomainSocketConnection)
_NEVER_DECODE = "NEVER_DECODE"
_EMPTY_RESPONSE = "EMPTY_RESPONSE"


def _pool_wants_a_name() -> bool:
    # redis-py 5 asks get_connection() for the command's name; 6 deprecates it; 8 drops it.
    import inspect

    params = list(inspect.signature(redis.ConnectionPool.get_connection).parameters.values())
    return len(params) > 1 and params[1].default is inspect.Parameter.empty


_POOL_WANTS_A_NAME = _pool_wants_a_name()


def _metrics_off() -> bool:
    return _recorder is None or (
        getattr(_recorder, "_metrics_collector", None) is None
        and getattr(_recorder, "_collector_resolved", True)
    )


def _lean_possible(client: redis.Redis) -> bool:
    """Whether ``client`` may send single commands by the lean path (see TransientRedis)."""
    pool = client.connection_pool
    retry = pool.connection_kwargs.get("retry")
    return (
        type(pool) in _LEAN_POOLS
        and pool.connection_class in _LEAN_CONNECTIONS
        and client.connection is None  # not a single_connection_client
        and getattr(pool, "cache", None) is None  # no client-side caching
        and retry is not None
        and retry.get_retries() == 0
    )


class TransientRedis(redis.Redis):
    """A :class:`redis.Redis` that retries idempotent commands once after a connection error.

    Everything else is redis-py's client, unchanged: pipelines, scripts, pub/sub, locks.
    Pipelines and scripts are never retried.

    A single command takes a lean path through redis-py's own connection: take a pooled
    connection, ``send_command``, ``read_response``, the command's response callback,
    release; a connection error disconnects it, as redis-py does. It is what
    ``Redis.execute_command`` does with ``retry=Retry(NoBackoff(), 0)`` (the manager's),
    without its per-call bookkeeping: about a third fewer client instructions per
    command. Clients this does not fit (client-side caching, a single connection, another
    pool or connection class, redis-py's metrics enabled, ``HIMPORT``) take redis-py's
    path.
    """

    retry_idempotent: bool = True
    _lean: bool | None = None

    def execute_command(self, *args: Any, **options: Any) -> Any:
        lean = self._lean
        if lean is None:
            lean = self._lean = _lean_possible(self)
        if not lean or not _metrics_off() or str(args[0]).upper().startswith("HIMPORT"):
            return _send_under_policy(self, super().execute_command, args, options)
        return _send_under_policy(self, self._send_lean, args, options)

    def _send_lean(self, *args: Any, **options: Any) -> Any:
        pool = self.connection_pool
        conn: Any = pool.get_connection(args[0]) if _POOL_WANTS_A_NAME else pool.get_connection()
        try:
            try:
                conn.send_command(*args)
                if _NEVER_DECODE in options:
                    options.pop(_NEVER_DECODE)
                    response = conn.read_response(disable_decoding=True)
                    if args[0] == "INFO":
                        from redis._parsers.helpers import decode_info

                        response = decode_info(response, self.get_encoder())  # type: ignore[no-untyped-call]
                else:
                    response = conn.read_response()
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                conn.disconnect()  # what redis-py's retry, with no retries, does
                raise
            except redis.ResponseError:
                if _EMPTY_RESPONSE in options:
                    return options[_EMPTY_RESPONSE]
                raise
        finally:
            try:
                if getattr(conn, "should_reconnect", bool)():
                    conn.disconnect()
                    conn.connect()
            finally:
                pool.release(conn)
        options.pop(_EMPTY_RESPONSE, None)
        options.pop("keys", None)
        name = args[0]
        if getattr(conn, "_resp2_fallback", False):
            from redis import client as redis_client

            pick: Any = getattr(redis_client, "_get_response_callback")  # noqa: B009
            callback = pick(self.response_callbacks, name, conn)
        else:
            callback = cast(Any, self.response_callbacks).get(name)
        if callback is not None:
            return callback(response, **options)
        return response


class TransientRedisCluster(RedisCluster):
    """A :class:`redis.cluster.RedisCluster` under the same policy as :class:`TransientRedis`.

    Built with ``retry=Retry(NoBackoff(), 0)``: redis-py's cluster client would otherwise
    re-send *any* command up to ten times after a connection error or a timeout. MOVED and
    ASK redirections, TRYAGAIN, and the refresh of the slot table after a connection error
    are not retries and keep working.
    """

    retry_idempotent: bool = True

    def execute_command(self, *args: Any, **options: Any) -> Any:
        try:
            return _send_under_policy(self, super().execute_command, args, options)
        except RedisClusterException as exc:
            raise _as_connection_error(exc) from exc


def _as_connection_error(exc: RedisClusterException) -> Exception:
    # redis-py reports "no node reachable" as RedisClusterException, which is not even a
    # RedisError; callers that handle an outage catch redis.ConnectionError.
    if "cannot be connected" in str(exc):
        return redis.ConnectionError(str(exc))
    return exc


class IRedisManager(Interface):  # type: ignore[misc]
    """The registry utility interface of the :class:`RedisManager`."""


def _memory_servers() -> dict[str, Any]:
    # One embedded server per memory:// URL for the whole process, so every client of one
    # URL (every manager, every thread) sees the same data, like clients of one real server.
    return _MEMORY_SERVERS


_MEMORY_SERVERS: dict[str, Any] = {}
_MEMORY_LOCK = threading.Lock()


def memory_server(url: str) -> Any:
    """The process-wide fakeredis server behind a ``memory://`` URL."""
    import fakeredis  # lazily: only the memory backend needs it

    with _MEMORY_LOCK:
        server = _MEMORY_SERVERS.get(url)
        if server is None:
            server = _MEMORY_SERVERS[url] = fakeredis.FakeServer(version=(7,))
            log.warning(
                "pyramid_transient is using the embedded memory backend (%s): data lives in "
                "this process only; set transient.url to a Redis server for production",
                url,
            )
        return server


def _host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets as URLs want it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for logs and reprs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisManager:
    """Named databases and their clients, for one application.

    Use :func:`get_redis` in Pyramid code; build one directly in scripts and workers::

        manager = RedisManager.from_settings({"transient.url": "redis://localhost:6379",
                                              "transient.db.celery": "3"})
        manager.get("celery").ping()
    """

    def __init__(self, settings: TransientSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._clients: dict[int, redis.Redis] = {}
        self._by_name: dict[str, redis.Redis] = {}  # the hot path of get()
        self._cluster: Any = None
        self._sentinel: Any = None

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> RedisManager:
        """Build a manager from raw ``transient.*`` settings (as in an ini file).

        A Pyramid ``Registry`` (a dict too) is refused: its settings are
        ``registry.settings``, and the app's own manager is ``get_manager(registry)``.
        """
        if hasattr(settings, "queryUtility") or hasattr(settings, "registry"):
            raise ConfigurationError(
                f"RedisManager.from_settings() takes the settings dict, not {settings!r}: "
                "use get_manager(registry) for the app's manager, or "
                "RedisManager.from_settings(registry.settings) for a new one"
            )
        return cls(parse_settings(settings))

    def __repr__(self) -> str:
        where = {
            "cluster": lambda: (
                "cluster " + " ".join(f"{h}:{p}" for h, p in self.settings.cluster_nodes)
            ),
            "sentinel": lambda: f"sentinel {self.settings.sentinel_service}",
        }.get(self.mode, lambda: redact_url(self.settings.url))()
        return f"<RedisManager {where} dbs={dict(self.settings.databases)}>"

    # ------------------------------------------------------------------ names

    @property
    def mode(self) -> str:
        """``"standalone"``, ``"sentinel"``, ``"cluster"`` or ``"memory"``."""
        return self.settings.mode

    @property
    def names(self) -> tuple[str, ...]:
        """The configured names (``default`` first)."""
        return tuple(self.settings.databases)

    def resolve(self, name: str = "default") -> str:
        """The configured name that serves ``name``: itself, or ``default`` for a known name.

        Raises :class:`~pyramid_transient.exceptions.UnknownDatabase` for a name that is
        neither configured nor one the capabilities use.
        """
        if name in self.settings.databases:
            return name
        if name in KNOWN_DATABASE_NAMES:
            return "default"
        configured = ", ".join(repr(n) for n in self.names)
        raise UnknownDatabase(
            f"no Redis database is named {name!r}; configured names are {configured} "
            f"(add transient.db.{name} = <number> to the settings)",
            name=name,
        )

    def db_number(self, name: str = "default") -> int:
        """The database number behind ``name`` (always 0 on a Cluster).

        Raises :class:`~pyramid_transient.exceptions.UnknownDatabase` for a name that is
        neither configured nor one the capabilities use, on a Cluster too (where the name
        is a key namespace): a typo fails the same way everywhere.
        """
        resolved = self.resolve(name)
        if self.mode == "cluster":
            return 0
        return self.settings.databases[resolved]

    def namespace(self, name: str = "default") -> str:
        """The key namespace of ``name``: the name on a Cluster (db 0 only), else empty."""
        if self.mode != "cluster":
            self.resolve(name)
            return ""
        return self.resolve(name)

    def keyspace(self, capability: str, name: str | None = None) -> KeySpace:
        """The :class:`~pyramid_transient.keys.KeySpace` of ``capability`` in database ``name``.

        ``name`` defaults to the capability's own database name (``sessions``, ``cache``, ...).
        """
        return KeySpace(self.settings.key_prefix, capability, self.namespace(name or capability))

    # ------------------------------------------------------------------ clients

    def get(self, name: str = "default") -> redis.Redis:
        """The client for database ``name`` (shared, thread-safe, created on first use)."""
        if os.getpid() == self._pid:
            client = self._by_name.get(name)
            if client is not None:
                return client
        db = self.db_number(name)
        self._check_fork()
        client = self._clients.get(db)
        if client is None:
            with self._lock:
                client = self._clients.get(db)
                if client is None:
                    client = self._clients[db] = self._make_client(db)
        self._by_name[name] = client
        return client

    def _check_fork(self) -> None:
        pid = os.getpid()
        if pid != self._pid:
            # A forked child must not share its parent's sockets: forget (without closing,
            # which would disturb the parent's connections) and build anew on demand. The
            # inherited lock is replaced, never taken: another thread of the parent may
            # have held it at the fork (building a Cluster client, say), and nothing in
            # the child would ever release it.
            self._lock = threading.Lock()
            self._clients = {}
            self._by_name = {}
            self._cluster = None
            self._sentinel = None
            self._pid = pid

    def _common_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            "socket_timeout": s.socket_timeout,
            "socket_connect_timeout": s.socket_connect_timeout,
            "health_check_interval": s.health_check_interval,
            "retry": _NO_RETRY,
        }

    def _auth_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {"username": s.username, "password": s.password} if s.password else {}

    def _ssl_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            "ssl_ca_certs": s.ssl_ca_certs,
            "ssl_certfile": s.ssl_certfile,
            "ssl_keyfile": s.ssl_keyfile,
            "ssl_cert_reqs": s.ssl_cert_reqs,
            "ssl_check_hostname": s.ssl_check_hostname,
        }

    def _make_client(self, db: int) -> redis.Redis:
        s = self.settings
        mode = self.mode
        client: redis.Redis
        if mode == "cluster":
            return cast(redis.Redis, self._make_cluster())
        if mode == "sentinel":
            client = self._make_sentinel().master_for(
                s.sentinel_service,
                redis_class=TransientRedis,
                db=db,
                max_connections=s.max_connections,
                **self._common_kwargs(),
                **self._auth_kwargs(),
            )
        elif mode == "memory":
            from fakeredis import FakeRedisConnection

            pool = redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
                connection_class=FakeRedisConnection,
                server=memory_server(s.url),
                db=db,
                max_connections=s.max_connections,
                timeout=s.pool_timeout,
            )
            client = TransientRedis(connection_pool=pool)
        else:
            kwargs = self._common_kwargs()
            if s.url.startswith("rediss:"):
                kwargs.update(self._ssl_kwargs())
            # A blocking pool: a thread past max_connections waits for a connection (up to
            # transient.pool_timeout) instead of failing at once with MaxConnectionsError.
            pool = redis.BlockingConnectionPool.from_url(
                s.url, db=db, max_connections=s.max_connections, timeout=s.pool_timeout, **kwargs
            )
            client = TransientRedis(connection_pool=pool)
        cast(TransientRedis, client).retry_idempotent = s.retry_idempotent
        return client

    def _make_sentinel(self) -> Any:
        if self._sentinel is None:
            from redis.sentinel import Sentinel

            s = self.settings
            # The clients that ask the sentinels where the master is: redis-py's default
            # retries each question ten times, so one dead sentinel would cost ten socket
            # timeouts before the next sentinel is asked. Asking the next one is our retry.
            sentinel_kwargs: dict[str, Any] = {
                "socket_timeout": s.socket_timeout,
                "socket_connect_timeout": s.socket_connect_timeout,
                "retry": _NO_RETRY,
            }
            if s.sentinel_password:
                sentinel_kwargs["password"] = s.sentinel_password
            self._sentinel = Sentinel(list(s.sentinel_nodes), sentinel_kwargs=sentinel_kwargs)
        return self._sentinel

    def _make_cluster(self) -> TransientRedisCluster:
        if self._cluster is None:
            s = self.settings
            kwargs = {**self._common_kwargs(), **self._auth_kwargs()}
            # RedisCluster refuses a per-node ``retry`` (its nodes never retry); its own
            # ``retry`` governs re-sending a command after a connection error or timeout.
            kwargs.pop("retry")
            nodes = [ClusterNode(h, p) for h, p in s.cluster_nodes]  # type: ignore[no-untyped-call]
            try:
                # RedisCluster asks the nodes for the slot table here, in its constructor.
                cluster = TransientRedisCluster(
                    startup_nodes=nodes,
                    max_connections=s.max_connections,
                    retry=_NO_RETRY,
                    **kwargs,
                )
            except RedisClusterException as exc:
                raise _as_connection_error(exc) from exc
            cluster.retry_idempotent = s.retry_idempotent
            self._cluster = cluster
        return cast(TransientRedisCluster, self._cluster)

    # ------------------------------------------------------------------ URLs

    def url_for(self, name: str = "default") -> str:
        """A URL with the database of ``name``, for tools such as Celery's broker setting.

        The URL carries the password, as such tools need it; :func:`redact_url` it before
        logging. On Sentinel the URL uses the ``sentinel://`` form Kombu understands, with
        ``transient.password`` (the master's); give Kombu ``transient.sentinel.password`` in
        its ``sentinel_kwargs`` transport option. A Cluster has no single URL and raises
        :class:`~pyramid_transient.exceptions.ConfigurationError`.
        """
        db = self.db_number(name)
        s = self.settings
        if self.mode == "cluster":
            raise ConfigurationError(
                "a Redis Cluster has no single URL; give the tool transient.cluster.nodes",
                key="transient.cluster.nodes",
                value=s.cluster_nodes,
            )
        if self.mode == "sentinel":
            # Kombu reads the password of a sentinel:// URL as the *master's*; the
            # sentinels' own password goes in its transport options (sentinel_kwargs).
            auth = ""
            if s.password:
                user = urlquote(s.username or "", safe="")
                auth = f"{user}:{urlquote(s.password, safe='')}@"
            return ";".join(
                f"sentinel://{auth}{_host_port(h, p)}/{db}" for h, p in s.sentinel_nodes
            )
        parts = urlsplit(s.url)
        if parts.scheme == "memory":
            # Kombu reads memory:// as its own in-process transport: a task sent there
            # would never reach a worker, silently.
            raise ConfigurationError(
                f"transient.url = {s.url!r} is the embedded server of this process, which "
                f"no other process (a Celery worker) can reach: url_for({name!r}) needs a "
                "real server (redis://, rediss://, unix:// or Sentinel)",
                key="transient.url",
                value=s.url,
            )
        if parts.scheme == "unix":
            query = [q for q in parts.query.split("&") if q and not q.startswith("db=")]
            # urlunsplit would drop the empty authority and give "unix:/path"
            return f"unix://{parts.netloc}{parts.path}?" + "&".join([*query, f"db={db}"])
        return urlunsplit(parts._replace(path=f"/{db}"))

    def close(self) -> None:
        """Disconnect every pool (the manager can still be used: it reconnects on demand)."""
        with self._lock:
            for client in self._clients.values():
                if client is self._cluster:
                    continue  # a RedisCluster has no single pool; closed below
                client.close()
                client.connection_pool.disconnect()
            self._clients = {}
            self._by_name = {}
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None
            if self._sentinel is not None:
                self._sentinel.close()
                self._sentinel = None


# ---------------------------------------------------------------------- Pyramid glue


def get_manager(request_or_registry: Any) -> RedisManager:
    """The :class:`RedisManager` of the app, from a request or a registry."""
    registry = getattr(request_or_registry, "registry", request_or_registry)
    manager = registry.queryUtility(IRedisManager)
    if manager is None:
        raise ConfigurationError(
            "pyramid_transient is not configured in this application: add "
            "config.include('pyramid_transient') (or pyramid.includes = pyramid_transient)"
        )
    return cast(RedisManager, manager)


def get_redis(request_or_registry: Any, name: str = "default") -> redis.Redis:
    """The client for the named database, from a request or a registry."""
    return get_manager(request_or_registry).get(name)


_DEFAULT_MANAGER: list[RedisManager] = []


def set_default_manager(manager: RedisManager | None) -> RedisManager | None:
    """Make ``manager`` the one capabilities without a client use when no Pyramid app is
    current in the calling thread (a Celery worker's pool threads, a script); ``None``
    forgets it. Returns the previous one. :func:`pyramid_transient.celery.bootstrap_worker`
    sets it to the app it bootstraps.
    """
    previous = _DEFAULT_MANAGER[-1] if _DEFAULT_MANAGER else None
    _DEFAULT_MANAGER[:] = [manager] if manager is not None else []
    return previous


def current_manager() -> RedisManager:
    """The manager of the running app: Pyramid's current registry's, else the one
    :func:`set_default_manager` set (a worker's bootstrap).

    Used by capabilities created without an explicit client, e.g. at import time.
    """
    from pyramid.registry import global_registry
    from pyramid.threadlocal import get_current_registry

    registry = get_current_registry()
    manager = registry.queryUtility(IRedisManager)
    if manager is not None:
        return cast(RedisManager, manager)
    if _DEFAULT_MANAGER:
        return _DEFAULT_MANAGER[-1]
    if registry is global_registry:
        raise ConfigurationError(
            "no application is running: bootstrap or pass a client (in a script or a "
            "worker, pyramid.paster.bootstrap('production.ini') or "
            "pyramid_transient.celery.bootstrap_worker; or give the capability a "
            "RedisManager, a registry or a redis.Redis)"
        )
    return get_manager(registry)


class _RequestAttribute:
    # Pyramid binds each method of add_request_method to a new request by calling its
    # __get__(request, type) (apply_request_extensions: the router, pyramid.scripting's
    # prepare and bootstrap); answering with a value makes it a plain instance attribute.
    __slots__ = ("factory",)

    def __init__(self, factory: Callable[[Any], Any]) -> None:
        self.factory = factory

    def __get__(self, request: Any, cls: Any = None) -> Any:
        return self if request is None else self.factory(request)


def add_request_attribute(config: Any, name: str, factory: Callable[[Any], Any]) -> None:
    """Give every request ``request.<name> = factory(request)``, set when it is created.

    Used instead of ``config.add_request_method(..., reify=True)``: a request property
    makes Pyramid build a new request class for every request, which halves the throughput
    of a small view (``benchmarks/bench_connection.py``). ``factory`` runs for every
    request, so it must be cheap and must not talk to Redis.
    """
    config.add_request_method(_RequestAttribute(factory), name)


def _request_redis(request: Any) -> redis.Redis:
    return get_redis(request)


def include_manager(config: Any) -> None:
    """Register the manager and ``request.redis`` (idempotent; capabilities call it too).

    Settings are parsed here, so a bad ``transient.*`` value fails at startup; nothing
    connects to Redis until a client is first used.
    """
    registry = config.registry
    if registry.queryUtility(IRedisManager) is not None:
        return
    manager = RedisManager(parse_settings(config.get_settings()))
    registry.registerUtility(manager, IRedisManager)
    if manager.mode == "cluster":
        # redis-py's RedisCluster connects when it is built: built eagerly for every
        # request, a cluster that is down would fail views that never touch Redis.
        config.add_request_method(_request_redis, "redis", reify=True)
    else:
        add_request_attribute(config, "redis", lambda request: manager.get())


includeme = include_manager


# ---------------------------------------------------------------------- binding

# The spine lives in binding.py; these names stay importable from here.
from .binding import Binding, bind  # noqa: E402
