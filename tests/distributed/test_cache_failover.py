"""Cache invalidations through a Sentinel failover whose replica lagged (issue 17, item 1).

The replica is made to lose writes for real: it is stopped (SIGSTOP, so it cannot
reconnect) and the master drops its replication link (``CLIENT KILL TYPE replica``), so a
write made then reaches the master only; the master is then killed (SIGKILL) and the
replica resumed, and the sentinels promote it without that write. Delaying the replica
alone (SIGSTOP, ``DEBUG SLEEP``) loses nothing: the master's stream waits in the replica's
socket buffer and is applied on resume.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from dogpile.cache.api import NO_VALUE

from pyramid_transient import RedisManager
from pyramid_transient.cache import CacheKeyGenerator, make_regions
from pyramid_transient.exceptions import ReplicationTimeout
from pyramid_transient.invalidation import Identity, _backlog, pending_invalidations, token_store
from pyramid_transient.testing import SentinelGroup
from pyramid_transient.testing._groups import ask, info_fields, wait_until

pytestmark = pytest.mark.sentinel
log = logging.getLogger(__name__)

ARTICLE = Identity("r:article:1")


forget_retries = _backlog.forget_retries


@pytest.fixture
def group(transient_sentinel: SentinelGroup) -> Iterator[SentinelGroup]:
    yield transient_sentinel
    # Bring the killed master back as a replica, for the next test of the run.
    transient_sentinel.restore()


def _manager(group: SentinelGroup, **settings: str) -> RedisManager:
    group.restore()
    group.flushall()
    return RedisManager.from_settings(
        group.settings(key_prefix="tfailover", **{"transient.socket_timeout": "0.5", **settings})
    )


def _replica_caught_up(group: SentinelGroup) -> None:
    assert group.replica is not None
    replica = group.replica.port

    def caught_up() -> bool:
        master = info_fields(ask(group.master_port, "INFO", "replication"))
        mine = info_fields(ask(replica, "INFO", "replication"))
        return mine.get("master_repl_offset") == master.get("master_repl_offset")

    wait_until("the replica to catch up", caught_up, 10)


@contextlib.contextmanager
def _replica_cut_off(group: SentinelGroup) -> Iterator[None]:
    """Writes made in the block reach the master only; after it the master is killed and
    the replica, which never received them, is promoted."""
    assert group.replica is not None and group.master is not None
    replica_pid, master_pid = group.replica.pid, group.master.pid
    assert replica_pid is not None and master_pid is not None
    os.kill(replica_pid, signal.SIGSTOP)
    try:
        ask(group.master_port, "CLIENT", "KILL", "TYPE", "replica")
        yield
        os.kill(master_pid, signal.SIGKILL)  # before the replica may reconnect
    finally:
        os.kill(replica_pid, signal.SIGCONT)
    group.kill_master()  # waits until the sentinels promoted the replica


def _cached_page(manager: RedisManager) -> tuple[CacheKeyGenerator, Any, str]:
    cache_key = CacheKeyGenerator(manager)
    region = make_regions(manager)["default"]
    key = cache_key("article", ARTICLE)
    region.set(key, "old text")
    return cache_key, region, key


#: Ten rows, each changed by its own commit, as in the issue's runs.
ROWS = [Identity(f"r:article:{i}") for i in range(10)]


def _cached_pages(manager: RedisManager) -> tuple[CacheKeyGenerator, Any, list[str]]:
    cache_key = CacheKeyGenerator(manager)
    region = make_regions(manager)["default"]
    keys = [cache_key("article", row) for row in ROWS]
    for key in keys:
        region.set(key, "old text")
    return cache_key, region, keys


def _stale(cache_key: CacheKeyGenerator, region: Any) -> int:
    """How many of the ten pages a reader is served with their old text now."""
    return sum(region.get(cache_key("article", row)) == "old text" for row in ROWS)


def _reachable(manager: RedisManager) -> None:
    wait_until("the new master to answer", lambda: bool(manager.get("cache").ping()), 30)


def test_without_wait_replicas_a_failover_loses_acknowledged_invalidations(
    group: SentinelGroup,
) -> None:
    # The documented limit of the default (transient.cache.wait_replicas = 0), shown on
    # real servers: each commit's DEL is acknowledged by the master, never reaches the
    # replica, and the pages cached under the old tokens are served after the failover.
    manager = _manager(group)
    try:
        cache_key, region, _ = _cached_pages(manager)
        _replica_caught_up(group)
        store = token_store(manager)
        with _replica_cut_off(group):
            for row in ROWS:
                assert store.invalidate([row]) is True  # acknowledged
            assert _stale(cache_key, region) == 0  # on the master, before the failover
        _reachable(manager)
        assert _stale(cache_key, region) == 10  # the old tokens came back
    finally:
        forget_retries(manager)
        manager.close()


def test_an_invalidation_the_replica_acknowledged_survives_the_failover(
    group: SentinelGroup, round_trips: Any
) -> None:
    manager = _manager(group, **{"transient.cache.wait_replicas": "1"})
    try:
        cache_key, region, old = _cached_page(manager)
        store = token_store(manager)
        old_token = store.tokens([ARTICLE])[0]
        with round_trips() as rt:
            assert store.invalidate([ARTICLE]) is True
        assert rt.count == 1  # DEL, SET of the ack key and WAIT, one round trip
        group.kill_master()
        _reachable(manager)
        assert store.tokens([ARTICLE])[0] != old_token
        new = cache_key("article", ARTICLE)
        assert new != old
        assert region.get(new) is NO_VALUE  # rebuilt from the database, not stale
        assert pending_invalidations(manager) == 0
    finally:
        forget_retries(manager)
        manager.close()


def test_invalidations_the_replica_missed_are_reported_and_redone_on_the_new_master(
    group: SentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    manager = _manager(
        group, **{"transient.cache.wait_replicas": "1", "transient.cache.wait_timeout": "0.1"}
    )
    try:
        cache_key, region, _ = _cached_pages(manager)
        _replica_caught_up(group)
        store = token_store(manager)
        old_tokens = store.tokens(ROWS)
        errors = []
        with _replica_cut_off(group), caplog.at_level(logging.WARNING):
            for row in ROWS:
                errors.append(store.try_invalidate([row]))
            # Reads on the master meanwhile see the invalidation (and never consume it).
            assert _stale(cache_key, region) == 0
        assert all(isinstance(e, ReplicationTimeout) for e in errors)
        assert [(e.wanted, e.acknowledged) for e in errors] == [(1, 0)] * 10  # type: ignore[union-attr]
        assert "only 0 of transient.cache.wait_replicas = 1 replicas" in caplog.text
        assert pending_invalidations(manager) == 10  # unconfirmed, kept for retry
        promoted = time.monotonic()
        log.info("the replica is promoted")
        # The background retry sends the DELs again, to the new master now. (Read the
        # tokens themselves: during the outage cache_key answers fresh random keys.)
        wait_until(
            "the retried invalidations to reach the new master",
            lambda: not set(store.tokens(ROWS)) & set(old_tokens),
            30,
        )
        log.info("repaired %.1f s after the promotion", time.monotonic() - promoted)
        assert _stale(cache_key, region) == 0
    finally:
        forget_retries(manager)
        manager.close()
