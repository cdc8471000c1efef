"""The connection manager against a real server."""

from __future__ import annotations

import pytest
import redis

from pyramid_transient import RedisManager, UnknownDatabase


def test_named_databases_are_isolated(transient_manager: RedisManager) -> None:
    transient_manager.get("sessions").set("k", "in-sessions")
    transient_manager.get("celery").set("k", "in-celery")
    assert transient_manager.get("sessions").get("k") == b"in-sessions"
    assert transient_manager.get("celery").get("k") == b"in-celery"
    assert transient_manager.db_number("sessions") == 14
    assert transient_manager.db_number("celery") == 15


def test_unknown_name_lists_configured_names(transient_manager: RedisManager) -> None:
    with pytest.raises(UnknownDatabase) as info:
        transient_manager.get("nope")
    assert "'celery'" in str(info.value) and "'sessions'" in str(info.value)
    assert info.value.name == "nope"


def test_round_trip_counter_counts_one_per_command_and_pipeline(
    transient_redis: redis.Redis, round_trips
) -> None:
    transient_redis.ping()  # connect outside the count
    with round_trips() as rt:
        transient_redis.set("a", 1)
        with transient_redis.pipeline() as pipe:
            pipe.get("a").get("b").execute()
    assert rt.count == 2
    assert rt.commands == ["SET", "MULTI GET GET EXEC"]
