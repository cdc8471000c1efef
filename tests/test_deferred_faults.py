"""Deferred writes over a faulty link: applied once, or reported; never twice, never silent.

A real server behind :class:`faultproxy.FaultProxy`. The proxy drops the reply to a share
of the save scripts after the server ran them (the ambiguous case), cuts replies short,
or stalls them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import transaction
from pyramid import testing as pyramid_testing

from pyramid_transient import Unavailable
from pyramid_transient.connection import RedisManager
from pyramid_transient.models import SCRIPTS, RedisModel
from pyramid_transient.safe import get_safe
from pyramid_transient.testing import RedisServer, test_settings
from pyramid_transient.transactions import AfterCommitFailed

SAVES = 500


class Job(RedisModel):
    __storage_name__ = "deferred_faults_job"
    id: int
    n: int = 0


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


@pytest.fixture
def direct(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=server.port)
    client.flushall()
    yield client
    client.close()


def _manager(port: int) -> RedisManager:
    return RedisManager.from_settings(
        test_settings(
            f"redis://127.0.0.1:{port}",
            key_prefix="deferred",
            **{"transient.socket_timeout": "0.3", "transient.socket_connect_timeout": "0.3"},
        )
    )


def test_deferred_saves_over_a_link_that_drops_replies_are_applied_once_or_reported(
    server: RedisServer, direct: redis.Redis, fault_proxy: Any, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = fault_proxy(server.port)
    manager = _manager(proxy.port)
    Job.objects.bind(manager)
    models_db = manager.db_number("models")
    for source in SCRIPTS.sources.values():  # no NOSCRIPT reloads in the count below
        redis.Redis(host="127.0.0.1", port=server.port, db=models_db).script_load(source)
    announced: list[AfterCommitFailed] = []
    config = pyramid_testing.setUp()
    config.add_subscriber(announced.append, AfterCommitFailed)
    sent_before = proxy.count(b"EVALSHA")
    proxy.drop_ratio(b"EVALSHA", 0.08)
    try:
        with caplog.at_level(logging.ERROR, "pyramid_transient.transactions"):
            for i in range(SAVES):
                with transaction.manager:
                    Job(id=i, n=i).save(on_commit=True)
    finally:
        proxy.drop_ratio(b"EVALSHA", 0.0)
        pyramid_testing.tearDown()
        manager.close()
    # never sent twice: one script call per save
    assert proxy.count(b"EVALSHA") - sent_before == SAVES
    # the drops happened after the server ran the script: every save is applied, once
    checker = _manager(server.port)  # straight to the server, same prefix
    Job.objects.bind(checker)
    try:
        assert Job.objects.count() == SAVES
        assert sorted(j.n for j in Job.objects.all()) == list(range(SAVES))
    finally:
        checker.close()
    # and every one whose reply was lost was reported, naming the object
    assert 10 < proxy.dropped < 100  # about 8 %
    assert len(announced) == proxy.dropped
    assert all(isinstance(a.error, Unavailable) for a in announced)
    assert all(a.what.startswith("deferred save of Job") for a in announced)
    assert caplog.text.count("failed after the transaction committed") == proxy.dropped


def test_a_reply_cut_short_is_unavailable_and_the_next_call_works(
    server: RedisServer, direct: redis.Redis, fault_proxy: Any
) -> None:
    proxy = fault_proxy(server.port)
    manager = _manager(proxy.port)
    try:
        safe = get_safe("tests.cut", manager)
        safe["big"] = "x" * 100_000
        proxy.cut_mid_reply = True
        with pytest.raises(Unavailable):
            safe.snapshot()
        proxy.cut_mid_reply = False
        assert safe["big"] == "x" * 100_000
    finally:
        manager.close()


def test_a_stalled_reply_is_unavailable_within_the_socket_timeout(
    server: RedisServer, direct: redis.Redis, fault_proxy: Any
) -> None:
    import time

    proxy = fault_proxy(server.port)
    manager = _manager(proxy.port)
    try:
        safe = get_safe("tests.stall", manager)
        safe["k"] = 1
        proxy.stall = 1.0
        started = time.monotonic()
        with pytest.raises(Unavailable) as info:
            safe["k"]
        assert time.monotonic() - started < 0.9
        assert isinstance(info.value.__cause__, redis.TimeoutError)
    finally:
        proxy.stall = 0.0
        manager.close()
