"""pyramid_transient.toolbar: the command hook and what the panel reads from it.

The panel itself is exercised through the real toolbar and webtest in
tests/test_adopting.py."""

from __future__ import annotations

import subprocess
import sys

from pyramid_transient.toolbar import Command, capability_of, parse_packed, summarize


def test_packed_commands_are_read_back_argument_by_argument() -> None:
    from redis.connection import Connection

    conn = Connection()
    packed = conn.pack_commands([("SET", "a\r\nb", b"\x00\r\n"), ("GET", "k")])
    assert parse_packed(packed) == [[b"SET", b"a\r\nb", b"\x00\r\n"], [b"GET", b"k"]]


def test_the_capability_is_read_from_our_key_layout() -> None:
    assert capability_of("app:session:abc", "app") == "sessions"
    assert capability_of("app:token:{tokens}:r:pages:1", "app") == "cache_key"
    assert capability_of("app:cache:pages:v:k", "app") == "cache region"
    assert capability_of("token:{tokens}:t:x", "") == "cache_key"
    assert capability_of("cache:thing", "cache") == "-"  # the prefix is not a capability
    assert capability_of("other", "app") == "-"


def test_the_summary_counts_round_trips_hits_tokens_and_invalidations() -> None:
    def command(trip: int, *args: str, reply: object = None) -> Command:
        return Command(14, [a.encode() for a in args], 0.0, trip, 0.001, reply)

    summary = summarize(
        [
            command(1, "SET", "p:token:{tokens}:r:t:1", "x", "NX", "GET", reply=b"tok"),
            command(2, "GET", "p:cache:pages:v:k", reply=None),
            command(3, "GET", "p:session:s1", reply=b"{}"),
            command(4, "MULTI"),
            command(4, "SET", "p:session:s1", "{...}"),
            command(4, "EXEC"),
            command(5, "DEL", "p:token:{tokens}:r:t:1", "p:token:{tokens}:t:t"),
        ],
        "p",
    )
    assert summary["round_trips"] == {"cache_key": 2, "cache region": 1, "sessions": 1, "-": 1}
    assert summary["total_round_trips"] == 5
    assert summary["cache"] == {"hits": [], "misses": ["p:cache:pages:v:k"]}
    assert summary["tokens"]["existing"] == ["p:token:{tokens}:r:t:1"]
    assert summary["session"] == {"read": 2, "written": 5}
    assert summary["invalidated"] == ["p:token:{tokens}:r:t:1", "p:token:{tokens}:t:t"]


def test_an_app_without_the_toolbar_keeps_redis_py_untouched() -> None:
    code = (
        "from pyramid.config import Configurator\n"
        "from redis.connection import AbstractConnection as C\n"
        "config = Configurator(settings={'transient.url': 'memory://x',"
        " 'redis.sessions.secret': 's' * 32})\n"
        "config.include('pyramid_transient')\n"
        "config.make_wsgi_app()\n"
        "assert C.send_packed_command.__module__ == 'redis.connection', C.send_packed_command\n"
        "assert C.read_response.__module__ == 'redis.connection'\n"
    )
    subprocess.run([sys.executable, "-W", "ignore", "-c", code], check=True, timeout=120)
