"""Exceptions raised by pyramid_transient.

Every error we raise derives from :class:`TransientError`. Where callers expect a
built-in type as well, the exception carries both identities (:class:`ObjectNotFound` is a
:class:`KeyError`, :class:`LockNotOwned` a :class:`ValueError`), as redis-py does for
its ``LockError``. Names read clearly beside ``pyramid.exceptions`` and
``redis.exceptions``: the old ``NotFound`` and ``LockError`` are deprecated aliases of
:class:`ObjectNotFound` and :class:`TreeLockError`.
"""

from __future__ import annotations

from typing import cast

from pyramid.exceptions import ConfigurationError as PyramidConfigurationError


class TransientError(Exception):
    """Base class of every error raised by pyramid_transient."""


class ConfigurationError(TransientError, PyramidConfigurationError):  # type: ignore[misc]
    """A ``transient.*`` setting is missing, unknown or has a bad value."""

    def __init__(self, message: str, *, key: str | None = None, value: object = None) -> None:
        super().__init__(message)
        #: The full setting name, e.g. ``"transient.db.cache"``, when one is at fault.
        self.key = key
        #: The raw value that was refused.
        self.value = value

    def __str__(self) -> str:  # Pyramid's ConfigurationError decorates str(); keep ours plain
        return str(self.args[0]) if self.args else ""


class UnknownDatabase(TransientError, LookupError):
    """A named database was asked for that is neither mapped nor known."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        #: The name that was asked for.
        self.name = name


class InvalidArgument(TransientError, ValueError, TypeError):
    """An argument of the wrong type or value (also a ``ValueError`` and a ``TypeError``,
    so code that catches either keeps working)."""


class UnsupportedValue(TransientError, TypeError):
    """A value the codec cannot store (its type, its depth or its size), refused before
    anything is written."""


class UsageError(TransientError, RuntimeError):
    """An object used outside the state where it works (an atomic block that has ended)."""


class UnknownRegion(TransientError, LookupError):
    """A cache region was asked for that ``transient.cache.regions`` does not name."""

    def __init__(self, message: str, *, name: str) -> None:
        super().__init__(message)
        #: The region name that was asked for.
        self.name = name


class CodecError(TransientError, ValueError):
    """A stored payload could not be decoded (corrupt, truncated or foreign)."""


class TreeLockError(TransientError):
    """Base class of the store's tree-lock errors (``LockError`` until 0.1: renamed so that
    it reads clearly beside ``redis.exceptions.LockError``)."""

    def __init__(self, message: str, *, lock_name: str | None = None) -> None:
        super().__init__(message)
        #: The path or key of the lock concerned.
        self.lock_name = lock_name


class LockTimeout(TreeLockError, TimeoutError):
    """A lock could not be acquired within its ``blocking_timeout``."""


class LockNotOwned(TreeLockError, ValueError):
    """A lock was released or extended by an owner that does not hold it."""


class ObjectNotFound(TransientError, KeyError):
    """No stored object matches the lookup (``NotFound`` until 0.1: renamed so that it
    reads clearly beside ``pyramid.exceptions.NotFound``, Pyramid's 404)."""

    def __str__(self) -> str:  # KeyError quotes its argument; a message reads better plain
        return str(self.args[0]) if self.args else ""


class MultipleFound(TransientError, LookupError):
    """More than one stored object matches a lookup that expects exactly one."""


class ConflictError(TransientError):
    """An optimistic write found that someone else changed the data since it was read."""


class SessionTooLarge(TransientError, ValueError):
    """A session payload exceeds ``transient.sessions.max_bytes``."""


class ReplicationTimeout(TransientError, TimeoutError):
    """A write was applied on the master but too few replicas acknowledged it in time."""

    def __init__(self, message: str, *, wanted: int, acknowledged: int) -> None:
        super().__init__(message)
        #: Replicas the write waited for (``transient.safe.wait_replicas``).
        self.wanted = wanted
        #: Replicas that acknowledged it before the timeout.
        self.acknowledged = acknowledged


class Unavailable(TransientError, ConnectionError):
    """Redis could not be reached or cannot serve now (a timeout, a dead server, a failover
    in progress, a cluster slot without a master, no free pooled connection).

    Raised by every capability for the same situations, with redis-py's error as
    ``__cause__``. ``config.include("pyramid_transient")`` registers a 503 view for it.
    """

    def __init__(self, message: str, *, database: str | None = None) -> None:
        super().__init__(message)
        #: The database name the call used (``"sessions"``, ``"store"``, ...).
        self.database = database


class SessionUnavailable(Unavailable):
    """The session store could not be reached while loading or saving a session."""


class CorruptData(TransientError, ValueError):
    """A stored value or structure has the wrong type or cannot be parsed.

    Reads treat a corrupt value as missing; this is raised where the capability cannot
    repair the key itself, and names it and the repair.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        database: str | None = None,
        repair: str | None = None,
    ) -> None:
        if key and repair:
            message = f"{message}; repair: {repair}"
        super().__init__(message)
        #: The Redis key at fault, when known.
        self.key = key
        #: The database name of the key.
        self.database = database
        #: What repairs it (a command or a call), when there is one.
        self.repair = repair


class UnknownMessageKind(TransientError, ValueError):
    """A flash message kind that ``transient.messages.kinds`` does not list."""


class FullScanRefused(TransientError, ValueError):
    """A lookup of a strict model (``__strict__ = True``) would need to scan every object."""


#: Names renamed in 0.1, still importable for one release with a DeprecationWarning.
DEPRECATED_NAMES = {"NotFound": "ObjectNotFound", "LockError": "TreeLockError"}


def __getattr__(name: str) -> type[TransientError]:
    new = DEPRECATED_NAMES.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn(
        f"pyramid_transient.exceptions.{name} is deprecated: use {new}",
        DeprecationWarning,
        stacklevel=2,
    )
    return cast("type[TransientError]", globals()[new])
