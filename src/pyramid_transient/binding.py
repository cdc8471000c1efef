"""The spine: the one way every capability reaches Redis.

A :class:`Binding` is where one capability's keys live (a client and a
:class:`~pyramid_transient.keys.KeySpace`), resolved by :func:`bind` from whatever the
user handed the capability: a :class:`~pyramid_transient.connection.RedisManager`, a
Pyramid request or registry, a bare ``redis.Redis`` / ``RedisCluster``, or nothing (the
running app's manager). It runs Lua scripts (``EVALSHA``, sending the script whole on
``NOSCRIPT``) and pipelines, and translates what fails into the library's vocabulary
(DESIGN section 7), here and nowhere else:

* the server unreachable, a timeout, ``BUSY`` / ``LOADING``, ``READONLY`` during a
  failover, ``CLUSTERDOWN``, ``MASTERDOWN``, ``TRYAGAIN``, a pool with no free connection
  within ``transient.pool_timeout``: :class:`~pyramid_transient.exceptions.Unavailable`
  (also the builtin :class:`ConnectionError`), redis-py's error as ``__cause__``;
* a key holding another type (``WRONGTYPE``):
  :class:`~pyramid_transient.exceptions.CorruptData` naming the key, which each capability
  turns into its documented corrupt-data path (read as missing, repaired, or raised).

Capabilities build keys and arguments; they do not catch redis-py's exceptions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from .exceptions import CorruptData, Unavailable
from .keys import KeySpace

log = logging.getLogger(__name__)

#: The option of redis-py's ``execute_command`` that skips decoding of the reply.
NEVER_DECODE = "NEVER_DECODE"

if TYPE_CHECKING:
    from .connection import RedisManager
    from .lua import ScriptSet

__all__ = ["Binding", "Translating", "bind", "guard", "send_on_one_connection", "translate"]

#: redis-py's errors that mean "the data is there, the server is not (now)".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis.ConnectionError,  # refused, reset, BusyLoadingError (LOADING), pool exhausted
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,  # a demoted master during a failover
    redis.exceptions.ClusterDownError,  # CLUSTERDOWN and MASTERDOWN
    redis.exceptions.TryAgainError,  # a slot being migrated
    redis.exceptions.ClusterError,  # the cluster client gave up after its redirections
    # a slot no node covers (not even a RedisError)
    redis.exceptions.SlotNotCoveredError,
    # no node reachable: redis-py 8.1 and newer (older ones raise ClusterError, above)
    *(
        (redis.exceptions.RedisClusterUnreachableError,)
        if hasattr(redis.exceptions, "RedisClusterUnreachableError")
        else ()
    ),
)

#: Reply prefixes that mean the same, for errors redis-py reports as plain ResponseError.
_UNAVAILABLE_REPLIES = ("BUSY", "LOADING", "READONLY", "CLUSTERDOWN", "MASTERDOWN", "TRYAGAIN")


def translate(
    exc: BaseException, database: str, key: str | None = None, repair: str | None = None
) -> BaseException | None:
    """The library's exception for redis-py's ``exc``, or None to let ``exc`` through.

    ``database`` is the database name the call used; ``key`` the key it was about, when
    the call had one (it goes into :class:`~pyramid_transient.exceptions.CorruptData`).
    """
    if isinstance(exc, redis.ResponseError):
        text = str(exc)
        if text.startswith("WRONGTYPE"):
            return CorruptData(
                f"Redis key {key!r} holds a value of the wrong type"
                if key
                else f"a key of database {database!r} holds a value of the wrong type",
                key=key,
                database=database,
                repair=repair,
            )
        if not text.startswith(_UNAVAILABLE_REPLIES) and not isinstance(exc, _UNAVAILABLE):
            return None
    elif not isinstance(exc, _UNAVAILABLE) and not (
        isinstance(exc, RedisClusterException) and "cannot be connected" in str(exc)
    ):
        return None
    return Unavailable(
        f"Redis database {database!r} is unavailable ({type(exc).__name__}: {exc})",
        database=database,
    )


class Translating:
    """``with binding.errors(key):``: redis-py's errors leave as the library's."""

    __slots__ = ("database", "key", "repair", "script_errors")

    def __init__(
        self,
        database: str,
        key: str | None,
        script_errors: Mapping[str, Callable[[], BaseException]] | None = None,
        repair: str | None = None,
    ) -> None:
        self.database = database
        self.key = key
        self.script_errors = script_errors
        self.repair = repair

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        if self.script_errors and isinstance(exc, redis.ResponseError):
            text = str(exc)
            for code, make in self.script_errors.items():
                if code in text:
                    raise make() from None
        translated = translate(exc, self.database, self.key, self.repair)
        if translated is not None:
            raise translated from exc


def guard(
    database: str,
    key: str | None = None,
    *,
    script_errors: Mapping[str, Callable[[], BaseException]] | None = None,
    repair: str | None = None,
) -> Translating:
    """``with guard("safe", key):`` translates redis-py's errors as :meth:`Binding.errors`
    does, for code that holds a client rather than a :class:`Binding`. ``repair`` says
    what repairs ``key`` when it holds the wrong type (it goes into
    :class:`~pyramid_transient.exceptions.CorruptData`)."""
    return Translating(database, key, script_errors, repair)


_DEFAULT_TIMEOUT: Any = object()


def send_on_one_connection(
    client: Any,
    key: str,
    commands: Sequence[tuple[Any, ...]],
    *,
    read_timeout: Any = _DEFAULT_TIMEOUT,
) -> list[Any]:
    """Send ``commands`` in one round trip on one connection (of the node serving ``key``
    on a Cluster); return every reply, error replies in place (not raised), so the
    connection stays in step.

    For ``WAIT``, which must run on the connection that wrote and whose reply may take
    longer than the socket timeout: ``read_timeout`` is the read timeout of the last reply.
    Errors of the connection itself are raised as redis-py's; callers translate them.

    On a Cluster the node comes from the cluster client's slot table, kept up to date as
    the client itself does: a ``MOVED`` or ``ASK`` reply to the first command is followed
    once (the command did not run); a connection error refreshes the table, and the
    commands are sent once more only if the connection could not be made (nothing was
    sent) and the refreshed table names another node. A connection error after the send
    is raised: the server may have run the commands, which are never sent twice.
    """
    if isinstance(client, RedisCluster):
        return _send_on_cluster(client, key, commands, read_timeout)
    pool = client.connection_pool
    return _exchange(pool, _connected(pool), commands, read_timeout)


def _connected(pool: Any) -> Any:
    """A connection of ``pool``, connected: an error here means nothing was sent."""
    conn: Any = pool.get_connection()
    try:
        conn.connect()  # a no-op when connected (the pool may hand out one that is not)
    except BaseException:
        conn.disconnect()
        pool.release(conn)
        raise
    return conn


def _exchange(
    pool: Any, conn: Any, commands: Sequence[tuple[Any, ...]], read_timeout: Any
) -> list[Any]:
    """Send ``commands`` on ``conn`` in one packed write, read every reply (error replies
    in place), and give the connection back to ``pool``."""
    try:
        conn.send_packed_command(conn.pack_commands(commands))
        replies: list[Any] = []
        for i in range(len(commands)):
            try:
                if i == len(commands) - 1 and read_timeout is not _DEFAULT_TIMEOUT:
                    replies.append(conn.read_response(timeout=read_timeout))
                else:
                    replies.append(conn.read_response())
            except redis.ResponseError as exc:  # an error reply: returned in its place
                replies.append(exc)
        return replies
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _refresh_slots(client: Any) -> None:
    """Ask the Cluster for its slot table again (after a connection error or CLUSTERDOWN:
    a failover may have promoted a replica). A refresh that fails is logged; the caller's
    own error says what happened."""
    try:
        client.nodes_manager.initialize()
    except (RedisClusterException, redis.RedisError, OSError) as exc:
        log.info("could not refresh the Redis Cluster's slot table: %s", exc)


def _send_on_cluster(
    client: Any, key: str, commands: Sequence[tuple[Any, ...]], read_timeout: Any
) -> list[Any]:
    """:func:`send_on_one_connection` on a Cluster: the node serving ``key`` by the cluster
    client's slot table, and one more try when the first one certainly did not run there.

    * ``MOVED`` to the first command (the slot has a new owner: a failover, resharding):
      the command did not run. The slot table is corrected from the reply, as redis-py's
      cluster client does, and the commands are sent once more, to the new owner.
    * ``ASK`` (the slot is migrating and the key is on the target): the commands are sent
      once more to the target, after ``ASKING``, in the same round trip; the table is
      left alone (ASK is a one-time redirection).
    * a connection error: the table is refreshed (``CLUSTER SLOTS``), so that the next
      call reaches a promoted replica. The commands are sent again, once, only when the
      connection could not be made (nothing was sent) and the refreshed table names
      another node for the slot. After the send the server may have run them, and a
      write is never sent twice: the error is raised.
    * ``CLUSTERDOWN``: the table is refreshed; the reply is returned for the caller to
      raise.

    A second redirection is returned as a ``ClusterError`` in its place (the slot is moving
    under us: the caller's translation makes it ``Unavailable``).
    """
    from redis.cluster import ClusterNode

    make_node: Any = ClusterNode  # untyped in redis-py
    asking: Any = None
    for attempt in (0, 1):
        node = asking if asking is not None else client.get_node_from_key(key)
        pool = client.get_redis_connection(node).connection_pool
        batch = [("ASKING",), *commands] if asking is not None else list(commands)
        try:
            conn = _connected(pool)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Nothing was sent: one more try cannot run anything twice. It is worth it
            # only when the refreshed table names another node (a promoted replica).
            _refresh_slots(client)
            if attempt or asking is not None or client.get_node_from_key(key).name == node.name:
                raise
            log.info("Redis Cluster node %s: %s; the slot has a new owner", node.name, exc)
            continue
        try:
            replies = _exchange(pool, conn, batch, read_timeout)
        except (redis.ConnectionError, redis.TimeoutError):
            # Sent: the server may have run it, so it is not sent again (a write would be
            # applied twice). The refresh lets the next call reach a promoted replica.
            _refresh_slots(client)
            raise
        if asking is not None:
            replies = replies[1:]  # ASKING's +OK
        first = replies[0] if replies else None
        if isinstance(first, redis.exceptions.AskError):  # MOVED is an AskError too
            if attempt:
                replies[0] = redis.exceptions.ClusterError(
                    f"the slot of {key!r} was redirected twice in a row ({first!r})"
                )
                return replies
            host = first.host or node.host  # an unknown endpoint: the node's own host
            if isinstance(first, redis.exceptions.MovedError):
                first.host = host
                client.nodes_manager.move_slot(first)
                asking = None
            else:
                asking = client.get_node(host, first.port) or make_node(host, first.port)
            continue
        if isinstance(first, redis.exceptions.ClusterDownError):
            _refresh_slots(client)
        return replies
    raise AssertionError("unreachable")  # pragma: no cover


def _send_raw(pool: Any, args: tuple[Any, ...], retry: bool) -> Any:
    for attempt in (0, 1):
        conn: Any = pool.get_connection()
        try:
            conn.send_packed_command(conn.pack_command(*args))
            return conn.read_response()
        except redis.ResponseError:
            raise  # an error reply: the connection is still in step
        except redis.ConnectionError as exc:
            conn.disconnect()
            if attempt or not retry:
                raise
            log.info("retrying %s once after a connection error: %s", args[0], exc)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
    raise AssertionError("unreachable")  # pragma: no cover


class Binding:
    """Where one capability's keys live, and the one path by which it reaches them.

    Built by :func:`bind`. Bound to a manager, it asks the manager for the client on every
    use, so a forked child gets its own connections; bound to a bare client, it uses that
    client and keys without the app's prefix.
    """

    __slots__ = ("_client", "keyspace", "manager", "name")

    def __init__(
        self,
        keyspace: KeySpace,
        *,
        manager: RedisManager | None = None,
        client: Any = None,
        name: str = "default",
    ) -> None:
        #: The capability's keys.
        self.keyspace = keyspace
        #: The manager, when bound to one.
        self.manager = manager
        #: The database name asked of the manager (and named by
        #: :class:`~pyramid_transient.exceptions.Unavailable`).
        self.name = name
        self._client = client

    @property
    def client(self) -> Any:
        """The ``redis.Redis`` (or ``RedisCluster``) to talk to."""
        if self.manager is not None:
            with Translating(self.name, None):  # a Cluster client connects as it is built
                return self.manager.get(self.name)
        return self._client

    def errors(
        self,
        key: str | None = None,
        *,
        script_errors: Mapping[str, Callable[[], BaseException]] | None = None,
    ) -> Translating:
        """A context manager that turns redis-py's errors into the library's (see
        :func:`translate`); ``key`` names the key in
        :class:`~pyramid_transient.exceptions.CorruptData`.
        ``script_errors`` maps a capability's own script error codes (``error_reply``
        texts such as ``"LOCKLOST"``) to the exception the caller gets instead."""
        return Translating(self.name, key, script_errors)

    def run(
        self,
        scripts: ScriptSet,
        name: str,
        keys: Sequence[Any],
        args: Sequence[Any],
        *,
        client: Any = None,
    ) -> Any:
        """Run script ``name`` of ``scripts`` (one round trip: ``EVALSHA``, and the script
        is sent whole with ``EVAL`` only if the server answers ``NOSCRIPT``, which means it
        did not run; on a Cluster only the node of its keys is involved, see
        :mod:`~pyramid_transient.lua`). Errors are translated; the script's own errors
        (``redis.call`` failures, ``error_reply``) leave as redis-py's ``ResponseError``
        for the capability to read."""
        with Translating(self.name, keys[0] if len(keys) == 1 else None):
            target = self.client if client is None else client
            return scripts.on(target)[name](keys=keys, args=args, client=target)

    def call(self, key: str, *args: Any, idempotent: bool = False, client: Any = None) -> Any:
        """Send one command about ``key`` (one round trip), errors translated; the reply is
        raw (bytes, ints, ``None``), as the server gave it.

        The hot path of capabilities that send one command at a time (sessions): on a
        single server or Sentinel it goes straight to a pooled connection, without the
        client's per-command machinery; on a Cluster it goes through the cluster client
        (which follows MOVED and ASK). ``idempotent`` allows the one retry after a
        connection error that the manager allows idempotent commands
        (``transient.retry_idempotent``).
        """
        target = self.client if client is None else client
        with Translating(self.name, key):
            pool = getattr(target, "connection_pool", None)
            # (A Cluster client has no pool of its own but a nodes manager; looking for the
            # attribute is cheaper than isinstance() against RedisCluster's metaclass.)
            if pool is None or getattr(target, "nodes_manager", None) is not None:
                return target.execute_command(*args, **{NEVER_DECODE: True})
            retry = idempotent and getattr(target, "retry_idempotent", False)
            return _send_raw(pool, args, retry)

    def execute(self, pipe: Any, *, raise_on_error: bool = True) -> list[Any]:
        """Send a pipeline built on :attr:`client` (one round trip), errors translated."""
        with Translating(self.name, None):
            return list(pipe.execute(raise_on_error=raise_on_error))

    def __repr__(self) -> str:
        where = repr(self.manager) if self.manager is not None else repr(self._client)
        return f"<Binding {self.keyspace.base!r} on {where}>"


def bind(target: Any, capability: str, name: str | None = None) -> Binding:
    """Resolve what a user handed a capability into a :class:`Binding`.

    ``target`` may be ``None`` (the running app's manager, found now through Pyramid's
    current registry: call this at first use, not at import time), a
    :class:`~pyramid_transient.connection.RedisManager`, a Pyramid registry or request
    (their app's manager), an existing :class:`Binding` (returned as it is), or a bare
    ``redis.Redis`` / ``RedisCluster`` (keys without the app's prefix:
    ``{capability}:...``). ``name`` is the named database, by default the capability's.
    """
    from .connection import RedisManager, current_manager, get_manager

    if isinstance(target, Binding):
        return target
    name = name or capability
    if target is None:
        target = current_manager()
    elif not isinstance(target, RedisManager) and (
        hasattr(target, "queryUtility") or hasattr(target, "registry")
    ):
        target = get_manager(target)
    if isinstance(target, RedisManager):
        return Binding(target.keyspace(capability, name), manager=target, name=name)
    if not hasattr(target, "execute_command"):
        from .exceptions import ConfigurationError

        raise ConfigurationError(
            f"{capability} needs a RedisManager, a Pyramid request or registry, or a "
            f"redis.Redis / RedisCluster client, not {target!r}"
        )
    return Binding(KeySpace("", capability), client=target, name=name)
