"""Tree locks: re-entrant per owner (a thread), with expiry and fencing tokens."""

from __future__ import annotations

import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

from ..exceptions import CorruptData, LockNotOwned, LockTimeout
from ..keys import KeySpace
from ._binding import StoreBinding, bind_store, ms, renamed, wait_seconds
from ._paths import node, split

__all__ = ["Lock", "current_owner"]

# Module-level clock and sleep, so tests can patch them (as redis-py's lock tests do).
mod_time = time


class _Owner(threading.local):
    token: str = ""
    pid: int = 0


# The owner token of each thread. Module-level on purpose: a thread is one owner across
# every store, binding and proxy (its locks nest and re-enter wherever they were taken);
# per-thread by construction, so it is never shared state.
_OWNER = _Owner()


def current_owner() -> str:
    """This thread's random owner token (a fresh one in a forked child).

    Locks taken by one thread are re-entrant across every proxy and :class:`Lock` of that
    thread; two threads, processes or hosts are always different owners.
    """
    pid = os.getpid()
    if _OWNER.pid != pid or not _OWNER.token:
        _OWNER.token = secrets.token_hex(16)
        _OWNER.pid = pid
    return _OWNER.token


class _NoBlockingPop(Exception):
    """BLPOP is denied (an ACL): waiters sleep instead."""


_WAIT_ERRORS = {"NOPERM": _NoBlockingPop}


class Lock:
    """A tree lock on a dotted path (re-entrant per owner, with expiry and fencing tokens).

    While one owner holds ``a.b``, no other owner can take ``a.b``, anything below it
    (``a.b.c``) or any ancestor (``a``). The owner is the calling thread, identified by a
    random token (:func:`current_owner`), so locks nest freely within a thread and the same
    path may be re-entered; release as often as acquired.

    Timing is named as redis-py's :class:`redis.lock.Lock` names it:

    :param redis: a bare client (keys ``store:{section}:...``, as :class:`Proxy` uses with
        one), or a :class:`~pyramid_transient.connection.RedisManager`, registry or request
        (that app's key prefix and ``store`` database); ``keyspace`` overrides the keys.
    :param path: a dotted path (``"section"`` or below).
    :param timeout: seconds after which a held lock frees itself if not extended (more
        than 0, up to ``10**10``, millisecond precision; default
        ``transient.store.lock_expire_timeout``, else 5).
    :param blocking_timeout: seconds :meth:`acquire` waits before raising ``LockTimeout``
        (0 or more: 0 makes one attempt; default ``transient.store.lock_acquire_timeout``,
        else 0.5).
    :param sleep: the longest pause between two attempts while waiting (at most 0.1 s
        is spent blocked at a time); a release in the same section ends a pause early.
    :param blocking: whether :meth:`acquire` waits at all by default.
    :param expire_timeout: deprecated name of ``timeout``.
    :param acquire_timeout: deprecated name of ``blocking_timeout``.
    """

    def __init__(
        self,
        redis: Any,
        path: str,
        *,
        timeout: float | None = None,
        blocking_timeout: float | None = None,
        sleep: float = 0.05,
        blocking: bool = True,
        keyspace: KeySpace | None = None,
        expire_timeout: float | None = None,
        acquire_timeout: float | None = None,
    ) -> None:
        elements = split(path)  # a bad path is a ValueError before anything else
        timeout = renamed("Lock()", "expire_timeout", expire_timeout, "timeout", timeout)
        blocking_timeout = renamed(
            "Lock()", "acquire_timeout", acquire_timeout, "blocking_timeout", blocking_timeout
        )
        binding = bind_store(redis, None, timeout, blocking_timeout, keyspace)
        self.path = path
        self.name = path
        self._section = elements[0]
        self._node = node(elements[1:])
        self._binding: StoreBinding = binding
        self._timeout_ms = ms(binding.timeout, "lock timeout")
        #: Seconds a held lock lives unless extended.
        self.timeout = binding.timeout
        #: Seconds :meth:`acquire` waits by default.
        self.blocking_timeout = wait_seconds(binding.blocking_timeout, "lock blocking_timeout")
        if isinstance(sleep, bool) or not isinstance(sleep, int | float) or sleep <= 0:
            raise ValueError(f"lock sleep must be a positive number of seconds, not {sleep!r}")
        self.sleep = sleep
        self.blocking = blocking
        self._local = threading.local()

    @property
    def expire_timeout(self) -> float:
        """Deprecated name of :attr:`timeout`."""
        renamed("Lock", "expire_timeout", 1, "timeout", None)
        return self.timeout

    @property
    def acquire_timeout(self) -> float:
        """Deprecated name of :attr:`blocking_timeout`."""
        renamed("Lock", "acquire_timeout", 1, "blocking_timeout", None)
        return self.blocking_timeout

    def __repr__(self) -> str:
        return f"<Lock {self.path!r}>"

    def _keys(self) -> list[str]:
        # The lock's keys and script errors are fixed with its binding: built once.
        keys: list[str] | None = self.__dict__.get("_lock_keys")
        if keys is None:
            keys = self._lock_keys = self._binding.lock_keys(self._section)
        return keys

    def _errors(self) -> Mapping[str, Callable[[], Exception]]:
        errors: Mapping[str, Callable[[], Exception]] | None = self.__dict__.get("_lock_errors")
        if errors is None:
            errors = self._lock_errors = self._binding.lock_errors(
                self._section, self._node, self.path
            )
        return errors

    @property
    def token(self) -> int | None:
        """The fencing token of this thread's current hold, or None when not held."""
        return cast(int | None, getattr(self._local, "token", None))

    @property
    def held(self) -> int:
        """How many times this thread acquired (and has not yet released) this lock here."""
        return cast(int, getattr(self._local, "count", 0))

    def acquire(
        self,
        blocking: bool | None = None,
        blocking_timeout: float | None = None,
        *,
        timeout: float | None = None,
    ) -> int:
        """Take the lock, waiting up to ``blocking_timeout`` seconds (default: the lock's).

        Returns the fencing token: greater than every token issued before for this path
        (re-entering returns the token of the current hold). Raises
        :class:`~pyramid_transient.exceptions.LockTimeout` when the wait runs out (at once
        with ``blocking=False``).

        ``timeout=`` is the deprecated name of ``blocking_timeout`` here (redis-py's
        ``timeout`` is how long a held lock lives: see the constructor).
        """
        blocking_timeout = renamed(
            "Lock.acquire()", "timeout", timeout, "blocking_timeout", blocking_timeout
        )
        wait = (
            self.blocking_timeout
            if blocking_timeout is None
            else wait_seconds(blocking_timeout, "blocking_timeout")
        )
        if blocking is None:
            blocking = self.blocking
        deadline = mod_time.monotonic() + (wait if blocking else 0)
        owner = current_owner()
        pause = 0.002
        binding = self._binding
        keys = self._keys()
        args: list[Any] = [self._node, owner, self._timeout_ms]
        errors = self._errors()
        while True:
            ok, value = binding.run("acquire", keys, args, errors)
            if ok == 1:
                self._local.token = int(value)
                self._local.count = self.held + 1
                return int(value)
            left = deadline - mod_time.monotonic()
            if left <= 0:
                raise LockTimeout(
                    f"could not acquire the store lock on {self.path!r} within {wait!r} "
                    "seconds: another owner holds it, an ancestor or a descendant",
                    lock_name=self.path,
                )
            # Back off exponentially (with jitter) up to `sleep`, never past the deadline
            # nor past the moment the blocking lock would expire; a release in the section
            # ends the wait early.
            pause = min(pause * 2, self.sleep)
            self._wait(min(left, max(0.001, int(value) / 1000), pause * random.uniform(0.5, 1)))

    def _wait(self, seconds: float) -> None:
        # BLPOP on the section's wake-up list instead of sleeping: the releaser's script
        # pushes to it. Capped well below the clients' socket timeout.
        key = self._keys()[3]
        try:
            with self._binding.where.errors(key, script_errors=_WAIT_ERRORS):
                self._binding.client.blpop([key], timeout=max(0.001, min(seconds, 0.1)))
        except (_NoBlockingPop, CorruptData):
            # Denied by an ACL, or the list has another type (the next attempt's script
            # drops it): a plain sleep.
            mod_time.sleep(seconds)

    def release(self) -> None:
        """Release once. Raises :class:`~pyramid_transient.exceptions.LockNotOwned` if this
        thread does not hold the lock (it expired, or it was never taken): nothing is freed."""
        result = self._binding.run("release", self._keys(), [self._node, current_owner()])
        count = self.held
        if count:
            self._local.count = count - 1
            if count == 1:
                self._local.token = None
        if result == -1:
            self._local.count = 0
            self._local.token = None
            raise LockNotOwned(
                f"cannot release the store lock on {self.path!r}: this owner does not hold "
                "it (never acquired, already released, or expired)",
                lock_name=self.path,
            )

    def extend(self, additional_time: float | None = None, *, replace_ttl: bool = False) -> None:
        """Push the expiry back: to ``timeout`` from now by default; with
        ``additional_time``, by that many seconds added to the time left (as redis-py's
        ``Lock.extend``), or to that many seconds from now with ``replace_ttl=True``.
        Raises :class:`~pyramid_transient.exceptions.LockNotOwned` if the lock was lost."""
        span = self._timeout_ms if additional_time is None else ms(additional_time, "extend time")
        add = "0" if replace_ttl or additional_time is None else "1"
        if (
            self._binding.run("extend", self._keys(), [self._node, current_owner(), span, add])
            != 1
        ):
            raise LockNotOwned(
                f"cannot extend the store lock on {self.path!r}: it is no longer held by "
                "this owner (it expired or was never taken)",
                lock_name=self.path,
            )

    def _state(self) -> tuple[int, int, int]:
        busy, mine, token = self._binding.run("state", self._keys(), [self._node, current_owner()])
        return int(busy), int(mine), int(token)

    def owned(self) -> bool:
        """True while this thread holds the lock: False once it expired (the lost-lock
        check a long-running holder makes before it writes elsewhere)."""
        return self._state()[1] > 0

    def locked(self) -> bool:
        """True if anyone holds this path, an ancestor or a descendant."""
        return self._state()[0] == 1

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
