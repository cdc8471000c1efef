"""The app shell's setup: ``[pshell] setup = pyramid_transient.pshell.setup``.

``pshell development.ini`` then starts with, besides Pyramid's own ``app``, ``registry``,
``request`` and ``root``:

``redis``
    the app's Redis clients by database name: ``redis["sessions"]``, ``redis.default``;
``store``
    the root of the app's store: ``store.get("users.42").val()``;
``safe``
    ``safe("myapp.views")``, the safe of a module, on the app's manager;
``models``
    the :class:`~pyramid_transient.models.RedisModel` classes imported so far, by name:
    ``models.Item.objects.filter(kind="a")``;
``cache_key``
    ``cache_key(*fragments)``, the request's cache keys (when the app includes
    ``pyramid_transient.cache``).

Each has a one-line summary in pshell's banner. Nothing connects to Redis until used.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .connection import RedisManager, get_manager

__all__ = ["Clients", "Models", "setup"]


class Clients(Mapping[str, Any]):
    """The app's Redis clients by database name (``redis["cache"]``, ``redis.cache``),
    each made on first use."""

    def __init__(self, manager: RedisManager) -> None:
        self._manager = manager
        dbs = ", ".join(f"{n}={manager.db_number(n)}" for n in manager.names)
        self.__doc__ = f"Redis clients by name, redis['sessions'] ({dbs})"

    def __getitem__(self, name: str) -> Any:
        return self._manager.get(name)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._manager.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._manager.names)

    def __len__(self) -> int:
        return len(self._manager.names)

    def __repr__(self) -> str:
        return f"<Clients {', '.join(self._manager.names)} of {self._manager!r}>"


class Models:
    """The :class:`~pyramid_transient.models.RedisModel` classes imported so far, as
    attributes by class name (``models.Item``)."""

    def __init__(self, classes: Mapping[str, type]) -> None:
        self.__dict__.update(classes)
        names = sorted(classes)
        shown = ", ".join(names[:4]) + (f", ... {len(names) - 4} more" if len(names) > 4 else "")
        self.__doc__ = f"RedisModel classes by name, models.Item ({shown or 'none imported'})"

    def __repr__(self) -> str:
        names = sorted(k for k in self.__dict__ if not k.startswith("_"))
        return f"<Models {', '.join(names)}>"


def _model_classes() -> dict[str, type]:
    from .models import RedisModel

    found: dict[str, type] = {}
    pending = list(RedisModel.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("pyramid_transient.") and "demo" not in cls.__module__:
            continue  # the library's own bases
        found.setdefault(cls.__name__, cls)
    return found


class _SafeFactory:
    def __init__(self, manager: RedisManager) -> None:
        self._manager = manager
        self.__doc__ = "safe('myapp.views'): the per-module atomic dict of that module"

    def __call__(self, name: str, **kwargs: Any) -> Any:
        from .safe import get_safe

        return get_safe(name, self._manager, **kwargs)

    def __repr__(self) -> str:
        return "<safe(name): get_safe(name) on the app's manager>"


def setup(env: dict[str, Any]) -> None:
    """Add ``redis``, ``store``, ``safe``, ``models`` and ``cache_key`` to pshell's ``env``
    (see the module's documentation)."""
    from .store import get_store

    registry = env["registry"]
    manager = get_manager(registry)
    env["redis"] = Clients(manager)
    store = get_store(registry)
    store.__doc__ = "the root of the app's store: store.get('users.42').val()"
    env["store"] = store
    env["safe"] = _SafeFactory(manager)
    env["models"] = Models(_model_classes())
    request = env.get("request")
    cache_key = getattr(request, "cache_key", None) if request is not None else None
    if cache_key is not None:
        cache_key.__doc__ = (
            "cache_key(*fragments): a key that changes when the data behind it does"
        )
        env["cache_key"] = cache_key
