"""A safe over hostile data, on the real server: foreign types, truncated and random values.

A safe is one Redis hash. A value that does not decode reads as missing and the next write
replaces it; the hash replaced by another type reads as an empty safe (with a warning naming
the key), and a write raises ``CorruptData`` naming the key and its repair. Other safes are
not affected.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import pytest

from pyramid_transient import CorruptData
from pyramid_transient.codec import encode
from pyramid_transient.connection import RedisManager
from pyramid_transient.safe import Safe, get_safe

FOREIGN_TYPES: dict[str, Callable[[Any, str], Any]] = {
    "list": lambda c, k: c.rpush(k, "a", "b"),
    "set": lambda c, k: c.sadd(k, "a"),
    "string": lambda c, k: c.set(k, "not a hash"),
    "zset": lambda c, k: c.zadd(k, {"a": 1}),
}

BAD_VALUES: dict[str, bytes] = {
    "truncated": encode({"a": [1, 2, 3]})[:-3],
    "random bytes": os.urandom(64),
    "empty": b"",
}


@pytest.fixture
def safe(transient_manager: RedisManager) -> Safe:
    return get_safe("tests.corrupt", transient_manager)


@pytest.fixture
def bystander(transient_manager: RedisManager) -> Safe:
    other = get_safe("tests.bystander", transient_manager)
    other["kept"] = [1, 2]
    return other


READS: dict[str, tuple[Callable[[Safe], Any], Any]] = {
    "get": (lambda s: s.get("x", "default"), "default"),
    "contains": (lambda s: "x" in s, False),
    "len": (lambda s: len(s), 0),
    "keys": (lambda s: list(s.keys()), []),
    "items": (lambda s: dict(s.items()), {}),
    "snapshot": (lambda s: s.snapshot(), {}),
    "scan": (lambda s: list(s.scan()), []),
}


@pytest.mark.parametrize("kind", FOREIGN_TYPES)
@pytest.mark.parametrize("read", READS)
def test_a_foreign_type_reads_as_an_empty_safe_with_a_warning_naming_the_key(
    safe: Safe,
    bystander: Safe,
    transient_manager: RedisManager,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    read: str,
) -> None:
    client = transient_manager.get("safe")
    FOREIGN_TYPES[kind](client, safe.key)
    call, empty = READS[read]
    with caplog.at_level(logging.WARNING, "pyramid_transient.safe"):
        assert call(safe) == empty
    assert safe.key in caplog.text and f"DEL {safe.key}" in caplog.text
    assert bystander["kept"] == [1, 2]


WRITES: dict[str, Callable[[Safe], Any]] = {
    "setitem": lambda s: s.__setitem__("x", 1),
    "delitem": lambda s: s.__delitem__("x"),
    "update": lambda s: s.update({"x": 1, "y": 2}),
    "pop": lambda s: s.pop("x", None),
    "setdefault": lambda s: s.setdefault("x", 1),
}


def _atomic(s: Safe) -> None:
    with s.atomic() as txn:
        txn["x"] = txn.get("x", 0) + 1


WRITES["atomic"] = _atomic


@pytest.mark.parametrize("write", WRITES)
def test_a_write_over_a_foreign_type_raises_corrupt_data_naming_the_key_and_repair(
    safe: Safe, bystander: Safe, transient_manager: RedisManager, write: str
) -> None:
    client = transient_manager.get("safe")
    client.rpush(safe.key, "foreign")
    with pytest.raises(CorruptData) as info:
        WRITES[write](safe)
    assert info.value.key == safe.key
    assert info.value.repair is not None and f"DEL {safe.key}" in info.value.repair
    assert isinstance(info.value, ValueError)
    assert client.lrange(safe.key, 0, -1) == [b"foreign"]  # nothing of it destroyed
    assert bystander["kept"] == [1, 2]
    client.delete(safe.key)  # the repair it names works
    safe["x"] = 0
    WRITES[write](safe)


def test_clear_replaces_a_foreign_type(safe: Safe, transient_manager: RedisManager) -> None:
    client = transient_manager.get("safe")
    client.rpush(safe.key, "foreign")
    safe.clear()  # one DEL of the safe's key, whatever it holds: what clear() means
    safe["x"] = 1
    assert safe.snapshot() == {"x": 1}


def test_another_programs_json_is_plain_data_and_runs_nothing(
    safe: Safe, transient_manager: RedisManager
) -> None:
    planted = b'{"__class__": "os.system", "args": ["echo"], "py/reduce": [1]}'
    transient_manager.get("safe").hset(safe.key, "x", planted)
    assert safe["x"] == {"__class__": "os.system", "args": ["echo"], "py/reduce": [1]}


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_a_value_that_does_not_decode_reads_as_missing_and_the_next_write_replaces_it(
    safe: Safe, transient_manager: RedisManager, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    safe["good"] = 1
    transient_manager.get("safe").hset(safe.key, "x", BAD_VALUES[bad])
    with caplog.at_level(logging.WARNING, "pyramid_transient.safe"):
        assert safe.get("x", "missing") == "missing"
        assert "x" not in safe.snapshot() and safe.snapshot() == {"good": 1}
        assert dict(safe.scan()) == {"good": 1}
    assert "'x'" in caplog.text
    with safe.atomic() as txn:  # a read-modify-write sees it missing too
        txn["x"] = txn.get("x", 10) + 1
    assert safe["x"] == 11


def test_a_field_name_that_is_not_utf8_is_skipped(
    safe: Safe, transient_manager: RedisManager
) -> None:
    safe["good"] = 1
    transient_manager.get("safe").hset(safe.key, b"\xff\xfe", encode(2))
    assert list(safe.keys()) == ["good"]
    assert safe.snapshot() == {"good": 1}
    assert len(safe) == 2  # HLEN counts what is there; iteration shows what can be named
