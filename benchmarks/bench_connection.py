"""What the manager costs on the hot path.

* A GET through ``get_redis(request, name)`` against a bare ``redis.Redis.get``: the
  lookup of the named client on a request and our client subclass, against redis-py used
  directly with its defaults.
* A request through the Pyramid router to a view that does not touch Redis: a bare app,
  the app with ``config.include("pyramid_transient")`` (``request.redis``,
  ``request.cache_key``, ``request.store``), and the bare app with one
  ``add_request_method(..., reify=True)`` property, which is how such accessors are
  usually added (Pyramid then builds a new request class for every request).
"""

from __future__ import annotations

import redis
from _runner import compare, redis_url
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response
from pyramid.scripting import prepare
from webob import Request as WebObRequest

from pyramid_transient import get_redis


def _hello(request: object) -> Response:
    return Response("ok")


def _router_app(setup: object, settings: dict[str, str]) -> object:
    config = Configurator(settings=settings)
    if callable(setup):
        setup(config)
    config.add_route("hello", "/")
    config.add_view(_hello, route_name="hello")
    return config.make_wsgi_app()


def _get(app: object) -> None:
    WebObRequest.blank("/").get_response(app)


def main() -> None:
    with redis_url() as url:
        bare = redis.Redis.from_url(url, db=3)
        bare.set("bench:key", b"x" * 100)

        config = Configurator(
            settings={
                "transient.url": url,
                "transient.db.celery": "3",
                "redis.sessions.secret": "s",
            }
        )
        config.include("pyramid_transient")
        app = config.make_wsgi_app()
        env = prepare(request=Request.blank("/"), registry=app.registry)
        request = env["request"]
        try:
            print(
                compare(
                    "GET of a 100-byte value",
                    {
                        "bare redis.Redis.get": lambda: bare.get("bench:key"),
                        "get_redis(request, 'celery').get": lambda: get_redis(
                            request, "celery"
                        ).get("bench:key"),
                        "request.redis (default db)": lambda: request.redis.get("bench:key"),
                    },
                    seconds=3.0,
                )
            )
        finally:
            env["closer"]()

        settings = {"transient.url": url, "redis.sessions.secret": "s"}
        bare_app = _router_app(None, settings)
        ours_app = _router_app(lambda c: c.include("pyramid_transient"), settings)
        reified_app = _router_app(
            lambda c: c.add_request_method(lambda r: None, "accessor", reify=True), settings
        )
        print(
            compare(
                "A request to a view that does not touch Redis",
                {
                    "bare Pyramid app": lambda: _get(bare_app),
                    "with pyramid_transient included": lambda: _get(ours_app),
                    "bare app + one reify=True request property": lambda: _get(reified_app),
                },
                seconds=3.0,
            )
        )


if __name__ == "__main__":
    main()
