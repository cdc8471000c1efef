"""The manager on a real Sentinel group (master, replica, three sentinels)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from pyramid_transient import RedisManager
from pyramid_transient.testing import SentinelGroup

pytestmark = pytest.mark.sentinel


@pytest.fixture
def direct() -> Iterator[Any]:
    """Plain clients on one server and db, bypassing Sentinel, closed after the test."""
    opened: list[redis.Redis] = []

    def open_direct(port: int, db: int) -> redis.Redis:
        client = redis.Redis(host="127.0.0.1", port=port, db=db, socket_timeout=1)
        opened.append(client)
        return client

    yield open_direct
    for client in opened:
        client.close()


def _master_port(manager: RedisManager, name: str = "default") -> int:
    """The port of the master the manager's pool for ``name`` asks the sentinels for."""
    host, port = manager.get(name).connection_pool.get_master_address()  # type: ignore[attr-defined]
    assert host == "127.0.0.1"
    return int(port)


def test_manager_writes_to_the_master(
    transient_sentinel: SentinelGroup, transient_sentinel_manager: RedisManager, direct: Any
) -> None:
    transient_sentinel_manager.get("sessions").set("k", "v")
    assert direct(transient_sentinel.master_port, 14).get("k") == b"v"
    assert transient_sentinel_manager.get("sessions").get("k") == b"v"
    assert _master_port(transient_sentinel_manager) == transient_sentinel.master_port


def test_named_databases_are_isolated(
    transient_sentinel: SentinelGroup, transient_sentinel_manager: RedisManager, direct: Any
) -> None:
    manager = transient_sentinel_manager
    manager.get("sessions").set("k", "in-sessions")
    manager.get("celery").set("k", "in-celery")
    assert manager.get("sessions").get("k") == b"in-sessions"
    assert manager.get("celery").get("k") == b"in-celery"
    master = transient_sentinel.master_port
    assert direct(master, 14).get("k") == b"in-sessions"
    assert direct(master, 15).get("k") == b"in-celery"
    assert direct(master, 13).get("k") is None


def test_sentinel_failover_and_the_manager_finds_the_new_master(
    transient_sentinel: SentinelGroup, transient_sentinel_manager: RedisManager, direct: Any
) -> None:
    manager = transient_sentinel_manager
    client = manager.get("sessions")
    client.set("before", "1")
    old = transient_sentinel.master_port
    _, new = transient_sentinel.failover()
    assert new != old
    # Data written before the failover survived it, and a write after it reaches the new
    # master (the demoted one is a read-only replica now, so it could not take it).
    assert client.get("before") == b"1"
    client.set("after", "2")
    assert direct(new, 14).get("after") == b"2"
    assert _master_port(manager, "sessions") == new
    assert direct(old, 14).info("replication")["role"] == "slave"


def test_killed_master_and_the_manager_finds_the_promoted_replica(
    transient_sentinel: SentinelGroup, transient_sentinel_manager: RedisManager, direct: Any
) -> None:
    manager = transient_sentinel_manager
    client = manager.get("celery")
    client.set("before", "1")
    assert transient_sentinel.replica is not None
    replica = transient_sentinel.replica.port
    direct(transient_sentinel.master_port, 15).wait(1, 2000)  # replicated before the crash
    try:
        _, new = transient_sentinel.kill_master()
        assert new == replica
        client.set("after", "2")
        assert client.get("before") == b"1"
        assert direct(new, 15).get("after") == b"2"
        assert _master_port(manager, "celery") == new
    finally:
        transient_sentinel.restore()
    assert transient_sentinel.replica is not None
    assert direct(transient_sentinel.replica.port, 15).info("replication")["role"] == "slave"


def test_url_for_lists_every_sentinel_with_the_database(
    transient_sentinel: SentinelGroup, transient_sentinel_manager: RedisManager
) -> None:
    url = transient_sentinel_manager.url_for("celery")
    parts = [urlsplit(part) for part in url.split(";")]
    assert [p.scheme for p in parts] == ["sentinel"] * 3
    assert [(p.hostname, p.port) for p in parts] == transient_sentinel.sentinel_nodes
    assert {p.path for p in parts} == {"/15"}
    # Each URL leads to the master through the sentinel it names.
    for part in parts:
        with redis.Redis(host=part.hostname, port=part.port) as sentinel:
            # the raw command: redis-py 6's sentinel_get_master_addr_by_name() on a plain
            # client passes its parser an argument it does not take (fixed in 7.0)
            reply = sentinel.execute_command(
                "SENTINEL GET-MASTER-ADDR-BY-NAME", transient_sentinel.service
            )
            _, port = reply
        assert int(port) == transient_sentinel.master_port


def test_url_for_carries_the_masters_password_quoted(transient_sentinel: SentinelGroup) -> None:
    manager = RedisManager.from_settings(
        transient_sentinel.settings(
            **{"transient.password": "p@ss:w/rd", "transient.sentinel.password": "other"}
        )
    )
    url = manager.url_for("default")
    assert url.startswith("sentinel://:p%40ss%3Aw%2Frd@127.0.0.1:")
    assert urlsplit(url.split(";")[0]).password == "p%40ss%3Aw%2Frd"
    assert "other" not in url
    assert "p@ss" not in repr(manager)


def test_the_group_follows_a_failover_the_sentinels_made_on_their_own(
    transient_sentinel: SentinelGroup, transient_sentinel_manager: RedisManager
) -> None:
    # On a loaded machine the sentinels may fail over without being asked (the master
    # missed down-after-milliseconds of pings); the fixtures must act on the real master.
    import time

    group = transient_sentinel
    before = group.master_port
    sentinel = redis.Redis(port=group.sentinel_nodes[0][1], decode_responses=True)
    try:
        sentinel.execute_command("SENTINEL", "FAILOVER", group.service)
        deadline = time.monotonic() + 30
        while {p for _, p in group.reported_masters()} != {group.replica.port}:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the sentinels did not fail over"
            time.sleep(0.05)
    finally:
        sentinel.close()
    group.flushall()  # was a ReadOnlyError on the demoted master
    assert group.master_port != before
    transient_sentinel_manager.get().set("k", b"v")
    assert transient_sentinel_manager.get().get("k") == b"v"


def test_celery_configured_from_the_group_runs_a_task_through_the_sentinels(
    transient_sentinel: SentinelGroup, transient_sentinel_manager: RedisManager
) -> None:
    # Issue 17 item 8: Kombu needs master_name in its transport options on Sentinel;
    # pyramid_transient.celery.configure sets it for the broker and the result backend.
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    from pyramid_transient.celery import configure

    app = Celery("sentinel_test")
    configure(app, transient_sentinel_manager)

    @app.task(name="sentinel_test.add")
    def add(a: int, b: int) -> int:
        return a + b

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        assert add.delay(2, 3).get(timeout=20) == 5
    # the queue lived on the master's celery database
    master = redis.Redis(port=transient_sentinel.master_port, db=15)
    assert master.exists("_kombu.binding.celery")
    master.close()
