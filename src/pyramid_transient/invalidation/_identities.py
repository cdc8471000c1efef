"""Identities: what a token belongs to, a row (``r:...``) or a table (``t:...``)."""

from __future__ import annotations

import datetime as dt
import uuid
import weakref
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ..keys import quote


class Identity(str):
    """The identity of a row (``r:...``) or a table (``t:...``): a ``str`` that names a token.

    Built by :func:`row_identity`, :func:`table_identity` or :func:`identities_of`. As a
    cache key fragment an ``Identity`` stands for its token, while a plain ``str`` is a
    value.
    """

    __slots__ = ()

    @property
    def is_row(self) -> bool:
        return self.startswith("r:")


def _name(text: str) -> str:
    # Dots separate schema and table, so a dot inside a name must not read as one.
    return quote(text).replace(".", "%2E")


def _qualified(name: str, schema: str | None) -> str:
    return f"{_name(schema)}.{_name(name)}" if schema else _name(name)


def _table_parts(table: Any, schema: str | None) -> tuple[str, str | None]:
    if isinstance(table, str):
        return table, schema
    name = getattr(table, "name", None)
    if not isinstance(name, str):
        raise TypeError(
            f"a table must be a name (str) or a SQLAlchemy Table, not {type(table).__name__}"
        )
    return name, getattr(table, "schema", None) if schema is None else schema


def _pk_part(value: Any) -> str:
    # One text per primary key value. The types of one column do not change, so this only
    # has to be injective per type; equal values of the usual types give the same text
    # (row_identity("users", 42) and row_identity("users", "42") name the same row).
    if type(value) is int:
        return str(value)
    if value is None:
        raise ValueError("a primary key value is None: the row has no identity yet (flush it)")
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return str(int(value))
        return format(value.normalize(), "f")
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, bytes):
        return "x" + value.hex()
    if isinstance(value, dt.date | dt.time):
        return quote(value.isoformat())
    return quote(str(value))


def table_identity(table: Any, *, schema: str | None = None) -> Identity:
    """The identity of a table: a SQLAlchemy ``Table`` or a name (with ``schema``)."""
    name, schema = _table_parts(table, schema)
    return Identity("t:" + _qualified(name, schema))


def row_identity(table: Any, *pk: Any, schema: str | None = None) -> Identity:
    """The identity of the row of ``table`` whose primary key is ``pk`` (one value or more).

    >>> row_identity("users", 42)
    'r:users:42'
    >>> row_identity("a:b", "x y", 3, schema="s")
    'r:s.a%3Ab:x%20y:3'
    """
    name, schema = _table_parts(table, schema)
    if not pk or None in pk:
        raise ValueError(
            f"row_identity() needs every primary key value of a row of {name!r}, not "
            f"{pk!r}: a row whose key is None has no identity yet (flush it first)"
        )
    return Identity("r:" + _qualified(name, schema) + ":" + ":".join(map(_pk_part, pk)))


class MapperInfo:
    __slots__ = ("_parents", "mapper", "prefix", "tables")

    def __init__(self, mapper: Any) -> None:
        # Weakly: this object is the value of a weak map keyed by the mapper.
        self.mapper = weakref.ref(mapper)
        # The row's table is the base mapper's: its primary key is the identity.
        name, schema = _table_parts(mapper.base_mapper.local_table, None)
        self.prefix = "r:" + _qualified(name, schema) + ":"
        #: Every table a change through this mapper may write (joined inheritance: all).
        self.tables = tuple(dict.fromkeys(table_identity(t) for t in mapper.tables))
        self._parents: tuple[tuple[tuple[str, ...], MapperInfo], ...] | None = None

    @property
    def parents(self) -> tuple[tuple[tuple[str, ...], MapperInfo], ...]:
        """Each many-to-one relationship to a parent's primary key: the attribute keys of
        the local foreign-key columns (in the parent's primary key order), and the parent.
        Worked out at the first flush, when the mappers are configured."""
        if self._parents is None:
            from sqlalchemy.orm import MANYTOONE

            mapper: Any = self.mapper()
            found = []
            for prop in mapper.relationships if mapper is not None else ():
                if prop.direction is not MANYTOONE:
                    continue
                local_of = {remote: local for local, remote in prop.local_remote_pairs}
                try:
                    columns = [local_of[c] for c in prop.mapper.primary_key]
                    keys = tuple(mapper.get_property_by_column(c).key for c in columns)
                except Exception:  # joins on something other than the parent's primary key
                    continue
                found.append((keys, mapper_info(prop.mapper)))
            self._parents = tuple(found)
        return self._parents

    def row(self, pk: Sequence[Any]) -> Identity:
        if len(pk) == 1:
            return Identity(self.prefix + _pk_part(pk[0]))
        return Identity(self.prefix + ":".join(map(_pk_part, pk)))


# What each mapper and each Table means for identities, worked out once and shared by
# every listener and every cache key (identities_of runs for each fragment of each key).
# Module-level because it is a fact about the class, not about any listener, store or
# app; held weakly so that a mapper or Table that is dropped (a test's declarative base)
# is freed. Not on the mapper's or Table's ``info``: that dictionary is the application's.
_MAPPERS: weakref.WeakKeyDictionary[Any, MapperInfo] = weakref.WeakKeyDictionary()


class TableInfo:
    """What :meth:`InvalidationListener.after_execute` needs of a ``Table``, worked out
    once: it runs for every statement of the hooked engines."""

    __slots__ = ("identity", "pk", "row_prefix")

    def __init__(self, table: Any) -> None:
        name, schema = _table_parts(table, None)
        self.identity = table_identity(table)
        self.row_prefix = "r:" + _qualified(name, schema) + ":"
        #: (bind label, column key) of each primary key column.
        self.pk = tuple((c._label, c.key) for c in table.primary_key.columns)

    def row(self, pk: Sequence[Any]) -> Identity:
        return Identity(self.row_prefix + ":".join(map(_pk_part, pk)))


_TABLES: weakref.WeakKeyDictionary[Any, TableInfo] = weakref.WeakKeyDictionary()


def mapper_info(mapper: Any) -> MapperInfo:
    info = _MAPPERS.get(mapper)
    if info is None:
        info = _MAPPERS[mapper] = MapperInfo(mapper)
    return info


def table_info(table: Any) -> TableInfo:
    info = _TABLES.get(table)
    if info is None:
        info = _TABLES[table] = TableInfo(table)
    return info


def identities_of(obj: Any) -> tuple[Identity, ...]:
    """The identities a cache key fragment stands for.

    * an :class:`Identity` (or, here only, any ``str``): itself;
    * a persistent mapped instance: its row;
    * a mapped class: every table it maps (for joined inheritance, the parent tables too);
    * a SQLAlchemy ``Table``: that table.

    Raises :class:`TypeError` for anything else and :class:`ValueError` for an instance
    that has no primary key yet (a pending or transient object).
    """
    if isinstance(obj, str):
        return (obj if type(obj) is Identity else Identity(obj),)
    # Fast path for mapped instances (the common fragment): their state is an attribute.
    state = None if isinstance(obj, type) else getattr(obj, "_sa_instance_state", None)
    if state is not None:
        key = state.key
        if key is None:
            raise ValueError(
                f"{type(obj).__name__} instance {obj!r} has no identity yet: flush the "
                "session before building a cache key from it"
            )
        info = _MAPPERS.get(state.mapper)
        if info is None:
            info = mapper_info(state.mapper)
        return (info.row(key[1]),)
    from sqlalchemy import Table, inspect  # lazily: SQLAlchemy is an optional dependency

    if isinstance(obj, Table):
        return (table_identity(obj),)
    insp = inspect(obj, raiseerr=False)
    if insp is None or not getattr(insp, "is_mapper", False):
        raise TypeError(
            f"cannot take the identity of a {type(obj).__name__}: give a mapped instance, "
            "a mapped class, a Table or an identity string"
        )
    return mapper_info(insp).tables
