"""A GET through ``get_redis(request, name)`` against a bare ``redis.Redis.get``.

Shows what the manager costs on the hot path: the lookup of the named client on a request
and our client subclass, against redis-py used directly with its defaults.
"""

from __future__ import annotations

import redis
from _runner import compare, redis_url
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.scripting import prepare

from pyramid_transient import get_redis


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


if __name__ == "__main__":
    main()
