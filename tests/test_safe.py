"""Module safes on a real server: the mapping, atomic blocks, WAIT and the durability check."""

from __future__ import annotations

import datetime as dt
import gc
import logging
import multiprocessing
import threading
import uuid
import weakref
from collections.abc import Callable, MutableMapping
from decimal import Decimal
from typing import Any

import pytest
import redis
from pyramid.config import Configurator
from pyramid.scripting import prepare

from pyramid_transient import safe as safe_module
from pyramid_transient.connection import RedisManager, get_manager
from pyramid_transient.exceptions import ConfigurationError, ConflictError, ReplicationTimeout
from pyramid_transient.safe import Safe, get_safe
from pyramid_transient.testing import RedisServer, test_settings

LOGGER = "pyramid_transient.safe"

#: Created at import time, with no client: binds to whichever app is running at each use.
MODULE_SAFE = get_safe("tests.test_safe.module_level")


@pytest.fixture
def safe(transient_manager: RedisManager) -> Safe:
    return get_safe("tests.module_a", transient_manager)


@pytest.fixture
def other(transient_manager: RedisManager) -> Safe:
    return get_safe("tests.module_b", transient_manager)


@pytest.fixture
def outside(transient_manager: RedisManager) -> Safe:
    """The same safe as ``safe``, through another object: a writer outside the block."""
    return get_safe("tests.module_a", transient_manager)


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(safe_module, "mod_sleep", slept.append)
    return slept


# ---------------------------------------------------------------------- the mapping


def test_a_safe_is_a_mutable_mapping(safe: Safe) -> None:
    assert isinstance(safe, MutableMapping)


def test_set_then_get_returns_the_value(safe: Safe) -> None:
    safe["foo"] = {(None,): [1, "bar", Decimal("1.0")]}
    assert safe["foo"] == {(None,): [1, "bar", Decimal("1.0")]}


SUPPORTED = {
    "none": None,
    "true": True,
    "false": False,
    "int": -42,
    "big int": 2**80,
    "float": 1.25,
    "infinity": float("inf"),
    "str": "héllo wörld ✓",
    "empty str": "",
    "bytes": b"\x00\xffbinary",
    "decimal": Decimal("1.10"),
    "naive datetime": dt.datetime(2024, 2, 29, 12, 30, 1, 500),
    "aware datetime": dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "date": dt.date(1999, 12, 31),
    "time": dt.time(23, 59, 59, 999999),
    "aware time": dt.time(8, 0, tzinfo=dt.UTC),
    "timedelta": dt.timedelta(days=-1, seconds=5, microseconds=7),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "list": [1, "two", [3.0]],
    "tuple": (1, (2, 3)),
    "set": {1, "a", (2, 3)},
    "frozenset": frozenset({1, 2}),
    "dict": {"a": {"b": [1, 2]}},
    "dict with non-string keys": {(None,): [1, "bar", Decimal("1.0")], 1: "one"},
    "dict that looks like a tag": {"__t__": "tuple", "v": [1]},
    "empty containers": [[], (), {}, set(), frozenset()],
}


@pytest.mark.parametrize("value", SUPPORTED.values(), ids=SUPPORTED.keys())
def test_codec_round_trips_every_supported_type(safe: Safe, value: Any) -> None:
    safe["v"] = value
    got = safe["v"]
    assert got == value
    assert type(got) is type(value)


def test_get_of_a_missing_key_returns_the_default(safe: Safe) -> None:
    assert safe.get("missing", "dflt") == "dflt"


def test_reading_a_missing_key_raises_keyerror(safe: Safe) -> None:
    with pytest.raises(KeyError):
        safe["missing"]


@pytest.mark.parametrize(
    "operation",
    [
        lambda s: s.__setitem__(1, "x"),
        lambda s: s.__getitem__(b"bytes"),
        lambda s: s.get(None),
        lambda s: s.__delitem__(("t",)),
        lambda s: s.__contains__(1.5),
        lambda s: s.pop(2),
        lambda s: s.setdefault(3, 1),
        lambda s: s.update({4: 1}),
    ],
    ids=["set", "get", "get-default", "del", "in", "pop", "setdefault", "update"],
)
def test_a_key_that_is_not_a_string_raises_typeerror(
    safe: Safe, operation: Callable[[Safe], Any]
) -> None:
    with pytest.raises(TypeError, match="safe keys must be strings"):
        operation(safe)


def test_an_unsupported_value_raises_typeerror_and_writes_nothing(
    safe: Safe, transient_redis: redis.Redis
) -> None:
    with pytest.raises(TypeError, match="cannot store a value of type"):
        safe["x"] = object()
    assert transient_redis.exists(safe.key) == 0


def test_update_with_one_unsupported_value_writes_none_of_it(safe: Safe) -> None:
    safe["keep"] = 1
    with pytest.raises(TypeError):
        safe.update({"a": 1, "b": object(), "c": 3})
    assert safe.snapshot() == {"keep": 1}


def test_update_sets_every_key(safe: Safe) -> None:
    safe.update({"a": 1}, b=2)
    safe.update([("c", 3)])
    assert safe.snapshot() == {"a": 1, "b": 2, "c": 3}


def test_del_removes_the_key(safe: Safe) -> None:
    safe["a"] = 1
    del safe["a"]
    assert "a" not in safe


def test_del_of_a_missing_key_raises_keyerror(safe: Safe) -> None:
    with pytest.raises(KeyError):
        del safe["missing"]


def test_len_iteration_and_views_reflect_the_contents(safe: Safe) -> None:
    safe.update(a=1, b=[2])
    assert len(safe) == 2
    assert sorted(safe) == ["a", "b"]
    assert sorted(safe.keys()) == ["a", "b"]
    assert sorted(safe.items()) == [("a", 1), ("b", [2])]
    assert sorted(safe.values(), key=str) == [1, [2]]


def test_an_empty_safe_is_falsy_and_equal_to_an_empty_dict(safe: Safe) -> None:
    assert not safe
    assert safe == {}


def test_a_safe_compares_equal_to_a_dict_of_its_contents(safe: Safe) -> None:
    safe.update(a=1, b=(2,))
    assert safe == {"a": 1, "b": (2,)}


def test_pop_returns_and_removes_the_value(safe: Safe) -> None:
    safe["a"] = [1]
    assert safe.pop("a") == [1]
    assert "a" not in safe


def test_pop_of_a_missing_key_returns_the_default(safe: Safe) -> None:
    assert safe.pop("missing", None) is None


def test_pop_of_a_missing_key_without_default_raises_keyerror(safe: Safe) -> None:
    with pytest.raises(KeyError):
        safe.pop("missing")


def test_popitem_removes_and_returns_one_item(safe: Safe) -> None:
    safe.update(a=1, b=2)
    key, value = safe.popitem()
    assert {key: value}.items() <= {"a": 1, "b": 2}.items()
    assert key not in safe
    assert len(safe) == 1


def test_popitem_of_an_empty_safe_raises_keyerror(safe: Safe) -> None:
    with pytest.raises(KeyError, match="is empty"):
        safe.popitem()


def test_setdefault_stores_the_default_when_missing(safe: Safe) -> None:
    assert safe.setdefault("a", [1]) == [1]
    assert safe["a"] == [1]


def test_setdefault_keeps_an_existing_value(safe: Safe) -> None:
    safe["a"] = "old"
    assert safe.setdefault("a", "new") == "old"
    assert safe["a"] == "old"


def test_scan_yields_every_item_of_a_large_safe(safe: Safe) -> None:
    safe.update({f"k{i}": i for i in range(1500)})
    assert dict(safe.scan(count=100)) == {f"k{i}": i for i in range(1500)}


# ---------------------------------------------------------------------- layout and isolation


def test_a_safe_is_one_hash_under_the_prefix_tagged_by_its_name(
    safe: Safe, transient_redis: redis.Redis, transient_settings: dict[str, Any]
) -> None:
    safe["a"] = 1
    prefix = transient_settings["transient.key_prefix"]
    assert safe.key == f"{prefix}:safe:{{tests.module_a}}"
    assert transient_redis.type(safe.key) == b"hash"
    assert transient_redis.hget(safe.key, "a") == b"1"


def test_the_safe_database_is_used_when_mapped(transient_settings: dict[str, Any]) -> None:
    manager = RedisManager.from_settings({**transient_settings, "transient.db.safe": "15"})
    safe = get_safe("tests.module_a", manager)
    safe["a"] = 1
    in_db_15 = manager.get("celery").hget(safe.key, "a")  # celery is db 15 too
    manager.close()
    assert in_db_15 == b"1"


def test_two_modules_with_the_same_key_keep_separate_values(safe: Safe, other: Safe) -> None:
    safe["shared_name"] = "a"
    other["shared_name"] = "b"
    assert (safe["shared_name"], other["shared_name"]) == ("a", "b")


def test_clear_leaves_other_safes_and_unrelated_keys_alone(
    safe: Safe, other: Safe, transient_redis: redis.Redis
) -> None:
    safe.update(a=1, b=2)
    other["a"] = 1
    transient_redis.set(safe.key + "x", "unrelated")
    transient_redis.hset("unrelated-hash", "a", "1")
    safe.clear()
    assert len(safe) == 0
    assert other.snapshot() == {"a": 1}
    assert transient_redis.get(safe.key + "x") == b"unrelated"
    assert transient_redis.hget("unrelated-hash", "a") == b"1"


def test_a_name_with_key_syntax_stays_inside_its_own_hash(
    transient_manager: RedisManager,
) -> None:
    tricky = get_safe("a}:{b c", transient_manager)
    tricky["k"] = 1
    assert tricky.key.endswith(":safe:{a%7D%3A%7Bb%20c}")


@pytest.mark.parametrize(
    ("first", "second"),
    [("a.b", "a.bc"), ("a.b", "a"), ("a", "a}"), ("a:b", "a"), ("a}b", "a%7Db"), ("x", "{x}")],
)
def test_safes_whose_names_share_a_prefix_or_hold_key_syntax_are_isolated(
    transient_manager: RedisManager, transient_redis: redis.Redis, first: str, second: str
) -> None:
    one, two = get_safe(first, transient_manager), get_safe(second, transient_manager)
    one.update(k=1, only_one=1)
    two.update(k=2, only_two=2)
    assert one.key != two.key
    one.clear()
    assert (one.snapshot(), two.snapshot()) == ({}, {"k": 2, "only_two": 2})
    assert transient_redis.exists(one.key) == 0
    assert transient_redis.hgetall(two.key) == {b"k": b"2", b"only_two": b"2"}


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(TypeError, match="non-empty string"):
        get_safe("")


# ---------------------------------------------------------------------- corrupt data


def test_a_corrupt_value_reads_as_missing_and_is_logged(
    safe: Safe, transient_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    safe["good"] = 1
    transient_redis.hset(safe.key, "bad", b"\xff{not json")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert safe.get("bad", "dflt") == "dflt"
        assert safe.snapshot() == {"good": 1}
    assert "'bad' does not decode" in caplog.text


def test_reading_a_corrupt_value_by_index_raises_keyerror(
    safe: Safe, transient_redis: redis.Redis
) -> None:
    safe["good"] = 1
    transient_redis.hset(safe.key, "bad", b"pickle\x80")
    with pytest.raises(KeyError):
        safe["bad"]


def test_setdefault_replaces_a_corrupt_value(safe: Safe, transient_redis: redis.Redis) -> None:
    safe["good"] = 1
    transient_redis.hset(safe.key, "bad", b"{")
    assert safe.setdefault("bad", 5) == 5
    assert safe["bad"] == 5


# ---------------------------------------------------------------------- round trips


def _prime(safe: Safe) -> None:
    safe.get("prime")  # connect, load the scripts, check persistence: outside the count


ONE_ROUND_TRIP = {
    "set": (lambda s: s.__setitem__("a", 1), "HSET"),
    "get": (lambda s: s.get("a"), "HGET"),
    "getitem": (lambda s: s["a"], "HGET"),
    "del": (lambda s: s.__delitem__("a"), "HDEL"),
    "in": (lambda s: "a" in s, "HEXISTS"),
    "len": (lambda s: len(s), "HLEN"),
    "iter": (lambda s: [k for k in s], "HKEYS"),  # list(s) would ask len() first
    "keys": (lambda s: list(s.keys()), "HKEYS"),
    "items": (lambda s: s.items(), "HGETALL"),
    "values": (lambda s: s.values(), "HGETALL"),
    "update 10 keys": (lambda s: s.update({f"k{i}": i for i in range(10)}), "HSET"),
    "pop": (lambda s: s.pop("a"), "EVALSHA"),
    "popitem": (lambda s: s.popitem(), "EVALSHA"),
    "setdefault": (lambda s: s.setdefault("new", 1), "EVALSHA"),
    "clear": (lambda s: s.clear(), "DEL"),
}


@pytest.mark.parametrize("case", ONE_ROUND_TRIP.values(), ids=ONE_ROUND_TRIP.keys())
def test_each_operation_is_one_round_trip(
    safe: Safe, round_trips: Any, case: tuple[Callable[[Safe], Any], str]
) -> None:
    operation, command = case
    safe.update(a=1, b=2)
    _prime(safe)
    with round_trips() as rt:
        operation(safe)
    assert rt.commands == [command]


def test_the_first_use_loads_the_scripts_and_checks_persistence_in_one_round_trip(
    safe: Safe, transient_redis: redis.Redis, round_trips: Any
) -> None:
    transient_redis.ping()
    with round_trips() as rt:
        safe.get("a")
    assert rt.commands == ["SCRIPT SCRIPT SCRIPT SCRIPT CONFIG CONFIG", "HGET"]


def test_creating_a_safe_sends_nothing(round_trips: Any) -> None:
    with round_trips() as rt:
        get_safe("tests.nothing_sent")
    assert rt.count == 0


def test_a_read_modify_write_atomic_block_is_two_round_trips(safe: Safe, round_trips: Any) -> None:
    safe["n"] = 1
    _prime(safe)
    with round_trips() as rt, safe.atomic() as s:
        s["n"] += 1
        s["m"] = s["n"] * 10
    assert rt.commands == ["HGETALL", "EVALSHA"]


def test_an_atomic_block_of_blind_writes_is_one_round_trip(safe: Safe, round_trips: Any) -> None:
    _prime(safe)
    with round_trips() as rt, safe.atomic() as s:
        s["a"] = 1
        s.clear()
        s["b"] = 2
    assert rt.commands == ["EVALSHA"]
    assert safe.snapshot() == {"b": 2}


def test_a_read_only_atomic_block_is_one_round_trip(safe: Safe, round_trips: Any) -> None:
    safe.update(a=1, b=2)
    _prime(safe)
    with round_trips() as rt, safe.atomic() as s:
        assert (s["a"], s["b"], len(s)) == (1, 2, 2)
    assert rt.commands == ["HGETALL"]


# ---------------------------------------------------------------------- atomic blocks


def test_an_atomic_block_commits_its_writes_together(safe: Safe) -> None:
    safe.update(a=1, gone=0)
    with safe.atomic() as s:
        s["a"] += 1
        s["b"] = s["a"] * 2
        del s["gone"]
    assert safe.snapshot() == {"a": 2, "b": 4}


def test_reads_in_an_atomic_block_see_its_own_writes(safe: Safe) -> None:
    with safe.atomic() as s:
        s["a"] = [1]
        assert s["a"] == [1]
        assert sorted(s) == ["a"]


def test_reads_in_an_atomic_block_come_from_one_snapshot(outside: Safe, safe: Safe) -> None:
    safe.update(a=1, b=1)
    with pytest.raises(ConflictError), safe.atomic() as s:
        first = s["a"]
        outside.update(a=2, b=2)
        assert (first, s["b"]) == (1, 1)
        s["c"] = 0


def test_an_exception_in_an_atomic_block_discards_its_writes(safe: Safe) -> None:
    safe["a"] = 1
    with pytest.raises(ZeroDivisionError), safe.atomic() as s:
        s["a"] = 2
        s["b"] = 1 / 0
    assert safe.snapshot() == {"a": 1}


def test_an_atomic_block_raises_conflict_when_a_key_it_read_changed(
    outside: Safe, safe: Safe
) -> None:
    safe["n"] = 1
    with pytest.raises(ConflictError, match=r"changed \['n'\]"), safe.atomic() as s:
        value = s["n"]
        outside["n"] = 100
        s["n"] = value + 1
    assert safe["n"] == 100


def test_an_atomic_block_raises_conflict_when_a_key_it_found_absent_appeared(
    outside: Safe,
    safe: Safe,
) -> None:
    with pytest.raises(ConflictError), safe.atomic() as s:
        assert "n" not in s
        outside["n"] = 5
        s["n"] = 1
    assert safe["n"] == 5


def test_a_write_to_a_key_the_block_did_not_read_does_not_conflict(
    outside: Safe, safe: Safe
) -> None:
    safe.update(n=1, other=1)
    with safe.atomic() as s:
        value = s["n"]
        outside["other"] = 2
        s["n"] = value + 1
    assert safe.snapshot() == {"n": 2, "other": 2}


def test_an_atomic_block_that_iterated_conflicts_with_any_new_key(
    outside: Safe, safe: Safe
) -> None:
    safe["a"] = 1
    with pytest.raises(ConflictError, match="the whole safe"), safe.atomic() as s:
        total = len(s)
        outside["new"] = 1
        s["count"] = total


def test_the_retrying_form_runs_the_block_again_after_a_conflict(
    outside: Safe, safe: Safe, no_sleep: list[float]
) -> None:
    safe["n"] = 0
    runs = 0
    for attempt in safe.atomic():
        with attempt as s:
            runs += 1
            value = s["n"]
            if runs == 1:
                outside["n"] = 10
            s["n"] = value + 1
    assert (runs, safe["n"]) == (2, 11)


def test_the_retrying_form_raises_conflict_when_retries_are_exhausted(
    outside: Safe, safe: Safe, no_sleep: list[float]
) -> None:
    safe["n"] = 0
    runs = 0
    with pytest.raises(ConflictError, match="4 times in a row"):
        for attempt in safe.atomic(retries=3):
            with attempt as s:
                runs += 1
                value = s["n"]
                outside["n"] = -runs
                s["n"] = value + 1
    assert (runs, len(no_sleep), safe["n"]) == (4, 3, -4)


def test_the_retrying_form_stops_on_an_exception_of_the_block(safe: Safe) -> None:
    runs = 0
    with pytest.raises(LookupError):
        for attempt in safe.atomic():
            with attempt as s:
                runs += 1
                s["missing"]
    assert runs == 1


def test_a_transaction_cannot_be_used_after_its_block(safe: Safe) -> None:
    with safe.atomic() as s:
        s["a"] = 1
    with pytest.raises(RuntimeError, match="has ended"):
        s["a"]


# ---------------------------------------------------------------------- concurrency


def test_a_concurrent_reader_never_sees_half_of_an_update(safe: Safe) -> None:
    safe.update({f"k{i}": 0 for i in range(50)})
    seen: set[tuple[int, ...]] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(tuple(sorted(set(safe.values()))))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(1, 60):
            safe.update({f"k{i}": round_ for i in range(50)})
    finally:
        stop.set()
        reader.join()
    assert all(len(values) == 1 for values in seen)


def _ready(barrier: Any, settings: dict[str, Any], name: str) -> tuple[RedisManager, Safe]:
    """Connect, then wait for the other processes, so that they all write at once."""
    manager = RedisManager.from_settings(settings)
    safe = get_safe(name, manager)
    safe.get("connect")
    barrier.wait(30)
    return manager, safe


def _increment(barrier: Any, settings: dict[str, Any], name: str, times: int) -> None:
    manager, safe = _ready(barrier, settings, name)
    for _ in range(times):
        for attempt in safe.atomic(retries=1000):
            with attempt as s:
                s["n"] = s.get("n", 0) + 1
    manager.close()


def _write_distinct_and_shared(
    barrier: Any, settings: dict[str, Any], name: str, worker: int
) -> None:
    manager, safe = _ready(barrier, settings, name)
    for i in range(25):
        safe[f"w{worker}-{i}"] = [worker, i]
        safe["last"] = worker
        for attempt in safe.atomic(retries=1000):
            with attempt as s:
                s["log"] = [*s.get("log", []), f"{worker}-{i}"]
    manager.close()


def _run_processes(target: Callable[..., None], args: list[tuple[Any, ...]]) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(args))
    processes = [ctx.Process(target=target, args=(barrier, *a)) for a in args]
    for p in processes:
        p.start()
    for p in processes:
        p.join(60)
    assert [p.exitcode for p in processes] == [0] * len(processes)


@pytest.mark.slow
def test_atomic_increments_from_four_processes_are_exact(
    safe: Safe, transient_settings: dict[str, Any]
) -> None:
    _run_processes(_increment, [(transient_settings, safe.name, 50)] * 4)
    assert safe["n"] == 200


@pytest.mark.slow
def test_processes_writing_distinct_and_shared_keys_lose_nothing(
    safe: Safe, transient_settings: dict[str, Any]
) -> None:
    _run_processes(
        _write_distinct_and_shared, [(transient_settings, safe.name, w) for w in range(3)]
    )
    contents = safe.snapshot()
    assert {k: v for k, v in contents.items() if k.startswith("w")} == {
        f"w{w}-{i}": [w, i] for w in range(3) for i in range(25)
    }
    assert sorted(contents["log"]) == sorted(f"{w}-{i}" for w in range(3) for i in range(25))
    assert contents["last"] in (0, 1, 2)


# ---------------------------------------------------------------------- binding


def test_a_module_level_safe_binds_to_the_running_app(
    transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    config = Configurator(settings=transient_settings)
    config.include("pyramid_transient.safe")
    env = prepare(registry=config.registry)  # what pyramid.paster.bootstrap does
    try:
        MODULE_SAFE["a"] = 1
        key = MODULE_SAFE.key
    finally:
        env["closer"]()
    assert key.startswith(transient_settings["transient.key_prefix"] + ":safe:")
    assert transient_manager.get("safe").hget(key, "a") == b"1"


def test_a_module_level_safe_follows_whichever_app_is_running(
    transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    keys = []
    for prefix in ("appone", "apptwo"):
        config = Configurator(settings={**transient_settings, "transient.key_prefix": prefix})
        config.include("pyramid_transient.safe")
        env = prepare(registry=config.registry)
        try:
            MODULE_SAFE["app"] = prefix
            keys.append(MODULE_SAFE.key)
        finally:
            env["closer"]()
    client = transient_manager.get("safe")
    assert [client.hget(k, "app") for k in keys] == [b'"appone"', b'"apptwo"']


def test_a_module_level_safe_does_not_keep_an_app_alive(
    transient_settings: dict[str, Any],
) -> None:
    config = Configurator(settings=transient_settings)
    config.include("pyramid_transient.safe")
    env = prepare(registry=config.registry)
    try:
        MODULE_SAFE.get("a")
    finally:
        env["closer"]()
    manager = weakref.ref(get_manager(config.registry))
    manager().close()  # type: ignore[union-attr]
    del config, env
    gc.collect()
    assert manager() is None


def test_a_module_level_safe_without_a_running_app_says_how_to_bind_it() -> None:
    with pytest.raises(ConfigurationError, match="no application is running"):
        MODULE_SAFE.get("a")


def test_a_safe_bound_to_a_registry_uses_that_apps_manager(
    transient_settings: dict[str, Any],
) -> None:
    config = Configurator(settings=transient_settings)
    config.include("pyramid_transient.safe")
    safe = get_safe("tests.registry", config.registry)
    safe["a"] = 1
    manager = get_manager(config.registry)
    stored = manager.get("safe").hget(safe.key, "a")
    manager.close()
    assert stored == b"1"


@pytest.mark.parametrize("bad", [-1, True, "1"])
def test_a_bad_wait_replicas_argument_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="wait_replicas must be an integer of at least 0"):
        get_safe("tests.bad", wait_replicas=bad)


@pytest.mark.parametrize("bad", ["1", float("inf"), float("nan"), 0, -1, True])
def test_a_bad_wait_timeout_argument_is_refused_naming_it(bad: Any) -> None:
    with pytest.raises(ValueError, match=f"wait_timeout must be .*not {bad!r}"):
        get_safe("tests.bad", wait_timeout=bad)


@pytest.mark.parametrize("bad", ["redis://localhost:6379", object()], ids=["url", "object"])
def test_a_target_that_is_no_client_manager_registry_or_request_is_refused(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"redis\.Redis.*RedisManager.*registry.*request"):
        get_safe("tests.bad", bad)


def test_deleting_a_missing_key_in_an_atomic_block_raises_keyerror(safe: Safe) -> None:
    with pytest.raises(KeyError), safe.atomic() as s:
        del s["missing"]


def test_a_safe_on_a_bare_client_uses_unprefixed_keys(transient_redis: redis.Redis) -> None:
    bare = get_safe("tests.bare", transient_redis)
    bare["a"] = 1
    assert bare.key == "safe:{tests.bare}"
    assert transient_redis.hget("safe:{tests.bare}", "a") == b"1"


def test_a_safe_on_the_memory_backend_works(transient_memory: RedisManager) -> None:
    safe = get_safe("tests.memory", transient_memory)
    safe.update(a=1, b=2)
    with safe.atomic() as s:
        s["a"] += s.pop("b")
    assert safe.snapshot() == {"a": 3}


# ---------------------------------------------------------------------- durability


def test_a_server_that_persists_nothing_is_warned_about_at_first_use(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A server of its own: the plugin's shared test server is silenced on purpose.
    with RedisServer() as server:
        manager = RedisManager.from_settings(test_settings(server.url))
        safe = get_safe("tests.volatile", manager)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            safe.get("a")
            safe.get("a")
        manager.close()
    warnings = [r for r in caplog.records if "persists nothing" in r.getMessage()]
    assert len(warnings) == 1


def test_the_plugins_own_test_server_is_not_warned_about(
    safe: Safe, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        safe.get("a")
    assert [r for r in caplog.records if "persists nothing" in r.getMessage()] == []


def test_a_server_with_an_append_only_file_is_not_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with RedisServer(args=["--appendonly", "yes"]) as server:
        manager = RedisManager.from_settings(test_settings(server.url))
        with caplog.at_level(logging.INFO, logger=LOGGER):
            get_safe("tests.aof", manager).get("a")
        manager.close()
    assert caplog.records == []


def test_a_server_without_config_is_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with RedisServer(args=["--rename-command", "CONFIG", ""]) as server:
        manager = RedisManager.from_settings(test_settings(server.url))
        with caplog.at_level(logging.INFO, logger=LOGGER):
            safe = get_safe("tests.noconfig", manager)
            safe["a"] = 1
            assert safe["a"] == 1
        manager.close()
    assert [r.levelno for r in caplog.records if r.levelno >= logging.INFO] == []


def test_wait_replicas_makes_a_write_reach_the_replica_in_one_round_trip(
    replicated: tuple[RedisServer, RedisServer], round_trips: Any
) -> None:
    master, replica = replicated
    manager = RedisManager.from_settings(
        test_settings(master.url, **{"transient.safe.wait_replicas": "1"})
    )
    safe = get_safe("tests.replicated", manager)
    _prime(safe)
    with round_trips() as rt:
        safe["a"] = {"x": 1}
    manager.close()
    assert rt.commands == ["HSET WAIT"]
    assert redis.Redis(port=replica.port, db=13).hget(safe.key, "a") == b'{"x":1}'


def test_wait_replicas_covers_script_writes_and_atomic_commits(
    replicated: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = replicated
    manager = RedisManager.from_settings(test_settings(master.url))
    safe = get_safe("tests.replicated_scripts", manager, wait_replicas=1)
    safe.update(a=1, b=2)
    safe.pop("b")
    with safe.atomic() as s:
        s["a"] += 1
    manager.close()
    assert redis.Redis(port=replica.port, db=13).hgetall(safe.key) == {b"a": b"2"}


def test_wait_replicas_without_replicas_raises_replication_timeout(
    transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    manager = RedisManager.from_settings(
        {
            **transient_settings,
            "transient.safe.wait_replicas": "1",
            "transient.safe.wait_timeout": "0.05",
        }
    )
    safe = get_safe("tests.unreplicated", manager)
    try:
        with pytest.raises(ReplicationTimeout, match="only 0 of") as info:
            safe["a"] = 1
    finally:
        manager.close()
    assert (info.value.wanted, info.value.acknowledged) == (1, 0)
    assert transient_manager.get("safe").hget(safe.key, "a") == b"1"  # applied on the master


def test_a_wait_longer_than_the_socket_timeout_is_not_a_socket_timeout(
    transient_settings: dict[str, Any],
) -> None:
    manager = RedisManager.from_settings(
        {
            **transient_settings,
            "transient.socket_timeout": "0.05",
            "transient.safe.wait_replicas": "1",
            "transient.safe.wait_timeout": "0.2",
        }
    )
    try:
        with pytest.raises(ReplicationTimeout):
            get_safe("tests.slow_wait", manager)["a"] = 1
    finally:
        manager.close()


def test_wait_replicas_on_the_memory_backend_is_a_configuration_error() -> None:
    config = Configurator(
        settings={"transient.url": "memory://safe-wait", "transient.safe.wait_replicas": "1"}
    )
    with pytest.raises(ConfigurationError, match=r"transient.safe.wait_replicas is 1"):
        config.include("pyramid_transient.safe")


# ---------------------------------------------------------------------- Cluster and Sentinel


@pytest.mark.cluster
def test_a_safe_works_on_a_cluster(transient_cluster_manager: RedisManager) -> None:
    safe = get_safe("tests.cluster", transient_cluster_manager)
    safe.update(a=1, b=2)
    assert safe.pop("b") == 2
    with safe.atomic() as s:
        s["a"] += 1
        s["c"] = len(s)
    assert safe.snapshot() == {"a": 2, "c": 1}


@pytest.mark.sentinel
def test_wait_replicas_works_behind_sentinel(transient_sentinel_manager: RedisManager) -> None:
    safe = get_safe("tests.sentinel", transient_sentinel_manager, wait_replicas=1)
    safe["a"] = 1
    with safe.atomic() as s:
        s["a"] += 1
    assert safe["a"] == 2


def test_an_atomic_block_reads_a_corrupt_value_as_missing_when_iterating(
    safe: Safe, transient_redis: redis.Redis
) -> None:
    safe["good"] = 1
    transient_redis.hset(safe.key, "bad", b"{")
    assert safe.snapshot() == {"good": 1}
    with safe.atomic() as s:
        assert dict(s.items()) == {"good": 1}


def test_db_name_puts_the_safe_in_another_named_database(transient_settings: Any) -> None:
    manager = RedisManager.from_settings({**transient_settings, "transient.db.jobs": "15"})
    try:
        jobs = get_safe("tests.module_db", manager, db_name="jobs")
        jobs["k"] = 1
        assert manager.get("jobs").hexists(jobs.key, "k")
        assert manager.db_number("safe") != 15 and not manager.get("safe").exists(jobs.key)
        assert get_safe("tests.module_db", manager).get("k") is None  # the safe db: another
    finally:
        manager.get("jobs").delete(jobs.key)
        manager.close()
