"""pyramid_transient: what a Pyramid app keeps in Redis rather than in its SQL database.

Include it with ``config.include("pyramid_transient")``; see the documentation for the
settings and for each capability (sessions, flash messages, cache keys, store, models,
safes). Every capability also works without Pyramid, given a ``redis.Redis``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .codec import decode, encode
from .connection import RedisManager, get_manager, get_redis
from .exceptions import (
    CodecError,
    ConfigurationError,
    ConflictError,
    CorruptData,
    InvalidArgument,
    LockNotOwned,
    LockTimeout,
    MultipleFound,
    ObjectNotFound,
    SessionTooLarge,
    SessionUnavailable,
    TransientError,
    TreeLockError,
    Unavailable,
    UnknownDatabase,
    UnknownRegion,
    UnsupportedValue,
    UsageError,
)
from .settings import TransientSettings, parse_settings

__all__ = [
    "CacheKeyGenerator",
    "CodecError",
    "ConfigurationError",
    "ConflictError",
    "CorruptData",
    "InvalidArgument",
    "LockNotOwned",
    "LockTimeout",
    "MultipleFound",
    "ObjectNotFound",
    "Proxy",
    "RedisManager",
    "RedisModel",
    "SessionTooLarge",
    "SessionUnavailable",
    "TransientError",
    "TransientSettings",
    "TreeLockError",
    "Unavailable",
    "UnknownDatabase",
    "UnknownRegion",
    "UnsupportedValue",
    "UsageError",
    "decode",
    "encode",
    "flash",
    "get_manager",
    "get_redis",
    "get_region",
    "get_safe",
    "get_store",
    "includeme",
    "parse_settings",
    "peek_messages",
    "pop_messages",
    "register",
]

# The capabilities' main names, importable from the package itself without importing
# pydantic, dogpile.cache or SQLAlchemy when a module needs none of them.
_LAZY = {
    "CacheKeyGenerator": "pyramid_transient.cache",
    "get_region": "pyramid_transient.cache",
    "register": "pyramid_transient.invalidation",
    "flash": "pyramid_transient.messages",
    "pop_messages": "pyramid_transient.messages",
    "peek_messages": "pyramid_transient.messages",
    "RedisModel": "pyramid_transient.models",
    "get_safe": "pyramid_transient.safe",
    "Proxy": "pyramid_transient.store",
    "get_store": "pyramid_transient.store",
}

if TYPE_CHECKING:
    from .cache import CacheKeyGenerator, get_region
    from .invalidation import register
    from .messages import flash, peek_messages, pop_messages
    from .models import RedisModel
    from .safe import get_safe
    from .store import Proxy, get_store


def __getattr__(name: str) -> Any:
    from .exceptions import DEPRECATED_NAMES

    if name in DEPRECATED_NAMES:  # the old name warns, as the exceptions module's does
        import warnings

        from . import exceptions

        new = DEPRECATED_NAMES[name]
        warnings.warn(
            f"pyramid_transient.{name} is deprecated: use {new}", DeprecationWarning, stacklevel=2
        )
        return getattr(exceptions, new)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pyramid_transient' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
    config.include("pyramid_transient.views")  # the default 503 for Unavailable
    for capability in CAPABILITIES:
        config.include(capability)
    config.include("pyramid_transient.jinja2")  # template globals, when pyramid_jinja2 is used
