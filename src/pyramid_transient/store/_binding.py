"""Where a store lives: its :class:`~pyramid_transient.binding.Binding`, its keys, its lock
timing, and the one way its scripts are run (errors and repairs translated)."""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from ..binding import Binding, bind, send_on_one_connection
from ..exceptions import CorruptData, LockNotOwned
from ..keys import KeySpace
from ..lua import load as load_script
from ..settings import StoreSettings
from ._paths import SEPARATOR
from ._scripts import SCRIPTS, split_reply

log = logging.getLogger(__name__)

#: Seconds a lock lives unless extended (redis-py's ``timeout``), when neither an argument
#: nor ``transient.store.lock_expire_timeout`` gives a value (the setting's default, for a
#: bare client): a release lost to a stall blocks the path for this long at most.
DEFAULT_LOCK_TIMEOUT: float = StoreSettings.lock_expire_timeout
#: Seconds ``acquire()`` waits (redis-py's ``blocking_timeout``), likewise from
#: ``transient.store.lock_acquire_timeout``: about the socket timeout, so a request fails
#: fast rather than queueing behind a lock.
DEFAULT_LOCK_BLOCKING_TIMEOUT: float = StoreSettings.lock_acquire_timeout

#: The longest expiry or lock time accepted (about 317 years): deadlines must stay integers
#: that Lua prints without an exponent, or PEXPIREAT refuses them after a script has
#: already written.
MAX_SECONDS = 10**10


def ms(seconds: float, what: str) -> int:
    """``seconds`` as whole milliseconds (at least 1); ValueError outside (0, MAX_SECONDS]."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 < seconds <= MAX_SECONDS
    ):
        raise ValueError(
            f"{what} must be a positive number of seconds up to {MAX_SECONDS}, not {seconds!r}"
        )
    return max(1, round(seconds * 1000))


def wait_seconds(seconds: float, what: str) -> float:
    """A ``blocking_timeout``: 0 (one attempt) or more seconds; ValueError otherwise."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 <= seconds <= MAX_SECONDS
    ):
        raise ValueError(f"{what} must be 0 or more seconds up to {MAX_SECONDS}, not {seconds!r}")
    return float(seconds)


def renamed(what: str, old: str, old_value: Any, new: str, new_value: Any) -> Any:
    """The value of argument ``new``, taken from its deprecated name ``old`` (with a
    DeprecationWarning) when only that one was given."""
    if old_value is None:
        return new_value
    if new_value is not None:
        raise TypeError(f"{what} got both {new}= and its deprecated name {old}=: pass {new}=")
    warnings.warn(
        f"{what}: {old}= is deprecated and will be removed in the next release; use {new}=",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster)


@functools.cache
def slot_tags() -> tuple[str, ...]:
    """The hash tag of each Cluster slot: for slot ``s``, the smallest decimal integer
    whose CRC16 falls in ``s``, e.g. ``slot_tags()[0] == "3560"``.

    A section's listing key on a Cluster carries the tag of the section's own slot, so the
    section's write scripts can add to it. The table is part of the key layout: it never
    changes (about 40 ms to compute, once per process, on first use on a Cluster).
    """
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    left, n = REDIS_CLUSTER_HASH_SLOTS, 0
    while left:
        text = str(n)
        slot = key_slot(text.encode())
        if tags[slot] is None:
            tags[slot] = text
            left -= 1
        n += 1
    return tuple(t for t in tags if t is not None)


@functools.lru_cache(maxsize=16)
def _slot_listings(base: str) -> tuple[str, ...]:
    # Every per-slot listing key below ``base``, in slot order (built here, not through
    # KeySpace.tagged, whose small cache of tags 16384 tags would flush for everyone).
    return tuple(f"{base}:{{{tag}}}:sections" for tag in slot_tags())


@functools.lru_cache(maxsize=16)
def _listing_slots(base: str) -> tuple[int, ...]:
    # The slot of each of them: its index, unless ``base`` has a hash tag of its own.
    return tuple(key_slot(k.encode("utf-8")) for k in _slot_listings(base))


def _lock_lost() -> Exception:
    return LockNotOwned(
        "the lock this proxy held has expired or was taken by another owner; nothing was written"
    )


#: The store scripts' own error replies, and what the caller gets for each.
SCRIPT_ERRORS: dict[str, Callable[[], Exception]] = {
    "LOCKLOST": _lock_lost,
    "NOTNUM": lambda: ValueError("add() needs a number stored at the path (or nothing)"),
    "RANGE": lambda: ValueError("add() result is out of range (64-bit integers, finite floats)"),
}


@dataclass(frozen=True)
class StoreBinding:
    """Where a store lives (:class:`~pyramid_transient.binding.Binding`: its client,
    asked for at each use so a forked child gets its own connections, and its keys), with
    the lock timing that applies there."""

    where: Binding
    #: Seconds a lock lives unless extended.
    timeout: float
    #: Seconds ``acquire()`` waits.
    blocking_timeout: float

    @property
    def client(self) -> Any:
        return self.where.client

    @property
    def keyspace(self) -> KeySpace:
        return self.where.keyspace

    @property
    def database(self) -> str:
        return self.where.name

    def data_keys(self, section: str) -> list[str]:
        ks = self.keyspace
        return [
            ks.tagged(section, part) for part in ("data", "paths", "expiry", "expiring", "locks")
        ]

    def lock_keys(self, section: str) -> list[str]:
        ks = self.keyspace
        return [ks.tagged(section, part) for part in ("locks", "lockpaths", "fences", "released")]

    @property
    def registry(self) -> str:
        """The app-wide SET of section names: the listing on a single server (and Sentinel),
        and on a Cluster the listing that earlier releases wrote, read until it is empty."""
        return self.keyspace.key("sections")

    def listing(self, section: str, client: Any = None) -> str:
        """The SET that lists ``section`` for root operations, which its writes add to:
        :attr:`registry` on a single server; on a Cluster, one listing per slot, in the
        section's own slot (tagged with :func:`slot_tags`), so a write touches no other
        shard and no key is written by every write of the app."""
        if not is_cluster(self.client if client is None else client):
            return self.registry
        slot = key_slot(self.keyspace.tagged(section, "data").encode("utf-8"))
        return _slot_listings(self.keyspace.base)[slot]

    def lock_errors(
        self, section: str, node: str, path: str
    ) -> Mapping[str, Callable[[], Exception]]:
        """The lock scripts' error replies for the lock of ``path`` (``node`` in
        ``section``)."""
        fences = self.lock_keys(section)[2]

        def bad_fences() -> Exception:
            return CorruptData(
                f"store key {fences!r} holds another type than a hash: the fencing counters "
                f"of section {section!r} are lost, so no lock there can be taken (deleting "
                "it restarts their tokens at 1: reset what you fence outside Redis too)",
                key=fences,
                database=self.database,
                repair=f"DEL {fences}",
            )

        def bad_fence() -> Exception:
            return CorruptData(
                f"store key {fences!r} holds a fencing counter for lock {path!r} that is not "
                "an integer, so that lock cannot be taken (deleting the field restarts its "
                "tokens at 1: reset what you fence outside Redis too)",
                key=fences,
                database=self.database,
                repair=f'HDEL {fences} "{node}"',
            )

        return {"BADFENCES": bad_fences, "BADFENCE": bad_fence}

    def script(self, name: str, client: Any = None) -> Any:
        return SCRIPTS.on(self.client if client is None else client)[name]

    def run(
        self,
        name: str,
        keys: list[str],
        args: list[Any],
        errors: Mapping[str, Callable[[], Exception]] = SCRIPT_ERRORS,
    ) -> Any:
        """Run script ``name`` (one round trip); its result, its repairs logged."""
        with self.where.errors(script_errors=errors):
            return split_reply(self.where.run(SCRIPTS, name, keys, args))

    def run_registered(self, section: str, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a write script that may create ``section`` (``set``, ``add``): the script
        also adds the section to its :meth:`listing`, given as its last key, in the same
        call (one round trip, one slot on a Cluster). The listing is never pruned (a few
        bytes per section name ever used), so root operations can never miss a section."""
        client = self.client
        return self.run(name, [*keys, self.listing(section, client)], [*args, section])

    def sections(self) -> list[str]:
        """The names of the sections: one round trip on a single server, one per primary
        on a Cluster (all the slots' listings). A member that is not a section name (not
        UTF-8, empty, with a dot: another program's) is skipped, logged and removed; a
        listing of the wrong type raises CorruptData naming the repair."""
        client = self.client
        if is_cluster(client):
            return self._cluster_sections(client)
        key = self.registry
        with self._listing_read(key), self.where.errors(key):
            raw = client.smembers(key)
        return self._names(client, key, raw)

    @contextlib.contextmanager
    def _listing_read(self, key: str) -> Iterator[None]:
        try:
            yield
        except CorruptData as exc:
            raise CorruptData(
                f"store key {key!r} holds another type than a set, so root operations "
                "cannot list the sections (after the repair each section is listed again "
                "by its next set() or add())",
                key=key,
                database=self.database,
                repair=f"DEL {key}",
            ) from exc

    def _names(self, client: Any, key: str, raw: Any) -> list[str]:
        names, bad = [], []
        for member in raw:
            try:
                name = member.decode("utf-8") if isinstance(member, bytes) else member
            except UnicodeDecodeError:
                name = ""
            if not name or SEPARATOR in name:
                bad.append(member)
            else:
                names.append(name)
        if bad:
            log.warning(
                "removing %d corrupt section names %r from store key %s", len(bad), bad, key
            )
            with self.where.errors(key):
                client.srem(key, *bad)
        return names

    def _cluster_sections(self, client: Any) -> list[str]:
        # Every slot's listing, read with one pipeline per primary (the slots it serves),
        # plus the app-wide listing of older releases, whose names are moved to their
        # slots' listings on the way (after which it is gone).
        old = self.registry
        base = self.keyspace.base
        by_node: dict[str, list[str]] = {}
        with self.where.errors():
            by_slot = client.nodes_manager.get_node_from_slot
            for key, slot in zip(_slot_listings(base), _listing_slots(base), strict=True):
                by_node.setdefault(by_slot(slot).name, []).append(key)
            by_node.setdefault(client.get_node_from_key(old).name, []).append(old)
        found: dict[str, Any] = {}
        for keys in by_node.values():
            with self.where.errors():
                replies = send_on_one_connection(client, keys[0], [("SMEMBERS", k) for k in keys])
            for key, reply in zip(keys, replies, strict=True):
                if isinstance(reply, redis.exceptions.MovedError | redis.exceptions.AskError):
                    # a slot moved since the client's table was read: the cluster client
                    # follows the redirection (and refreshes its table)
                    with self._listing_read(key), self.where.errors(key):
                        reply = client.smembers(key)
                elif isinstance(reply, Exception):
                    with self._listing_read(key), self.where.errors(key):
                        raise reply
                if reply:
                    found[key] = reply
        names: set[str] = set()
        for key, raw in found.items():
            if key != old:
                names.update(self._names(client, key, raw))
        if old in found:
            self._migrate(client, old, found[old], names)
        return sorted(names)

    def _migrate(self, client: Any, old: str, raw: Any, names: set[str]) -> None:
        moved = [n for n in self._names(client, old, raw) if n not in names]
        with self.where.errors():
            if moved:
                pipe = client.pipeline()
                for name in moved:
                    pipe.sadd(self.listing(name, client), name)
                pipe.execute()
            # Only the members read: a name added meanwhile (by an older release still
            # running) stays, for the next root operation to move.
            client.srem(old, *raw)
        names.update(moved)
        log.info("moved %d section names from store key %s to their slots", len(moved), old)

    def run_each(self, name: str, args: Callable[[str], list[Any]], names: list[str]) -> list[Any]:
        """Run a script on every section of ``names``: atomic per section, not across
        sections (one pipeline on a single server; one call per section on a Cluster)."""
        if not names:
            return []
        with self.where.errors(script_errors=SCRIPT_ERRORS):
            client = self.client
            if is_cluster(client):
                return [
                    split_reply(
                        self.where.run(SCRIPTS, name, self.data_keys(s), args(s), client=client)
                    )
                    for s in names
                ]
            script = self.script(name, client)
            for attempt in (1, 2):
                pipe = client.pipeline(transaction=False)
                for s in names:
                    keys = self.data_keys(s)
                    pipe.evalsha(script.sha, len(keys), *keys, *args(s))
                results = pipe.execute(raise_on_error=False)
                if attempt == 1 and any(
                    isinstance(r, redis.exceptions.NoScriptError) for r in results
                ):
                    load_script(client, script, self.data_keys(names[0])[0])
                    continue
                for r in results:
                    if isinstance(r, Exception):
                        raise r
                return [split_reply(r) for r in results]
        raise AssertionError("unreachable")  # pragma: no cover


def bind_store(
    target: Any,
    db_name: str | None = None,
    timeout: float | None = None,
    blocking_timeout: float | None = None,
    keyspace: KeySpace | None = None,
) -> StoreBinding:
    """Bind to ``target`` (see :func:`~pyramid_transient.binding.bind`; a
    :class:`StoreBinding` is returned as it is, with the timing given here applied): a
    manager's ``transient.store.*`` settings give the lock timing not passed as arguments."""
    if isinstance(target, StoreBinding):
        base = target
        if keyspace is not None:
            base = StoreBinding(
                _rekeyed(base.where, keyspace), base.timeout, base.blocking_timeout
            )
        return StoreBinding(
            base.where,
            base.timeout if timeout is None else timeout,
            base.blocking_timeout if blocking_timeout is None else blocking_timeout,
        )
    where = bind(target, "store", db_name)
    if keyspace is not None:
        where = _rekeyed(where, keyspace)
    timeout_default, blocking_default = DEFAULT_LOCK_TIMEOUT, DEFAULT_LOCK_BLOCKING_TIMEOUT
    if where.manager is not None:
        settings = where.manager.settings.store
        timeout_default = settings.lock_expire_timeout
        blocking_default = settings.lock_acquire_timeout
    return StoreBinding(
        where,
        timeout_default if timeout is None else timeout,
        blocking_default if blocking_timeout is None else blocking_timeout,
    )


def _rekeyed(where: Binding, keyspace: KeySpace) -> Binding:
    client = None if where.manager is not None else where.client
    return Binding(keyspace, manager=where.manager, client=client, name=where.name)


class Place:
    """What a proxy's binding is made from, bound at first use (a proxy made at import time
    finds the running app then) and shared by every proxy got from that proxy."""

    __slots__ = ("_binding", "blocking_timeout", "db_name", "target", "timeout")

    def __init__(
        self,
        target: Any,
        db_name: str | None = None,
        timeout: float | None = None,
        blocking_timeout: float | None = None,
    ) -> None:
        self.target = target
        self.db_name = db_name
        self.timeout = timeout
        self.blocking_timeout = blocking_timeout
        self._binding: StoreBinding | None = None

    @property
    def binding(self) -> StoreBinding:
        # A race binds twice to equal bindings: harmless, so no lock.
        if self._binding is None:
            self._binding = bind_store(
                self.target, self.db_name, self.timeout, self.blocking_timeout
            )
        return self._binding
