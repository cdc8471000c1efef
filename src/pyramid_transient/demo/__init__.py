"""The demo app that ``development.ini`` serves: one page per capability.

Run it with ``pserve development.ini`` (see the README). It uses the embedded
``memory://`` backend by default, so it needs no Redis server.
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator

#: (module, route name, title) of each capability's demo page, in the order shown.
PAGES = (
    (".views_sessions", "sessions", "Sessions and flash messages"),
    (".views_cache", "cache", "Cache keys that invalidate themselves"),
    (".views_store", "store", "Nested-dict store"),
    (".views_models", "models", "Models in Redis"),
    (".views_safe", "safe", "Module safe"),
)


def main(global_config: Any, **settings: Any) -> Any:
    """Paste app factory."""
    settings.setdefault("redis.sessions.secret", "demo-secret-change-me")
    with Configurator(settings=settings) as config:
        config.include("pyramid_jinja2")
        config.include("pyramid_tm")
        config.include("pyramid_transient")
        config.add_jinja2_search_path("pyramid_transient.demo:templates", name=".jinja2")
        config.add_route("home", "/")
        config.add_view(home, route_name="home", renderer="home.jinja2")
        for module, _name, _title in PAGES:
            config.include(module, route_prefix=None)
        return config.make_wsgi_app()


def home(request: Any) -> dict[str, Any]:
    pages = []
    for _module, name, title in PAGES:
        try:
            url = request.route_url(name)
        except KeyError:
            continue
        pages.append({"url": url, "title": title})
    return {"pages": pages, "mode": request.registry.settings.get("transient.url", "memory://")}
