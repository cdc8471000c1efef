"""Damaged keys of models, on the real server: key kind x fault -> outcome.

Each case plants one fault into one key of a class (``Victim``) and checks what the
capability promises for it (DESIGN section 7): a bad object reads as missing with a WARNING
naming its key and is replaced by its next save; a structural key is repaired, or the call
raises :class:`~pyramid_transient.exceptions.CorruptData` naming the key and the repair.
Another class (``Bystander``) stays readable throughout. No case may leak redis-py's
``ResponseError``, a ``UnicodeDecodeError`` or a Lua error: any of those fails the test.

The table is the one in docs/reliability.rst ("Models").
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pyramid_transient.connection import RedisManager
from pyramid_transient.exceptions import CorruptData, ObjectNotFound
from pyramid_transient.models import RedisModel

RANDOM = random.Random(13).randbytes(40)  # the same bytes on every run


def build(layout: str) -> tuple[type[RedisModel], type[RedisModel], type[RedisModel]]:
    class Victim(RedisModel):
        __layout__ = layout
        __indexes__ = ("n", "tag")
        id: int
        n: int
        tag: str

    class Gen(RedisModel):
        __layout__ = layout
        id: int | None = None
        n: int = 0

    class Bystander(RedisModel):
        __layout__ = layout
        id: int
        text: str

    return Victim, Gen, Bystander


MODELS = {layout: build(layout) for layout in ("hash", "key")}


@dataclass
class World:
    manager: RedisManager
    layout: str
    Victim: Any
    Gen: Any
    Bystander: Any

    @property
    def client(self) -> Any:
        return self.manager.get("models")

    def key(self, *parts: str, model: str = "Victim") -> str:
        return self.manager.keyspace("model", "models").tagged(model, *parts)


@pytest.fixture(params=["hash", "key"])
def world(request: pytest.FixtureRequest, transient_manager: RedisManager) -> Iterator[World]:
    Victim, Gen, Bystander = MODELS[request.param]
    RedisModel.objects.bind(transient_manager)
    Victim(id=10, n=1, tag="a").save()
    Victim(id=20, n=2, tag="b").save()
    Bystander(id=1, text="safe").save()
    yield World(transient_manager, request.param, Victim, Gen, Bystander)
    Gen.objects.unbind()  # a test may have bound nothing else; the root binding goes below
    RedisModel.objects.unbind()


def ids(objs: Any) -> list[int]:
    return sorted(o.id for o in objs)


def truncated(value: bytes) -> bytes:
    return value[: len(value) // 2]


def warnings_naming(caplog: pytest.LogCaptureFixture, key: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and key in r.getMessage()
    ]


# ---------------------------------------------------------------------- the faults


def data_key(w: World) -> str:
    return w.key("data") if w.layout == "hash" else w.key("obj", "10")


def plant_value(w: World, fault: str) -> str:
    """The stored JSON of object 10 (its field of the data hash, or its own key)."""
    key = data_key(w)
    if w.layout == "hash":
        value = w.client.hget(key, "10")
        bad = truncated(value) if fault == "truncated" else RANDOM
        w.client.hset(key, "10", bad)
    elif fault == "wrong type":
        w.client.delete(key)
        w.client.rpush(key, "x")
    else:
        w.client.set(key, truncated(w.client.get(key)) if fault == "truncated" else RANDOM)
    return key


def plant_whole(w: World, key: str) -> str:
    """``key`` replaced by a list."""
    w.client.delete(key)
    w.client.rpush(key, "x")
    return key


def plant_meta(w: World, fault: str) -> str:
    key = w.key("meta")
    if fault == "wrong type":
        return plant_whole(w, key)
    record = w.client.hget(key, "10")
    w.client.hset(key, "10", truncated(record) if fault == "truncated" else RANDOM)
    return key


def plant_all(w: World, fault: str) -> str:
    key = w.key("all")
    if fault == "wrong type":
        return plant_whole(w, key)
    if fault == "truncated":  # the member "10" cut to "1"
        score = w.client.zscore(key, "10")
        w.client.zrem(key, "10")
        w.client.zadd(key, {"1": score})
    else:
        w.client.zadd(key, {RANDOM: float("inf")})
    return key


def plant_idx(w: World, fault: str) -> str:
    key = w.key("idx", "tag")
    if fault == "wrong type":
        return plant_whole(w, key)
    if fault == "truncated":  # the entry "a\0" "10" cut to "a"
        w.client.zrem(key, b"a\x0010")
        w.client.zadd(key, {b"a": 0})
    else:
        w.client.zadd(key, {RANDOM: 0, b"a\x00" + RANDOM: 0})
        w.client.zadd(w.key("idx", "n"), {RANDOM: 1})
    return key


def plant_seq(w: World, fault: str) -> str:
    key = w.key("meta")
    seq = w.client.hget(key, "\0seq")
    bad = {"wrong type": b"12.5", "truncated": seq[:3], "random bytes": RANDOM}[fault]
    w.client.hset(key, "\0seq", bad)
    return key


def plant_ids(w: World, fault: str) -> str:
    w.Gen(n=1).save()
    w.Gen(n=2).save()  # ids 1 and 2; the counter holds 1000 (a block is reserved)
    key = w.key("ids", model="Gen")
    if fault == "wrong type":
        plant_whole(w, key)
    else:
        w.client.set(key, b"1" if fault == "truncated" else RANDOM)  # "1000" cut to "1"
    w.Gen.__transient_meta__.id_blocks.forget(key)  # as a new process would
    return key


PLANTS: dict[str, Callable[[World, str], str]] = {
    "data": plant_value,
    "meta": plant_meta,
    "all": plant_all,
    "idx": plant_idx,
    "seq": plant_seq,
    "ids": plant_ids,
}


# ---------------------------------------------------------------------- the outcomes


def object_missing(w: World, key: str, caplog: pytest.LogCaptureFixture) -> None:
    """Object 10 reads as missing, with a WARNING naming its key; the next save replaces
    it; count() agrees with the reads."""
    with pytest.raises(ObjectNotFound):
        w.Victim.objects.get(10)
    assert len(warnings_naming(caplog, key)) == 1
    assert ids(w.Victim.objects.all()) == [20]
    assert ids(w.Victim.objects.filter(n__gte=0)) == [20]
    assert ids(w.Victim.objects.filter(tag__in=["a", "b"])) == [20]
    assert w.Victim.objects.count() == 1
    w.Victim(id=10, n=1, tag="a").save()
    assert w.Victim.objects.get(10).tag == "a"
    assert ids(w.Victim.objects.filter(tag="a")) == [10]
    assert w.Victim.objects.count() == 2


def key_deleted(w: World, key: str, caplog: pytest.LogCaptureFixture) -> None:
    """The key is deleted with a WARNING naming it; the class's objects read as missing
    until saved again."""
    with pytest.raises(ObjectNotFound):
        w.Victim.objects.get(10)
    assert warnings_naming(caplog, key)
    assert w.Victim.objects.count() == 0
    assert w.Victim.objects.all() == []
    w.Victim(id=10, n=1, tag="a").save()
    assert w.Victim.objects.get(10).n == 1
    assert ids(w.Victim.objects.filter(tag="a")) == [10]
    assert w.Victim.objects.count() == 1


def meta_deleted(w: World, key: str, caplog: pytest.LogCaptureFixture) -> None:
    """meta is deleted with a WARNING naming it; objects stay readable (versions start
    again above every earlier one); stale index entries are skipped by filters."""
    assert w.Victim.objects.get(10).n == 1
    assert warnings_naming(caplog, key)
    assert ids(w.Victim.objects.filter(tag="a")) == [10]
    assert w.Victim.objects.count() == 2
    obj = w.Victim.objects.get(10)
    obj.tag = "c"
    obj.save()
    assert obj._version > 0
    assert ids(w.Victim.objects.filter(tag="a")) == []
    assert ids(w.Victim.objects.filter(tag="c")) == [10]


def record_ignored(w: World, key: str, caplog: pytest.LogCaptureFixture) -> None:
    """A damaged record of object 10 in meta: reads are unaffected; its next save writes
    a new record, and filters skip the entries the old one owned."""
    assert w.Victim.objects.get(10).n == 1
    assert ids(w.Victim.objects.filter(tag="a")) == [10]
    assert w.Victim.objects.count() == 2
    obj = w.Victim.objects.get(10)
    obj.tag = "c"
    obj.save()
    assert ids(w.Victim.objects.filter(tag="a")) == []
    assert ids(w.Victim.objects.filter(tag="c")) == [10]
    assert w.Victim.objects.get(10).tag == "c"


def entry_unlisted(w: World, key: str, caplog: pytest.LogCaptureFixture) -> None:
    """``all`` lists "1" instead of "10": object 10 is missing (nothing says it exists)
    until saved again; the stray entry reads as missing and is cleaned."""
    with pytest.raises(ObjectNotFound):
        w.Victim.objects.get(10)
    with pytest.raises(ObjectNotFound):
        w.Victim.objects.get(1)
    assert w.Victim.objects.count() == 1
    assert ids(w.Victim.objects.all()) == [20]
    assert w.client.zscore(key, "1") is None  # cleaned by the read
    w.Victim(id=10, n=1, tag="a").save()
    assert w.Victim.objects.count() == 2


def entries_ignored(w: World, key: str, caplog: pytest.LogCaptureFixture) -> None:
    """Entries not ours (no object behind them): skipped, cleaned, every read right."""
    assert w.Victim.objects.get(10).n == 1
    assert ids(w.Victim.objects.filter(tag="a")) == [10]
    assert ids(w.Victim.objects.filter(n=1)) == [10]
    assert ids(w.Victim.objects.all()) == [10, 20]
    assert w.Victim.objects.count() == 2
    if key == w.key("all"):
        if w.layout == "hash":  # listed without data: cleaned by the scan
            assert w.client.zscore(key, RANDOM) is None
    else:  # the entries the filters met are cleaned
        assert w.client.zscore(key, b"a\x00" + RANDOM) is None
        assert w.client.zscore(w.key("idx", "n"), RANDOM) is None


def index_entry_dropped(w: World, key: str, caplog: pytest.LogCaptureFixture) -> None:
    """The index entry of object 10 is damaged: the filter drops it, so object 10 is found
    through that index again after its next save or ``rebuild_indexes()``."""
    assert ids(w.Victim.objects.filter(tag="a")) == []
    assert ids(w.Victim.objects.filter(tag__startswith="a")) == []
    assert w.client.zscore(key, b"a") is None  # met by the prefix filter: cleaned
    assert ids(w.Victim.objects.filter(n=1)) == [10]  # the other index is whole
    assert w.Victim.objects.rebuild_indexes() == 2
    assert ids(w.Victim.objects.filter(tag="a")) == [10]
    assert ids(w.Victim.objects.filter(n=2)) == [20]


def filter_refused(w: World, key: str, caplog: pytest.LogCaptureFixture) -> None:
    """A filter through the index raises CorruptData naming it and the repair; everything
    else works, and the repair restores the index."""
    with pytest.raises(CorruptData) as info:
        w.Victim.objects.filter(tag="a")
    assert info.value.key == key
    assert info.value.repair == "Victim.objects.rebuild_indexes()"
    assert ids(w.Victim.objects.filter(n=1)) == [10]
    assert w.Victim.objects.get(10).tag == "a"
    w.Victim(id=30, n=3, tag="c").save()
    assert w.Victim.objects.count() == 3
    assert w.Victim.objects.rebuild_indexes() == 3
    assert ids(w.Victim.objects.filter(tag="a")) == [10]
    assert ids(w.Victim.objects.filter(tag__gte="b")) == [20, 30]


def seq_reset(w: World, key: str, caplog: pytest.LogCaptureFixture) -> None:
    """The version counter is reset past every version seen: saves work and an object's
    version only grows, so optimistic checks stay sound."""
    before = w.Victim.objects.get(10)
    other = w.Victim.objects.get(20)
    before.n = 5
    before.save()
    assert before._version > other._version
    assert w.Victim.objects.get(10)._version == before._version
    other.n = 6
    other.save(if_unmodified=True)  # its own version checked: still the one it read
    stale = w.Victim.objects.get(10)
    w.Victim.objects.get(10).save()
    with pytest.raises(Exception, match="was changed since it was read"):
        stale.save(if_unmodified=True)


def ids_reset(w: World, key: str, caplog: pytest.LogCaptureFixture) -> None:
    """Generated ids stay distinct: the counter is reset (or moved ahead) past every id it
    handed out, with a WARNING naming it."""
    new = w.Gen(n=3).save()
    assert new.id not in (1, 2)
    assert warnings_naming(caplog, key)
    assert sorted(o.n for o in w.Gen.objects.all()) == [1, 2, 3]


OUTCOMES = {
    ("data", "wrong type"): object_missing,
    ("data", "truncated"): object_missing,
    ("data", "random bytes"): object_missing,
    ("meta", "wrong type"): meta_deleted,
    ("meta", "truncated"): record_ignored,
    ("meta", "random bytes"): record_ignored,
    ("all", "wrong type"): key_deleted,
    ("all", "truncated"): entry_unlisted,
    ("all", "random bytes"): entries_ignored,
    ("idx", "wrong type"): filter_refused,
    ("idx", "truncated"): index_entry_dropped,
    ("idx", "random bytes"): entries_ignored,
    ("seq", "wrong type"): seq_reset,
    ("seq", "truncated"): seq_reset,
    ("seq", "random bytes"): seq_reset,
    ("ids", "wrong type"): ids_reset,
    ("ids", "truncated"): ids_reset,
    ("ids", "random bytes"): ids_reset,
}


@pytest.mark.parametrize(("kind", "fault"), list(OUTCOMES), ids=lambda v: v.replace(" ", "-"))
def test_damaged_key(
    world: World, kind: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    if kind == "data" and fault == "wrong type" and world.layout == "hash":
        key = plant_whole(world, world.key("data"))  # the whole hash: every object
        outcome: Callable[[World, str, pytest.LogCaptureFixture], None] = key_deleted
    else:
        key = PLANTS[kind](world, fault)
        outcome = OUTCOMES[kind, fault]
    with caplog.at_level(logging.WARNING, logger="pyramid_transient.models"):
        outcome(world, key, caplog)
    # only that key's objects are affected
    assert world.Bystander.objects.get(1).text == "safe"
    assert world.Bystander.objects.count() == 1
    assert [b.id for b in world.Bystander.objects.filter(text="safe")] == [1]
