"""Our session against the cases of Pyramid's own session suite (``SharedCookieSessionTests``
in pyramid's ``tests/test_session.py``), adapted: the state lives in Redis behind a signed
id instead of in the cookie. One shared class, run on a single server, Sentinel and Cluster.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import webob
from pyramid import testing
from pyramid.interfaces import ISession
from zope.interface.verify import verifyObject

from pyramid_transient import codec
from pyramid_transient.connection import RedisManager
from pyramid_transient.exceptions import ConfigurationError
from pyramid_transient.sessions import (
    TransientSession,
    TransientSessionFactory,
    parse_session_settings,
)

SECRET = "conformance-secret"


@pytest.fixture(
    params=[
        "standalone",
        pytest.param("sentinel", marks=pytest.mark.sentinel),
        pytest.param("cluster", marks=pytest.mark.cluster),
    ]
)
def manager(request: pytest.FixtureRequest) -> RedisManager:
    name = {
        "standalone": "transient_manager",
        "sentinel": "transient_sentinel_manager",
        "cluster": "transient_cluster_manager",
    }[request.param]
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def blank() -> Any:
    request = testing.DummyRequest()
    request.exception = None
    return request


def finish(request: Any, response: Any = None) -> Any:
    """Run the request's response and finished callbacks, as the router does."""
    response = response if response is not None else webob.Response()
    request._process_response_callbacks(response)
    request._process_finished_callbacks()
    return response


class TestSharedSessionCases:
    """Each case of Pyramid's ``SharedCookieSessionTests``, for our session."""

    @pytest.fixture(autouse=True)
    def _manager(self, manager: RedisManager) -> None:
        self.manager = manager

    def make(self, request: Any, **kw: Any) -> TransientSession:
        kw.setdefault("secret", SECRET)
        return TransientSessionFactory(manager=self.manager, **kw)(request)

    def stored(
        self,
        request: Any,
        data: dict[str, Any],
        *,
        created: float | None = None,
        expires: int | None = None,
        payload: Any = None,
        **kw: Any,
    ) -> None:
        """Store a session as an earlier request would have, and send its cookie."""
        factory = TransientSessionFactory(secret=kw.pop("secret", SECRET), manager=self.manager)
        session_id = factory.generate_id()
        key = factory.key(session_id)
        if payload is None:
            payload = {"m": data, "c": int(created or time.time()), "v": 1, "t": 1200}
            if expires is not None:
                payload["x"] = expires
        self.manager.get("sessions").set(key, factory.seal(key, codec.encode(payload)), ex=60)
        request.cookies["session"] = factory._cookie_signer.dumps(session_id).decode()

    def test_ctor_no_cookie(self) -> None:
        assert dict(self.make(blank()).items()) == {}

    def test_instance_conforms(self) -> None:
        assert verifyObject(ISession, self.make(blank()))

    def test_ctor_with_cookie_still_valid(self) -> None:
        request = blank()
        self.stored(request, {"state": 1})
        session = self.make(request)
        assert dict(session.items()) == {"state": 1}
        assert session.new is False

    def test_ctor_with_cookie_expired(self) -> None:
        request = blank()
        self.stored(request, {"state": 1}, expires=int(time.time()) - 10)
        session = self.make(request, python_expires=True)
        assert dict(session.items()) == {}
        assert session.new is True

    def test_ctor_with_bad_cookie_cannot_deserialize(self) -> None:
        request = blank()
        request.cookies["session"] = "abc"
        assert dict(self.make(request).items()) == {}

    def test_ctor_with_bad_cookie_not_a_session(self) -> None:
        request = blank()
        self.stored(request, {}, payload="abc")
        assert dict(self.make(request).items()) == {}

    def test_timeout(self) -> None:
        request = blank()
        now = int(time.time())
        self.stored(request, {"state": 1}, created=now - 5, expires=now - 4)
        assert dict(self.make(request, timeout=1, python_expires=True).items()) == {}

    def test_timeout_never(self) -> None:
        request = blank()
        self.stored(request, {"state": 1}, created=time.time() - 31536000)
        assert dict(self.make(request, timeout=None).items()) == {"state": 1}

    def test_timeout_str(self) -> None:
        options = parse_session_settings(
            {"redis.sessions.secret": SECRET, "redis.sessions.timeout": "1"}
        )
        assert options["timeout"] == 1

    def test_timeout_invalid(self) -> None:
        with pytest.raises(ConfigurationError, match=r"redis\.sessions\.timeout"):
            parse_session_settings(
                {"redis.sessions.secret": SECRET, "redis.sessions.timeout": "Invalid value"}
            )

    def test_changed(self) -> None:
        request = blank()
        self.stored(request, {"cart": []})
        session = self.make(request)
        session.get("cart")
        assert session.changed() is None
        finish(request)
        again = blank()
        again.cookies.update(request.cookies)
        assert self.make(again)["cart"] == []

    def test_invalidate(self) -> None:
        session = self.make(blank())
        session["a"] = 1
        assert session.invalidate() is None
        assert "a" not in session

    def test_set_cookie_on_exception_off(self) -> None:
        request = blank()
        request.exception = RuntimeError("boom")
        session = self.make(request, cookie_on_exception=False)
        session["a"] = 1
        assert "Set-Cookie" not in dict(finish(request).headerlist)

    def test_set_cookie_on_exception_off_without_exception(self) -> None:
        request = blank()
        session = self.make(request, cookie_on_exception=False)
        session["a"] = 1
        assert "Set-Cookie" in dict(finish(request).headerlist)

    def test_set_cookie_real_webob_response(self) -> None:
        request = blank()
        self.make(request)["abc"] = "x"
        assert "Set-Cookie" in dict(finish(request).headerlist)

    def test_set_cookie_options(self) -> None:
        request = blank()
        session = self.make(
            request,
            cookie_name="abc",
            cookie_path="/foo",
            cookie_domain="localhost",
            cookie_secure=True,
            cookie_httponly=True,
        )
        session["abc"] = "x"
        cookie = dict(finish(request).headerlist)["Set-Cookie"]
        parts = [x.strip() for x in cookie.split(";")]
        assert parts[0].startswith("abc=")
        assert {"Domain=localhost", "Path=/foo", "secure", "HttpOnly", "SameSite=Lax"} <= set(
            parts[1:]
        )

    def test_flash_default(self) -> None:
        session = self.make(blank())
        session.flash("msg1")
        session.flash("msg2")
        assert session["_f_"] == ["msg1", "msg2"]

    def test_flash_allow_duplicate_false(self) -> None:
        session = self.make(blank())
        session.flash("msg1")
        session.flash("msg1", allow_duplicate=False)
        assert session["_f_"] == ["msg1"]

    def test_flash_allow_duplicate_true_and_msg_not_in_storage(self) -> None:
        session = self.make(blank())
        session.flash("msg1", allow_duplicate=True)
        assert session["_f_"] == ["msg1"]

    def test_flash_allow_duplicate_false_and_msg_not_in_storage(self) -> None:
        session = self.make(blank())
        session.flash("msg1", allow_duplicate=False)
        assert session["_f_"] == ["msg1"]

    def test_flash_mixed(self) -> None:
        session = self.make(blank())
        session.flash("warn1", "warn")
        session.flash("warn2", "warn")
        session.flash("err1", "error")
        assert session["_f_warn"] == ["warn1", "warn2"]
        assert session["_f_error"] == ["err1"]

    @pytest.mark.parametrize("queue", ["", "error"])
    def test_pop_flash(self, queue: str) -> None:
        session = self.make(blank())
        session["_f_" + queue] = ["one", "two"]
        assert session.pop_flash(queue) == ["one", "two"]
        assert session.get("_f_" + queue) is None

    @pytest.mark.parametrize("queue", ["", "error"])
    def test_peek_flash(self, queue: str) -> None:
        session = self.make(blank())
        session["_f_" + queue] = ["one", "two"]
        assert session.peek_flash(queue) == ["one", "two"]
        assert session.get("_f_" + queue) == ["one", "two"]

    def test_flash_survives_to_the_next_request(self) -> None:
        request = blank()
        self.make(request).flash("saved", "success")
        response = finish(request)
        again = blank()
        name, _, value = dict(response.headerlist)["Set-Cookie"].split(";")[0].partition("=")
        again.cookies[name] = value
        assert self.make(again).pop_flash("success") == ["saved"]

    def test_new_csrf_token(self) -> None:
        session = self.make(blank())
        token = session.new_csrf_token()
        assert token == session["_csrft_"]

    def test_get_csrf_token(self) -> None:
        session = self.make(blank())
        session["_csrft_"] = "token"
        assert session.get_csrf_token() == "token"
        assert "_csrft_" in session

    def test_get_csrf_token_new(self) -> None:
        session = self.make(blank())
        assert session.get_csrf_token()
        assert "_csrft_" in session

    def test_no_set_cookie_with_exception(self) -> None:
        request = blank()
        request.exception = RuntimeError("boom")
        self.make(request, cookie_on_exception=False)["a"] = 1
        assert len(request.response_callbacks) == 1
        assert "Set-Cookie" not in dict(finish(request).headerlist)

    def test_set_cookie_with_exception(self) -> None:
        request = blank()
        request.exception = RuntimeError("boom")
        self.make(request)["a"] = 1
        assert "Set-Cookie" in dict(finish(request).headerlist)

    def test_cookie_is_set(self) -> None:
        request = blank()
        self.make(request)["a"] = 1
        response = finish(request)
        assert "Set-Cookie" in dict(response.headerlist)
        assert "Cookie" in response.vary

    def test_salt_mismatch(self) -> None:
        # A cookie signed with another secret (or salt) names no session.
        request = blank()
        self.stored(request, {"state": 1}, secret="another-secret")
        session = TransientSessionFactory(secret=SECRET, manager=self.manager)(request)
        assert dict(session.items()) == {}
