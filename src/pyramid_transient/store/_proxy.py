"""The :class:`Proxy` of a node of the store, and the ways to get one."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from typing import Any, cast

from ..codec import decode, encode
from ..connection import get_manager
from ._binding import Place, StoreBinding, bind_store, ms, renamed
from ._locks import Lock, current_owner
from ._paths import SEPARATOR, build, flatten, node, split, stored_path

__all__ = ["Proxy", "get_store", "root", "section"]

# Module-level proxies are shared by threads: one Lock object per proxy, or a thread's
# hold would be counted on a Lock the proxy no longer uses (and unguarded). Held only
# while a proxy makes its Lock, once.
_LOCK_CREATION = threading.Lock()


def _elements(path: str | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(path, tuple):
        for element in path:
            if not isinstance(element, str) or not element or SEPARATOR in element:
                raise ValueError(
                    f"store path element {element!r} is not valid: a non-empty str without dots"
                )
        return path
    return split(path)


class Proxy:
    """A node of the store at a dotted path.

    :param path: the dotted path (``"section"``, ``"section.a.b"``), or the tuple of its
        elements (``()`` is the root, as :func:`root` gives).
    :param redis: a client to use (scripts, workers, tests); keys then have no prefix
        (``KeySpace("", "store")``). A :class:`~pyramid_transient.connection.RedisManager`,
        a registry or a request may be given instead: that app's ``store`` database (or
        ``db_name``) and key prefix are used, and its client is asked for at each use (a
        forked worker gets its own connections). Without any, the running Pyramid app's
        manager is looked up at first use.
    :param timeout: seconds the proxy's lock lives unless extended (default
        ``transient.store.lock_expire_timeout``, else 5), as :class:`Lock`'s.
    :param blocking_timeout: seconds :meth:`acquire` waits (default
        ``transient.store.lock_acquire_timeout``, else 0.5), as :class:`Lock`'s.
    :param lock_expire_timeout: deprecated name of ``timeout``.
    :param lock_acquire_timeout: deprecated name of ``blocking_timeout``.

    Nothing is read when a proxy is made: every method is one round trip.
    """

    def __init__(
        self,
        path: str | tuple[str, ...],
        *,
        redis: Any = None,
        db_name: str | None = None,
        timeout: float | None = None,
        blocking_timeout: float | None = None,
        lock_acquire_timeout: float | None = None,
        lock_expire_timeout: float | None = None,
    ) -> None:
        self._path = _elements(path)
        timeout = renamed(
            "Proxy()", "lock_expire_timeout", lock_expire_timeout, "timeout", timeout
        )
        blocking_timeout = renamed(
            "Proxy()",
            "lock_acquire_timeout",
            lock_acquire_timeout,
            "blocking_timeout",
            blocking_timeout,
        )
        if isinstance(redis, Place) and db_name is None and timeout is blocking_timeout is None:
            self._place = redis  # a proxy got from another shares its binding
        elif isinstance(redis, Place):
            self._place = Place(redis.binding, db_name, timeout, blocking_timeout)
        else:
            self._place = Place(redis, db_name, timeout, blocking_timeout)
        self._lock_: Lock | None = None
        self._guards: tuple[Proxy, ...] = ()

    def _below(self, elements: tuple[str, ...]) -> Proxy:
        child = Proxy(self._path + elements, redis=self._place)
        # Looked up at write time, so a lock taken on this proxy later still guards them.
        child._guards = (self, *self._guards)
        return child

    def __repr__(self) -> str:
        return f"<Proxy {self.key()!r}>"

    @property
    def _binding(self) -> StoreBinding:
        return self._place.binding

    # ------------------------------------------------------------------ paths

    def key(self) -> str:
        """The dotted path of this node (``""`` for the root)."""
        return SEPARATOR.join(self._path)

    def get(self, key: str) -> Proxy:
        """The proxy of the node at ``key`` below this one (nothing is read)."""
        return self._below(split(key, "key"))

    __getitem__ = get

    def _target(self, key: str | None = None) -> tuple[str, str]:
        path = self._path + (split(key, "key") if key is not None else ())
        if not path:
            raise ValueError("this operation needs a section: use root().get(name)")
        return path[0], node(path[1:])

    def _guard(self) -> list[Any]:
        owner = None
        for proxy in (self, *self._guards):
            lock = proxy._lock_
            if lock is not None and lock.held:
                owner = lock
                break
        if owner is None:
            return ["0", "", ""]
        return ["1", owner._node, current_owner()]

    # ------------------------------------------------------------------ values

    def set(self, key: str, value: Any, expire: float | None = None) -> Proxy:
        """Store ``value`` at ``key`` below this node, replacing its whole subtree.

        A dict whose keys are non-empty strings without dots becomes a subtree (its
        entries are addressable by path); any other value is one leaf. ``expire`` (seconds)
        applies to the whole new subtree. A value the codec refuses raises ``TypeError``
        before anything is written. Returns this proxy.
        """
        section, at = self._target(key)
        flat: list[bytes | str] = []
        flatten(value, at, flat)
        span = "" if expire is None else ms(expire, "expire")
        args = [at, span, *self._guard(), *flat]
        self._binding.run_registered(section, "set", self._binding.data_keys(section), args)
        return self

    __setitem__ = set

    def val(self, default: Any = None) -> Any:
        """The value at this node: a leaf value or the nested dict of its subtree;
        ``default`` when nothing is stored (a stored ``None`` is returned as ``None``:
        tell them apart with :meth:`exists`)."""
        if not self._path:
            return self._root_val(default)
        section, at = self._target()
        keys = self._binding.data_keys(section)
        found, value = build(at, self._binding.run("get", keys, [at]), keys[0])
        return value if found else default

    def exists(self) -> bool:
        """True if a value (a leaf, even ``None``, or a subtree) is stored here."""
        if not self._path:
            b = self._binding
            return any(b.run_each("exists", lambda s: [""], b.sections()))
        section, at = self._target()
        return bool(self._binding.run("exists", self._binding.data_keys(section), [at]))

    def add(self, count: int | float) -> int | float:
        """Add ``count`` to the number stored here (atomically) and return the result.

        A missing value counts as 0. ``ValueError`` if ``count`` or the stored value is
        not an ``int`` or ``float``. Integers stay exact (64-bit range).
        """
        if isinstance(count, bool) or not isinstance(count, int | float):
            raise ValueError(f"add() takes an int or a float, not {count!r}")
        if isinstance(count, float) and not math.isfinite(count):
            raise ValueError(f"add() takes a finite number, not {count!r}")
        section, at = self._target()
        form = "i" if isinstance(count, int) else "f"
        args = [at, form, encode(count), *self._guard()]
        raw = self._binding.run_registered(section, "add", self._binding.data_keys(section), args)
        return cast(int | float, decode(raw))

    def delete(self, key: str) -> None:
        """Delete the node at ``key`` below this one, with its subtree."""
        self.get(key).clear()

    __delitem__ = delete

    def clear(self) -> None:
        """Delete this node and its whole subtree (the root: every section)."""
        b = self._binding
        if not self._path:
            b.run_each("delete", lambda s: ["", "0", "", ""], b.sections())
            return
        section, at = self._target()
        b.run("delete", b.data_keys(section), [at, *self._guard()])

    def iter_children(self) -> Iterator[Proxy]:
        """Proxies of the *direct* children of this node, in path order (empty for a leaf
        or a missing node). One round trip (a few more for the root: see the docs)."""
        b = self._binding
        if not self._path:
            names = sorted(b.sections())
            flags = b.run_each("exists", lambda s: [""], names)
            children = [n for n, f in zip(names, flags, strict=True) if f]
        else:
            section, at = self._target()
            keys = b.data_keys(section)
            children = []
            for c in b.run("children", keys, [at]):
                rest = stored_path(c + b"." if isinstance(c, bytes) else c + ".", "", keys[1])
                if rest is not None and len(rest) == 1:
                    children.append(rest[0])
        for name in children:
            yield self._below((name,))  # as get(): writes check our locks

    def expire(self, seconds: float) -> bool:
        """Expire this node and its whole subtree in ``seconds``; False if it does not
        exist. Writing below the node later keeps the expiry; :meth:`set` of the node
        itself replaces it."""
        section, at = self._target()
        span = ms(seconds, "expire")
        result = self._binding.run(
            "expire", self._binding.data_keys(section), [at, span, *self._guard()]
        )
        return bool(result)

    def time_to_live(self) -> float | None:
        """Seconds until this node expires (its own expiry or an ancestor's, whichever
        is first); ``-1`` if it has none; ``None`` if nothing is stored here."""
        section, at = self._target()
        left = int(self._binding.run("ttl", self._binding.data_keys(section), [at]))
        if left == -2:
            return None
        if left == -1:
            return -1
        return left / 1000

    # ------------------------------------------------------------------ root

    def _root_val(self, default: Any) -> Any:
        b = self._binding
        names = sorted(b.sections())
        flats = b.run_each("get", lambda s: [""], names)
        tree: dict[str, Any] = {}
        for name, flat in zip(names, flats, strict=True):
            found, value = build("", flat, b.data_keys(name)[0])
            if found:
                tree[name] = value
        return tree if tree else default

    # ------------------------------------------------------------------ locks

    @property
    def lock(self) -> Lock:
        """The :class:`Lock` of this node (made on first use)."""
        if self._lock_ is None:
            if not self._path:
                raise ValueError("the root cannot be locked: lock a section or a path below")
            with _LOCK_CREATION:
                if self._lock_ is None:
                    self._lock_ = Lock(self._binding, SEPARATOR.join(self._path))
        return self._lock_

    def acquire(
        self,
        blocking: bool | None = None,
        blocking_timeout: float | None = None,
        *,
        timeout: float | None = None,
    ) -> int:
        """Lock this node and its subtree; returns the fencing token (see :class:`Lock`).

        While this thread holds the lock, writes made through this proxy (and proxies got
        from it) are refused with ``LockNotOwned`` if the lock has expired meanwhile.
        ``timeout=`` is the deprecated name of ``blocking_timeout`` here.
        """
        blocking_timeout = renamed(
            "Proxy.acquire()", "timeout", timeout, "blocking_timeout", blocking_timeout
        )
        return self.lock.acquire(blocking, blocking_timeout)

    def release(self) -> None:
        """Release the lock once (``LockNotOwned`` if this thread does not hold it)."""
        self.lock.release()

    def extend(self, additional_time: float | None = None) -> None:
        """Push the lock's expiry back (``LockNotOwned`` if it was lost)."""
        self.lock.extend(additional_time)

    def is_locked(self) -> bool:
        """True if anyone holds a lock on this node, an ancestor or a descendant."""
        return self.lock.locked()

    def owns_lock(self) -> bool:
        """True while this thread still holds this node's lock."""
        return self.lock.owned()

    def __enter__(self) -> Proxy:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def root(redis: Any = None, **kwargs: Any) -> Proxy:
    """The proxy of the whole tree (its children are the sections)."""
    return Proxy((), redis=redis, **kwargs)


def section(name: str, redis: Any = None, **kwargs: Any) -> Proxy:
    """The proxy of a first-level section, e.g. ``section(__name__.replace(".", "_"))``.

    ``name`` is one path element: it may not contain dots.
    """
    if isinstance(name, str) and (SEPARATOR in name or not name):
        raise ValueError(
            f"store section name {name!r} is not valid: one non-empty element, no dots"
        )
    return Proxy(name, redis=redis, **kwargs)


def get_store(request_or_registry: Any, db_name: str | None = None) -> Proxy:
    """The root of the app's store, from a request or a registry."""
    return Proxy((), redis=Place(bind_store(get_manager(request_or_registry), db_name)))
