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

from pyramid_transient import ObjectNotFound, Unavailable
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


def _prepare(server: RedisServer, fault_proxy: Any) -> tuple[Any, RedisManager]:
    proxy = fault_proxy(server.port)
    manager = _manager(proxy.port)
    Job.objects.bind(manager)
    models_db = manager.db_number("models")
    for source in SCRIPTS.sources.values():  # no NOSCRIPT reloads in the counts below
        redis.Redis(host="127.0.0.1", port=server.port, db=models_db).script_load(source)
    return proxy, manager


def _stored_jobs(server: RedisServer) -> list[Job]:
    checker = _manager(server.port)  # straight to the server, same prefix
    Job.objects.bind(checker)
    try:
        return sorted(Job.objects.all(), key=lambda j: j.n)
    finally:
        checker.close()


def test_deferred_saves_over_a_link_that_drops_replies_are_applied_once_or_reported(
    server: RedisServer, direct: redis.Redis, fault_proxy: Any, caplog: pytest.LogCaptureFixture
) -> None:
    proxy, manager = _prepare(server, fault_proxy)
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
    # A save whose reply was lost is sent once more (its write identity makes the copy a
    # no-op), and a save is reported only when both replies were lost.
    resent = proxy.count(b"EVALSHA") - sent_before - SAVES
    assert 10 < resent < 100  # about 8 % of the saves
    assert len(announced) == proxy.dropped - resent  # the second reply lost too
    assert len(announced) < 10
    assert all(isinstance(a.error, Unavailable) for a in announced)
    assert all(a.what.startswith("deferred save of Job") for a in announced)
    assert caplog.text.count("failed after the transaction committed") == len(announced)
    # the drops happened after the server ran the script: every save is applied, once:
    # each application takes the next number of the class's version counter, so a save
    # applied twice would leave a gap in the versions
    jobs = _stored_jobs(server)
    assert [j.n for j in jobs] == list(range(SAVES))
    versions = sorted(j._version for j in jobs)
    assert versions == list(range(versions[0], versions[0] + SAVES))


def test_a_deferred_save_whose_reply_is_lost_is_sent_again_and_applied_once(
    server: RedisServer, direct: redis.Redis, fault_proxy: Any
) -> None:
    proxy, manager = _prepare(server, fault_proxy)
    announced: list[AfterCommitFailed] = []
    config = pyramid_testing.setUp()
    config.add_subscriber(announced.append, AfterCommitFailed)
    try:
        with transaction.manager:
            Job(id=1, n=1).save()
        first = Job.objects.get(1)
        loaded_version = first._version
        first.n = 2
        sent_before = proxy.count(b"EVALSHA")
        proxy.lose_replies(b"EVALSHA")  # the server runs it; its reply never arrives
        with transaction.manager:
            first.save(on_commit=True)
        assert proxy.count(b"EVALSHA") - sent_before == 2
        assert announced == []
        again = Job.objects.get(1)
        assert again.n == 2
        # applied once: the class's version counter moved by one, not two
        assert again._version == first._version == loaded_version + 1
    finally:
        pyramid_testing.tearDown()
        manager.close()
    assert [(j.n, j._version) for j in _stored_jobs(server)] == [(2, loaded_version + 1)]


def test_a_deferred_delete_whose_reply_is_lost_is_sent_again_and_reported_done(
    server: RedisServer, direct: redis.Redis, fault_proxy: Any
) -> None:
    proxy, manager = _prepare(server, fault_proxy)
    announced: list[AfterCommitFailed] = []
    config = pyramid_testing.setUp()
    config.add_subscriber(announced.append, AfterCommitFailed)
    try:
        job = Job(id=7, n=7).save()
        proxy.lose_replies(b"EVALSHA")
        with transaction.manager:
            job.delete(if_unmodified=True, on_commit=True)
        assert proxy.count(b"EVALSHA") >= 3  # the save, the delete and its second copy
        assert announced == []
        with pytest.raises(ObjectNotFound):
            Job.objects.get(7)
    finally:
        pyramid_testing.tearDown()
        manager.close()


def test_a_deferred_action_that_is_not_idempotent_is_never_sent_twice(
    fault_proxy: Any, server: RedisServer
) -> None:
    from pyramid_transient.transactions import after_commit

    calls: list[int] = []
    announced: list[AfterCommitFailed] = []
    config = pyramid_testing.setUp()
    config.add_subscriber(announced.append, AfterCommitFailed)

    def action() -> None:
        calls.append(1)
        raise Unavailable("lost reply", database="default")

    try:
        with transaction.manager:
            after_commit("an INCR", action)
        with transaction.manager:
            after_commit("an idempotent write", action, idempotent=True)
    finally:
        pyramid_testing.tearDown()
    assert len(calls) == 3  # once, then twice
    assert [a.what for a in announced] == ["an INCR", "an idempotent write"]


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
