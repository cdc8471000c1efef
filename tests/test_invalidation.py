"""Identities, tokens and the SQLAlchemy hooks, against real Redis, PostgreSQL and SQLite."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import transaction
import zope.sqlalchemy
from hypothesis import given
from hypothesis import strategies as st
from pyramid import testing as pyramid_testing
from sqlalchemy import (
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    create_engine,
    delete,
    select,
    text,
    update,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    scoped_session,
    sessionmaker,
)

from pyramid_transient import invalidation
from pyramid_transient.connection import RedisManager, get_manager
from pyramid_transient.invalidation import (
    Identity,
    _backlog,
    _tokens,
    get_token,
    identities_of,
    pending_invalidations,
    register,
    row_identity,
    table_identity,
    token_store,
)
from pyramid_transient.testing import RedisServer, test_settings

# Our tables get a suffix of their own: the PostgreSQL database is shared.
SUFFIX = os.environ.get("CK_TEST_SUFFIX") or uuid.uuid4().hex[:6]


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = f"ck_items_{SUFFIX}"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Tag(Base):
    __tablename__ = f"CK Tags:{SUFFIX}"  # capitals, a space and a colon
    code: Mapped[str] = mapped_column(String(50), primary_key=True)
    label: Mapped[str] = mapped_column(String(50))


class Thing(Base):
    __tablename__ = f"2ck_things_{SUFFIX}"  # starts with a digit
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    label: Mapped[str] = mapped_column(String(50))


class Pair(Base):
    __tablename__ = f"ck_pairs_{SUFFIX}"
    a: Mapped[int] = mapped_column(Integer, primary_key=True)
    b: Mapped[str] = mapped_column(String(50), primary_key=True)
    label: Mapped[str] = mapped_column(String(50))


class Renamed(Base):
    __tablename__ = f"ck_renamed_{SUFFIX}"
    # The attribute and its column are named differently.
    id: Mapped[int] = mapped_column("renamed_id", Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(50))


class Author(Base):
    __tablename__ = f"ck_authors_{SUFFIX}"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    books: Mapped[list[Book]] = relationship()


class Book(Base):
    __tablename__ = f"ck_books_{SUFFIX}"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey(f"ck_authors_{SUFFIX}.id"))


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Any]:
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def factory(engine: Any) -> Iterator[sessionmaker[Session]]:
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    yield sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
def listener(
    factory: sessionmaker[Session], transient_manager: RedisManager
) -> Iterator[invalidation.InvalidationListener]:
    listener = register(factory, transient_manager)
    yield listener
    listener.remove()


@pytest.fixture
def items(factory: sessionmaker[Session], listener: Any) -> list[Item]:
    with factory() as session:
        rows = [Item(id=i, name=f"item {i}") for i in (1, 2, 3)]
        session.add_all(rows)
        session.commit()
    return rows


def stored(manager: RedisManager, identity: str) -> bytes | None:
    """The token of ``identity`` as stored, without creating it."""
    store = token_store(manager)
    return store.client.get(store.key(identity))  # type: ignore[return-value]


def tokens(manager: RedisManager, *objects: Any) -> list[str]:
    """Current tokens (created if missing)."""
    return [get_token(manager, obj) for obj in objects]


# --------------------------------------------------------------------------- identities


def test_row_identity_quotes_separators_in_text_keys() -> None:
    assert row_identity("t", "a:b") != row_identity("t", "a", "b")
    assert row_identity("t", "a:b") == "r:t:a%3Ab"


def test_schema_qualified_table_never_matches_a_dotted_name() -> None:
    assert table_identity("b", schema="a") != table_identity("a.b")
    assert table_identity("b", schema="a") == "t:a.b"


def test_table_names_differ_by_case_and_spaces() -> None:
    names = ["Users", "users", "x y", "x_y", "2024"]
    assert len({table_identity(n) for n in names}) == len(names)


def test_identity_of_a_table_object_uses_its_schema() -> None:
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), schema="s")
    assert identities_of(table) == (table_identity("t", schema="s"),)


@pytest.mark.parametrize("pk", [(), (None,), (1, None)])
def test_row_identity_without_a_whole_key_names_the_table_and_the_values(pk: Any) -> None:
    with pytest.raises(ValueError, match=r"of a row of 'users', not \("):
        row_identity("users", *pk)


def test_identity_of_a_pending_instance_is_refused() -> None:
    with pytest.raises(ValueError, match="has no identity yet"):
        identities_of(Item(name="new"))


def test_identity_of_an_unmapped_object_is_refused() -> None:
    with pytest.raises(TypeError, match="mapped instance"):
        identities_of(object())


@given(
    st.lists(
        st.tuples(st.text(max_size=8), st.text(max_size=8) | st.integers()),
        min_size=2,
        max_size=2,
        unique=True,
    )
)
def test_two_distinct_primary_keys_never_share_an_identity(pks: list[tuple[Any, Any]]) -> None:
    first, second = pks
    if tuple(map(str, first)) == tuple(map(str, second)):
        return  # 1 and "1" name the same row by design (one column has one type)
    assert row_identity("t", *first) != row_identity("t", *second)


# --------------------------------------------------------------------------- tokens


def test_tokens_are_random_not_counters(transient_manager: RedisManager) -> None:
    store = token_store(transient_manager)
    first, second = store.tokens([Identity("t:a"), Identity("t:b")])  # one script call
    (third,) = store.tokens([Identity("t:c")])  # one SET NX GET
    assert len({first, second, third}) == 3
    for token in (first, second, third):
        assert not token.isdigit() and len(token) >= 24


# A key over one token reads it with SET NX GET EX, over several with the script: every
# behaviour below is checked both ways.
READS = pytest.mark.parametrize("n", [1, 3], ids=["one token (SET)", "three (script)"])


def _ids(n: int) -> list[Identity]:
    return [Identity("t:a"), *(Identity(f"t:other{i}") for i in range(1, n))]


@READS
def test_a_reader_never_overwrites_an_existing_token(
    n: int, transient_manager: RedisManager
) -> None:
    store = token_store(transient_manager)
    store.client.set(store.key("t:a"), b"existing")
    assert store.tokens(_ids(n))[0] == b"existing"
    assert store.client.get(store.key("t:a")) == b"existing"
    assert store.client.ttl(store.key("t:a")) == -1  # no expiry added either


@READS
def test_a_reader_never_recreates_a_token_invalidated_since_it_read(
    n: int, transient_manager: RedisManager
) -> None:
    store = token_store(transient_manager)
    before = store.tokens(_ids(n))
    assert store.invalidate([Identity("t:a")]) is True
    after = store.tokens(_ids(n))
    assert after[0] != before[0] and after[1:] == before[1:]
    assert store.tokens(_ids(n)) == after  # the new token stays


@READS
def test_new_tokens_expire_after_token_ttl(n: int, transient_settings: dict[str, Any]) -> None:
    manager = RedisManager.from_settings({**transient_settings, "transient.cache.token_ttl": "77"})
    try:
        store = token_store(manager)
        store.tokens(_ids(n))
        for identity in _ids(n):
            assert 70 < store.client.ttl(store.key(identity)) <= 77
    finally:
        manager.close()


@READS
def test_reading_a_token_does_not_extend_its_life(n: int, transient_manager: RedisManager) -> None:
    store = token_store(transient_manager)
    store.client.set(store.key("t:a"), b"old", ex=5)
    assert store.tokens(_ids(n))[0] == b"old"
    assert 0 < store.client.ttl(store.key("t:a")) <= 5


def test_one_token_is_one_set_nx_get_first_time_included(
    transient_manager: RedisManager, round_trips: Any
) -> None:
    store = token_store(transient_manager)
    store.client.ping()
    with round_trips() as rt:
        (created,) = store.tokens([Identity("t:a")])
    with round_trips() as again:
        (read,) = store.tokens([Identity("t:a")])
    assert rt.commands == again.commands == ["SET"]
    assert created == read == store.client.get(store.key("t:a"))
    assert 0 < store.client.ttl(store.key("t:a")) <= store.ttl


def test_the_digest_is_the_same_whichever_way_tokens_are_read(
    transient_manager: RedisManager,
) -> None:
    store = token_store(transient_manager)
    one, two = Identity("t:a"), Identity("t:b")
    single = store.digest([one])  # SET NX GET, hashed here
    tokens = store.tokens([one, two])
    assert single == hashlib.sha1(tokens[0]).hexdigest().encode("ascii")
    assert store.digest([one, two]) == hashlib.sha1(b",".join(tokens)).hexdigest().encode()
    # The script reads one token when retried invalidations ride along: same digest.
    _backlog.backlog_of(transient_manager).put_back([store.key("t:gone")])
    _backlog.backlog_of(transient_manager).cancel()
    assert store.digest([one]) == single
    assert pending_invalidations(transient_manager) == 0


def test_a_server_before_redis_7_reads_one_token_with_the_script(round_trips: Any) -> None:
    import fakeredis

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(version=(6, 2)))
    store = token_store(client, key_prefix="old")
    with round_trips() as rt:
        (created,) = store.tokens([Identity("t:a")])
    # refused, then the script: not loaded yet (NOSCRIPT), so sent whole
    assert rt.commands == ["SET", "EVALSHA", "EVAL"]
    with round_trips() as rt:
        assert store.tokens([Identity("t:a")]) == [created]
    assert rt.commands == ["EVALSHA"]  # remembered: one round trip from then on
    assert 0 < client.ttl(store.key("t:a")) <= store.ttl
    client.set(store.key("t:b"), b"existing")
    assert store.tokens([Identity("t:b")]) == [b"existing"]
    assert store.digest([Identity("t:a")]) == hashlib.sha1(created).hexdigest().encode()


@pytest.mark.parametrize(("protocol", "decode"), [(2, False), (3, False), (2, True), (3, True)])
def test_tokens_on_resp2_and_resp3_clients(
    protocol: int,
    decode: bool,
    transient_manager: RedisManager,
    transient_redis_url: str,
) -> None:
    client = redis.Redis.from_url(
        transient_redis_url,
        db=transient_manager.db_number("cache"),
        protocol=protocol,
        decode_responses=decode,
    )
    try:
        store = token_store(client, key_prefix=transient_manager.settings.key_prefix)
        reference = token_store(transient_manager)  # bytes, RESP2
        for ids in (_ids(1), _ids(3)):
            created = store.tokens(ids)
            assert created == store.tokens(ids) == reference.tokens(ids)
            assert all(isinstance(t, bytes) for t in created)
            assert store.digest(ids) == reference.digest(ids)
            assert store.invalidate(ids[:1]) is True
            assert store.tokens(ids)[0] != created[0]
    finally:
        client.close()


def test_token_keys_share_one_hash_tag_under_the_prefix(transient_manager: RedisManager) -> None:
    store = token_store(transient_manager)
    prefix = transient_manager.settings.key_prefix
    assert store.key("r:t:1") == f"{prefix}:token:{{tokens}}:r:t:1"


def test_bare_client_writes_under_the_given_prefix(transient_manager: RedisManager) -> None:
    client = transient_manager.get("cache")
    store = token_store(client, key_prefix="app")
    assert store.key("t:x") == "app:token:{tokens}:t:x"


# --------------------------------------------------------------------------- hooks


def test_update_changes_row_and_table_token(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = tokens(transient_manager, items[0], Item, items[1])
    with factory() as session:
        session.get(Item, 1).name = "changed"
        session.commit()
    after = tokens(transient_manager, items[0], Item, items[1])
    assert after[0] != before[0] and after[1] != before[1]
    assert after[2] == before[2]


def test_delete_changes_row_and_table_token(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = tokens(transient_manager, items[0], Item, items[1])
    with factory() as session:
        session.delete(session.get(Item, 1))
        session.commit()
    after = tokens(transient_manager, items[0], Item, items[1])
    assert after[0] != before[0] and after[1] != before[1]
    assert after[2] == before[2]


def test_insert_changes_table_token_only(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = tokens(transient_manager, Item, items[0])
    with factory() as session:
        session.add(Item(id=9, name="new"))
        session.commit()
    after = tokens(transient_manager, Item, items[0])
    assert after[0] != before[0]
    assert after[1] == before[1]


def test_bulk_update_changes_table_token(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = get_token(transient_manager, Item)
    with factory() as session:
        session.execute(update(Item).where(Item.id > 1).values(name="bulk"))
        session.commit()
    assert get_token(transient_manager, Item) != before


def test_bulk_delete_changes_table_token(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = get_token(transient_manager, Item)
    with factory() as session:
        session.execute(delete(Item).where(Item.id == 3))
        session.commit()
    assert get_token(transient_manager, Item) != before


def test_bulk_update_by_primary_key_changes_those_rows(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = tokens(transient_manager, items[0], items[1])
    with factory() as session:
        session.execute(update(Item), [{"id": 1, "name": "by pk"}])
        session.commit()
    after = tokens(transient_manager, items[0], items[1])
    assert after[0] != before[0] and after[1] == before[1]


def test_bulk_update_by_primary_key_names_rows_by_attribute(
    factory: Any, listener: Any, transient_manager: RedisManager
) -> None:
    with factory() as session:
        rows = [Renamed(id=1, label="a"), Renamed(id=2, label="b")]
        session.add_all(rows)
        session.commit()
    before = tokens(transient_manager, *rows)
    with factory() as session:
        session.execute(update(Renamed), [{"id": 1, "label": "by pk"}])
        session.commit()
    after = tokens(transient_manager, *rows)
    assert after[0] != before[0] and after[1] == before[1]


def test_commit_without_changes_changes_nothing(
    factory: Any, items: list[Item], transient_manager: RedisManager, round_trips: Any
) -> None:
    before = tokens(transient_manager, items[0], Item)
    with factory() as session:
        item = session.get(Item, 1)
        item.name = item.name  # same value: no UPDATE
        with round_trips() as rt:
            session.commit()
    assert rt.count == 0
    assert tokens(transient_manager, items[0], Item) == before


def test_rollback_changes_nothing(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = tokens(transient_manager, items[0], Item)
    with factory() as session:
        session.get(Item, 1).name = "rolled back"
        session.flush()
        session.rollback()
    assert tokens(transient_manager, items[0], Item) == before


def test_flush_alone_invalidates_nothing_before_commit(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = get_token(transient_manager, items[0])
    with factory() as session:
        session.get(Item, 1).name = "flushed"
        session.flush()
        assert get_token(transient_manager, items[0]) == before
        session.commit()
    assert get_token(transient_manager, items[0]) != before


def test_rolled_back_savepoint_drops_only_its_own_changes(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = tokens(transient_manager, items[0], items[1])
    with factory() as session:
        session.get(Item, 1).name = "kept"
        session.flush()
        savepoint = session.begin_nested()
        session.get(Item, 2).name = "dropped"
        session.flush()
        savepoint.rollback()
        session.commit()
    after = tokens(transient_manager, items[0], items[1])
    assert after[0] != before[0]
    assert after[1] == before[1]


def test_released_savepoint_changes_are_invalidated_at_commit(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = get_token(transient_manager, items[1])
    with factory() as session:
        with session.begin_nested(), session.begin_nested():
            session.get(Item, 2).name = "inner"
        assert get_token(transient_manager, items[1]) == before
        session.commit()
    assert get_token(transient_manager, items[1]) != before


def test_a_change_not_flushed_before_a_savepoint_survives_its_rollback(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    # begin_nested() flushes the outer change itself; it belongs to the outer transaction.
    before = tokens(transient_manager, items[0], items[1])
    with factory() as session:
        session.get(Item, 1).name = "outer, flushed by begin_nested"
        savepoint = session.begin_nested()
        session.get(Item, 2).name = "dropped"
        session.flush()
        savepoint.rollback()
        session.commit()
    after = tokens(transient_manager, items[0], items[1])
    assert after[0] != before[0]
    assert after[1] == before[1]


def test_nested_savepoints_inner_rolled_back_outer_released(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = tokens(transient_manager, *items)
    with factory() as session:
        session.get(Item, 1).name = "root"
        session.flush()
        with session.begin_nested():
            session.get(Item, 2).name = "outer savepoint"
            session.flush()
            inner = session.begin_nested()
            session.get(Item, 3).name = "inner savepoint"
            session.flush()
            inner.rollback()
        session.commit()
    after = tokens(transient_manager, *items)
    assert [a != b for a, b in zip(after, before, strict=True)] == [True, True, False]


def test_a_released_savepoint_inside_a_rolled_back_one_is_dropped(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = tokens(transient_manager, *items, Item)
    with factory() as session:
        session.get(Item, 1).name = "root"
        session.flush()
        outer = session.begin_nested()
        with session.begin_nested():
            session.get(Item, 2).name = "released, then its parent rolled back"
        outer.rollback()
        session.commit()
    after = tokens(transient_manager, *items, Item)
    assert [a != b for a, b in zip(after, before, strict=True)] == [True, False, False, True]


def test_a_released_savepoint_then_a_rollback_changes_nothing(
    factory: Any, items: list[Item], transient_manager: RedisManager, round_trips: Any
) -> None:
    before = tokens(transient_manager, items[1], Item)
    with factory() as session:
        with session.begin_nested():
            session.get(Item, 2).name = "released"
        with round_trips() as rt:
            session.rollback()
    assert rt.count == 0
    assert tokens(transient_manager, items[1], Item) == before


def test_rows_of_every_primary_key_type_invalidate_only_themselves(
    factory: Any, listener: Any, transient_manager: RedisManager
) -> None:
    thing_id = uuid.uuid4()
    with factory() as session:
        rows = [
            Tag(code="a:b", label="x"),
            Tag(code="a", label="x"),
            Thing(id=thing_id, label="x"),
            Pair(a=1, b="x", label="x"),
            Pair(a=1, b="y", label="x"),
        ]
        session.add_all(rows)
        session.commit()
    before = tokens(transient_manager, *rows)
    assert len(set(before)) == len(rows)
    with factory() as session:
        session.get(Tag, "a:b").label = "changed"
        session.get(Thing, thing_id).label = "changed"
        session.get(Pair, (1, "x")).label = "changed"
        session.commit()
    after = tokens(transient_manager, *rows)
    assert [a != b for a, b in zip(after, before, strict=True)] == [True, False, True, True, False]


def test_changing_a_collection_changes_the_parent_and_the_child(
    factory: Any, listener: Any, transient_manager: RedisManager
) -> None:
    with factory() as session:
        author, book = Author(id=1), Book(id=1)
        session.add_all([author, book])
        session.commit()
    before = tokens(transient_manager, author, book)
    with factory() as session:
        loaded = session.get(Author, 1)
        loaded.books.append(session.get(Book, 1))
        session.commit()
    after = tokens(transient_manager, author, book)
    assert after[0] != before[0] and after[1] != before[1]


def test_changes_made_by_raw_sql_are_invalidated_when_marked(
    factory: Any, items: list[Item], listener: Any, transient_manager: RedisManager
) -> None:
    before = get_token(transient_manager, items[0])
    with factory() as session:
        session.execute(text(f"UPDATE {Item.__tablename__} SET name = 'raw' WHERE id = 1"))
        listener.mark_changed(session, row_identity(Item.__table__, 1))
        session.commit()
    assert get_token(transient_manager, items[0]) != before


def test_invalidating_a_commit_is_one_round_trip(
    factory: Any, listener: Any, transient_manager: RedisManager, round_trips: Any
) -> None:
    transient_manager.get("cache").ping()
    for n in (1, 10, 100):
        get_token(transient_manager, Item)
        with factory() as session:
            session.add_all([Item(id=1000 * n + i, name="x") for i in range(n)])
            session.flush()
            with round_trips() as rt:
                session.commit()
        assert rt.count == 1, (n, rt.commands)
        assert rt.commands == ["DEL"]
        assert stored(transient_manager, table_identity(Item.__table__)) is None


def test_pending_changes_are_kept_per_session(
    factory: Any, items: list[Item], listener: Any
) -> None:
    with factory() as first, factory() as second:
        first.get(Item, 1).name = "first"
        first.flush()
        assert listener.pending(first) >= {row_identity(Item.__table__, 1)}
        assert listener.pending(second) == frozenset()


def test_a_commit_in_another_session_leaves_our_pending_changes_alone(
    factory: Any, items: list[Item], listener: Any, transient_manager: RedisManager
) -> None:
    mine, theirs = tokens(transient_manager, items[0], items[1])
    with factory() as ours:
        ours.get(Item, 1).name = "ours, pending"
        ours.flush()
        with factory() as other:  # same listener, same process
            other.get(Item, 2)
            # SQLite admits one writer at a time, and ours holds it: theirs is marked.
            listener.mark_changed(other, row_identity(Item.__table__, 2))
            other.commit()
        assert get_token(transient_manager, items[1]) != theirs  # theirs is done
        assert get_token(transient_manager, items[0]) == mine  # ours: still pending
        assert listener.pending(ours) >= {row_identity(Item.__table__, 1)}
        ours.commit()
    assert get_token(transient_manager, items[0]) != mine


def test_registering_again_replaces_the_listener(
    factory: Any, items: list[Item], transient_manager: RedisManager, round_trips: Any
) -> None:
    register(factory, transient_manager)
    listener = register(factory, transient_manager)
    try:
        with factory() as session:
            session.get(Item, 1).name = "once"
            session.flush()
            with round_trips() as rt:
                session.commit()
        assert rt.count == 1
    finally:
        listener.remove()


def test_a_registered_session_is_not_kept_alive(
    engine: Any, transient_manager: RedisManager
) -> None:
    # register(session) per request, as with zope.sqlalchemy: each must be freed after.
    import gc
    import weakref

    refs = []
    for _ in range(3):
        session = Session(engine)
        register(session, transient_manager)
        refs.append(weakref.ref(session))
        session.close()
        del session
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]


def test_without_a_client_the_running_apps_manager_is_used(
    factory: Any, items: list[Item], transient_settings: dict[str, Any]
) -> None:
    config = pyramid_testing.setUp(settings=transient_settings)
    listener = register(factory)  # resolved at commit time, from the current registry
    try:
        config.include("pyramid_transient.cache")
        manager = get_manager(config.registry)
        before = get_token(manager, items[0])
        with factory() as session:
            session.get(Item, 1).name = "app"
            session.commit()
        assert get_token(manager, items[0]) != before
    finally:
        listener.remove()
        pyramid_testing.tearDown()


def test_hooks_bound_to_a_scoped_session_invalidate(
    factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    scoped = scoped_session(sessionmaker(factory.kw["bind"]))
    listener = register(scoped, transient_manager)
    try:
        before = get_token(transient_manager, items[0])
        scoped.get(Item, 1).name = "scoped"
        scoped.commit()
        scoped.remove()
        assert get_token(transient_manager, items[0]) != before
    finally:
        listener.remove()


def test_commit_through_zope_sqlalchemy_and_transaction_invalidates(
    engine: Any, factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = get_token(transient_manager, items[0])
    tm = transaction.TransactionManager(explicit=True)
    session = factory()
    zope.sqlalchemy.register(session, transaction_manager=tm)
    with tm:
        session.get(Item, 1).name = "zope"
    session.close()
    assert get_token(transient_manager, items[0]) != before


def _read_at_invalidation(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What another connection reads of row 1 each time tokens are deleted."""
    seen: list[str] = []
    original = _tokens.delete

    def reading_first(client: Any, keys: Any) -> None:
        with engine.connect() as conn:
            seen.append(conn.execute(select(Item.name).where(Item.id == 1)).scalar_one())
        original(client, keys)

    # Where TokenStore.invalidate looks it up (the background retry has its own).
    monkeypatch.setattr(_tokens, "delete", reading_first)
    return seen


def test_tokens_are_deleted_after_the_sql_commit(
    engine: Any, factory: Any, items: list[Item], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deleted before, a reader in between would cache the old row under the new token.
    seen = _read_at_invalidation(engine, monkeypatch)
    with factory() as session:
        session.get(Item, 1).name = "committed"
        session.commit()
    assert seen == ["committed"]


def test_tokens_are_deleted_after_the_sql_commit_through_zope_sqlalchemy(
    engine: Any,
    factory: Any,
    items: list[Item],
    transient_manager: RedisManager,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _read_at_invalidation(engine, monkeypatch)
    tm = transaction.TransactionManager(explicit=True)
    session = factory()
    zope.sqlalchemy.register(session, transaction_manager=tm)
    with tm:
        session.get(Item, 1).name = "committed by transaction"
    session.close()
    assert seen == ["committed by transaction"]


def test_a_rolled_back_zope_savepoint_drops_only_its_own_changes(
    engine: Any, factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = tokens(transient_manager, items[0], items[1])
    tm = transaction.TransactionManager(explicit=True)
    session = factory()
    zope.sqlalchemy.register(session, transaction_manager=tm)
    if engine.dialect.name == "sqlite":
        # zope.sqlalchemy refuses savepoints on pysqlite; the refusal must
        # reach the caller and the aborted transaction must change nothing.
        tm.begin()
        session.get(Item, 1).name = "kept"
        session.flush()
        with pytest.raises(TypeError, match="Savepoints unsupported"):
            tm.savepoint()
        tm.abort()
        session.close()
        assert tokens(transient_manager, items[0], items[1]) == before
        return
    with tm:
        session.get(Item, 1).name = "kept"
        savepoint = tm.savepoint()
        session.get(Item, 2).name = "dropped"
        session.flush()
        savepoint.rollback()
    session.close()
    after = tokens(transient_manager, items[0], items[1])
    assert after[0] != before[0]
    assert after[1] == before[1]


def test_aborted_zope_transaction_changes_nothing(
    engine: Any, factory: Any, items: list[Item], transient_manager: RedisManager
) -> None:
    before = get_token(transient_manager, items[0])
    tm = transaction.TransactionManager(explicit=True)
    session = factory()
    zope.sqlalchemy.register(session, transaction_manager=tm)
    tm.begin()
    session.get(Item, 1).name = "aborted"
    session.flush()
    tm.abort()
    session.close()
    assert get_token(transient_manager, items[0]) == before


# --------------------------------------------------------------------------- outages


@pytest.fixture
def dead_server() -> Iterator[RedisServer]:
    """A server of our own that tests stop and start again (on the same port)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def client(dead_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of that server as the app has it: no retries, short timeouts."""
    manager = RedisManager.from_settings(test_settings(dead_server.url))
    yield manager.get("cache")
    manager.close()


def test_commit_with_redis_down_does_not_raise_and_keeps_the_work(
    factory: Any, items: list[Item], dead_server: RedisServer, client: redis.Redis, caplog: Any
) -> None:
    listener = register(factory, client)
    try:
        dead_server.stop()
        with factory() as session, caplog.at_level(logging.WARNING):
            session.get(Item, 1).name = "while down"
            session.commit()  # must not raise
        assert pending_invalidations(client) == 2
        assert "could not invalidate 2 cache tokens" in caplog.text
        _backlog.backlog_of(client).cancel()
    finally:
        listener.remove()


def test_a_commit_while_a_cluster_is_unreachable_keeps_the_work_for_retry(
    factory: Any,
    items: list[Item],
    transient_settings: dict[str, Any],
    caplog: Any,
) -> None:
    # redis-py's cluster client connects in its constructor: with the cluster down, even
    # getting the client fails. The invalidations must still wait for a retry.
    from pyramid_transient.testing import free_port

    settings = {k: v for k, v in transient_settings.items() if k != "transient.url"}
    manager = RedisManager.from_settings(
        {**settings, "transient.cluster.nodes": f"127.0.0.1:{free_port()}"}
    )
    listener = register(factory, manager)
    try:
        with factory() as session, caplog.at_level(logging.WARNING):
            session.get(Item, 1).name = "while the cluster is down"
            session.commit()  # must not raise
        assert pending_invalidations(manager) == 2
        assert "could not invalidate 2 cache tokens" in caplog.text
    finally:
        _backlog.backlog_of(manager).cancel()
        listener.remove()


def test_failed_invalidations_are_retried_with_the_next_commit(
    factory: Any,
    items: list[Item],
    dead_server: RedisServer,
    client: redis.Redis,
    round_trips: Any,
) -> None:
    listener = register(factory, client)
    try:
        store = token_store(client)
        store.tokens([row_identity(Item.__table__, 1)])
        dead_server.stop()
        with factory() as session:
            session.get(Item, 1).name = "while down"
            session.commit()
        _backlog.backlog_of(client).cancel()
        dead_server.start()  # a restarted server: no script loaded, none needed (one DEL)
        with factory() as session:
            session.get(Item, 2).name = "after"
            session.flush()
            with round_trips() as rt:
                session.commit()
        assert rt.count == 1
        assert rt.commands == ["DEL"]
        assert pending_invalidations(client) == 0
        assert client.get(store.key(row_identity(Item.__table__, 1))) is None
    finally:
        listener.remove()


def test_failed_invalidations_are_retried_in_the_background(
    factory: Any,
    items: list[Item],
    dead_server: RedisServer,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_backlog, "RETRY_DELAYS", (0.05,))
    listener = register(factory, client)
    try:
        dead_server.stop()
        with factory() as session:
            session.get(Item, 1).name = "while down"
            session.commit()
        dead_server.start()
        deadline = time.monotonic() + 5
        while pending_invalidations(client) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pending_invalidations(client) == 0
    finally:
        _backlog.backlog_of(client).cancel()
        listener.remove()


def test_failed_invalidations_through_a_manager_are_retried_in_the_background(
    factory: Any,
    items: list[Item],
    dead_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_backlog, "RETRY_DELAYS", (0.05,))
    manager = RedisManager.from_settings(test_settings(dead_server.url))
    listener = register(factory, manager)
    try:
        dead_server.stop()
        with factory() as session:
            session.get(Item, 1).name = "while down"
            session.commit()
        assert pending_invalidations(manager) == 2
        dead_server.start()
        deadline = time.monotonic() + 5
        while pending_invalidations(manager) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pending_invalidations(manager) == 0  # only a DEL that went through empties it
    finally:
        _backlog.backlog_of(manager).cancel()
        listener.remove()
        manager.close()


def test_backlog_is_bounded(
    dead_server: RedisServer,
    client: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: Any,
) -> None:
    monkeypatch.setattr(_backlog, "MAX_BACKLOG", 3)
    dead_server.stop()
    try:
        store = token_store(client)
        with caplog.at_level(logging.ERROR):
            assert store.invalidate([Identity(f"t:{i}") for i in range(5)]) is False
        assert pending_invalidations(client) == 3
        assert "dropped 2 token invalidations" in caplog.text
    finally:
        _backlog.backlog_of(client).cancel()


# --------------------------------------------------------------------------- processes

_OTHER_PROCESS = textwrap.dedent(
    """
    import sys
    from sqlalchemy import create_engine, update
    from sqlalchemy.orm import Session
    import redis
    from pyramid_transient.invalidation import register
    sys.path.insert(0, {tests!r})
    import test_invalidation as t

    engine = create_engine({db!r})
    client = redis.Redis.from_url({redis_url!r}, db={db_number})
    register(Session, client, key_prefix={prefix!r})
    with Session(engine) as session:
        session.get(t.Item, 2).name = "other process"
        session.commit()
    """
)


def test_a_commit_in_another_process_leaves_our_pending_changes_alone(
    engine: Any,
    database_url: str,
    factory: Any,
    items: list[Item],
    transient_manager: RedisManager,
    transient_redis_url: str,
    tmp_path: Any,
) -> None:
    other_db = database_url
    if database_url.startswith("sqlite"):
        # SQLite admits one writer: the other process writes its own copy. What is under
        # test, our pending changes, lives in this process's memory and in Redis only.
        other_db = f"sqlite:///{tmp_path / 'other.db'}"
        other = create_engine(other_db)
        Base.metadata.create_all(other)
        with Session(other) as session:
            session.add_all([Item(id=i, name="x") for i in (1, 2, 3)])
            session.commit()
        other.dispose()
    mine, theirs = tokens(transient_manager, items[0], items[1])
    source = _OTHER_PROCESS.format(
        tests=os.path.dirname(__file__),
        db=other_db,
        redis_url=transient_redis_url,
        prefix=transient_manager.settings.key_prefix,
        db_number=transient_manager.db_number("cache"),
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "CK_TEST_SUFFIX": SUFFIX}
    with factory() as session:
        session.get(Item, 1).name = "ours, pending"
        session.flush()
        subprocess.run([sys.executable, "-c", source], check=True, timeout=60, env=env)
        assert get_token(transient_manager, items[1]) != theirs  # theirs is done
        assert get_token(transient_manager, items[0]) == mine  # ours still pending
        session.commit()
    assert get_token(transient_manager, items[0]) != mine


# --------------------------------------------------------------------------- cluster


@pytest.mark.cluster
def test_tokens_and_invalidation_on_a_cluster_are_one_round_trip_each(
    transient_cluster_manager: RedisManager, round_trips: Any
) -> None:
    store = token_store(transient_cluster_manager)
    ids = [row_identity("t", i) for i in range(50)] + [table_identity("t")]
    store.tokens(ids[:2])  # connect and load the script outside the count
    with round_trips() as rt:
        first = store.tokens(ids)
    assert (rt.count, rt.commands) == (1, ["EVALSHA"])
    with round_trips() as rt:
        (one,) = store.tokens(ids[:1])
    assert (rt.count, rt.commands) == (1, ["SET"])
    assert one == first[0]
    with round_trips() as rt:
        assert store.invalidate(ids[:10]) is True
    assert (rt.count, rt.commands) == (1, ["DEL"])
    second = store.tokens(ids)
    assert [a != b for a, b in zip(first, second, strict=True)] == [True] * 10 + [False] * 41
    with round_trips() as rt:
        (again,) = store.tokens(ids[:1])
    assert (rt.count, rt.commands) == (1, ["SET"])
    assert again == second[0]
    client = store.client
    assert 0 < client.ttl(store.key(ids[0])) <= store.ttl


@pytest.mark.sentinel
def test_invalidation_through_sentinel(transient_sentinel_manager: RedisManager) -> None:
    store = token_store(transient_sentinel_manager)
    before = store.tokens([row_identity("t", 1), table_identity("t")])
    assert store.invalidate([row_identity("t", 1)]) is True
    after = store.tokens([row_identity("t", 1), table_identity("t")])
    assert after[0] != before[0] and after[1] == before[1]
