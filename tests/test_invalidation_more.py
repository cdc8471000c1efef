"""Invalidation beyond the flush events: the legacy bulk API and rows moved between parents."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import ForeignKey, Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker

from pyramid_transient.connection import RedisManager
from pyramid_transient.invalidation import get_token, register, row_identity

SUFFIX = uuid.uuid4().hex[:6]


class Base(DeclarativeBase):
    pass


class RItem(Base):
    __tablename__ = f"rv_items_{SUFFIX}"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class RAuthor(Base):
    __tablename__ = f"rv_authors_{SUFFIX}"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    books: Mapped[list[RBook]] = relationship(back_populates="author")


class RBook(Base):
    __tablename__ = f"rv_books_{SUFFIX}"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(50), default="")
    author_id: Mapped[int | None] = mapped_column(ForeignKey(f"rv_authors_{SUFFIX}.id"))
    author: Mapped[RAuthor | None] = relationship(back_populates="books")


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Any]:
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def factory(engine: Any, transient_manager: RedisManager) -> Iterator[Any]:
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    f = sessionmaker(engine, expire_on_commit=False)
    listener = register(f, transient_manager)
    with f() as s:
        s.add_all([RItem(id=i, name=f"n{i}") for i in (1, 2, 3)])
        s.add_all([RAuthor(id=1), RAuthor(id=2)])
        s.flush()
        s.add(RBook(id=1, author_id=1))
        s.commit()
    yield f
    listener.remove()


def tok(manager: RedisManager, *objs: Any) -> list[str]:
    return [get_token(manager, o) for o in objs]


ROW1 = row_identity(RItem.__table__, 1)
AUTHORS = (row_identity(RAuthor.__table__, 1), row_identity(RAuthor.__table__, 2))


# --------------------------------------------------------------------------- legacy bulk API


def test_bulk_update_mappings_invalidates_the_row_and_the_table(
    factory: Any, transient_manager: RedisManager
) -> None:
    before = tok(transient_manager, ROW1, RItem)
    with factory() as s:
        s.bulk_update_mappings(RItem, [{"id": 1, "name": "bulk"}])
        s.commit()
    after = tok(transient_manager, ROW1, RItem)
    assert after[0] != before[0], "row 1 was UPDATEd and committed, its token survived"
    assert after[1] != before[1], "the table was UPDATEd and committed, its token survived"


def test_bulk_insert_mappings_invalidates_the_table(
    factory: Any, transient_manager: RedisManager
) -> None:
    before = tok(transient_manager, RItem)
    with factory() as s:
        s.bulk_insert_mappings(RItem, [{"id": 50, "name": "bim"}])
        s.commit()
    assert tok(transient_manager, RItem) != before


def test_bulk_save_objects_of_a_detached_instance_invalidates_it(
    factory: Any, transient_manager: RedisManager
) -> None:
    with factory() as s:
        obj = s.get(RItem, 1)
    before = tok(transient_manager, ROW1, RItem)
    obj.name = "bso"
    with factory() as s:
        s.bulk_save_objects([obj])
        s.commit()
    after = tok(transient_manager, ROW1, RItem)
    assert after[0] != before[0] and after[1] != before[1]


# --------------------------------------------------------------------------- collections


def test_moving_a_child_by_its_foreign_key_changes_both_parents(
    factory: Any, transient_manager: RedisManager
) -> None:
    # docs/cache.rst: "Moving a row into or out of a collection changes both rows".
    before = tok(transient_manager, *AUTHORS)
    with factory() as s:
        s.get(RBook, 1).author_id = 2
        s.commit()
    after = tok(transient_manager, *AUTHORS)
    assert after[0] != before[0], "author 1 lost a book, its token survived"
    assert after[1] != before[1], "author 2 gained a book, its token survived"


def test_moving_a_child_by_its_many_to_one_changes_both_parents(
    factory: Any, transient_manager: RedisManager
) -> None:
    before = tok(transient_manager, *AUTHORS)
    with factory() as s:
        s.get(RBook, 1).author = s.get(RAuthor, 2)
        s.commit()
    after = tok(transient_manager, *AUTHORS)
    assert after[0] != before[0] and after[1] != before[1]


def test_a_new_or_deleted_child_changes_its_parent(
    factory: Any, transient_manager: RedisManager
) -> None:
    before = tok(transient_manager, *AUTHORS)
    with factory() as s:
        s.add(RBook(id=2, author_id=2))
        s.commit()
    middle = tok(transient_manager, *AUTHORS)
    assert middle[1] != before[1] and middle[0] == before[0]
    with factory() as s:
        s.delete(s.get(RBook, 1))
        s.commit()
    after = tok(transient_manager, *AUTHORS)
    assert after[0] != middle[0] and after[1] == middle[1]


def test_changing_a_child_but_not_its_parent_leaves_the_parent_alone(
    factory: Any, transient_manager: RedisManager
) -> None:
    before = tok(transient_manager, *AUTHORS)
    with factory() as s:
        s.get(RBook, 1).title = "renamed"
        s.commit()
    assert tok(transient_manager, *AUTHORS) == before


def test_a_core_update_through_the_sessions_connection_invalidates_the_table(
    factory: Any, transient_manager: RedisManager
) -> None:
    from sqlalchemy import update

    before = tok(transient_manager, ROW1, RItem)
    with factory() as s:
        s.connection().execute(update(RItem.__table__).values(name="core"))
        s.commit()
    after = tok(transient_manager, ROW1, RItem)
    assert after[1] != before[1]
    assert after[0] == before[0]  # no primary key named: the table token, as documented


def test_a_rolled_back_bulk_update_changes_nothing(
    factory: Any, transient_manager: RedisManager
) -> None:
    before = tok(transient_manager, ROW1, RItem)
    with factory() as s:
        s.bulk_update_mappings(RItem, [{"id": 1, "name": "bulk"}])
        s.rollback()
    assert tok(transient_manager, ROW1, RItem) == before
