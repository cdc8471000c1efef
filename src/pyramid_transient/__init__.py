"""pyramid_transient: what a Pyramid app keeps in Redis rather than in its SQL database.

Include it with ``config.include("pyramid_transient")``; see the documentation for the
settings and for each capability (sessions, flash messages, cache keys, store, models,
safes). Every capability also works without Pyramid, given a ``redis.Redis``.
"""

from __future__ import annotations

from typing import Any

from .codec import decode, encode
from .connection import RedisManager, get_manager, get_redis
from .exceptions import (
    CodecError,
    ConfigurationError,
    ConflictError,
    LockError,
    LockNotOwned,
    LockTimeout,
    MultipleFound,
    NotFound,
    SessionTooLarge,
    TransientError,
    UnknownDatabase,
)
from .settings import TransientSettings, parse_settings

__all__ = [
    "CodecError",
    "ConfigurationError",
    "ConflictError",
    "LockError",
    "LockNotOwned",
    "LockTimeout",
    "MultipleFound",
    "NotFound",
    "RedisManager",
    "SessionTooLarge",
    "TransientError",
    "TransientSettings",
    "UnknownDatabase",
    "decode",
    "encode",
    "get_manager",
    "get_redis",
    "includeme",
    "parse_settings",
]

#: The capabilities ``config.include("pyramid_transient")`` includes, each its own include.
CAPABILITIES = (
    "pyramid_transient.sessions",
    "pyramid_transient.messages",
    "pyramid_transient.cache",
    "pyramid_transient.store",
    "pyramid_transient.models",
    "pyramid_transient.safe",
)


def includeme(config: Any) -> None:
    """Parse ``transient.*`` settings, register the manager and every capability."""
    from .connection import include_manager

    include_manager(config)
    for capability in CAPABILITIES:
        config.include(capability)
