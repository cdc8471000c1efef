"""The manager on a real Sentinel group (master, replica, three sentinels)."""

from __future__ import annotations

import pytest
import redis

from pyramid_transient import RedisManager
from pyramid_transient.testing import SentinelGroup

pytestmark = pytest.mark.sentinel


def _direct(port: int, db: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, db=db, socket_timeout=1)


def test_manager_writes_to_the_master(
    transient_sentinel: SentinelGroup, transient_sentinel_manager: RedisManager
) -> None:
    transient_sentinel_manager.get("sessions").set("k", "v")
    assert _direct(transient_sentinel.master_port, 14).get("k") == b"v"
    assert transient_sentinel_manager.get("sessions").get("k") == b"v"
