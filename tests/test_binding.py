"""bind(): one way for every capability to turn what it was given into a client and keys."""

from __future__ import annotations

import pytest
import redis
from pyramid.config import Configurator

from pyramid_transient import ConfigurationError, RedisManager
from pyramid_transient.connection import bind
from pyramid_transient.lua import ScriptSet


def test_bind_to_a_manager_uses_its_prefix_and_database(transient_manager: RedisManager) -> None:
    binding = bind(transient_manager, "model", "models")
    prefix = transient_manager.settings.key_prefix
    assert binding.keyspace.key("x") == f"{prefix}:model:x"
    assert binding.client is transient_manager.get("models")


def test_bind_to_a_bare_client_uses_unprefixed_keys(transient_redis: redis.Redis) -> None:
    binding = bind(transient_redis, "safe")
    assert binding.keyspace.key("x") == "safe:x"
    assert binding.client is transient_redis


def test_bind_to_a_registry_uses_its_apps_manager(transient_settings: dict[str, str]) -> None:
    config = Configurator(settings={**transient_settings, "redis.sessions.secret": "s"})
    config.include("pyramid_transient.store")
    binding = bind(config.registry, "store")
    assert binding.manager is not None
    assert binding.manager.settings.key_prefix == transient_settings["transient.key_prefix"]


def test_bind_without_a_running_app_says_what_to_do() -> None:
    # Issue 16: no app at all (a worker, a script) is told to bootstrap or pass a client,
    # not to add config.include (which is the advice for an app running without us).
    with pytest.raises(ConfigurationError, match="no application is running: bootstrap or pass"):
        bind(None, "store")


def test_bind_in_an_app_without_pyramid_transient_says_to_include_it() -> None:
    from pyramid import testing

    testing.setUp()
    try:
        with pytest.raises(ConfigurationError, match=r"config\.include"):
            bind(None, "store")
    finally:
        testing.tearDown()


def test_bind_to_an_unknown_database_name_is_an_error(transient_manager: RedisManager) -> None:
    from pyramid_transient import UnknownDatabase

    with pytest.raises(UnknownDatabase):
        bind(transient_manager, "store", "nope")


def test_script_set_registers_once_per_client(transient_redis: redis.Redis, round_trips) -> None:
    scripts = ScriptSet(echo="return ARGV[1]")
    assert scripts.on(transient_redis) is scripts.on(transient_redis)
    transient_redis.script_flush()
    transient_redis.ping()
    with round_trips() as rt:
        assert scripts.on(transient_redis)["echo"](args=["hi"]) == b"hi"
    # EVALSHA answered NOSCRIPT (it did not run), then the script was sent whole with EVAL,
    # which caches it: one more round trip, not two (SCRIPT LOAD, EVALSHA).
    assert rt.commands == ["EVALSHA", "EVAL"]
    with round_trips() as rt:
        scripts.on(transient_redis)["echo"](args=["hi"])
    assert rt.commands == ["EVALSHA"]
