"""Requests per second of a Pyramid view that uses the session, side by side.

* ``SignedCookieSessionFactory``: Pyramid's own cookie sessions (no server; the baseline);
* ``pyramid_session_redis``: the same Redis, its defaults (pickle payloads), and with JSON
  payloads (``redis.sessions.serialize`` / ``deserialize``);
* ``pyramid_transient``: ours (codec + HMAC payloads, GETEX load, one write);
* one raw round trip (a ``GET`` through redis-py, no Pyramid): the unit of the overhead
  bound of issue 14 (ours at most 1.2 x our round trips x this, over signed cookies).

Each case is a full WSGI request through the Pyramid router (no HTTP server), carrying the
cookie the previous response set. The cases are interleaved in short slices over many
rounds; each table gives the median and the spread (interquartile range, as a percentage
of the median) of every case. Run: ``python benchmarks/bench_sessions.py [seconds]``.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from typing import Any

import redis
from _runner import measure, redis_url, round_trips_of
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


def _json_dumps(data: Any) -> bytes:
    return json.dumps(data).encode()


def table(
    title: str, cases: dict[str, Callable[[], object]], *, seconds: float, rounds: int = 25
) -> str:
    """Interleaved rounds; median ops/s, spread and ratios (to the first case and to
    pyramid_session_redis with pickle)."""
    rates: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            rates[name].append(measure(case, seconds=seconds / rounds, repeat=1))
    medians = {name: statistics.median(r) for name, r in rates.items()}
    base = next(iter(medians.values()))
    peer = medians.get("pyramid_session_redis (pickle)", base)
    lines = [
        f"### {title}",
        "",
        "| case | ops/s (median) | spread (IQR) | vs first | vs pyramid_session_redis "
        "(pickle) | round trips/op |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, median in medians.items():
        q1, _, q3 = statistics.quantiles(rates[name], n=4)
        lines.append(
            f"| {name} | {median:,.0f} | {(q3 - q1) / median:.0%} | {median / base:.2f} | "
            f"{median / peer:.2f} | {round_trips_of(cases[name]):g} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    with redis_url() as url:
        cookie_app = make_app(
            lambda config: config.set_session_factory(SignedCookieSessionFactory(SECRET)), {}
        )
        upstream_app = make_app(
            lambda config: config.include("pyramid_session_redis"),
            {"redis.sessions.secret": SECRET, "redis.sessions.redis_url": f"{url}/2"},
        )
        upstream_json_app = make_app(
            lambda config: config.include("pyramid_session_redis"),
            {
                "redis.sessions.secret": SECRET,
                "redis.sessions.redis_url": f"{url}/3",
                "redis.sessions.serialize": _json_dumps,
                "redis.sessions.deserialize": json.loads,
            },
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
            "pyramid_session_redis (JSON)": upstream_json_app,
            "pyramid_transient": ours_app,
        }
        raw = redis.Redis.from_url(f"{url}/4")
        raw.set("bench:raw", b"x" * 200)
        print(f"Python {sys.version.split()[0]}; each op is one request through the router.\n")
        for path, title, first_visit in (
            ("/rw", "A view that reads and writes the session", False),
            ("/ro", "A view that only reads the session", False),
            ("/rw", "A new visitor's first request (the session is created)", True),
        ):
            clients: dict[str, Callable[[], object]] = {
                name: Client(app, path, first_visit=first_visit) for name, app in apps.items()
            }
            clients["one raw round trip (GET, no Pyramid)"] = lambda: raw.get("bench:raw")
            print(table(title, clients, seconds=seconds), flush=True)
        raw.close()


if __name__ == "__main__":
    main()
