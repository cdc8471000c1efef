"""Issue 17, item 5: session saves that are acknowledged only once they are stored.

``transient.sessions.save_before_response`` saves before the response leaves and turns a
failed save into a 503; ``transient.sessions.wait_replicas`` makes each save wait for
replicas (``WAIT``). Shown on the suite's real servers: the Sentinel group (a master and
one replica) and the single server (no replica at all).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis
import webtest
from pyramid.config import Configurator

from pyramid_transient.connection import RedisManager
from pyramid_transient.exceptions import ConfigurationError, SessionUnavailable
from pyramid_transient.testing import SentinelGroup

SECRET = {"redis.sessions.secret": "durability-secret"}


def set_value(request: Any) -> dict[str, Any]:
    request.session["value"] = request.params.get("v", "x")
    return {}


def get_value(request: Any) -> dict[str, Any]:
    return {"value": request.session.get("value")}


def build(settings: dict[str, Any], *, whole: bool = True) -> webtest.TestApp:
    with Configurator(settings={**settings, **SECRET}) as config:
        # The whole package registers the 503 view for Unavailable.
        config.include("pyramid_transient" if whole else "pyramid_transient.sessions")
        config.add_route("set", "/set")
        config.add_view(set_value, route_name="set", renderer="json")
        config.add_route("get", "/get")
        config.add_view(get_value, route_name="get", renderer="json")
        return webtest.TestApp(config.make_wsgi_app())


def session_keys(manager: RedisManager) -> list[bytes]:
    pattern = manager.keyspace("session", "sessions").pattern()
    return sorted(manager.get("sessions").scan_iter(match=pattern))


# ------------------------------------------------------------------ a single server


def test_failed_save_answers_503_with_save_before_response(
    transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    # No replica: every WAIT for one times out, so every save fails, deterministically.
    app = build(
        {
            **transient_settings,
            "transient.sessions.save_before_response": "true",
            "transient.sessions.wait_replicas": "1",
            "transient.sessions.wait_timeout": "0.05",
        }
    )
    response = app.get("/set", status=503)
    assert response.headers["Retry-After"]
    assert "Set-Cookie" not in response.headers  # no cookie for a session that failed


def test_failed_save_without_the_503_view_raises_session_unavailable(
    transient_settings: dict[str, Any],
) -> None:
    app = build(
        {
            **transient_settings,
            "transient.sessions.save_before_response": "true",
            "transient.sessions.wait_replicas": "1",
            "transient.sessions.wait_timeout": "0.05",
        },
        whole=False,
    )
    with pytest.raises(SessionUnavailable, match=r"transient\.sessions\.wait_replicas = 1"):
        app.get("/set")


def test_failed_save_is_only_logged_by_default(
    transient_settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # The documented default: the response (and its cookie) left before the save.
    app = build(
        {
            **transient_settings,
            "transient.sessions.wait_replicas": "1",
            "transient.sessions.wait_timeout": "0.05",
        }
    )
    with caplog.at_level(logging.ERROR, logger="pyramid_transient.sessions"):
        response = app.get("/set", status=200)
    assert "Set-Cookie" in response.headers
    assert "could not be saved" in caplog.text


def test_save_before_response_saves_what_the_request_changed(
    transient_settings: dict[str, Any], transient_manager: RedisManager, round_trips: Any
) -> None:
    app = build({**transient_settings, "transient.sessions.save_before_response": "true"})
    transient_manager.get("sessions").ping()
    with round_trips() as rt:
        app.get("/set", {"v": "stored before the response"})
    assert rt.commands == ["SET"]
    assert app.get("/get").json == {"value": "stored before the response"}
    with round_trips() as rt:
        app.get("/get")
    assert rt.commands == ["GETEX"]  # reads still write nothing


def test_wait_replicas_on_memory_is_a_configuration_error(
    transient_memory: RedisManager,
) -> None:
    with pytest.raises(ConfigurationError, match=r"transient\.sessions\.wait_replicas"):
        build(
            {
                "transient.url": transient_memory.settings.url,
                "transient.sessions.wait_replicas": "1",
            }
        )


# ------------------------------------------------------------------ Sentinel: a replica


@pytest.mark.sentinel
def test_save_waiting_for_the_replica_is_on_the_replica_when_the_response_leaves(
    transient_sentinel: SentinelGroup,
    transient_sentinel_settings: dict[str, Any],
    transient_sentinel_manager: RedisManager,
) -> None:
    app = build(
        {
            **transient_sentinel_settings,
            "transient.sessions.save_before_response": "true",
            "transient.sessions.wait_replicas": "1",
            "transient.sessions.wait_timeout": "2",
        }
    )
    app.get("/set", {"v": "replicated"})
    (key,) = session_keys(transient_sentinel_manager)
    db = transient_sentinel_manager.settings.databases["sessions"]
    pool: Any = transient_sentinel_manager.get("sessions").connection_pool
    master_port = int(pool.get_master_address()[1])
    assert transient_sentinel.master is not None and transient_sentinel.replica is not None
    (replica_port,) = {transient_sentinel.master.port, transient_sentinel.replica.port} - {
        master_port
    }
    replica = redis.Redis(host="127.0.0.1", port=replica_port, db=db, socket_timeout=1)
    try:
        # Read at once: WAIT acknowledged it, so the replica has it already.
        assert b"replicated" in (replica.get(key) or b"")
        app.get("/set", {"v": "changed, replicated"})
        assert b"changed, replicated" in (replica.get(key) or b"")
    finally:
        replica.close()
    assert app.get("/get").json == {"value": "changed, replicated"}


@pytest.mark.sentinel
def test_save_waiting_for_more_replicas_than_exist_answers_503(
    transient_sentinel_settings: dict[str, Any], transient_sentinel_manager: RedisManager
) -> None:
    app = build(
        {
            **transient_sentinel_settings,
            "transient.sessions.save_before_response": "true",
            "transient.sessions.wait_replicas": "2",  # the group has one
            "transient.sessions.wait_timeout": "0.1",
        }
    )
    app.get("/set", status=503)


def test_save_before_response_writes_nothing_for_a_retried_attempt(
    transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    from pyramid_retry import RetryableException

    def flaky(request: Any) -> dict[str, Any]:
        request.session["attempt"] = request.environ["retry.attempt"]
        request.session.flash("once")
        if request.environ["retry.attempt"] == 0:
            raise RetryableException("try again")
        return {}

    settings = {
        **transient_settings,
        **SECRET,
        "retry.attempts": "2",
        "transient.sessions.save_before_response": "true",
    }
    with Configurator(settings=settings) as config:
        config.include("pyramid_retry")
        config.include("pyramid_tm")
        config.include("pyramid_transient")
        config.add_route("flaky", "/flaky")
        config.add_view(flaky, route_name="flaky", renderer="json")
        app = webtest.TestApp(config.make_wsgi_app())
    app.get("/flaky")
    (key,) = session_keys(transient_manager)
    stored = transient_manager.get("sessions").get(key) or b""
    assert b'"attempt":1' in stored
    assert stored.count(b"once") == 1
