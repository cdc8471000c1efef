"""Nested dicts at dotted paths, with tree locks and expiry.

A :class:`Proxy` addresses a node of one tree by a dotted path (``"users.42.cart"``). The
first element of a path names a *section*; everything below one section lives in a few
Redis keys that share one Cluster hash tag, so every operation on a subtree is one Lua
script call: atomic, and one round trip whatever the size of the subtree or the database.

Layout of one section ``S`` (``ks`` is the store's :class:`~pyramid_transient.keys.KeySpace`):

``ks.tagged(S, "data")``
    HASH: encoded node path -> codec-encoded leaf value.
``ks.tagged(S, "paths")``
    ZSET, every score 0: the same paths, for ``ZRANGEBYLEX`` over a subtree.
``ks.tagged(S, "expiry")``
    ZSET: path of a node with an expiry -> deadline (server milliseconds).
``ks.tagged(S, "expiring")``
    ZSET, every score 0: the same paths, to find the expiries inside a subtree.
``ks.tagged(S, "locks")``, ``ks.tagged(S, "lockpaths")``, ``ks.tagged(S, "fences")``
    HASH of held tree locks, their lexicographic index, and the fencing counters.
``ks.key("sections")`` (single server, Sentinel) or ``ks.tagged(T, "sections")`` (Cluster)
    SET of section names, which root operations read and ``set``/``add`` scripts add to:
    app-wide on a single server; on a Cluster, one per slot, ``T`` the slot's tag
    (the smallest decimal integer that hashes to that slot), so a write stays in its slot.

A node path inside a section is its elements after the first, each followed by ``.``
(``users.42.cart`` is ``"42.cart."`` in section ``users``; the section node itself is
``""``). Because every stored path ends with the separator, the subtree of ``42.`` is
exactly the range ``["42." , "42/")``: it never includes ``420.``. User text never reaches
a glob pattern: paths are only compared as strings.

The package, by concern: ``store/proxy.py`` (:class:`Proxy`, :func:`root`, :func:`section`,
:func:`get_store`), ``store/locks.py`` (:class:`Lock`, :func:`current_owner`), ``store/binding.py``
(where a store lives, its keys, lock timing, running its scripts), ``store/paths.py`` (dotted
paths and the flat form of a subtree) and ``store/scripts.py`` (the Lua beside them: one
``.lua`` file per script, after ``prelude.lua`` and its family's helpers).
"""

from __future__ import annotations

from typing import Any

from ..connection import add_request_attribute, include_manager
from ._binding import (
    DEFAULT_LOCK_BLOCKING_TIMEOUT,
    DEFAULT_LOCK_TIMEOUT,
    MAX_SECONDS,
)
from ._locks import Lock, current_owner
from ._paths import SEPARATOR
from ._proxy import Proxy, get_store, root, section
from ._scripts import SCRIPTS

__all__ = [
    "DEFAULT_LOCK_BLOCKING_TIMEOUT",
    "DEFAULT_LOCK_TIMEOUT",
    "MAX_SECONDS",
    "SCRIPTS",
    "SEPARATOR",
    "Lock",
    "Proxy",
    "current_owner",
    "get_store",
    "includeme",
    "root",
    "section",
]


def includeme(config: Any) -> None:
    """Register the manager and ``request.store`` (the root :class:`Proxy` of the app)."""
    include_manager(config)
    template = get_store(config.registry)

    def request_store(request: Any) -> Proxy:
        # A new root per request (a proxy holds the locks it took); the binding is shared.
        return Proxy((), redis=template._place)

    add_request_attribute(config, "store", request_store)
