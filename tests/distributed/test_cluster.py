"""The manager on a real Redis Cluster (three masters started for the run)."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster

from pyramid_transient import RedisManager
from pyramid_transient.testing import RedisClusterGroup

pytestmark = pytest.mark.cluster


def test_manager_reads_and_writes_through_the_cluster(
    transient_cluster_manager: RedisManager,
) -> None:
    client = transient_cluster_manager.get("default")
    keys = [f"k{i}" for i in range(30)]  # spread over the slots of all three masters
    for i, key in enumerate(keys):
        client.set(key, i)
    assert [client.get(key) for key in keys] == [str(i).encode() for i in range(30)]
    owners = {client.keyslot(key) // 5462 for key in keys}
    assert owners == {0, 1, 2}


def test_every_name_gets_the_one_cluster_client(transient_cluster_manager: RedisManager) -> None:
    manager = transient_cluster_manager
    client = manager.get("default")
    assert isinstance(client, RedisCluster)
    assert manager.get("sessions") is client
    assert manager.get("celery") is client
    assert manager.db_number("celery") == 0


def test_fixture_settings_name_the_cluster_nodes(
    transient_cluster: RedisClusterGroup, transient_cluster_settings: dict[str, str]
) -> None:
    assert "transient.url" not in transient_cluster_settings
    listed = transient_cluster_settings["transient.cluster.nodes"].split()
    assert listed == [f"127.0.0.1:{port}" for _, port in transient_cluster.nodes]
    for _, port in transient_cluster.nodes:
        with redis.Redis(port=port, decode_responses=True) as node:
            assert node.cluster("info")["cluster_state"] == "ok"
