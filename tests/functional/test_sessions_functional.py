"""Sessions and flash messages through the demo app (webtest, the app of ``development.ini``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import webtest
from webob.cookies import SignedSerializer

from pyramid_transient.connection import get_manager
from pyramid_transient.testing import RedisServer


def manager_of(app: webtest.TestApp) -> Any:
    return get_manager(app.app.registry)


def sessions_db(app: webtest.TestApp) -> redis.Redis:
    return manager_of(app).get("sessions")


def session_keys(app: webtest.TestApp) -> list[bytes]:
    pattern = manager_of(app).keyspace("session", "sessions").pattern()
    return sorted(sessions_db(app).scan_iter(match=pattern))


def state(app: webtest.TestApp) -> dict[str, Any]:
    return app.get("/sessions/state").json  # type: ignore[no-any-return]


def post(app: webtest.TestApp, path: str, **fields: Any) -> webtest.TestResponse:
    token = state(app)["csrf_token"]
    return app.post(path, {"csrf_token": token, **fields})


def shown(app: webtest.TestApp) -> list[str]:
    """The messages the page shows (and consumes), as rendered HTML."""
    page = app.get("/sessions")
    box = page.html.find(id="messages")
    return [div.decode_contents() for div in box.find_all("div")]


# ------------------------------------------------------------------ counter and messages


def test_counter_counts_across_requests(testapp: webtest.TestApp) -> None:
    for _ in range(3):
        post(testapp, "/sessions/increment")
    assert state(testapp)["counter"] == 3


def test_flash_survives_the_redirect_and_shows_once(testapp: webtest.TestApp) -> None:
    res = post(testapp, "/sessions/flash", text="Saved", kind="success")
    assert res.status_int == 303
    page = res.follow()
    assert "Saved" in page.html.find(id="messages").text
    assert shown(testapp) == []


def test_two_distinct_messages_of_one_kind_are_both_kept(testapp: webtest.TestApp) -> None:
    post(testapp, "/sessions/flash", text="first", kind="warning")
    post(testapp, "/sessions/flash", text="second", kind="warning")
    assert shown(testapp) == ["first", "second"]


def test_the_same_message_twice_shows_once(testapp: webtest.TestApp) -> None:
    post(testapp, "/sessions/flash", text="same", kind="info")
    post(testapp, "/sessions/flash", text="same", kind="info")
    assert shown(testapp) == ["same"]


def test_peek_does_not_consume(testapp: webtest.TestApp) -> None:
    post(testapp, "/sessions/flash", text="still here", kind="error")
    assert [m["text"] for m in state(testapp)["messages"]] == ["still here"]
    assert [m["text"] for m in state(testapp)["messages"]] == ["still here"]
    assert shown(testapp) == ["still here"]


def test_message_text_is_escaped(testapp: webtest.TestApp) -> None:
    post(testapp, "/sessions/flash", text="<script>x</script>")
    assert shown(testapp) == ["&lt;script&gt;x&lt;/script&gt;"]


def test_html_from_the_form_is_ignored_so_a_message_is_always_escaped(
    testapp: webtest.TestApp,
) -> None:
    # The form once took html=1: a client could flash unescaped <script> to itself.
    post(testapp, "/sessions/flash", text="<script>x</script>", html="1")
    assert shown(testapp) == ["&lt;script&gt;x&lt;/script&gt;"]
    assert testapp.get("/sessions").html.find("input", attrs={"name": "html"}) is None


def test_unknown_kind_is_a_bad_request_naming_it(testapp: webtest.TestApp) -> None:
    token = state(testapp)["csrf_token"]
    res = testapp.post(
        "/sessions/flash", {"csrf_token": token, "text": "x", "kind": "bogus"}, status=400
    )
    assert "'bogus'" in res.html.find(id="error").text
    assert shown(testapp) == []


# ------------------------------------------------------------------ CSRF


def test_post_without_csrf_token_is_refused(testapp: webtest.TestApp) -> None:
    state(testapp)
    testapp.post("/sessions/increment", status=400)
    assert state(testapp)["counter"] == 0


def test_post_with_the_csrf_token_from_the_session_is_accepted(
    testapp: webtest.TestApp,
) -> None:
    page = testapp.get("/sessions")
    page.forms["increment"].submit(status=303)
    assert state(testapp)["counter"] == 1


# ------------------------------------------------------------------ keys, expiry, ids


def test_session_key_follows_the_layout_with_the_timeout_as_ttl(
    testapp: webtest.TestApp, app_settings: dict[str, Any]
) -> None:
    post(testapp, "/sessions/increment")
    (key,) = session_keys(testapp)
    assert key.startswith(f"{app_settings['transient.key_prefix']}:session:".encode())
    assert 1190 < sessions_db(testapp).ttl(key) <= 1200  # development.ini: redis.sessions.timeout


def test_reading_the_session_refreshes_its_ttl(testapp: webtest.TestApp) -> None:
    post(testapp, "/sessions/increment")
    (key,) = session_keys(testapp)
    sessions_db(testapp).expire(key, 100)
    state(testapp)
    assert sessions_db(testapp).ttl(key) > 1100


def test_expired_session_gives_a_fresh_one(
    testapp: webtest.TestApp, caplog: pytest.LogCaptureFixture
) -> None:
    post(testapp, "/sessions/increment")
    (key,) = session_keys(testapp)
    sessions_db(testapp).pexpire(key, 1)
    time.sleep(0.01)
    with caplog.at_level(logging.INFO, logger="pyramid_transient.sessions"):
        fresh = state(testapp)
    assert (fresh["counter"], fresh["new"]) == (0, True)
    assert "expired" in caplog.text


def test_invalidate_forgets_the_data_and_deletes_the_key(testapp: webtest.TestApp) -> None:
    post(testapp, "/sessions/increment")
    (old,) = session_keys(testapp)
    post(testapp, "/sessions/invalidate")
    assert sessions_db(testapp).exists(old) == 0
    assert state(testapp)["counter"] == 0


def test_rotation_keeps_the_data_under_a_new_id(testapp: webtest.TestApp) -> None:
    post(testapp, "/sessions/increment")
    (old,) = session_keys(testapp)
    post(testapp, "/sessions/rotate")
    (new,) = session_keys(testapp)
    assert new != old
    assert state(testapp)["counter"] == 1


def test_rotation_makes_the_old_cookie_useless(testapp: webtest.TestApp) -> None:
    post(testapp, "/sessions/increment")
    old_cookie = testapp.cookies["session"]
    post(testapp, "/sessions/rotate")
    attacker = webtest.TestApp(testapp.app)
    attacker.set_cookie("session", old_cookie)
    seen = state(attacker)
    assert (seen["counter"], seen["new"]) == (0, True)


# ------------------------------------------------------------------ bad cookies and payloads


def _fresh_after_cookie(app: webtest.TestApp, value: str) -> dict[str, Any]:
    post(app, "/sessions/increment")
    app.set_cookie("session", value)
    return state(app)


def test_tampered_cookie_gives_a_fresh_session(
    testapp: webtest.TestApp, caplog: pytest.LogCaptureFixture
) -> None:
    post(testapp, "/sessions/increment")
    cookie = testapp.cookies["session"]
    tampered = cookie[:10] + ("A" if cookie[10] != "A" else "B") + cookie[11:]
    with caplog.at_level(logging.WARNING, logger="pyramid_transient.sessions"):
        result = _fresh_after_cookie(testapp, tampered)
    assert (result["counter"], result["new"]) == (0, True)
    assert "signature" in caplog.text


def test_truncated_cookie_gives_a_fresh_session(testapp: webtest.TestApp) -> None:
    post(testapp, "/sessions/increment")
    result = _fresh_after_cookie(testapp, testapp.cookies["session"][:-7])
    assert (result["counter"], result["new"]) == (0, True)


def test_cookie_signed_with_another_secret_gives_a_fresh_session(
    testapp: webtest.TestApp,
) -> None:
    post(testapp, "/sessions/increment")
    (key,) = session_keys(testapp)
    session_id = key.decode().rsplit(":", 1)[1]
    foreign = SignedSerializer("another-secret", "pyramid_session_redis.", "sha512")
    foreign.serializer.dumps = lambda s: s.encode()  # type: ignore[method-assign]
    result = _fresh_after_cookie(testapp, foreign.dumps(session_id).decode())
    assert (result["counter"], result["new"]) == (0, True)


@pytest.mark.parametrize(
    "payload",
    [b"\x80garbage", b"", b'{"m": {"counter": 99}, "c": 1, "v": 1}'],
    ids=["garbage", "empty", "json-without-hmac"],
)
def test_payload_planted_in_redis_gives_a_fresh_session(
    testapp: webtest.TestApp, caplog: pytest.LogCaptureFixture, payload: bytes
) -> None:
    post(testapp, "/sessions/increment")
    (key,) = session_keys(testapp)
    sessions_db(testapp).set(key, payload)
    with caplog.at_level(logging.WARNING, logger="pyramid_transient.sessions"):
        result = state(testapp)
    assert (result["counter"], result["new"]) == (0, True)
    base, session_id = key.decode().rsplit(":", 1)
    assert f"{base}:{session_id[:6]}..." in caplog.text
    assert session_id not in caplog.text  # a credential: never logged in full


def test_payload_copied_from_another_session_is_refused(testapp: webtest.TestApp) -> None:
    for _ in range(2):
        post(testapp, "/sessions/increment")
    (rich,) = session_keys(testapp)
    victim = webtest.TestApp(testapp.app)
    post(victim, "/sessions/increment")
    (target,) = set(session_keys(testapp)) - {rich}
    db = sessions_db(testapp)
    db.set(target, db.get(rich) or b"")
    seen = state(victim)
    assert (seen["counter"], seen["new"]) == (0, True)


# ------------------------------------------------------------------ transactions


def test_retried_attempt_persists_nothing(make_app: Callable[..., webtest.TestApp]) -> None:
    app = make_app()
    post(app, "/sessions/conflict")
    assert state(app)["counter"] == 1
    assert shown(app) == ["Saved after a retried conflict."]
    assert len(session_keys(app)) == 1


def test_on_commit_message_is_kept_when_the_transaction_commits(
    testapp: webtest.TestApp,
) -> None:
    post(testapp, "/sessions/flash", text="committed", on_commit="1")
    assert shown(testapp) == ["committed"]


def test_on_commit_message_is_dropped_when_the_transaction_aborts(
    testapp: webtest.TestApp,
) -> None:
    post(testapp, "/sessions/flash", text="rolled back", on_commit="1", abort="1")
    post(testapp, "/sessions/flash", text="plain", abort="1")
    assert shown(testapp) == ["plain"]


# ------------------------------------------------------------------ Redis down


def test_redis_stopped_and_started_again(
    make_app: Callable[..., webtest.TestApp], caplog: pytest.LogCaptureFixture
) -> None:
    with RedisServer() as server:
        app = make_app(**{"transient.url": server.url})
        post(app, "/sessions/increment")
        (key,) = session_keys(app)
        server.stop()
        assert app.get("/").status_int == 200
        with caplog.at_level(logging.ERROR, logger="pyramid_transient.demo"):
            down = app.get("/sessions/state", status=503)
        assert "unreachable" in caplog.text  # the reason is logged for the operator
        assert down.headers["Retry-After"]
        assert "try again" in down.html.find(id="error").text
        assert down.html.find(id="home-link") is not None
        # ... and the visitor sees no internals: not the server, not the session key.
        assert str(server.port) not in down.text and "127.0.0.1" not in down.text
        assert ":session:" not in down.text and key.decode().rsplit(":", 1)[1][:6] not in down.text
        server.start()
        assert app.get("/sessions/state").json["counter"] == 0  # the server kept nothing
        post(app, "/sessions/increment")
        assert state(app)["counter"] == 1


# ------------------------------------------------------------------ round trips


def test_reading_the_session_is_one_round_trip(testapp: webtest.TestApp, round_trips: Any) -> None:
    post(testapp, "/sessions/increment")
    with round_trips() as rt:
        state(testapp)
    assert rt.commands == ["GETEX"]


def test_changing_the_session_is_one_more_round_trip(
    testapp: webtest.TestApp, round_trips: Any
) -> None:
    token = state(testapp)["csrf_token"]
    with round_trips() as rt:
        testapp.post("/sessions/increment", {"csrf_token": token})
    assert rt.commands == ["GETEX", "SET"]


# ------------------------------------------------------------------ hostile input


def test_a_message_past_the_form_limit_is_a_readable_400(testapp: webtest.TestApp) -> None:
    token = state(testapp)["csrf_token"]
    res = testapp.post("/sessions/flash", {"csrf_token": token, "text": "x" * 50_000}, status=400)
    assert "at most 500 characters" in res.html.find(id="error").text
    assert shown(testapp) == []


def test_a_session_grown_past_max_bytes_is_a_readable_413_and_keeps_what_it_had(
    make_app: Callable[..., webtest.TestApp],
) -> None:
    app = make_app(**{"transient.sessions.max_bytes": "2048"})
    post(app, "/sessions/increment")
    token = state(app)["csrf_token"]
    statuses = []
    for n in range(10):  # distinct messages of 450 characters: past 2 KiB after a few
        res = app.post(
            "/sessions/flash", {"csrf_token": token, "text": f"{n} " + "m" * 450}, status="*"
        )
        statuses.append(res.status_int)
    assert 413 in statuses, statuses
    refused = res
    assert "larger than this site keeps" in refused.html.find(id="error").text
    assert refused.html.find(id="home-link") is not None
    assert state(app)["counter"] == 1  # the last session that fit is still there


def test_a_retried_attempt_is_not_logged_as_an_error(
    testapp: webtest.TestApp, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pyramid_transient.demo"):
        post(testapp, "/sessions/conflict")
    assert "retrying POST /sessions/conflict" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
