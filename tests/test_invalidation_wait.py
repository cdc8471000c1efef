"""``transient.cache.wait_replicas``: invalidations that wait for replicas (issue 17, item 1).

The failover itself is in ``tests/distributed/test_cache_failover.py``; here a master and
one replica on loopback, and the shared server (which has no replica).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from pyramid.config import Configurator
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert
from sqlalchemy.orm import Session

from pyramid_transient.cache import CacheKeyGenerator
from pyramid_transient.connection import RedisManager
from pyramid_transient.exceptions import ConfigurationError, ReplicationTimeout, Unavailable
from pyramid_transient.invalidation import (
    Identity,
    _backlog,
    pending_invalidations,
    register,
    token_store,
)
from pyramid_transient.settings import parse_settings
from pyramid_transient.testing import RedisServer, free_port, test_settings
from pyramid_transient.transactions import AfterCommitFailed

ARTICLE = Identity("r:article:1")


forget_retries = _backlog.forget_retries


@pytest.fixture
def unreplicated(transient_settings: dict[str, Any]) -> Iterator[RedisManager]:
    """A manager on the shared server, which has no replica, waiting for one."""
    manager = RedisManager.from_settings(
        {
            **transient_settings,
            "transient.cache.wait_replicas": "1",
            "transient.cache.wait_timeout": "0.05",
        }
    )
    yield manager
    forget_retries(manager)
    manager.close()


def test_the_settings_parse_with_their_defaults() -> None:
    assert (parse_settings({}).cache.wait_replicas, parse_settings({}).cache.wait_timeout) == (
        0,
        1.0,
    )
    parsed = parse_settings(
        {"transient.cache.wait_replicas": "2", "transient.cache.wait_timeout": "0.25"}
    )
    assert (parsed.cache.wait_replicas, parsed.cache.wait_timeout) == (2, 0.25)
    with pytest.raises(ConfigurationError, match=r"transient\.cache\.wait_replicas"):
        parse_settings({"transient.cache.wait_replicas": "-1"})


def test_wait_replicas_on_the_memory_backend_is_a_configuration_error() -> None:
    config = Configurator(
        settings={"transient.url": "memory://cache-wait", "transient.cache.wait_replicas": "1"}
    )
    with pytest.raises(ConfigurationError, match=r"transient.cache.wait_replicas is 1"):
        config.include("pyramid_transient.cache")


def test_an_invalidation_reaches_the_replica_in_its_one_round_trip(
    replicated: tuple[RedisServer, RedisServer], round_trips: Any
) -> None:
    master, replica = replicated
    manager = RedisManager.from_settings(
        test_settings(master.url, **{"transient.cache.wait_replicas": "1"})
    )
    try:
        store = token_store(manager)
        store.tokens([ARTICLE])
        with round_trips() as rt:
            assert store.invalidate([ARTICLE]) is True
        db = manager.settings.databases["cache"]
    finally:
        forget_retries(manager)
        manager.close()
    assert rt.commands == ["DEL SET WAIT"]
    # Read on the replica at once: WAIT answered only once it had applied the DEL.
    assert redis.Redis(port=replica.port, db=db).exists(store.key(ARTICLE)) == 0
    assert pending_invalidations(manager) == 0


def test_without_wait_replicas_an_invalidation_is_one_del(
    transient_manager: RedisManager, round_trips: Any
) -> None:
    store = token_store(transient_manager)
    with round_trips() as rt:
        assert store.invalidate([ARTICLE]) is True
    assert rt.commands == ["DEL"]


def test_too_few_replicas_is_reported_and_kept_unconfirmed(
    unreplicated: RedisManager, caplog: pytest.LogCaptureFixture
) -> None:
    store = token_store(unreplicated)
    store.tokens([ARTICLE])
    with caplog.at_level(logging.WARNING):
        error = store.try_invalidate([ARTICLE])
    assert isinstance(error, ReplicationTimeout)
    assert (error.wanted, error.acknowledged) == (1, 0)
    assert "invalidated 1 cache tokens on the master, but only 0 of" in caplog.text
    # Applied on the master all the same; kept for a retry that waits again.
    assert unreplicated.get("cache").exists(store.key(ARTICLE)) == 0
    assert pending_invalidations(unreplicated) == 1
    assert store.invalidate([ARTICLE]) is False


def test_a_read_does_not_consume_an_unconfirmed_invalidation(
    unreplicated: RedisManager, round_trips: Any
) -> None:
    store = token_store(unreplicated)
    store.try_invalidate([ARTICLE])
    with round_trips() as rt:
        CacheKeyGenerator(store)("article", ARTICLE)
    # One plain command: a DEL sent with the read would be no better confirmed.
    assert rt.commands == ["SET"]
    assert pending_invalidations(unreplicated) == 1


def test_the_retry_waits_again_until_enough_replicas_acknowledge(
    replicated: tuple[RedisServer, RedisServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(_backlog, "UNCONFIRMED_RETRY_DELAYS", (0.05,))
    master, _ = replicated
    manager = RedisManager.from_settings(
        test_settings(
            master.url,
            **{"transient.cache.wait_replicas": "2", "transient.cache.wait_timeout": "0.05"},
        )
    )
    try:
        store = token_store(manager)
        with caplog.at_level(logging.INFO):
            assert isinstance(store.try_invalidate([ARTICLE]), ReplicationTimeout)
            deadline = time.monotonic() + 20
            while caplog.text.count("failed again: only 1 of") < 2:  # retried, short again
                assert time.monotonic() < deadline
                time.sleep(0.05)
            monkeypatch.setattr(_backlog, "UNCONFIRMED_RETRY_DELAYS", (60.0,))
            while pending_invalidations(manager) != 1:  # the retry in flight put it back
                assert time.monotonic() < deadline
                time.sleep(0.01)
        # The next invalidation carries the unconfirmed one, with its WAIT: a store that
        # wants the one replica there is has both acknowledged in its round trip.
        store.wait_replicas = 1
        assert store.invalidate([Identity("r:article:2")]) is True
        assert pending_invalidations(manager) == 0
    finally:
        forget_retries(manager)
        manager.close()


def _announced(manager: RedisManager) -> list[AfterCommitFailed]:
    """The AfterCommitFailed events of one commit that invalidates through ``manager``."""
    table = Table("wait_items", MetaData(), Column("id", Integer, primary_key=True),
                  Column("name", String))  # fmt: skip
    engine = create_engine("sqlite://")
    table.metadata.create_all(engine)
    config = Configurator()
    seen: list[AfterCommitFailed] = []
    config.add_subscriber(seen.append, AfterCommitFailed)
    config.commit()
    config.begin()
    listener = register(Session, manager)
    try:
        with Session(engine) as session:
            session.execute(insert(table).values(id=1, name="a"))
            listener.mark_changed(session, Identity("t:wait_items"))
            session.commit()
    finally:
        listener.remove()
        config.end()
        engine.dispose()
    return seen


def test_a_commit_whose_invalidation_is_unconfirmed_announces_after_commit_failed(
    unreplicated: RedisManager,
) -> None:
    seen = _announced(unreplicated)
    assert [e.what for e in seen] == ["invalidation of 1 cache tokens"]
    assert isinstance(seen[0].error, ReplicationTimeout)


def test_a_commit_whose_invalidation_cannot_reach_redis_announces_after_commit_failed() -> None:
    manager = RedisManager.from_settings(
        test_settings(f"redis://127.0.0.1:{free_port()}", **{"transient.socket_timeout": "0.2"})
    )
    try:
        seen = _announced(manager)
        assert pending_invalidations(manager) == 1  # kept for retry, as before
    finally:
        forget_retries(manager)
        manager.close()
    assert [e.what for e in seen] == ["invalidation of 1 cache tokens"]
    assert isinstance(seen[0].error, Unavailable)


@pytest.mark.cluster
def test_on_a_cluster_the_wait_goes_to_the_node_of_the_tokens(
    transient_cluster_settings: dict[str, Any], round_trips: Any
) -> None:
    # The suite's Cluster has no replicas: the WAIT is answered (0) by the node that
    # holds the {tokens} slot, on the connection that deleted, in one round trip.
    manager = RedisManager.from_settings(
        {
            **transient_cluster_settings,
            "transient.cache.wait_replicas": "1",
            "transient.cache.wait_timeout": "0.05",
        }
    )
    try:
        store = token_store(manager)
        store.tokens([ARTICLE])
        with round_trips() as rt:
            error = store.try_invalidate([ARTICLE])
        assert isinstance(error, ReplicationTimeout)
        assert rt.commands == ["DEL SET WAIT"]
        assert manager.get("cache").exists(store.key(ARTICLE)) == 0
    finally:
        forget_retries(manager)
        manager.close()
