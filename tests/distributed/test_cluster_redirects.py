"""Cluster topology changes under our own write paths: failovers, redirections, a shard down.

The destructive tests (a graceful ``CLUSTER FAILOVER``, a killed primary, a whole shard
stopped) run on a Cluster of this module's own, with one replica per master, started once
for the module: the session-wide Cluster (masters only) is never damaged. Every test
leaves this Cluster with three masters, each with a connected replica.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pyramid_transient import RedisManager
from pyramid_transient.binding import bind
from pyramid_transient.exceptions import UnknownDatabase
from pyramid_transient.lua import ScriptSet, load
from pyramid_transient.safe import get_safe
from pyramid_transient.testing import RedisClusterGroup, RedisServer, test_settings
from pyramid_transient.testing._groups import ask, info_fields, wait_until

pytestmark = pytest.mark.cluster

TIMEOUT = 20.0


class ReplicatedCluster(RedisClusterGroup):
    """Three masters with one replica each; a shard that is down leaves the others
    serving (``cluster-require-full-coverage no``); a node timeout of one second, so a
    killed master is replaced within a few seconds."""

    def __init__(self, executable: str | None = None) -> None:
        super().__init__(3, node_timeout_ms=1000, executable=executable)
        self.replicas: list[RedisServer] = []

    @property
    def every_server(self) -> list[RedisServer]:
        return [*self.servers, *self.replicas]

    def start(self, timeout: float = 30.0) -> ReplicatedCluster:
        super().start(timeout)
        try:
            for server in self.servers:
                ask(server.port, "CONFIG", "SET", "repl-diskless-sync-delay", "0")
            first = self.servers[0].port
            for index, master in enumerate(list(self.servers)):
                replica = self._start_node(self.masters + index)
                self.replicas.append(replica)
                meet: list[Any] = ["CLUSTER", "MEET", "127.0.0.1", first]
                if self.binary.at_least(7):
                    meet.append(self._bus_ports[first])
                ask(replica.port, *meet)
                master_id = ask(master.port, "CLUSTER", "MYID")
                wait_until(
                    f"node {replica.port} knowing {master.port}",
                    lambda r=replica, m=master_id: m in ask(r.port, "CLUSTER", "NODES"),
                    timeout,
                )
                ask(replica.port, "CLUSTER", "REPLICATE", master_id)
            for server in self.every_server:
                ask(server.port, "CONFIG", "SET", "cluster-require-full-coverage", "no")
            self.wait_healthy(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    # -------------------------------------------------------------- what the servers say

    def running(self) -> list[RedisServer]:
        return [s for s in self.every_server if s.process is not None]

    def owner(self, key: str, port: int | None = None) -> RedisServer:
        """The server that serves ``key``'s slot, as the node on ``port`` (by default the
        first running one) sees it."""
        if port is None:
            port = self.running()[0].port
        slot = int(ask(port, "CLUSTER", "KEYSLOT", key))
        for first, last, master, *_ in ask(port, "CLUSTER", "SLOTS"):
            if int(first) <= slot <= int(last):
                return self.by_port(int(master[1]))
        raise AssertionError(f"no node serves slot {slot}")

    def by_port(self, port: int) -> RedisServer:
        return next(s for s in self.every_server if s.port == port)

    def replica_of(self, master: RedisServer) -> RedisServer:
        for server in self.running():
            role = ask(server.port, "ROLE")
            if role[0] == "slave" and int(role[2]) == master.port:
                return server
        raise AssertionError(f"{master.port} has no replica")

    def _healthy(self) -> bool:
        running = self.running()
        if len(running) != 2 * self.masters:
            return False
        masters = 0
        for server in running:
            info = info_fields(ask(server.port, "CLUSTER", "INFO"))
            if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != str(
                2 * self.masters
            ):
                return False
            if any(" fail" in line for line in ask(server.port, "CLUSTER", "NODES").split("\n")):
                return False
            replication = ask(server.port, "INFO", "replication")
            if replication["role"] == "master":
                masters += 1
                if int(replication["connected_slaves"]) != 1:
                    return False
                if "online" not in str(replication.get("slave0", "")):
                    return False
        return masters == self.masters

    def wait_healthy(self, timeout: float = TIMEOUT) -> None:
        """Every node running and agreeing: three masters, each with an online replica."""
        wait_until("a healthy replicated Cluster", self._healthy, timeout)

    def wait_owner(self, key: str, server: RedisServer, timeout: float = TIMEOUT) -> None:
        """Wait until every running node says that ``server`` is a master serving ``key``."""

        def serves() -> bool:
            if ask(server.port, "ROLE")[0] != "master":
                return False
            for other in self.running():
                info = info_fields(ask(other.port, "CLUSTER", "INFO"))
                if info.get("cluster_state") != "ok" or self.owner(key, other.port) is not server:
                    return False
            return True

        wait_until(f"{server.port} serving {key!r}", serves, timeout)

    def flushall(self) -> None:
        for server in self.running():
            if ask(server.port, "ROLE")[0] == "master":
                ask(server.port, "FLUSHALL")

    def stop(self) -> None:
        for server in self.replicas:
            server.stop()
        super().stop()

    def cleanup(self) -> None:
        super().cleanup()
        self.replicas = []


@pytest.fixture(scope="module")
def replicated() -> Iterator[ReplicatedCluster]:
    with ReplicatedCluster() as started:
        yield started


@pytest.fixture
def cluster(replicated: ReplicatedCluster) -> ReplicatedCluster:
    replicated.wait_healthy()  # whatever a test did, the next starts from a whole Cluster
    replicated.flushall()
    return replicated


@pytest.fixture
def manager(cluster: ReplicatedCluster) -> Iterator[RedisManager]:
    built = RedisManager.from_settings(
        cluster.settings(key_prefix="tredirect", **{"transient.socket_timeout": "1"})
    )
    yield built
    built.close()


# ---------------------------------------------------------------------- item 4: scripts


ECHO = ScriptSet(echo="return redis.call('SET', KEYS[1], ARGV[1])")


def _keys_on(cluster: ReplicatedCluster, server: RedisServer, n: int) -> list[str]:
    keys = (f"tredirect:healthy:{i}" for i in range(1000))
    return [k for k in keys if cluster.owner(k) is server][:n]


def test_scripts_on_healthy_shards_run_after_script_flush_with_a_shard_down(
    cluster: ReplicatedCluster, manager: RedisManager, round_trips: Any
) -> None:
    client: Any = manager.get("default")
    plain = get_safe("tests.redirect.flush", manager)
    waiting = get_safe("tests.redirect.flush_wait", manager, wait_replicas=1)
    safes = [plain, waiting]
    down = next(
        s
        for s in cluster.servers
        if s.process
        and ask(s.port, "ROLE")[0] == "master"
        and all(cluster.owner(safe.key) is not s for safe in safes)
    )
    for safe in safes:
        safe["k"] = 1
    healthy = next(
        s
        for s in cluster.servers
        if s.process and s is not down and ask(s.port, "ROLE")[0] == "master"
    )
    keys = _keys_on(cluster, healthy, 2)
    ECHO.on(client)["echo"](keys=[keys[0]], args=["warm"], client=client)
    down_replica = cluster.replica_of(down)
    down_replica.stop()
    down.stop()
    try:
        for server in cluster.running():
            if ask(server.port, "ROLE")[0] == "master":
                ask(server.port, "SCRIPT", "FLUSH")
        binding = bind(manager, "store")
        with round_trips() as rt:
            ECHO.on(client)["echo"](keys=[keys[0]], args=["a"], client=client)
        # NOSCRIPT, then the script whole (EVAL), on the key's node only: two round trips.
        assert [c.split()[0] for c in rt.commands] == ["EVALSHA", "EVAL"]
        with round_trips() as rt:
            binding.run(ECHO, "echo", [keys[1]], ["b"])
        assert [c.split()[0] for c in rt.commands] == ["EVALSHA"]  # EVAL cached it there
        assert client.get(keys[0]) == b"a" and client.get(keys[1]) == b"b"
        with round_trips() as rt:
            assert waiting.pop("k") == 1
        assert rt.commands[0].split() == ["EVALSHA", "WAIT"]
        assert rt.commands[1].split() == ["EVAL", "WAIT"] and rt.count == 2
        assert plain.pop("k") == 1
        # What loads a script before a pipeline: on the key's node only, not every primary.
        lonely = ScriptSet(lonely="return 1").on(client)["lonely"]
        with round_trips() as rt:
            load(client, lonely, keys[0])
        assert rt.commands == ["SCRIPT"]  # one round trip, to one node
        assert ask(healthy.port, "SCRIPT", "EXISTS", lonely.sha) == [1]
    finally:
        down.start()
        down_replica.start()
    cluster.wait_healthy()


# ---------------------------------------------------------------------- item 6: names


def test_an_unknown_database_name_fails_on_a_cluster_as_on_a_single_server(
    transient_cluster_manager: RedisManager,
) -> None:
    manager = transient_cluster_manager
    standalone = RedisManager.from_settings(test_settings("redis://127.0.0.1:1"))
    assert manager.names == standalone.names
    for call in (
        lambda m: m.db_number("typo"),
        lambda m: m.get("typo"),
        lambda m: m.url_for("typo"),
    ):
        with pytest.raises(UnknownDatabase) as on_cluster:
            call(manager)
        with pytest.raises(UnknownDatabase) as on_server:
            call(standalone)
        assert str(on_cluster.value) == str(on_server.value)
        assert "no Redis database is named 'typo'" in str(on_cluster.value)
    assert manager.db_number("store") == 0  # a name the capabilities use: still known
