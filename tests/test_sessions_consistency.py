"""Issue 14's defects, each shown by requests interleaved by hand (no races):

1. a logout or a rotation is never undone by a concurrent request holding the old cookie;
2. a rotation (login) issues a new CSRF token;
3. a stored session that loads but could not be saved again (too large, too deep) or is
   corrupt is discarded on load, with one WARNING, and its key deleted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import webtest
from pyramid.config import Configurator
from pyramid.interfaces import ISessionFactory

from pyramid_transient import codec
from pyramid_transient.connection import RedisManager
from pyramid_transient.sessions import rotate_session

SECRET = {"redis.sessions.secret": "consistency-secret"}


def keys(manager: RedisManager) -> list[bytes]:
    pattern = manager.keyspace("session", "sessions").pattern()
    return sorted(manager.get("sessions").scan_iter(match=pattern))


class Pause:
    """Holds a view between its load and its return, until released."""

    def __init__(self) -> None:
        self.loaded = threading.Event()
        self.go = threading.Event()

    def __call__(self) -> None:
        self.loaded.set()
        assert self.go.wait(10)


@pytest.fixture
def pause() -> Iterator[Pause]:
    held = Pause()
    yield held
    held.go.set()


@pytest.fixture
def app(
    transient_settings: dict[str, Any], transient_manager: RedisManager, pause: Pause
) -> webtest.TestApp:
    def set_value(request: Any) -> dict[str, Any]:
        request.session["value"] = request.params.get("v", "x")
        return {}

    def get_value(request: Any) -> dict[str, Any]:
        return {"value": request.session.get("value"), "new": request.session.new}

    def held_write(request: Any) -> dict[str, Any]:
        request.session.get("value")  # loaded before the other request runs
        pause()
        request.session["value"] = "written by the request in flight"
        return {}

    def held_rotate(request: Any) -> dict[str, Any]:
        request.session.get("value")
        pause()
        rotate_session(request)
        return {}

    def logout(request: Any) -> dict[str, Any]:
        request.session.invalidate()
        return {}

    def rotate(request: Any) -> dict[str, Any]:
        rotate_session(request)
        return {}

    def csrf(request: Any) -> dict[str, Any]:
        return {"token": request.session.get_csrf_token()}

    def login_keeping_token(request: Any) -> dict[str, Any]:
        rotate_session(request, new_csrf_token=False)
        return {}

    views: dict[str, Callable[[Any], Any]] = {
        "/set": set_value,
        "/get": get_value,
        "/held-write": held_write,
        "/held-rotate": held_rotate,
        "/logout": logout,
        "/rotate": rotate,
        "/csrf": csrf,
        "/login-keeping-token": login_keeping_token,
    }
    with Configurator(settings={**transient_settings, **SECRET}) as config:
        config.include("pyramid_transient.sessions")
        for number, (path, view) in enumerate(views.items()):
            config.add_route(f"r{number}", path)
            config.add_view(view, route_name=f"r{number}", renderer="json")
        return webtest.TestApp(config.make_wsgi_app())


def browser(app: webtest.TestApp, cookie: str) -> webtest.TestApp:
    """Another tab (or an attacker's replay) holding ``cookie``."""
    other = webtest.TestApp(app.app)
    other.set_cookie("session", cookie)
    return other


def in_flight(app: webtest.TestApp, cookie: str, path: str, pause: Pause) -> threading.Thread:
    """Start a request with ``cookie`` and return once it has loaded the session."""
    thread = threading.Thread(target=lambda: browser(app, cookie).get(path))
    thread.start()
    assert pause.loaded.wait(10)
    return thread


def release(thread: threading.Thread, pause: Pause) -> None:
    pause.go.set()
    thread.join(10)
    assert not thread.is_alive()


# ------------------------------------------------------------------ 1. no revived sessions


def test_logout_is_not_undone_by_a_request_in_flight_with_the_old_cookie(
    app: webtest.TestApp, transient_manager: RedisManager, pause: Pause
) -> None:
    app.get("/set", {"v": "logged in"})
    cookie = app.cookies["session"]
    thread = in_flight(app, cookie, "/held-write", pause)
    app.get("/logout")
    assert keys(transient_manager) == []
    release(thread, pause)  # it loaded the session before the logout, then changed it
    assert keys(transient_manager) == []  # fails on the old code: its SET revived the key
    assert browser(app, cookie).get("/get").json == {"value": None, "new": True}


def test_rotation_is_not_undone_by_a_request_in_flight_with_the_old_cookie(
    app: webtest.TestApp, transient_manager: RedisManager, pause: Pause
) -> None:
    app.get("/set", {"v": "kept"})
    old_cookie = app.cookies["session"]
    thread = in_flight(app, old_cookie, "/held-write", pause)
    app.get("/rotate")
    assert app.cookies["session"] != old_cookie
    release(thread, pause)
    assert len(keys(transient_manager)) == 1  # only the new id
    assert browser(app, old_cookie).get("/get").json == {"value": None, "new": True}
    assert app.get("/get").json == {"value": "kept", "new": False}


def test_rotation_in_flight_does_not_move_a_logged_out_session_to_a_new_id(
    app: webtest.TestApp, transient_manager: RedisManager, pause: Pause
) -> None:
    app.get("/set", {"v": "logged in"})
    thread = in_flight(app, app.cookies["session"], "/held-rotate", pause)
    app.get("/logout")
    release(thread, pause)
    assert keys(transient_manager) == []


def test_a_new_session_never_overwrites_a_stored_one(
    transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    # An id_generator that repeats itself stands for an id collision: the second
    # visitor's session must not replace the first one's (SET NX, not SET).
    def set_value(request: Any) -> dict[str, Any]:
        request.session["value"] = request.params["v"]
        return {}

    settings = {
        **transient_settings,
        **SECRET,
        "redis.sessions.id_generator": lambda: "always-the-same-id",
    }
    with Configurator(settings=settings) as config:
        config.include("pyramid_transient.sessions")
        config.add_route("set", "/set")
        config.add_view(set_value, route_name="set", renderer="json")
        wsgi = config.make_wsgi_app()
    webtest.TestApp(wsgi).get("/set", {"v": "first visitor"})
    webtest.TestApp(wsgi).get("/set", {"v": "second visitor"})
    (key,) = keys(transient_manager)
    stored = transient_manager.get("sessions").get(key) or b""
    assert b"first visitor" in stored  # fails on the old code: the plain SET replaced it


# ------------------------------------------------------------------ 2. CSRF at login


def test_rotation_issues_a_new_csrf_token(app: webtest.TestApp) -> None:
    planted = app.get("/csrf").json["token"]  # what an attacker who planted it knows
    app.get("/rotate")
    after = app.get("/csrf").json["token"]
    assert after != planted  # fails on the old code: the token survived the login


def test_rotation_keeps_the_csrf_token_when_asked(app: webtest.TestApp) -> None:
    before = app.get("/csrf").json["token"]
    app.get("/login-keeping-token")
    assert app.get("/csrf").json["token"] == before


# ------------------------------------------------------------------ 3. loadable but unsavable


def plant(app: webtest.TestApp, manager: RedisManager, raw: bytes, *, seal: bool = True) -> bytes:
    """Replace the stored payload of ``app``'s session with ``raw``; return its key."""
    app.get("/set", {"v": "real"})
    (key,) = keys(manager)
    factory = app.app.registry.queryUtility(ISessionFactory)
    manager.get("sessions").set(key, factory.seal(key.decode(), raw) if seal else raw)
    return key


def test_session_nested_too_deep_to_save_again_is_discarded_on_load(
    app: webtest.TestApp, transient_manager: RedisManager, caplog: pytest.LogCaptureFixture
) -> None:
    depth = codec.MAX_DEPTH + 50  # decodes, but the codec refuses to encode it
    deep = b'{"m":{"deep":' + b"[" * depth + b"]" * depth + b'},"c":1,"v":1,"t":1200}'
    key = plant(app, transient_manager, deep)
    with caplog.at_level(logging.WARNING, logger="pyramid_transient.sessions"):
        # A read-only request: the old code answered 500 on every request, reads included.
        assert app.get("/get").json == {"value": None, "new": True}
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "nested deeper" in warning.getMessage()
    assert keys(transient_manager) == []
    assert key.decode() not in caplog.text  # named, redacted


@pytest.mark.parametrize(
    ("raw", "seal"),
    [(b"not json at all", True), (b"\x00random bytes", False), (b'{"m": [1]}', True)],
    ids=["undecodable", "unverifiable", "wrong_shape"],
)
def test_corrupt_session_key_is_deleted_and_warned_about_once(
    app: webtest.TestApp,
    transient_manager: RedisManager,
    caplog: pytest.LogCaptureFixture,
    raw: bytes,
    seal: bool,
) -> None:
    plant(app, transient_manager, raw, seal=seal)
    with caplog.at_level(logging.WARNING, logger="pyramid_transient.sessions"):
        assert app.get("/get").json == {"value": None, "new": True}
        assert app.get("/get").json == {"value": None, "new": True}
    # Once: the old code read and logged it again on every request.
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    assert keys(transient_manager) == []


def test_key_of_the_wrong_type_is_deleted_in_the_save_of_the_fresh_session(
    app: webtest.TestApp, transient_manager: RedisManager, round_trips: Any
) -> None:
    app.get("/set", {"v": "real"})
    (key,) = keys(transient_manager)
    client = transient_manager.get("sessions")
    client.delete(key)
    client.hset(key, "foreign", "value")
    with round_trips() as rt:
        app.get("/set", {"v": "fresh"})
    assert rt.commands == ["GETEX", "DEL SET"]  # one round trip for both
    assert key not in keys(transient_manager)
    assert app.get("/get").json == {"value": "fresh", "new": False}
