"""The manager on a real Redis Cluster (three masters started for the run)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.exceptions import RedisClusterException

from pyramid_transient import ConfigurationError, RedisManager
from pyramid_transient.connection import TransientRedisCluster
from pyramid_transient.testing import RedisClusterGroup

pytestmark = pytest.mark.cluster

# KEYS[1], KEYS[2]: two counters; ARGV[1]: the amount moved from the first to the second.
MOVE_SCRIPT = """
redis.call('DECRBY', KEYS[1], ARGV[1])
redis.call('INCRBY', KEYS[2], ARGV[1])
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""


@pytest.fixture
def cluster(transient_cluster_manager: RedisManager) -> Any:
    """The manager's cluster client (typed ``Any``: redis-py's cluster API is untyped)."""
    return transient_cluster_manager.get("default")


@pytest.fixture
def node_client(transient_cluster: RedisClusterGroup) -> Iterator[Any]:
    """Plain clients on single nodes, by port, closed after the test."""
    opened: list[redis.Redis] = []

    def open_node(port: int) -> redis.Redis:
        client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
        opened.append(client)
        return client

    yield open_node
    for client in opened:
        client.close()


def test_manager_reads_and_writes_through_the_cluster(
    transient_cluster: RedisClusterGroup, cluster: Any, node_client: Any
) -> None:
    keys = [f"k{i}" for i in range(30)]
    for i, key in enumerate(keys):
        cluster.set(key, i)
    assert [cluster.get(key) for key in keys] == [str(i).encode() for i in range(30)]
    # The keys really are spread over every master, each holding its own share.
    owners = {cluster.get_node_from_key(key).port for key in keys}
    assert owners == {port for _, port in transient_cluster.nodes}
    sizes = [node_client(port).dbsize() for _, port in transient_cluster.nodes]
    assert all(size > 0 for size in sizes) and sum(sizes) == 30


def test_every_name_gets_the_one_cluster_client(transient_cluster_manager: RedisManager) -> None:
    manager = transient_cluster_manager
    client = manager.get("default")
    assert isinstance(client, TransientRedisCluster)
    assert manager.get("sessions") is client
    assert manager.get("celery") is client
    assert manager.get("store") is client  # a known name that falls back to default
    assert manager.db_number("celery") == 0


def test_names_become_key_namespaces(transient_cluster_manager: RedisManager) -> None:
    manager = transient_cluster_manager
    sessions = manager.keyspace("store", "sessions")
    celery = manager.keyspace("store", "celery")
    assert sessions.key("x") == "tcluster:sessions:store:x"
    assert celery.key("x") == "tcluster:celery:store:x"
    assert manager.keyspace("store").key("x") == "tcluster:default:store:x"
    manager.get("sessions").set(sessions.key("x"), "in-sessions")
    manager.get("celery").set(celery.key("x"), "in-celery")
    assert manager.get("sessions").get(sessions.key("x")) == b"in-sessions"
    assert manager.get("celery").get(celery.key("x")) == b"in-celery"


def test_lua_over_keys_with_one_tag_runs_on_the_cluster(
    transient_cluster_manager: RedisManager, cluster: Any
) -> None:
    ks = transient_cluster_manager.keyspace("store", "sessions")
    source, target = ks.tagged("account:7", "balance"), ks.tagged("account:7", "savings")
    assert cluster.keyslot(source) == cluster.keyslot(target)
    cluster.set(source, 100)
    move = cluster.register_script(MOVE_SCRIPT)
    assert move(keys=[source, target], args=[30]) == [b"70", b"30"]
    # Without the shared tag the same script is refused, so the tag is what makes it legal.
    spread = [ks.key("balance"), ks.key("savings-elsewhere")]
    assert cluster.keyslot(spread[0]) != cluster.keyslot(spread[1])
    with pytest.raises((redis.ResponseError, RedisClusterException)):
        move(keys=spread, args=[1])


def test_moved_redirection_still_followed(cluster: Any) -> None:
    """With retries off, a stale slot table is still corrected by following MOVED."""
    cluster.set("moving", "v")
    slot = cluster.keyslot("moving")
    owner = cluster.get_node_from_key("moving")
    other = next(n for n in cluster.get_primaries() if n.name != owner.name)
    cluster.nodes_manager.slots_cache[slot] = [other]  # the client now asks the wrong node
    assert cluster.get("moving") == b"v"
    assert cluster.get_node_from_key("moving").name == owner.name


def test_ask_redirection_still_followed(
    transient_cluster: RedisClusterGroup, cluster: Any, node_client: Any
) -> None:
    """A slot in migration: a key that is not on the source yet goes to the target (ASK)."""
    key = "migrating-key"
    slot = cluster.keyslot(key)
    source = cluster.get_node_from_key(key)
    target = next(n for n in cluster.get_primaries() if n.name != source.name)
    src, dst = node_client(source.port), node_client(target.port)
    src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
    dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
    src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
    try:
        cluster.set(key, "on-target")
        assert cluster.get(key) == b"on-target"
        assert src.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 0
        assert dst.execute_command("CLUSTER COUNTKEYSINSLOT", slot) == 1
    finally:
        # Put things back: remove the key from the target, end the migration.
        pipe = dst.pipeline(transaction=False)
        pipe.execute_command("ASKING")
        pipe.delete(key)
        pipe.execute()
        for node in (src, dst):
            node.execute_command("CLUSTER SETSLOT", slot, "STABLE")
    assert cluster.get(key) is None


def test_url_for_on_a_cluster_names_the_setting_instead(
    transient_cluster_manager: RedisManager,
) -> None:
    with pytest.raises(ConfigurationError) as info:
        transient_cluster_manager.url_for("celery")
    assert "transient.cluster.nodes" in str(info.value)


def test_fixture_settings_name_the_cluster_nodes(
    transient_cluster: RedisClusterGroup,
    transient_cluster_settings: dict[str, str],
    node_client: Any,
) -> None:
    assert "transient.url" not in transient_cluster_settings
    listed = transient_cluster_settings["transient.cluster.nodes"].split()
    assert listed == [f"127.0.0.1:{port}" for _, port in transient_cluster.nodes]
    assert len(listed) == 3
    for _, port in transient_cluster.nodes:
        assert node_client(port).cluster("info")["cluster_state"] == "ok"


def test_ptransient_backs_up_and_restores_a_cluster(
    transient_cluster_manager: RedisManager,
    transient_cluster_settings: dict[str, Any],
    tmp_path: Any,
) -> None:
    import io

    from pyramid_transient import encode
    from pyramid_transient.scripts.ptransient import main

    manager = transient_cluster_manager
    client = manager.get("default")
    keys = [manager.keyspace("store").key(f"k{i}") for i in range(40)]
    for i, key in enumerate(keys):  # spread over every master
        client.set(key, encode(i), ex=600 if i % 2 else None)
    ini = tmp_path / "cluster.ini"
    lines = ["[app:main]", "use = egg:pyramid-transient#demo"]
    lines += [f"{k} = {v}" for k, v in transient_cluster_settings.items()]
    ini.write_text("\n".join(lines) + "\n")
    backup = tmp_path / "cluster.jsonl"

    out = io.StringIO()
    assert main([str(ini), "backup", "--db", "default", str(backup)], out=out) == 0, out.getvalue()
    assert "backed up 40 keys" in out.getvalue()
    for key in keys:
        client.delete(key)
    out = io.StringIO()
    assert main([str(ini), "restore", str(backup)], out=out) == 0, out.getvalue()
    assert out.getvalue() == "restored 40 keys\n"  # no reason to report
    assert [client.get(key) for key in keys] == [encode(i) for i in range(40)]
    assert client.ttl(keys[1]) > 0 and client.ttl(keys[0]) == -1
