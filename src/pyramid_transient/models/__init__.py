"""Pydantic models persisted in Redis, with indexes, per-object expiry and optimistic writes.

::

    class User(RedisModel):
        __expire__ = 3600                 # seconds each saved object lives
        __indexes__ = ("age", "role")     # filter on these without loading every object

        id: int
        name: str
        age: int | None = None
        role: Role = Role.member

    User.objects.bind(redis.Redis(...))   # scripts and workers; Pyramid apps need not bind
    User(id=1, name="Ann", age=31).save() # one round trip, indexes included
    User.objects.get(1)                   # one round trip
    User.objects.filter(age__gte=30, role="admin")  # at most two round trips, cost ~ matches

Queries live on ``User.objects`` (a :class:`Manager`), apart from the fields, so a field may
be called ``count``, ``get``, ``filter``, ``delete`` or ``pk``; ``objects`` is reserved.

Storage (``{prefix}:model:{Name}:...``; every key of a class shares the Cluster hash tag
``{Name}``, so each operation is one script on one slot):

``all``
    sorted set, primary key -> deadline in ms on the server's clock (``inf``: never). The
    class's own list of objects: ``all()``, ``count()`` and unindexed filters iterate it, never
    the keyspace; liveness is judged by it, so one object's expiry never depends on another's.
``meta``
    hash, primary key -> the object's version and the index entries it owns, so a save or a
    clean-up removes exactly the old entries. Field ``"\\0seq"`` is the class's version counter.
``data`` (``"hash"`` layout)
    hash, primary key -> the object's JSON.
``obj:<pk>`` (``"key"`` layout)
    string, the object's JSON, with a Redis TTL at its deadline.
``idx:<field>``
    sorted set per indexed field: score = the value for numbers, dates and datetimes
    (member = pk); score 0 and member = ``value NUL pk`` for str, bool, Enum and UUID, so
    equality, ``__in``, ``__startswith`` and ranges are ``ZRANGEBYLEX`` slices.
``ids``
    string, the counter generated int ids are reserved from, a block at a time.

Values are encoded with pydantic's JSON mode (``model_dump_json`` / ``model_validate_json``):
the field annotations are the schema, so datetimes (with their offset), decimals, nested
models, enums, UUIDs, bytes (base64) and non-finite floats round-trip exactly, decoding never
runs code, and both directions run in pydantic's compiled core. A payload that fails to
decode is logged and treated as missing.

The package: ``model`` (the class), ``manager`` (``Model.objects``), ``keys`` (per-class
state and keys), ``encoding`` (index entries and lookups), ``scripts`` (the ``.lua`` files
beside it).
"""

from __future__ import annotations

from typing import Any

from ..exceptions import FullScanRefused
from ._keys import ID_BLOCK
from ._manager import FILTER_PAGE, PURGE_BATCH, SCAN_BATCH, Manager
from ._model import RESERVED, RedisModel
from ._scripts import SCRIPTS

__all__ = [
    "FILTER_PAGE",
    "ID_BLOCK",
    "PURGE_BATCH",
    "RESERVED",
    "SCAN_BATCH",
    "SCRIPTS",
    "FullScanRefused",
    "Manager",
    "RedisModel",
    "includeme",
]


def includeme(config: Any) -> None:
    """Register the manager; models then use its ``models`` database when not bound."""
    from ..connection import include_manager

    include_manager(config)
