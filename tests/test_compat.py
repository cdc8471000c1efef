"""The paths taken on the older redis-py releases pyproject allows, forced here so that the
pinned redis-py of CI runs them too (``tox -e oldest`` runs the whole suite on the declared
minimums)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import redis

from pyramid_transient import binding
from pyramid_transient.binding import _CHECKOUT, send_on_one_connection
from pyramid_transient.connection import RedisManager
from pyramid_transient.testing import test_settings

_MODES = [
    pytest.param(True, id="read_response-timeout"),
    pytest.param(False, id="socket-timeout"),  # redis-py before 8.0
]


@pytest.fixture(params=_MODES)
def short_timeout_client(
    request: pytest.FixtureRequest, transient_redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[redis.Redis]:
    if request.param and not binding._READ_TAKES_TIMEOUT:
        pytest.skip(f"read_response(timeout=) is redis-py 8.0 and newer, not {redis.__version__}")
    monkeypatch.setattr(binding, "_READ_TAKES_TIMEOUT", request.param)
    settings = test_settings(transient_redis_url, **{"transient.socket_timeout": "0.2"})
    with contextlib.closing(RedisManager.from_settings(settings)) as manager:
        yield manager.get("default")


def test_a_reply_may_outlast_the_socket_timeout_and_the_timeout_comes_back(
    short_timeout_client: redis.Redis,
) -> None:
    # BLPOP answers nil after 0.5 s, past the 0.2 s socket timeout (as WAIT does)
    (reply,) = send_on_one_connection(
        short_timeout_client, "k", [("BLPOP", "compat:absent", "0.5")], read_timeout=3.0
    )
    assert reply is None
    pool = short_timeout_client.connection_pool
    conn = pool.get_connection(*_CHECKOUT)  # the same connection, back in the pool
    try:
        assert conn._sock is not None
        assert conn._sock.gettimeout() == 0.2
    finally:
        pool.release(conn)


def test_a_reply_later_than_the_read_timeout_is_a_timeout(
    short_timeout_client: redis.Redis,
) -> None:
    with pytest.raises(redis.TimeoutError):
        send_on_one_connection(
            short_timeout_client, "k", [("BLPOP", "compat:absent", "2")], read_timeout=0.05
        )
    assert short_timeout_client.ping()  # the connection was dropped, a new one works
