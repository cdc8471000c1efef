"""The retry backlog: token keys whose invalidation failed, kept per target and retried.

Two kinds per target and database: invalidations that did not reach Redis (retried by the
next token read, in its round trip, and by a timer), and, with
``transient.cache.wait_replicas``, invalidations applied on the master that too few
replicas acknowledged (*unconfirmed*: sent again, each time with a ``WAIT``, by the timer
and with the next invalidation, until enough replicas acknowledge; a read must not consume
them, since its ``DEL`` would be as unconfirmed as the first).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..connection import RedisManager
from ..exceptions import ReplicationTimeout

log = logging.getLogger(__name__)

#: Most token keys kept for retry after failed invalidations; older ones are dropped (and
#: logged): their staleness is then bounded by the token time to live.
MAX_BACKLOG = 100_000

#: Seconds between background retries of failed invalidations (the last one repeats).
RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

#: The same for unconfirmed invalidations (too few replicas acknowledged): they back off
#: less, since a failover that lost one serves stale data until a retry reaches the new
#: master. Each retry is one round trip (and deletes those tokens again: a cache miss on
#: their rows), from the timer's thread, never a request's.
UNCONFIRMED_RETRY_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0)


def delete(client: Any, keys: Sequence[str]) -> None:
    """Delete token keys: one ``DEL`` for every key, one command, one round trip.

    The keys share the ``{tokens}`` hash tag, so on a Cluster it goes to the one node that
    owns their slot.
    """
    client.execute_command("DEL", *keys)


class Backlog:
    """Token keys whose invalidation failed, per target, retried until they succeed.

    The target is a store's manager (so that an outage in which the manager cannot even
    build its client, a Cluster's, still keeps the work), else its bare client.
    """

    def __init__(
        self,
        target: Any,
        name: str,
        resend: Callable[[Any, list[str]], None] | None = None,
        *,
        unconfirmed: bool = False,
    ) -> None:
        self._target: Callable[[], Any] = weakref.ref(target)
        self._name = name
        #: How a retry sends the keys (``resend(client, keys)``, raising when it did not
        #: succeed); a plain ``DEL`` unless given (unconfirmed invalidations: DEL + WAIT).
        self.resend = resend or delete
        self._unconfirmed = unconfirmed
        self._lock = threading.Lock()
        self._keys: dict[str, None] = {}  # ordered, for dropping the oldest first
        self._timer: threading.Timer | None = None
        self._attempt = 0

    def __len__(self) -> int:
        return len(self._keys)

    def take(self) -> list[str]:
        with self._lock:
            keys, self._keys = list(self._keys), {}
            return keys

    def put_back(self, keys: Iterable[str]) -> None:
        with self._lock:
            merged = dict.fromkeys(keys)
            merged.update(self._keys)
            overflow = len(merged) - MAX_BACKLOG
            if overflow > 0:
                for key in list(merged)[:overflow]:
                    del merged[key]
                log.error(
                    "dropped %d token invalidations after failing to reach Redis (backlog "
                    "limit %d); data cached under them may be stale until their tokens expire",
                    overflow,
                    MAX_BACKLOG,
                )
            self._keys = merged
            self._schedule()

    def succeeded(self) -> None:
        self._attempt = 0

    def _schedule(self) -> None:
        # Called with the lock held.
        if self._timer is not None or not self._keys:
            return
        delays = UNCONFIRMED_RETRY_DELAYS if self._unconfirmed else RETRY_DELAYS
        delay = delays[min(self._attempt, len(delays) - 1)]
        self._attempt += 1
        timer = threading.Timer(delay, self._retry)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _retry(self) -> None:
        with self._lock:
            self._timer = None
        target = self._target()
        if target is None:
            return
        keys = self.take()
        if not keys:
            return
        try:
            client = target.get(self._name) if isinstance(target, RedisManager) else target
            self.resend(client, keys)
        except Exception as exc:
            # Too few replicas again is expected for a while after a failover (the new
            # master has one replica fewer): the first report was a WARNING already.
            level = logging.INFO if isinstance(exc, ReplicationTimeout) else logging.WARNING
            log.log(level, "retrying %d token invalidations failed again: %s", len(keys), exc)
            self.put_back(keys)
        else:
            self.succeeded()
            log.info("retried %d token invalidations successfully", len(keys))

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def drop(self) -> None:
        """Forget the keys and stop the timer; a retry in flight ends with its attempt."""
        self._target = _gone
        self.take()
        self.cancel()


def _gone() -> None:  # the target of a dropped backlog, as a dead weak reference answers
    return None


# target (manager or bare client) -> database name -> backlog. Module-level because the
# work must outlive whatever failed to do it: token stores are made per use (token_store()
# builds one per call) and a bare redis.Redis has no place of ours to hold it. Held weakly,
# so a closed app's manager or a dropped client takes its backlog (and timer) with it.
_BACKLOGS: weakref.WeakKeyDictionary[Any, dict[str, Backlog]] = weakref.WeakKeyDictionary()
_BACKLOGS_LOCK = threading.Lock()


def backlog_of(target: Any, name: str = "cache") -> Backlog:
    backlog = _BACKLOGS.get(target, {}).get(name)
    if backlog is None:
        with _BACKLOGS_LOCK:
            per_name = _BACKLOGS.setdefault(target, {})
            backlog = per_name.get(name)
            if backlog is None:
                backlog = per_name[name] = Backlog(target, name)
    return backlog


#: Suffix of the backlog name under which unconfirmed invalidations wait (no database name
#: contains a space).
_UNCONFIRMED = " unconfirmed"


def unconfirmed_of(target: Any, name: str, resend: Callable[[Any, list[str]], None]) -> Backlog:
    """The backlog of invalidations of ``target`` that too few replicas acknowledged,
    retried with ``resend`` (the latest store's, which carries its ``WAIT``)."""
    key = name + _UNCONFIRMED
    backlog = _BACKLOGS.get(target, {}).get(key)
    if backlog is None:
        with _BACKLOGS_LOCK:
            per_name = _BACKLOGS.setdefault(target, {})
            backlog = per_name.get(key)
            if backlog is None:
                backlog = per_name[key] = Backlog(target, name, resend, unconfirmed=True)
    backlog.resend = resend
    return backlog


def waiting_in(target: Any, name: str) -> Backlog | None:
    # The backlog of target, if it holds anything (no lock: a hint, taken under its lock).
    backlog = _BACKLOGS.get(target, {}).get(name)
    return backlog if backlog is not None and len(backlog) else None


def unconfirmed_in(target: Any, name: str) -> Backlog | None:
    # The unconfirmed backlog of target, if it holds anything (a hint, as waiting_in).
    return waiting_in(target, name + _UNCONFIRMED)


def pending_invalidations(redis: Any) -> int:
    """How many token invalidations wait for a retry (for monitoring, tests): those that
    did not reach Redis, and those too few replicas acknowledged
    (``transient.cache.wait_replicas``).

    Give what the invalidations go to: the ``RedisManager`` of a store or listener bound
    to a manager (or to the running app), the ``redis.Redis`` of one bound to a client.
    """
    return sum(len(backlog) for backlog in _BACKLOGS.get(redis, {}).values())


def forget_retries(target: Any) -> None:
    """Drop the invalidations waiting for a retry for ``target`` (as
    :func:`pending_invalidations` takes it), and stop their timers: for tests, which would
    otherwise leave retries running (every 2 s for unconfirmed ones) after they end. A
    retry in flight ends with its attempt."""
    with _BACKLOGS_LOCK:
        backlogs = _BACKLOGS.pop(target, {})
    for backlog in backlogs.values():
        backlog.drop()
