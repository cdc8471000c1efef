"""Sessions at their edges: setting values, foreign values in Redis, failed commits,
rotation without a cookie, threads."""

from __future__ import annotations

from typing import Any

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPFound

from pyramid_transient.connection import RedisManager, get_manager
from pyramid_transient.exceptions import ConfigurationError
from pyramid_transient.sessions import (
    parse_session_settings,
    rotate_session,
    session_factory_from_settings,
)

SECRET = {"redis.sessions.secret": "review-secret"}


@pytest.fixture
def settings(
    transient_settings: dict[str, Any], transient_manager: RedisManager
) -> dict[str, Any]:
    return {**transient_settings, **SECRET}


def keys(manager: RedisManager) -> list[bytes]:
    pattern = manager.keyspace("session", "sessions").pattern()
    return sorted(manager.get("sessions").scan_iter(match=pattern))


def build(settings: dict[str, Any], views: dict[str, Any], *includes: str, excview: Any = None):
    with Configurator(settings=settings) as config:
        for name in includes:
            config.include(name)
        config.include("pyramid_transient.sessions")
        for number, (path, view) in enumerate(views.items()):
            config.add_route(f"r{number}", path)
            config.add_view(view, route_name=f"r{number}", renderer="json")
        if excview is not None:
            config.add_exception_view(excview, context=Exception, renderer="json")
        return webtest.TestApp(config.make_wsgi_app())


def set_value(request: Any) -> dict[str, Any]:
    request.session["value"] = request.params.get("v", "x")
    return {}


def get_value(request: Any) -> dict[str, Any]:
    return {"value": request.session.get("value"), "new": request.session.new}


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize("value", ["0", "None"])
def test_timeout_zero_or_none_means_never_as_documented(
    settings: dict[str, Any], transient_manager: RedisManager, value: str
) -> None:
    # docs/settings.rst: redis.sessions.timeout "0 or None for never".
    factory = session_factory_from_settings(
        {**settings, "redis.sessions.timeout": value}, transient_manager
    )
    assert factory.timeout is None


def test_timeout_none_leaves_the_key_without_ttl(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    app = build({**settings, "redis.sessions.timeout": "None"}, {"/set": set_value})
    app.get("/set")
    (key,) = keys(transient_manager)
    assert transient_manager.get("sessions").ttl(key) == -1  # no expiry


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_bad_session_socket_timeout_is_a_configuration_error(value: str) -> None:
    # transient.socket_timeout refuses these; here they reach socket.settimeout and a
    # ValueError (a 500) on the first request that loads a session.
    with pytest.raises(ConfigurationError, match="redis_socket_timeout"):
        parse_session_settings({**SECRET, "redis.sessions.redis_socket_timeout": value})


@pytest.mark.parametrize(
    "extra",
    [
        {"redis.sessions.cookie_samesite": "None"},  # browsers and webob need Secure with it
        {"redis.sessions.cookie_name": "my session"},  # not a cookie-name token
    ],
    ids=["samesite_none_without_secure", "cookie_name_with_a_space"],
)
def test_cookie_settings_webob_refuses_are_a_configuration_error_at_startup(
    settings: dict[str, Any], extra: dict[str, str]
) -> None:
    # Today: accepted at startup, then every response that sets the cookie is a 500
    # (webob's ValueError / AssertionError from a response callback).
    with pytest.raises(ConfigurationError, match=r"redis\.sessions\.cookie_"):
        build({**settings, **extra}, {"/set": set_value})


# ------------------------------------------------------------------ round trips


def test_setdefault_of_an_existing_key_writes_nothing(
    settings: dict[str, Any], round_trips: Any
) -> None:
    def ensure(request: Any) -> dict[str, Any]:
        return {"value": request.session.setdefault("value", "default")}

    app = build(settings, {"/set": set_value, "/ensure": ensure})
    get_manager(app.app.registry).get("sessions").ping()
    app.get("/set", {"v": "kept"})
    with round_trips() as rt:
        assert app.get("/ensure").json == {"value": "kept"}
    assert rt.commands == ["GETEX"]  # a read: "changes nothing" is one GETEX


# ------------------------------------------------------------------ bad stored values


def test_session_key_of_the_wrong_type_gives_a_fresh_session(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    app = build(settings, {"/set": set_value, "/get": get_value})
    app.get("/set", {"v": "real"})
    (key,) = keys(transient_manager)
    client = transient_manager.get("sessions")
    client.delete(key)
    client.hset(key, "foreign", "value")  # written by something without the secret
    assert app.get("/get").json == {"value": None, "new": True}


# ------------------------------------------------------------------ exception views


def test_check_failing_at_commit_is_rendered_by_the_apps_exception_view(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    def view(request: Any) -> dict[str, Any]:
        request.session["cart"] = []
        request.session["cart"].append(object())  # refused by the before-commit hook
        return {}

    def error_page(exc: Any, request: Any) -> dict[str, Any]:
        request.response.status_int = 500
        return {"error": type(exc).__name__, "is_type_error": isinstance(exc, TypeError)}

    app = build(settings, {"/": view}, "pyramid_tm", excview=error_page)
    response = app.get("/", status=500)
    assert response.json == {"error": "UnsupportedValue", "is_type_error": True}
    assert keys(transient_manager) == []


# ------------------------------------------------------------------ rotation


def test_rotation_answered_without_a_cookie_does_not_lose_the_session(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    def login(request: Any) -> Any:
        rotate_session(request)
        request.session["user"] = "alice"
        raise HTTPFound("/get")  # rendered by Pyramid's default exception view

    app = build(
        {**settings, "redis.sessions.cookie_on_exception": "false"},
        {"/set": set_value, "/login": login, "/get": get_value},
    )
    app.get("/set", {"v": "kept"})
    response = app.get("/login", status=302)
    # No cookie was sent for the new id (cookie_on_exception = false) ...
    assert "Set-Cookie" not in response.headers
    # ... so the browser still holds the old one: it must still name the session.
    assert app.get("/get").json == {"value": "kept", "new": False}


# ------------------------------------------------------------------ threads


def test_own_client_is_built_once_under_concurrent_first_requests(
    settings: dict[str, Any],
    transient_redis_url: str,
    transient_manager: RedisManager,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading
    import time

    from pyramid_transient.sessions import TransientSessionFactory

    factory = session_factory_from_settings(
        {**settings, "redis.sessions.redis_url": f"{transient_redis_url}/14"}, transient_manager
    )
    real = TransientSessionFactory._make_own_client

    def slow(self: Any, url: str) -> Any:
        time.sleep(0.05)  # a pool's construction, stretched so the threads overlap
        return real(self, url)

    monkeypatch.setattr(TransientSessionFactory, "_make_own_client", slow)
    barrier = threading.Barrier(8)
    clients: list[Any] = []

    def first_request() -> None:
        barrier.wait()
        clients.append(factory.client(object()))

    threads = [threading.Thread(target=first_request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in clients}) == 1  # one pool, not one per thread


def test_an_int_too_long_for_json_is_refused_during_the_request_naming_the_key(
    settings: dict[str, Any],
) -> None:
    def huge(request: Any) -> dict[str, Any]:
        request.session["big"] = 10**5000
        return {}

    app = build(settings, {"/huge": huge})
    with pytest.raises(TypeError, match="'big' cannot be stored"):
        app.get("/huge")
