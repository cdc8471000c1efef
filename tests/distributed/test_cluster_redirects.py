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
import redis

from pyramid_transient import RedisManager
from pyramid_transient.binding import bind
from pyramid_transient.exceptions import ReplicationTimeout, Unavailable, UnknownDatabase
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


def _failover_to_replica(cluster: ReplicatedCluster, key: str) -> RedisServer:
    """A graceful ``CLUSTER FAILOVER`` of ``key``'s shard; the new master, once its old
    master has become its replica again (so ``WAIT 1`` can succeed)."""
    replica = cluster.replica_of(cluster.owner(key))
    ask(replica.port, "CLUSTER", "FAILOVER")
    cluster.wait_owner(key, replica)
    cluster.wait_healthy()
    return replica


# ---------------------------------------------------------------------- item 2: the safe


def test_safe_writes_with_wait_replicas_follow_a_graceful_failover(
    cluster: ReplicatedCluster, manager: RedisManager, round_trips: Any
) -> None:
    safe = get_safe("tests.redirect.graceful", manager, wait_replicas=1)
    safe["n"] = 0  # bound, scripts loaded, slot table read
    new_master = _failover_to_replica(cluster, safe.key)

    with round_trips() as rt:
        safe["n"] = 1
    # The old master answered MOVED (nothing ran); the table was corrected from the reply
    # and the write sent once more, to the new master: two round trips, no refresh.
    assert rt.commands == ["HSET WAIT", "HSET WAIT"]
    with round_trips() as rt:
        for i in range(2, 21):
            safe["n"] = i
        assert safe.pop("n") == 20
        with safe.atomic() as s:
            s["after"] = "failover"
    # One round trip each, but the first call of each script on the new master: the
    # scripts were loaded on the old one, so NOSCRIPT, then the script whole with its WAIT
    # (EVAL, which caches it there). A blind atomic block reads nothing before its commit.
    assert rt.commands[19:] == ["EVALSHA WAIT", "EVAL WAIT", "EVALSHA WAIT", "EVAL WAIT"]
    assert rt.commands[:19] == ["HSET WAIT"] * 19
    assert safe.snapshot() == {"after": "failover"}
    assert redis.Redis(port=new_master.port).hkeys(safe.key) == [b"after"]


def test_a_safe_script_with_wait_replicas_follows_a_graceful_failover(
    cluster: ReplicatedCluster, manager: RedisManager, round_trips: Any
) -> None:
    safe = get_safe("tests.redirect.script", manager, wait_replicas=1)
    safe.update(a=1, b=2)
    _failover_to_replica(cluster, safe.key)
    with round_trips() as rt:
        assert safe.pop("a") == 1
    assert [c.split()[0] for c in rt.commands] == ["EVALSHA", "EVALSHA", "EVAL"]
    assert safe.snapshot() == {"b": 2}


def test_a_stale_slot_entry_is_corrected_by_the_moved_reply(
    cluster: ReplicatedCluster, manager: RedisManager, round_trips: Any
) -> None:
    safe = get_safe("tests.redirect.stale", manager, wait_replicas=1)
    safe["a"] = 1
    client: Any = manager.get("safe")
    slot = client.keyslot(safe.key)
    owner = client.get_node_from_key(safe.key)
    other = next(n for n in client.get_primaries() if n.name != owner.name)
    client.nodes_manager.slots_cache[slot] = [other]  # as after a resharding
    with round_trips() as rt:
        safe["a"] = 2
        safe["a"] = 3
    assert rt.commands == ["HSET WAIT", "HSET WAIT", "HSET WAIT"]
    assert client.get_node_from_key(safe.key).name == owner.name
    assert safe["a"] == 3


def test_a_safe_write_with_wait_replicas_follows_ask_during_a_migration(
    cluster: ReplicatedCluster, manager: RedisManager, round_trips: Any
) -> None:
    safe = get_safe("tests.redirect.ask", manager, wait_replicas=1)
    assert safe.get("x") is None  # bound, nothing stored: the key is not on the source
    client: Any = manager.get("safe")
    slot = client.keyslot(safe.key)
    source = cluster.owner(safe.key)
    target = next(s for s in cluster.servers if s.process and s is not source)
    if ask(target.port, "ROLE")[0] != "master":
        target = next(
            s for s in cluster.running() if ask(s.port, "ROLE")[0] == "master" and s is not source
        )
    src_id = ask(source.port, "CLUSTER", "MYID")
    dst_id = ask(target.port, "CLUSTER", "MYID")
    ask(target.port, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
    ask(source.port, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
    try:
        with round_trips() as rt:
            safe["x"] = 1
        assert rt.commands == ["HSET WAIT", "ASKING HSET WAIT"]
        assert ask(target.port, "CLUSTER", "COUNTKEYSINSLOT", slot) == 1
        assert ask(source.port, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    finally:
        plain = redis.Redis(port=target.port)
        pipe = plain.pipeline(transaction=False)
        pipe.execute_command("ASKING")
        pipe.delete(safe.key)
        pipe.execute()
        plain.close()
        for server in (source, target):
            ask(server.port, "CLUSTER", "SETSLOT", slot, "STABLE")


def test_a_safe_with_wait_replicas_reaches_the_promoted_replica_of_a_killed_master(
    cluster: ReplicatedCluster, manager: RedisManager, round_trips: Any
) -> None:
    safe = get_safe("tests.redirect.killed", manager, wait_replicas=1, wait_timeout=0.2)
    safe["n"] = 0
    master = cluster.owner(safe.key)
    replica = cluster.replica_of(master)
    master.kill()
    try:
        with pytest.raises(Unavailable):  # the shard has no master yet
            safe["n"] = 1
        cluster.wait_owner(safe.key, replica)
        # The Cluster is whole again: the first write reaches the new master, sent once.
        with round_trips() as rt, pytest.raises(ReplicationTimeout) as info:
            safe["n"] = 2
        # (Its replica is the killed master, down: the write is on the new master and
        # WAIT says so. Run N+1 replicas per shard for wait_replicas = N.)
        assert info.value.acknowledged == 0
        assert [c for c in rt.commands if "HSET" in c] == ["HSET WAIT"]
        assert redis.Redis(port=replica.port).hget(safe.key, "n") == b"2"
    finally:
        master.start()
    cluster.wait_healthy()
    # The old master is back as a replica of the new one (a replica that has just synced
    # may take longer than 0.2 s to acknowledge its first write).
    safe = get_safe("tests.redirect.killed", manager, wait_replicas=1, wait_timeout=5)
    assert safe.key  # bound
    with round_trips() as rt:
        safe["n"] = 3
    assert rt.commands == ["HSET WAIT"]
    assert safe["n"] == 3


def test_a_lost_reply_to_a_waiting_safe_write_is_not_resent(
    cluster: ReplicatedCluster, manager: RedisManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    safe = get_safe("tests.redirect.lost", manager, wait_replicas=1)
    safe["n"] = 0
    from redis.connection import AbstractConnection

    original = AbstractConnection.read_response
    lost: list[int] = []

    def lose_once(conn: AbstractConnection, *args: Any, **kwargs: Any) -> Any:
        response = original(conn, *args, **kwargs)
        if not lost:
            lost.append(1)
            conn.disconnect()
            raise redis.ConnectionError("reply lost (injected by the test)")
        return response

    monkeypatch.setattr(AbstractConnection, "read_response", lose_once)
    with pytest.raises(Unavailable):
        safe.setdefault("once", "x")  # a script that ran: not sent again
    monkeypatch.undo()
    assert safe["once"] == "x"
    assert lost == [1]


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
