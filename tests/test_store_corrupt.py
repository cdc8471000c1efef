"""Corrupt data in every key of the store, on the suite's real server.

One table: for each key kind of a section (and the app-wide section listing), a value of
the wrong type, a truncated value and random bytes / a non-UTF-8 member are planted; the
row's check states what callers see. In every row the other section stays readable and
nothing leaks as redis-py's ``ResponseError``, a Lua error or ``UnicodeDecodeError``.
docs/reliability.rst ("Store") shows the same table.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pyramid_transient.codec import encode
from pyramid_transient.connection import RedisManager
from pyramid_transient.exceptions import CorruptData, LockTimeout
from pyramid_transient.store import Proxy, root, section
from pyramid_transient.store._binding import bind_store
from test_store_locks import other_owner

DOC = {"a": "hello", "b": 2}


@dataclass
class Env:
    manager: RedisManager
    client: Any
    sect: Proxy
    caplog: Any

    def key(self, part: str) -> str:
        if part == "sections":
            return self.manager.keyspace("store").key("sections")
        return self.manager.keyspace("store").tagged("s", part)

    def wrong_type(self, part: str) -> None:
        self.client.delete(self.key(part))
        self.client.set(self.key(part), "planted by another program")

    def warnings_naming(self, part: str) -> list[str]:
        key = self.key(part)
        return [
            r.getMessage()
            for r in self.caplog.records
            if r.levelno == logging.WARNING and key in r.getMessage()
        ]

    def one_warning(self, part: str) -> None:
        assert len(self.warnings_naming(part)) == 1, self.caplog.text

    def doc(self) -> Any:
        return self.sect.get("doc").val()


@pytest.fixture
def env(transient_manager: RedisManager, caplog: Any) -> Env:
    client = transient_manager.get("store")
    sect = section("s", redis=transient_manager)
    sect.set("doc", DOC)
    sect.set("timed", 1, expire=100)
    with sect.get("doc"):  # leaves a fence and a wake-up
        pass
    section("other", redis=transient_manager).set("x", 1)
    caplog.set_level(logging.WARNING)
    caplog.clear()
    return Env(transient_manager, client, sect, caplog)


# another owner of the lock: the same helper as the lock tests'
in_another_thread = other_owner


# ---------------------------------------------------------------------- data


def data_wrong_type(env: Env) -> None:
    env.wrong_type("data")
    assert env.doc() is None  # read as missing
    env.one_warning("data")
    assert not env.sect.get("doc").exists()
    env.sect.set("doc", {"a": 1})  # the next write replaces it
    assert env.doc() == {"a": 1}
    assert env.client.type(env.key("data")) == b"hash"


def data_bad_value(raw: bytes) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        env.client.hset(env.key("data"), "doc.a.", raw)
        assert env.doc() == {"b": 2}  # that leaf is missing, its neighbours are not
        env.one_warning("data")
        assert env.sect.get("doc.a").val("gone") == "gone"
        env.sect.set("doc.a", 1)  # the next write replaces it
        assert env.doc() == {"a": 1, "b": 2}

    return check


# ---------------------------------------------------------------------- paths


def paths_wrong_type(env: Env) -> None:
    env.wrong_type("paths")
    assert env.doc() == DOC  # rebuilt from data
    env.one_warning("paths")
    assert env.client.type(env.key("paths")) == b"zset"
    assert [c.key() for c in env.sect.iter_children()] == ["s.doc", "s.timed"]


def paths_bad_member(member: bytes) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        env.client.zadd(env.key("paths"), {member: 0})
        assert env.doc() == DOC  # no data field behind it: ignored
        assert env.sect.val() == {"doc": DOC, "timed": 1}
        assert [c.key() for c in env.sect.iter_children()] == ["s.doc", "s.timed"]
        env.sect.delete("doc")
        assert env.sect.val() == {"timed": 1}

    return check


# ---------------------------------------------------------------------- expiry


def expiry_wrong_type(env: Env) -> None:
    env.wrong_type("expiry")
    assert env.doc() == DOC
    env.one_warning("expiry")
    assert env.sect.get("timed").time_to_live() == -1  # its expiry was lost with the key
    assert env.sect.get("doc").expire(100)
    assert env.client.type(env.key("expiry")) == b"zset"


def expiry_bad_member(member: bytes) -> Callable[[Env], None]:
    # A member that is not a node path, already due: purging it as a subtree would
    # take the range ["do", "d/"), which spans "doc.": it must only be removed.
    def check(env: Env) -> None:
        env.client.zadd(env.key("expiry"), {member: 1})
        env.client.zadd(env.key("expiring"), {member: 0})
        assert env.doc() == DOC
        env.one_warning("expiry")
        assert env.client.zscore(env.key("expiry"), member) is None
        assert env.sect.get("timed").time_to_live() is not None

    return check


# ---------------------------------------------------------------------- expiring


def expiring_wrong_type(env: Env) -> None:
    env.wrong_type("expiring")
    assert env.doc() == DOC
    env.one_warning("expiring")
    assert env.client.zrange(env.key("expiring"), 0, -1) == [b"timed."]  # rebuilt
    env.sect.delete("timed")  # finds the expiry inside the subtree through it
    assert env.client.zrange(env.key("expiry"), 0, -1) == []


def expiring_bad_member(member: bytes) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        env.client.zadd(env.key("expiring"), {member: 0})
        assert env.doc() == DOC  # only ranges of it are read: ignored
        env.sect.delete("timed")
        assert env.sect.val() == {"doc": DOC}
        assert env.sect.get("doc").expire(100)

    return check


# ---------------------------------------------------------------------- locks


def locks_wrong_type(env: Env) -> None:
    env.wrong_type("locks")
    assert env.doc() == DOC  # data never needs the lock hash to read
    with env.sect.get("doc") as doc:  # no readable lock: free; the hash is replaced
        doc.set("b", 3)
    env.one_warning("locks")
    assert env.doc() == {"a": "hello", "b": 3}
    assert env.client.type(env.key("locks")) in (b"hash", b"none")


def locks_bad_record(raw: bytes) -> Callable[[Env], None]:
    # A record with no expiry that cannot be parsed: treated as free and overwritten,
    # for its own path and for every path around it.
    def check(env: Env) -> None:
        env.client.hset(env.key("locks"), "doc.", raw)
        env.client.zadd(env.key("lockpaths"), {"doc.": 0})
        with env.sect:  # an ancestor of the corrupt record
            pass
        env.one_warning("locks")
        with env.sect.get("doc") as doc:
            assert doc.owns_lock()
            doc.set("b", 3)
        assert not env.sect.get("doc").is_locked()

    return check


# ---------------------------------------------------------------------- lockpaths


def lockpaths_wrong_type(env: Env) -> None:
    held = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with section("s", redis=env.manager).get("doc.a"):
            held.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(5)
        env.wrong_type("lockpaths")
        # rebuilt from the lock hash, so the descendant's lock still excludes us
        with pytest.raises(LockTimeout):
            env.sect.get("doc").acquire(blocking=False)
        env.one_warning("lockpaths")
        assert env.client.zrange(env.key("lockpaths"), 0, -1) == [b"doc.a."]
    finally:
        done.set()
        holder.join(5)
    with env.sect.get("doc"):
        pass


def lockpaths_bad_member(member: bytes) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        env.client.zadd(env.key("lockpaths"), {member: 0})
        with env.sect:  # no record behind it: ignored, and forgotten
            pass
        assert env.client.zscore(env.key("lockpaths"), member) is None

    return check


# ---------------------------------------------------------------------- fences


def fences_wrong_type(env: Env) -> None:
    env.wrong_type("fences")
    with pytest.raises(CorruptData) as caught:
        env.sect.get("doc").acquire()
    error = caught.value
    assert error.key == env.key("fences")
    assert error.repair == f"DEL {env.key('fences')}"
    assert env.doc() == DOC  # data unaffected
    with section("other", redis=env.manager):  # other sections unaffected
        pass
    env.client.execute_command(*error.repair.split())
    assert env.sect.get("doc").acquire() == 1
    env.sect.get("doc").release()


def fences_bad_counter(raw: bytes) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        env.client.hset(env.key("fences"), "doc.", raw)
        with pytest.raises(CorruptData) as caught:
            env.sect.get("doc").acquire()
        error = caught.value
        assert error.key == env.key("fences")
        assert error.repair == f'HDEL {env.key("fences")} "doc."'
        with env.sect.get("timed"):  # only that path's lock is affected
            pass
        env.client.hdel(env.key("fences"), "doc.")
        assert env.sect.get("doc").acquire() == 1
        env.sect.get("doc").release()

    return check


# ---------------------------------------------------------------------- released


def released_wrong_type(env: Env) -> None:
    env.wrong_type("released")
    with env.sect.get("doc"):
        # a waiter's BLPOP meets the wrong type: it sleeps instead, and times out cleanly
        waited = in_another_thread(
            lambda: section("s", redis=env.manager).get("doc").acquire(blocking_timeout=0.2)
        )
        assert isinstance(waited, LockTimeout)
    env.one_warning("released")  # dropped by the contended attempt
    assert env.client.type(env.key("released")) == b"list"  # the release pushed a wake-up


def released_bad_item(raw: bytes) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        env.client.rpush(env.key("released"), raw)
        with env.sect.get("doc"):  # wake-ups are only popped: ignored
            pass
        assert env.doc() == DOC

    return check


# ---------------------------------------------------------------------- sections


def sections_wrong_type(env: Env) -> None:
    env.wrong_type("sections")
    with pytest.raises(CorruptData) as caught:
        root(redis=env.manager).val()
    error = caught.value
    assert error.key == env.key("sections")
    assert error.repair == f"DEL {env.key('sections')}"
    env.sect.set("doc.b", 3)  # a section's own writes go on, logged
    env.one_warning("sections")
    assert env.doc() == {"a": "hello", "b": 3}
    env.client.execute_command(*error.repair.split())
    env.sect.set("doc.b", 4)  # listed again by its next write
    assert root(redis=env.manager).val() == {"s": {"doc": {"a": "hello", "b": 4}, "timed": 1}}


def sections_truncated(env: Env) -> None:
    env.client.sadd(env.key("sections"), "othe")  # a name cut short: an empty section
    tree = {"s": {"doc": DOC, "timed": 1}, "other": {"x": 1}}
    assert root(redis=env.manager).val() == tree
    assert [c.key() for c in root(redis=env.manager).iter_children()] == ["other", "s"]


def sections_bad_member(member: bytes) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        env.client.sadd(env.key("sections"), member)
        tree = {"s": {"doc": DOC, "timed": 1}, "other": {"x": 1}}
        assert root(redis=env.manager).val() == tree  # skipped
        env.one_warning("sections")
        assert not env.client.sismember(env.key("sections"), member)  # and removed
        assert root(redis=env.manager).exists()

    return check


TRUNCATED = encode("hello")[:-3]  # b'"he'
RANDOM = b"\xff\xfe\x00\x9c garbage"

#: key kind, fault, what the caller sees (the table of docs/reliability.rst), check
CASES: list[tuple[str, str, str, Callable[[Env], None]]] = [
    (
        "data",
        "wrong type",
        "read as missing, one WARNING; the next write replaces it",
        data_wrong_type,
    ),
    (
        "data",
        "truncated",
        "that leaf read as missing, one WARNING; the next write replaces it",
        data_bad_value(TRUNCATED),
    ),
    (
        "data",
        "random bytes",
        "that leaf read as missing, one WARNING; the next write replaces it",
        data_bad_value(RANDOM),
    ),
    ("paths", "wrong type", "rebuilt from data, one WARNING", paths_wrong_type),
    ("paths", "truncated", "ignored (no data behind it)", paths_bad_member(b"doc.a")),
    ("paths", "random bytes", "ignored (no data behind it)", paths_bad_member(RANDOM)),
    ("expiry", "wrong type", "dropped with its expiries, one WARNING", expiry_wrong_type),
    (
        "expiry",
        "truncated",
        "removed, one WARNING; never purges a neighbour",
        expiry_bad_member(b"do"),
    ),
    ("expiry", "random bytes", "removed, one WARNING", expiry_bad_member(RANDOM)),
    ("expiring", "wrong type", "rebuilt from expiry, one WARNING", expiring_wrong_type),
    ("expiring", "truncated", "ignored", expiring_bad_member(b"tim")),
    ("expiring", "random bytes", "ignored", expiring_bad_member(RANDOM)),
    ("locks", "wrong type", "dropped: its locks are free, one WARNING", locks_wrong_type),
    (
        "locks",
        "truncated",
        "the record is treated as free and overwritten, one WARNING",
        locks_bad_record(b"abc 1 17"),
    ),
    (
        "locks",
        "random bytes",
        "the record is treated as free and overwritten, one WARNING",
        locks_bad_record(RANDOM),
    ),
    ("lockpaths", "wrong type", "rebuilt from locks, one WARNING", lockpaths_wrong_type),
    ("lockpaths", "truncated", "ignored and removed", lockpaths_bad_member(b"do")),
    ("lockpaths", "random bytes", "ignored and removed", lockpaths_bad_member(RANDOM)),
    ("fences", "wrong type", "acquire raises CorruptData, repair DEL <key>", fences_wrong_type),
    (
        "fences",
        "truncated",
        "that path's acquire raises CorruptData, repair HDEL <key> <path>",
        fences_bad_counter(b""),
    ),
    (
        "fences",
        "random bytes",
        "that path's acquire raises CorruptData, repair HDEL <key> <path>",
        fences_bad_counter(RANDOM),
    ),
    ("released", "wrong type", "waiters sleep instead; dropped, one WARNING", released_wrong_type),
    ("released", "truncated", "ignored", released_bad_item(b"")),
    ("released", "random bytes", "ignored", released_bad_item(RANDOM)),
    (
        "sections",
        "wrong type",
        "root operations raise CorruptData, repair DEL <key>; writes go on with a WARNING",
        sections_wrong_type,
    ),
    ("sections", "truncated", "an empty section: nothing shown", sections_truncated),
    ("sections", "random bytes", "skipped and removed, one WARNING", sections_bad_member(RANDOM)),
]


@pytest.mark.parametrize(
    ("kind", "fault", "outcome", "check"),
    CASES,
    ids=[f"{kind}-{fault.replace(' ', '-')}" for kind, fault, _o, _c in CASES],
)
def test_corrupt_key(
    env: Env, kind: str, fault: str, outcome: str, check: Callable[[Env], None]
) -> None:
    check(env)
    # whatever happened to section s, the bystander is untouched and readable
    assert section("other", redis=env.manager).val() == {"x": 1}
    with section("other", redis=env.manager).get("x"):
        pass


def test_a_dotted_section_member_is_removed(env: Env) -> None:
    sections_bad_member(b"a.b")(env)


def test_the_table_in_the_docs_is_this_table() -> None:
    from pathlib import Path

    text = Path(__file__).parents[1].joinpath("docs", "reliability.rst").read_text()
    for kind, fault, outcome, _check in CASES:
        assert f"``{kind}``" in text
        cell = outcome.replace("<key>", "*key*").replace("<path>", "*path*")
        assert cell in " ".join(text.split()), (kind, fault)


@pytest.mark.cluster
def test_cluster_writes_go_on_beside_a_broken_section_listing(
    transient_cluster_manager: RedisManager, caplog: Any
) -> None:
    # On a Cluster the listing a write adds to is its own slot's (in the same script)
    sect = section("s", redis=transient_cluster_manager)
    sect.set("doc", DOC)
    key = bind_store(transient_cluster_manager).listing("s")
    client = transient_cluster_manager.get("store")
    assert client.keyslot(key) == client.keyslot(
        transient_cluster_manager.keyspace("store").tagged("s", "data")
    )
    client.delete(key)
    client.set(key, "planted by another program")
    with caplog.at_level(logging.WARNING):
        sect.set("doc.b", 3)
    assert sect.get("doc").val() == {"a": "hello", "b": 3}
    assert len([r for r in caplog.records if key in r.getMessage()]) == 1
    with pytest.raises(CorruptData) as caught:
        root(redis=transient_cluster_manager).val()
    assert caught.value.key == key
    assert caught.value.repair == f"DEL {key}"
    client.delete(key)
    sect.set("doc.b", 4)  # listed again by its next write
    assert root(redis=transient_cluster_manager).val() == {"s": {"doc": {"a": "hello", "b": 4}}}


@pytest.mark.cluster
def test_cluster_writes_never_touch_the_listing_of_older_releases(
    transient_cluster_manager: RedisManager, caplog: Any
) -> None:
    sect = section("s", redis=transient_cluster_manager)
    sect.set("doc", DOC)
    old = transient_cluster_manager.keyspace("store").key("sections")
    client = transient_cluster_manager.get("store")
    client.set(old, "planted by another program")
    with caplog.at_level(logging.WARNING):
        sect.set("doc.b", 3)
    assert caplog.records == []
    with pytest.raises(CorruptData) as caught:  # root operations read it: they say so
        root(redis=transient_cluster_manager).val()
    assert caught.value.repair == f"DEL {old}"
    client.delete(old)
    assert root(redis=transient_cluster_manager).val() == {"s": {"doc": {"a": "hello", "b": 3}}}
