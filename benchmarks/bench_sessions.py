"""Requests per second of a Pyramid view that uses the session, side by side.

* ``SignedCookieSessionFactory``: Pyramid's own cookie sessions (no server; the baseline);
* ``pyramid_session_redis``: the same Redis, its defaults (pickle payloads);
* ``pyramid_transient``: ours (codec + HMAC payloads, GETEX load, one write).

Each case is a full WSGI request through the Pyramid router (no HTTP server), carrying the
cookie the previous response set. Run: ``python benchmarks/bench_sessions.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from _runner import compare, redis_url
from pyramid.config import Configurator
from pyramid.response import Response
from pyramid.session import SignedCookieSessionFactory
from webob import Request

SECRET = "benchmark-secret-of-a-reasonable-length-0123456789"


def read_write(request: Any) -> Response:
    session = request.session
    session["counter"] = session.get("counter", 0) + 1
    session.setdefault("user", {"id": 42, "name": "Ada", "roles": ["admin", "editor"]})
    return Response("ok")


def read_only(request: Any) -> Response:
    session = request.session
    return Response(str(session.get("counter", 0)))


def make_app(setup: Callable[[Configurator], None], settings: dict[str, Any]) -> Any:
    with Configurator(settings=settings) as config:
        setup(config)
        config.add_route("rw", "/rw")
        config.add_view(read_write, route_name="rw")
        config.add_route("ro", "/ro")
        config.add_view(read_only, route_name="ro")
        return config.make_wsgi_app()


class Client:
    """A browser of one: sends the session cookie back, keeps the newest one."""

    def __init__(self, app: Any, path: str, *, first_visit: bool = False) -> None:
        self.app = app
        self.path = path
        self.cookie = ""
        self.first_visit = first_visit
        response = Request.blank("/rw").get_response(app)
        self._keep(response)

    def _keep(self, response: Any) -> None:
        if self.first_visit:  # every request is a new visitor's: no cookie sent back
            return
        for header, value in response.headerlist:
            if header == "Set-Cookie":
                self.cookie = value.split(";", 1)[0]

    def __call__(self) -> None:
        request = Request.blank(self.path, headers={"Cookie": self.cookie})
        response = request.get_response(self.app)
        if response.status_int != 200:
            raise RuntimeError(f"{self.path} answered {response.status}")
        self._keep(response)


def main() -> None:
    with redis_url() as url:
        cookie_app = make_app(
            lambda config: config.set_session_factory(SignedCookieSessionFactory(SECRET)), {}
        )
        upstream_app = make_app(
            lambda config: config.include("pyramid_session_redis"),
            {"redis.sessions.secret": SECRET, "redis.sessions.redis_url": f"{url}/2"},
        )
        ours_app = make_app(
            lambda config: config.include("pyramid_transient.sessions"),
            {
                "transient.url": url,
                "transient.db.sessions": "1",
                "transient.key_prefix": "bench",
                "redis.sessions.secret": SECRET,
            },
        )
        apps = {
            "SignedCookieSessionFactory (no server)": cookie_app,
            "pyramid_session_redis (pickle)": upstream_app,
            "pyramid_transient": ours_app,
        }
        print(f"Python {sys.version.split()[0]}; each op is one request through the router.\n")
        for path, title, first_visit in (
            ("/rw", "A view that reads and writes the session", False),
            ("/ro", "A view that only reads the session", False),
            ("/rw", "A new visitor's first request (the session is created)", True),
        ):
            clients = {
                name: Client(app, path, first_visit=first_visit) for name, app in apps.items()
            }
            print(compare(title, clients, seconds=2.0))


if __name__ == "__main__":
    main()
