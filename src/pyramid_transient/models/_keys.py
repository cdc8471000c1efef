"""Per-class state of models: the options read from the class, the keys of a class in one
key space, and the blocks of generated int ids.

Keys (``{prefix}:model:{Name}:...``; every key of a class shares the Cluster hash tag
``{Name}``, so each operation is one script on one slot):

``all``
    sorted set, primary key -> deadline in ms on the server's clock (``inf``: never).
``meta``
    hash, primary key -> the object's version and the index entries it owns; field
    ``"\\0seq"`` is the class's version counter.
``data`` (``"hash"`` layout)
    hash, primary key -> the object's JSON.
``obj:<pk>`` (``"key"`` layout)
    string, the object's JSON, with a Redis TTL at its deadline.
``idx:<field>``
    sorted set per indexed field (see :mod:`.encoding`).
``ids``
    string, the counter generated int ids are reserved from, a block at a time.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from pydantic import TypeAdapter

from ..binding import Binding
from ..keys import KeySpace
from ._encoding import _Index

#: How many int keys a process takes from Redis at once (one round trip per block).
ID_BLOCK = 1000


def _new_text_id() -> str:
    """A new text key: 128 random bits, distinct across processes without asking Redis."""
    return uuid.uuid4().hex


class _IdBlocks:
    """Int keys handed out from blocks reserved with one ``INCRBY`` of a per-class
    counter: distinct across processes and threads, one round trip per :data:`ID_BLOCK`
    new objects. A forked child never reuses its parent's block."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: dict[str, tuple[int, int, int]] = {}  # key -> (pid, next, end)

    def take(self, key: str, reserve: Callable[[int], int]) -> int:
        """The next id for counter ``key``; ``reserve(n)`` adds n to the counter in Redis
        and returns its new value."""
        with self._lock:
            pid = os.getpid()
            owner, nxt, end = self._blocks.get(key, (pid, 0, 0))
            if owner != pid or nxt >= end:
                end = int(reserve(ID_BLOCK)) + 1
                nxt = end - ID_BLOCK
            self._blocks[key] = (pid, nxt + 1, end)
            return nxt

    def forget(self, key: str) -> None:
        """Drop this process's block of ``key`` (the next id reserves a new one)."""
        with self._lock:
            self._blocks.pop(key, None)


@dataclass
class _Meta:
    storage_name: str
    layout: str
    expire_ms: int | None
    pk_fields: tuple[str, ...]
    #: Per primary-key field: whether its text values are JSON-quoted in the key (fields
    #: whose values are not all of one class, e.g. ``int | str``, where 1 and "1" differ).
    pk_json: tuple[bool, ...]
    indexes: tuple[_Index, ...]
    index_by_field: dict[str, _Index]
    strict: bool
    optimistic: bool
    adapters: dict[str, TypeAdapter[Any]]
    #: Per field, for lookup values: the annotation without None, and its item type.
    value_adapters: dict[str, TypeAdapter[Any]]
    item_adapters: dict[str, TypeAdapter[Any] | None]
    #: Key names per key space (names are built once, not on every call).
    names: dict[KeySpace, tuple[str, str, str, tuple[str, ...]]]
    #: ``str`` or ``int`` when the key is an optional ``id`` field (``id: str | None =
    #: None``) that gets a generated value on first use, else None.
    generated_id: type | None = None
    #: ``int`` or ``str`` when the key is one field annotated exactly so: a key of exactly
    #: that type needs no validation and no JSON to become its text (the fast path).
    pk_plain: type | None = None
    id_blocks: _IdBlocks = dc_field(default_factory=_IdBlocks)
    #: What ``objects.bind()`` gave this class (subclasses look up their bases').
    binding: Binding | None = None


@dataclass(frozen=True)
class _Keys:
    binding: Binding
    client: Any
    all: str
    meta: str
    data: str
    indexes: tuple[str, ...]
    keyspace: KeySpace
    tag: str

    def obj(self, pk: str) -> str:
        return self.keyspace.tagged(self.tag, "obj", pk)

    @property
    def ids(self) -> str:
        return self.keyspace.tagged(self.tag, "ids")
