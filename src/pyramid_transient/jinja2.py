"""Jinja2 globals for flash messages and cache keys, and a ``{% cache %}`` fragment tag.

``config.include("pyramid_transient")`` (or ``pyramid_transient.jinja2`` alone) registers
them on every pyramid_jinja2 environment of the app, whichever is included first::

    {{ render_messages(pop_messages(request)) }}
    {% cache cache_key("sidebar", row_identity("users", user_id)) %} ... {% endcache %}

Globals (:data:`GLOBALS`): ``pop_messages``, ``peek_messages``, ``render_messages``,
``cache_key(*fragments)`` (the current request's ``request.cache_key``), ``row_identity``
and ``table_identity``. The ``{% cache key[, region[, expiration]] %}`` tag
(``CacheExtension``) renders its body once per key into the region (``default``
unless named; a key from ``cache_key`` changes when the data behind it does) and serves
it from there afterwards. Without pyramid_jinja2 this include does nothing.
"""

from __future__ import annotations

from typing import Any

from .invalidation import row_identity, table_identity
from .messages import Markup, peek_messages, pop_messages, render_messages

__all__ = ["GLOBALS", "add_to_environment", "includeme"]  # and CacheExtension, built lazily


def _cache_key(context: Any, *fragments: Any) -> str:
    return str(context["request"].cache_key(*fragments))


def _globals() -> dict[str, Any]:
    from jinja2 import pass_context

    return {
        "pop_messages": pop_messages,
        "peek_messages": peek_messages,
        "render_messages": render_messages,
        "cache_key": pass_context(_cache_key),
        "row_identity": row_identity,
        "table_identity": table_identity,
    }


#: The names registered on each environment (built at first use: Jinja2 is optional).
GLOBALS: tuple[str, ...] = (
    "pop_messages",
    "peek_messages",
    "render_messages",
    "cache_key",
    "row_identity",
    "table_identity",
)


def _make_extension() -> type:
    from jinja2 import nodes
    from jinja2.ext import Extension

    class CacheExtension(Extension):
        """``{% cache key[, region[, expiration]] %}...{% endcache %}``: the body rendered
        once per key into a :func:`~pyramid_transient.cache.get_region` region."""

        tags = {"cache"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            args = [nodes.ContextReference(), parser.parse_expression()]
            while parser.stream.skip_if("comma"):
                args.append(parser.parse_expression())
            body = parser.parse_statements(("name:endcache",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_render", args), [], [], body).set_lineno(
                lineno
            )

        @staticmethod
        def _render(
            context: Any,
            key: Any,
            region: str = "default",
            expiration: float | None = None,
            *,
            caller: Any,
        ) -> Markup:
            from .cache import get_region

            if not isinstance(key, str):
                raise TypeError(f"{{% cache %}} needs a str key, not {key!r}")
            target = get_region(context["request"], region)
            text = target.get_or_create(
                "fragment:" + key, lambda: str(caller()), expiration_time=expiration
            )
            return Markup(text)

    return CacheExtension


_EXTENSION: list[type] = []


def __getattr__(name: str) -> Any:
    if name == "CacheExtension":  # built on first use: Jinja2 is an optional dependency
        if not _EXTENSION:
            _EXTENSION.append(_make_extension())
        return _EXTENSION[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_to_environment(environment: Any) -> None:
    """Register :data:`GLOBALS` and the ``{% cache %}`` tag on a ``jinja2.Environment``."""
    for name, value in _globals().items():
        environment.globals.setdefault(name, value)
    extension = __getattr__("CacheExtension")
    if extension not in [type(e) for e in environment.extensions.values()]:
        environment.add_extension(extension)


def includeme(config: Any) -> None:
    """Register the globals and the tag on the app's Jinja2 environments, once
    pyramid_jinja2 has built them (a late action: include either first)."""
    from pyramid.interfaces import IRendererFactory

    def register() -> None:
        try:
            from pyramid_jinja2 import IJinja2Environment
        except ImportError:
            return
        registry = config.registry
        for name, _ in registry.getUtilitiesFor(IRendererFactory):
            environment = registry.queryUtility(IJinja2Environment, name=name)
            if environment is not None:
                add_to_environment(environment)

    # pyramid_jinja2 builds its environments at order 0 and adds extensions at order 1.
    config.action(("pyramid_transient.jinja2",), register, order=10)
