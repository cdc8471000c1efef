"""The demo app that ``development.ini`` serves: one page per capability.

Run it with ``pserve development.ini`` (see the README). ``development.ini`` uses the
embedded ``memory://`` backend, so it needs no Redis server. The app includes
pyramid_jinja2, pyramid_retry (the sessions page shows a retried conflict), pyramid_tm and
pyramid_transient itself, checks a CSRF token on every POST (Pyramid's default CSRF
policy, its token kept in our session), and answers errors with pages of its own
(:mod:`.errors`).
"""

from __future__ import annotations

import logging
from typing import Any

from pyramid.config import Configurator

from ..connection import get_manager, redact_url
from ..exceptions import Unavailable
from . import errors

log = logging.getLogger(__name__)

#: (module, route name, title) of each capability's demo page, in the order shown.
PAGES = (
    (".views_sessions", "sessions", "Sessions and flash messages"),
    (".views_cache", "cache", "Cache keys that invalidate themselves"),
    (".views_store", "store", "Nested-dict store"),
    (".views_models", "models", "Models in Redis"),
    (".views_safe", "safe", "Module safe"),
)

#: What the home page says about the backend; the URL itself (a password, a host) is
#: only logged.
BACKENDS = {
    "memory": "the embedded memory:// backend (no Redis server)",
    "standalone": "a Redis server",
    "sentinel": "Redis behind Sentinel",
    "cluster": "a Redis Cluster",
}


def main(global_config: Any, **settings: Any) -> Any:
    """Paste app factory."""
    settings.setdefault("redis.sessions.secret", "demo-secret-change-me")
    with Configurator(settings=settings) as config:
        config.include("pyramid_jinja2")
        config.include("pyramid_retry")
        config.include("pyramid_tm")
        config.include("pyramid_transient")
        config.set_default_csrf_options(require_csrf=True)
        config.add_jinja2_search_path("pyramid_transient.demo:templates", name=".jinja2")
        config.add_route("home", "/")
        config.add_view(home, route_name="home", request_method="GET", renderer="home.jinja2")
        for module, _name, _title in PAGES:
            config.include(module, route_prefix=None)
        config.include(".errors")
        # Our page for Unavailable, here in main: an includer's registration overrides
        # pyramid_transient's default 503 view (from a sibling include it would conflict).
        config.add_exception_view(errors.unavailable, context=Unavailable)
        app = config.make_wsgi_app()
    manager = get_manager(app.registry)
    log.info("demo backend: %s", _where(manager))
    return app


def _where(manager: Any) -> str:
    s = manager.settings
    if manager.mode == "cluster":
        return "cluster " + " ".join(f"{h}:{p}" for h, p in s.cluster_nodes)
    if manager.mode == "sentinel":
        return f"sentinel service {s.sentinel_service}"
    return redact_url(s.url)


def home(request: Any) -> dict[str, Any]:
    pages = [
        {"url": request.route_url(name), "title": title, "name": name}
        for _module, name, title in PAGES
    ]
    mode = get_manager(request.registry).mode
    return {"pages": pages, "backend": BACKENDS.get(mode, mode)}
