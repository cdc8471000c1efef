"""Failure behaviour: fail fast, never re-send a command whose reply was lost.

Faults on a single server go through :class:`FaultProxy`, a loopback TCP proxy in front of a
real ``redis-server`` that a test switches to refuse, black-hole or lose replies. On Cluster
and Sentinel the servers tell the client their real addresses, which a proxy cannot stand
in for, so a lost reply is injected in the client's connection instead (:class:`LoseReplies`):
the command reaches the real server and runs there, then its reply is thrown away and the
connection closed, exactly what the client sees when the network drops the reply.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.connection import AbstractConnection

from faultproxy import FaultProxy
from pyramid_transient import RedisManager
from pyramid_transient.testing import (
    RedisClusterGroup,
    RedisServer,
    SentinelGroup,
    free_port,
    test_settings,
)

TIMEOUT = 0.2
#: A failure "within the configured timeout": the timeout, plus generous room for a loaded
#: machine, but far below what redis-py's defaults take (5 s timeouts, ten retries).
FAST = 0.8
FAST_SETTINGS = {
    "transient.socket_timeout": str(TIMEOUT),
    "transient.socket_connect_timeout": str(TIMEOUT),
}


class LoseReplies:
    """Lose the replies to the next sends of a command by any connection of this process.

    The reply is read from the server first (so the command certainly ran), then the
    connection is closed and ``ConnectionError`` raised, as when the network drops a reply.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.command = ""
        self.remaining = 0
        self.lost = 0
        self._last: weakref.WeakKeyDictionary[AbstractConnection, str] = (
            weakref.WeakKeyDictionary()
        )
        send_original = AbstractConnection.send_command
        read_original = AbstractConnection.read_response
        lose = self

        def send_command(conn: AbstractConnection, *args: Any, **kwargs: Any) -> None:
            lose._last[conn] = str(args[0]).upper()
            send_original(conn, *args, **kwargs)

        def read_response(conn: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
            response = read_original(conn, *args, **kwargs)
            if lose.remaining > 0 and lose._last.get(conn) == lose.command:
                lose.remaining -= 1
                lose.lost += 1
                conn.disconnect()
                raise redis.ConnectionError("reply lost (injected by the test)")
            return response

        monkeypatch.setattr(AbstractConnection, "send_command", send_command)
        monkeypatch.setattr(AbstractConnection, "read_response", read_response)

    def arm(self, command: str, times: int = 1) -> None:
        """Lose the replies to the next ``times`` sends of ``command``."""
        self.command = command.upper()
        self.remaining = times


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A server of this module's own, so proxies and faults touch nothing else."""
    with RedisServer() as started:
        yield started


@pytest.fixture
def proxy(server: RedisServer) -> Iterator[FaultProxy]:
    started = FaultProxy(server.port)
    yield started
    started.stop()


@pytest.fixture
def direct(server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client on db 13 (``default`` of the test settings), bypassing the proxy."""
    client = redis.Redis(host="127.0.0.1", port=server.port, db=13)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def manager(proxy: FaultProxy) -> Iterator[RedisManager]:
    built = RedisManager.from_settings(
        test_settings(f"redis://127.0.0.1:{proxy.port}", **FAST_SETTINGS)
    )
    yield built
    built.close()


@pytest.fixture
def lose_replies(monkeypatch: pytest.MonkeyPatch) -> LoseReplies:
    return LoseReplies(monkeypatch)


def _elapsed(call: Callable[[], object], expected: type[Exception]) -> float:
    start = time.monotonic()
    with pytest.raises(expected):
        call()
    return time.monotonic() - start


# ---------------------------------------------------------------------- refused, black hole


def test_refused_connection_fails_fast() -> None:
    manager = RedisManager.from_settings(
        test_settings(f"redis://127.0.0.1:{free_port()}", **FAST_SETTINGS)
    )
    try:
        client = manager.get("default")
        assert _elapsed(lambda: client.get("k"), redis.ConnectionError) < FAST
        assert _elapsed(lambda: client.incr("k"), redis.ConnectionError) < FAST
    finally:
        manager.close()


def test_blackholed_server_fails_within_the_connect_handshake_timeout(
    proxy: FaultProxy, manager: RedisManager
) -> None:
    proxy.blackhole = True
    elapsed = _elapsed(lambda: manager.get("default").get("k"), redis.TimeoutError)
    # It waited for the timeout (the TCP connect itself succeeded), and only once.
    assert TIMEOUT * 0.9 <= elapsed < FAST
    assert proxy.accepted == 1


def test_blackholed_established_connection_fails_within_the_socket_timeout(
    proxy: FaultProxy, manager: RedisManager
) -> None:
    client = manager.get("default")
    assert client.ping()
    proxy.blackhole = True
    elapsed = _elapsed(lambda: client.get("k"), redis.TimeoutError)
    assert TIMEOUT * 0.9 <= elapsed < FAST
    # A timeout is not retried: the command may have run, and waiting twice doubles latency.
    assert proxy.count(b"GET") == 1


def test_default_timeouts_fail_within_a_second(proxy: FaultProxy) -> None:
    """The defaults are the fast ones: an unconfigured manager fails well under a second."""
    proxy.blackhole = True
    manager = RedisManager.from_settings({"transient.url": f"redis://127.0.0.1:{proxy.port}"})
    try:
        elapsed = _elapsed(lambda: manager.get().get("k"), redis.TimeoutError)
    finally:
        manager.close()
    assert elapsed < 1.0


# ---------------------------------------------------------------------- lost replies


def test_lost_reply_to_incr_is_not_resent(
    proxy: FaultProxy, manager: RedisManager, direct: redis.Redis
) -> None:
    client = manager.get("default")
    assert client.ping()
    proxy.lose_replies(b"INCRBY")  # redis-py sends incr() as INCRBY
    with pytest.raises(redis.ConnectionError):
        client.incr("counter")
    assert direct.get("counter") == b"1"  # applied exactly once
    assert proxy.count(b"INCRBY") == 1  # and sent exactly once
    assert client.get("counter") == b"1"  # the client works again afterwards


def test_redis_py_defaults_would_apply_a_lost_incr_twice(
    proxy: FaultProxy, direct: redis.Redis
) -> None:
    """Why we change redis-py's retry: its defaults re-send the INCR (this test's witness).

    redis-py 6.0 made three retries the default; 5.x did not retry, and shows the error."""
    with redis.Redis(host="127.0.0.1", port=proxy.port, db=13) as plain:
        assert plain.ping()
        proxy.lose_replies(b"INCRBY")
        if int(redis.__version__.split(".")[0]) < 6:
            with pytest.raises(redis.ConnectionError):
                plain.incr("counter")
            assert direct.get("counter") == b"1"
            return
        assert plain.incr("counter") == 2
    assert direct.get("counter") == b"2"


def test_idempotent_get_is_retried_once_after_a_dropped_connection(
    proxy: FaultProxy, manager: RedisManager, direct: redis.Redis
) -> None:
    direct.set("k", "v")
    client = manager.get("default")
    assert client.ping()
    proxy.lose_replies(b"GET")
    assert client.get("k") == b"v"
    assert proxy.count(b"GET") == 2
    assert proxy.accepted == 2


def test_idempotent_get_is_retried_only_once(
    proxy: FaultProxy, manager: RedisManager, direct: redis.Redis
) -> None:
    direct.set("k", "v")
    client = manager.get("default")
    assert client.ping()
    proxy.lose_replies(b"GET", 2)
    with pytest.raises(redis.ConnectionError):
        client.get("k")
    assert proxy.count(b"GET") == 2


def test_set_with_nx_is_not_retried(
    proxy: FaultProxy, manager: RedisManager, direct: redis.Redis
) -> None:
    client = manager.get("default")
    assert client.ping()
    proxy.lose_replies(b"SET")
    with pytest.raises(redis.ConnectionError):
        client.set("lock", "me", nx=True)
    assert proxy.count(b"SET") == 1
    assert direct.get("lock") == b"me"


def test_retry_idempotent_false_retries_nothing(proxy: FaultProxy, direct: redis.Redis) -> None:
    manager = RedisManager.from_settings(
        test_settings(
            f"redis://127.0.0.1:{proxy.port}",
            **FAST_SETTINGS,
            **{"transient.retry_idempotent": "false"},
        )
    )
    try:
        client = manager.get("default")
        assert client.ping()
        proxy.lose_replies(b"GET")
        with pytest.raises(redis.ConnectionError):
            client.get("k")
        assert proxy.count(b"GET") == 1
    finally:
        manager.close()


# ---------------------------------------------------------------------- Cluster


@pytest.mark.cluster
def test_cluster_lost_reply_to_incr_is_not_resent(
    transient_cluster_manager: RedisManager, lose_replies: LoseReplies
) -> None:
    client = transient_cluster_manager.get("default")
    assert client.get("counter") is None  # connects to the key's node outside the fault
    lose_replies.arm("INCRBY")
    with pytest.raises(redis.ConnectionError):
        client.incr("counter")
    assert lose_replies.lost == 1
    assert client.get("counter") == b"1"


@pytest.mark.cluster
def test_cluster_idempotent_get_is_retried_once(
    transient_cluster_manager: RedisManager, lose_replies: LoseReplies
) -> None:
    client = transient_cluster_manager.get("default")
    client.set("k", "v")
    lose_replies.arm("GET")
    assert client.get("k") == b"v"
    lose_replies.arm("GET", 2)
    with pytest.raises(redis.ConnectionError):
        client.get("k")
    assert lose_replies.lost == 3


@pytest.mark.cluster
def test_cluster_blackholed_node_fails_within_the_socket_timeout(
    transient_cluster: RedisClusterGroup,
) -> None:
    """A node that hangs fails the command within the timeout, not after ten retries."""
    host, port = transient_cluster.nodes[0]
    hole = FaultProxy(port)
    manager = RedisManager.from_settings(transient_cluster.settings(**FAST_SETTINGS))
    try:
        client: Any = manager.get("default")
        node = client.get_node(host=host, port=port)
        # Route the client's connections to that node through the proxy.
        pool = node.redis_connection.connection_pool
        pool.connection_kwargs["port"] = hole.port
        pool.disconnect()
        pool.reset()  # forget the connection objects, which keep their own port
        key = next(f"k{i}" for i in range(1000) if client.get_node_from_key(f"k{i}") is node)
        assert client.get(key) is None
        assert hole.accepted == 1
        hole.blackhole = True
        elapsed = _elapsed(lambda: client.incr(key), redis.TimeoutError)
        assert TIMEOUT * 0.9 <= elapsed < FAST
        assert hole.count(b"INCRBY") == 1
    finally:
        manager.close()
        hole.stop()


@pytest.mark.cluster
def test_cluster_unreachable_fails_fast_with_a_connection_error() -> None:
    manager = RedisManager.from_settings(
        {"transient.cluster.nodes": f"127.0.0.1:{free_port()}", **FAST_SETTINGS}
    )
    try:
        assert _elapsed(lambda: manager.get("default"), redis.ConnectionError) < FAST
    finally:
        manager.close()


# ---------------------------------------------------------------------- Sentinel


@pytest.mark.sentinel
def test_sentinel_lost_reply_to_incr_is_not_resent(
    transient_sentinel: SentinelGroup,
    transient_sentinel_manager: RedisManager,
    lose_replies: LoseReplies,
) -> None:
    client = transient_sentinel_manager.get("default")
    assert client.ping()
    lose_replies.arm("INCRBY")
    with pytest.raises(redis.ConnectionError):
        client.incr("counter")
    assert lose_replies.lost == 1
    with redis.Redis(port=transient_sentinel.master_port, db=13) as master:
        assert master.get("counter") == b"1"


@pytest.mark.sentinel
def test_sentinel_idempotent_get_is_retried_once(
    transient_sentinel_manager: RedisManager, lose_replies: LoseReplies
) -> None:
    client = transient_sentinel_manager.get("default")
    client.set("k", "v")
    lose_replies.arm("GET")
    assert client.get("k") == b"v"
    assert lose_replies.lost == 1


@pytest.mark.sentinel
def test_blackholed_sentinel_costs_one_timeout_not_ten(
    transient_sentinel: SentinelGroup, transient_sentinel_settings: dict[str, str]
) -> None:
    hole = FaultProxy(transient_sentinel.sentinel_nodes[0][1])
    hole.blackhole = True
    nodes = " ".join(
        [f"127.0.0.1:{hole.port}", *(f"{h}:{p}" for h, p in transient_sentinel.sentinel_nodes)]
    )
    settings = dict(transient_sentinel_settings, **FAST_SETTINGS)
    settings["transient.sentinel.nodes"] = nodes
    manager = RedisManager.from_settings(settings)
    try:
        start = time.monotonic()
        assert manager.get("default").ping()
        elapsed = time.monotonic() - start
    finally:
        manager.close()
        hole.stop()
    assert TIMEOUT * 0.9 <= elapsed < FAST
    assert hole.accepted == 1


def test_a_deferred_save_whose_reply_is_lost_is_sent_again_and_applied_once(
    proxy: FaultProxy, manager: RedisManager, direct: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    import transaction
    from pyramid import testing as pyramid_testing

    from pyramid_transient.models import RedisModel
    from pyramid_transient.transactions import AfterCommitFailed

    class Task(RedisModel):
        __storage_name__ = "faults_task"
        id: int
        title: str = ""

    Task.objects.bind(manager.get("models"))
    Task(id=1, title="first").save()
    announced: list[AfterCommitFailed] = []
    config = pyramid_testing.setUp()
    try:
        config.add_subscriber(announced.append, AfterCommitFailed)
        with transaction.manager:  # the thread's, which save(on_commit=True) joins
            task = Task.objects.get(1)
            loaded = task._version
            task.title = "second"
            task.save(on_commit=True)
            sent = proxy.count(b"EVALSHA")
            proxy.lose_replies(b"EVALSHA")
    finally:
        pyramid_testing.tearDown()
    # sent once more after the lost reply; the copy is a no-op (the write's identity)
    assert proxy.count(b"EVALSHA") == sent + 2
    port = direct.connection_pool.connection_kwargs["port"]
    Task.objects.bind(redis.Redis(host="127.0.0.1", port=port, db=manager.db_number("models")))
    stored = Task.objects.get(1)
    assert stored.title == "second"
    assert stored._version == task._version == loaded + 1  # applied once, not twice
    assert announced == []
    assert "failed after the transaction committed" not in caplog.text
