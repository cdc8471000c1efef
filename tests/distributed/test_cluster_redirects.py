"""Cluster topology changes under our own write paths: failovers, redirections, a shard down.

And what does not change on a Cluster: an unknown database name is an error there too.
"""

from __future__ import annotations

import pytest

from pyramid_transient import RedisManager
from pyramid_transient.exceptions import UnknownDatabase
from pyramid_transient.testing import test_settings

pytestmark = pytest.mark.cluster


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
