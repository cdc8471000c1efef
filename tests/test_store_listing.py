"""The listing of sections that root operations read, on a single server and a Cluster.

A write that may create a section (``set``, ``add``) adds the section's name to a listing
in the same script call. On a single server that is the app-wide ``store:sections``; on a
Cluster it is the listing of the section's own slot, so a write touches no other shard and
no key that every write of the app hits. Root operations read every listing, and on a
Cluster also the app-wide listing that releases before this one wrote, moving its names
to their slots' listings until it is gone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from redis.crc import key_slot

from pyramid_transient.connection import RedisManager
from pyramid_transient.exceptions import LockNotOwned
from pyramid_transient.store import root, section
from pyramid_transient.store._binding import bind_store, slot_tags

NAMES = ["alpha", "beta", "gamma", "a:b{c}", "é", "x y", "42"]


def test_slot_tags_are_the_smallest_integer_of_each_slot() -> None:
    tags = slot_tags()
    assert len(tags) == len(set(tags)) == 16384
    assert all(key_slot(tag.encode()) == slot for slot, tag in enumerate(tags))
    # part of the key layout: a change would hide every listing written before it
    assert (tags[0], tags[1], tags[8000], tags[16383]) == ("3560", "22179", "42", "39296")
    # each is the smallest: no smaller integer falls in its slot
    assert all(key_slot(str(n).encode()) != 0 for n in range(3560))


# ---------------------------------------------------------------------- single server


def test_a_write_lists_its_section_in_its_own_script_call(
    transient_manager: RedisManager, round_trips: Any
) -> None:
    client = transient_manager.get("store")
    listing = transient_manager.keyspace("store").key("sections")
    sect = section("s", redis=transient_manager)
    sect.exists()  # connect outside the count
    sect.set("warm", 1)
    sect.get("n").add(1)
    client.delete(listing)
    with round_trips() as rt:
        sect.set("doc", {"a": 1})
    assert rt.commands == ["EVALSHA"]
    assert client.smembers(listing) == {b"s"}  # listed again by its next write
    client.delete(listing)
    with round_trips() as rt:
        sect.get("n").add(1)
    assert rt.commands == ["EVALSHA"]
    assert client.smembers(listing) == {b"s"}
    assert bind_store(transient_manager).listing("s") == listing


def test_a_refused_write_lists_nothing(transient_manager: RedisManager) -> None:
    sect = section("s", redis=transient_manager)
    sect.set("doc", "text")
    listing = transient_manager.keyspace("store").key("sections")
    client = transient_manager.get("store")
    client.delete(listing)
    with pytest.raises(ValueError):
        sect.get("doc").add(1)  # NOTNUM: but the section exists, so it may be listed
    with pytest.raises(TypeError):
        section("t", redis=transient_manager).set("x", object())  # refused before Redis
    assert b"t" not in client.smembers(listing)


def test_a_write_refused_under_a_lost_lock_lists_nothing(
    transient_manager: RedisManager,
) -> None:
    # a section that holds only a lock: its first write, under that lock once lost
    doc = section("t", redis=transient_manager, timeout=0.05).get("doc")
    doc.acquire()
    time.sleep(0.08)
    with pytest.raises(LockNotOwned):
        doc.set("v", 1)
    with pytest.raises(LockNotOwned):
        doc.get("n").add(1)
    listing = transient_manager.keyspace("store").key("sections")
    assert not transient_manager.get("store").exists(listing)
    assert root(redis=transient_manager).val() is None


def test_a_section_listed_by_an_older_release_is_found(transient_manager: RedisManager) -> None:
    # Releases before this one sent SADD beside the script: the same key, the same names.
    client = transient_manager.get("store")
    section("s", redis=transient_manager).set("x", 1)
    listing = transient_manager.keyspace("store").key("sections")
    client.delete(listing)
    client.sadd(listing, "s")
    assert root(redis=transient_manager).val() == {"s": {"x": 1}}


# ---------------------------------------------------------------------- Cluster


@pytest.mark.cluster
def test_cluster_write_is_one_call_on_its_own_slot(
    transient_cluster_manager: RedisManager, round_trips: Any
) -> None:
    m = transient_cluster_manager
    client = m.get("store")
    store = bind_store(m)
    old = m.keyspace("store").key("sections")
    for name in NAMES:
        section(name, redis=m).set("warm", 1)
        section(name, redis=m).get("n").add(1)
    for name in NAMES:
        data = m.keyspace("store").tagged(name, "data")
        listing = store.listing(name)
        assert client.keyslot(listing) == client.keyslot(data), name
        with round_trips() as rt:
            section(name, redis=m).set("doc", {"a": 1})
            section(name, redis=m).get("n").add(1)
        assert rt.commands == ["EVALSHA", "EVALSHA"], name
        assert client.sismember(listing, name)
    assert not client.exists(old)  # the app-wide key is never written on a Cluster
    assert root(redis=m).val() == {n: {"warm": 1, "n": 2, "doc": {"a": 1}} for n in NAMES}


@pytest.mark.cluster
def test_cluster_root_reads_the_listings_in_one_pipeline_per_primary(
    transient_cluster_manager: RedisManager, round_trips: Any
) -> None:
    m = transient_cluster_manager
    for name in NAMES:
        section(name, redis=m).set("x", name)
    root(redis=m).val()  # scripts loaded outside the count
    primaries = len(m.get("store").get_primaries())
    with round_trips() as rt:
        tree = root(redis=m).val()
    assert tree == {n: {"x": n} for n in NAMES}
    # the listings: one round trip per primary; then one script call per section
    assert rt.count == primaries + len(NAMES)
    assert all(set(c.split()) == {"SMEMBERS"} for c in rt.commands[:primaries])
    assert rt.commands[primaries:] == ["EVALSHA"] * len(NAMES)
    assert not any(w in " ".join(rt.commands).split() for w in ("SCAN", "KEYS"))


@pytest.mark.cluster
def test_cluster_root_moves_the_listing_of_older_releases_to_the_slots(
    transient_cluster_manager: RedisManager, round_trips: Any, caplog: Any
) -> None:
    m = transient_cluster_manager
    client = m.get("store")
    store = bind_store(m)
    old = m.keyspace("store").key("sections")
    for name in NAMES:
        section(name, redis=m).set("x", name)
    # data written by an older release: listed only in the app-wide key (plus a member
    # another program left there)
    legacy = NAMES[:4]
    for name in legacy:
        client.srem(store.listing(name), name)
    client.sadd(old, *legacy, NAMES[4], b"\xff not a name")
    with caplog.at_level(logging.INFO, logger="pyramid_transient.store"):
        assert root(redis=m).val() == {n: {"x": n} for n in NAMES}
    assert "moved 4 section names" in caplog.text
    assert not client.exists(old)
    assert all(client.sismember(store.listing(n), n) for n in NAMES)
    with round_trips() as rt:  # moved once: later root reads only read
        assert root(redis=m).exists()
    assert not any(w in " ".join(rt.commands).split() for w in ("SADD", "SREM"))
    # a write of an older release still running after the upgrade lists it again there
    section("late", redis=m).set("x", 1)
    client.srem(store.listing("late"), "late")
    client.sadd(old, "late")
    assert [c.key() for c in root(redis=m).iter_children()] == sorted([*NAMES, "late"])
    assert not client.exists(old)
