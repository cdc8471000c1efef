"""The store from several processes at once: counters, locked read-modify-write, readers.

Small and bounded: 4 processes, a few iterations each, a start barrier so they overlap.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest
import redis

from pyramid_transient.connection import RedisManager
from pyramid_transient.store import section

pytestmark = pytest.mark.slow

CTX = multiprocessing.get_context("fork")
PROCESSES = 4
TIMEOUT = 30


def _client(url: str, db: int) -> redis.Redis:
    return redis.Redis.from_url(url, db=db)


def _add_worker(url: str, db: int, barrier: Any, times: int) -> None:
    counter = section("s", redis=_client(url, db)).get("counter")
    barrier.wait(TIMEOUT)
    for _ in range(times):
        counter.add(1)


def _rmw_worker(url: str, db: int, barrier: Any, times: int, locked: bool) -> None:
    sect = section("s", redis=_client(url, db), blocking_timeout=TIMEOUT)
    total = sect.get("total")
    barrier.wait(TIMEOUT)
    for _ in range(times):
        if locked:
            total.acquire()
        try:
            value = total.val()
            time.sleep(0.01)  # widen the window between read and write
            sect.set("total", value + 1)
        finally:
            if locked:
                total.release()


OLD = {f"k{i}": {"v": "old", "n": i} for i in range(30)}
NEW = {f"j{i}": ["new", i] for i in range(40)}


def _writer(url: str, db: int, barrier: Any, times: int) -> None:
    sect = section("s", redis=_client(url, db))
    barrier.wait(TIMEOUT)
    for i in range(times):
        sect.set("doc", NEW if i % 2 == 0 else OLD)


def _reader(url: str, db: int, barrier: Any, times: int, results: Any) -> None:
    doc = section("s", redis=_client(url, db)).get("doc")
    barrier.wait(TIMEOUT)
    seen = {"old": 0, "new": 0, "bad": 0}
    for _ in range(times):
        try:
            value = doc.val()
        except Exception:
            seen["bad"] += 1
            continue
        if value == OLD:
            seen["old"] += 1
        elif value == NEW:
            seen["new"] += 1
        else:
            seen["bad"] += 1
    results.put(seen)


def _run(target: Any, *args: Any, count: int = PROCESSES) -> list[Any]:
    barrier = CTX.Barrier(count)
    procs = [
        CTX.Process(target=target, args=(*args[:2], barrier, *args[2:])) for _ in range(count)
    ]
    for p in procs:
        p.start()
    return procs


def _join(procs: list[Any]) -> None:
    for p in procs:
        p.join(TIMEOUT)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
            pytest.fail("a worker process did not finish in time")
        assert p.exitcode == 0


@pytest.fixture
def target(transient_manager: RedisManager, transient_redis_url: str) -> tuple[str, int]:
    return transient_redis_url, transient_manager.db_number("store")


def test_processes_adding_to_one_counter_give_the_exact_total(target: tuple[str, int]) -> None:
    url, db = target
    _join(_run(_add_worker, url, db, 50))
    assert section("s", redis=_client(url, db)).get("counter").val() == PROCESSES * 50


def test_read_modify_write_under_the_lock_gives_the_exact_total(target: tuple[str, int]) -> None:
    url, db = target
    section("s", redis=_client(url, db)).set("total", 0)
    _join(_run(_rmw_worker, url, db, 5, True))
    assert section("s", redis=_client(url, db)).get("total").val() == PROCESSES * 5


def test_read_modify_write_without_the_lock_loses_updates(target: tuple[str, int]) -> None:
    url, db = target
    section("s", redis=_client(url, db)).set("total", 0)
    _join(_run(_rmw_worker, url, db, 5, False))
    assert section("s", redis=_client(url, db)).get("total").val() < PROCESSES * 5


def test_readers_see_the_old_or_the_new_subtree_never_a_mix(target: tuple[str, int]) -> None:
    url, db = target
    section("s", redis=_client(url, db)).set("doc", OLD)
    results = CTX.Queue()
    barrier = CTX.Barrier(3)
    procs = [
        CTX.Process(target=_writer, args=(url, db, barrier, 300)),
        CTX.Process(target=_reader, args=(url, db, barrier, 300, results)),
        CTX.Process(target=_reader, args=(url, db, barrier, 300, results)),
    ]
    for p in procs:
        p.start()
    seen = [results.get(timeout=TIMEOUT), results.get(timeout=TIMEOUT)]
    _join(procs)
    assert [s["bad"] for s in seen] == [0, 0]
    assert sum(s["old"] for s in seen) > 0
    assert sum(s["new"] for s in seen) > 0


def _owner_of_child(results: Any) -> None:
    from pyramid_transient.store import current_owner

    results.put(current_owner())


def test_a_forked_child_is_another_owner() -> None:
    from pyramid_transient.store import current_owner

    mine = current_owner()
    results = CTX.Queue()
    child = CTX.Process(target=_owner_of_child, args=(results,))
    child.start()
    theirs = results.get(timeout=TIMEOUT)
    _join([child])
    assert theirs != mine
