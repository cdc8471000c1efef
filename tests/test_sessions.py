"""Sessions: settings, conformance, payload checks, saving rules and round trips."""

from __future__ import annotations

import fractions
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import webtest
from pyramid.config import Configurator
from pyramid.interfaces import ISession, ISessionFactory
from pyramid_retry import RetryableException
from zope.interface.verify import verifyObject

from pyramid_transient import codec
from pyramid_transient.connection import RedisManager, get_manager
from pyramid_transient.exceptions import ConfigurationError, SessionTooLarge
from pyramid_transient.sessions import (
    LEGACY_KEYS,
    SESSION_SETTINGS,
    TransientSession,
    TransientSessionFactory,
    parse_session_settings,
    rotate_session,
)

SECRET = {"redis.sessions.secret": "unit-secret"}
View = Callable[[Any], Any]


@pytest.fixture
def settings(
    transient_settings: dict[str, Any], transient_manager: RedisManager
) -> dict[str, Any]:
    """Settings on the suite's server (``transient_manager`` flushed its databases)."""
    return {**transient_settings, **SECRET}


def build(settings: dict[str, Any], views: dict[str, View], *includes: str) -> webtest.TestApp:
    with Configurator(settings=settings) as config:
        for name in includes:
            config.include(name)
        config.include("pyramid_transient.sessions")
        for number, (path, view) in enumerate(views.items()):
            config.add_route(f"r{number}", path)
            config.add_view(view, route_name=f"r{number}", renderer="json")
        return webtest.TestApp(config.make_wsgi_app())


def warm(app: webtest.TestApp) -> None:
    """Connect the app's pool, so round trips count commands, not handshakes."""
    get_manager(app.app.registry).get("sessions").ping()


def keys(manager: RedisManager) -> list[bytes]:
    pattern = manager.keyspace("session", "sessions").pattern()
    return sorted(manager.get("sessions").scan_iter(match=pattern))


def set_value(request: Any) -> dict[str, Any]:
    request.session["value"] = request.params.get("v", "x")
    return {}


def get_value(request: Any) -> dict[str, Any]:
    return {"value": request.session.get("value"), "new": request.session.new}


def count(request: Any) -> dict[str, Any]:
    request.session["n"] = request.session.get("n", 0) + 1
    return {"n": request.session["n"]}


BASIC = {"/set": set_value, "/get": get_value}


# ------------------------------------------------------------------ settings


def test_missing_secret_is_a_configuration_error_at_startup(
    transient_settings: dict[str, Any],
) -> None:
    with (
        pytest.raises(
            ConfigurationError, match=r"redis\.sessions\.secret is missing or empty \(got None\)"
        ),
        Configurator(settings=transient_settings) as config,
    ):
        config.include("pyramid_transient.sessions")


def test_unknown_session_setting_names_the_nearest_key() -> None:
    with pytest.raises(ConfigurationError, match=r"did you mean 'redis\.sessions\.cookie_name'"):
        parse_session_settings({**SECRET, "redis.sessions.cookie_nme": "sid"})


def test_bad_boolean_names_the_key_and_the_value() -> None:
    with pytest.raises(ConfigurationError, match=r"redis\.sessions\.cookie_secure .* 'maybe'"):
        parse_session_settings({**SECRET, "redis.sessions.cookie_secure": "maybe"})


def test_settings_are_parsed_by_type() -> None:
    options = parse_session_settings(
        {**SECRET, "redis.sessions.timeout": "60", "redis.sessions.cookie_secure": "true"}
    )
    assert (options["timeout"], options["cookie_secure"]) == (60, True)


def test_websauna_url_is_translated_with_a_deprecation_warning() -> None:
    with pytest.warns(
        DeprecationWarning, match=r"redis\.sessions\.url .* read as redis\.sessions\.redis_url"
    ):
        options = parse_session_settings({**SECRET, "redis.sessions.url": "redis://h:1/2"})
    assert options["redis_url"] == "redis://h:1/2"


def test_websauna_url_chooses_the_session_server(
    settings: dict[str, Any], transient_redis_url: str, transient_manager: RedisManager
) -> None:
    with pytest.warns(DeprecationWarning):
        app = build({**settings, "redis.sessions.url": f"{transient_redis_url}/15"}, BASIC)
    app.get("/set")
    pattern = transient_manager.keyspace("session", "sessions").pattern()
    assert len(list(transient_manager.get("celery").scan_iter(match=pattern))) == 1  # db 15
    assert keys(transient_manager) == []


def test_websauna_client_callable_is_translated_and_used(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    calls: list[Any] = []

    def client_callable(request: Any, **options: Any) -> redis.Redis:
        calls.append(request)
        return transient_manager.get("sessions")

    with pytest.warns(DeprecationWarning, match="client_callable"):
        app = build({**settings, "redis.sessions.client_callable": client_callable}, BASIC)
    app.get("/set")
    assert len(calls) == 1
    assert len(keys(transient_manager)) == 1


def test_client_that_decodes_responses_is_a_clear_error(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    kwargs = transient_manager.get("sessions").connection_pool.connection_kwargs
    decoding = redis.Redis(
        host=kwargs["host"], port=kwargs["port"], db=kwargs["db"], decode_responses=True
    )

    def client_callable(request: Any, **options: Any) -> redis.Redis:
        return decoding

    app = build({**settings, "redis.sessions.redis_client_callable": client_callable}, BASIC)
    app.get("/set")
    with pytest.raises(ConfigurationError, match="decode_responses"):
        app.get("/get")
    decoding.close()


def test_legacy_and_modern_names_together_are_an_error() -> None:
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ConfigurationError, match=r"keep only redis\.sessions\.redis_url"),
    ):
        parse_session_settings(
            {**SECRET, "redis.sessions.url": "redis://a", "redis.sessions.redis_url": "redis://b"}
        )


def test_serialize_without_deserialize_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="without its counterpart"):
        parse_session_settings({**SECRET, "redis.sessions.serialize": "json.dumps"})


def test_cookie_is_httponly_and_samesite_lax_by_default(settings: dict[str, Any]) -> None:
    cookie = build(settings, BASIC).get("/set").headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_cookie_samesite_setting_is_honoured(settings: dict[str, Any]) -> None:
    app = build({**settings, "redis.sessions.cookie_samesite": "strict"}, BASIC)
    assert "SameSite=Strict" in app.get("/set").headers["Set-Cookie"]


def test_key_prefix_setting_goes_inside_our_layout(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    build({**settings, "redis.sessions.prefix": "web-"}, BASIC).get("/set")
    (key,) = keys(transient_manager)
    base = transient_manager.keyspace("session", "sessions").key("web-")
    assert key.decode().startswith(base)


def test_factory_without_a_manager_uses_the_running_apps(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    with Configurator(settings=settings) as config:
        config.include("pyramid_transient.connection")
        config.set_session_factory(TransientSessionFactory(secret="unit-secret"))
        config.add_route("set", "/set")
        config.add_view(set_value, route_name="set", renderer="json")
        app = webtest.TestApp(config.make_wsgi_app())
    app.get("/set", {"v": "found"})
    (key,) = keys(transient_manager)
    assert b'"value":"found"' in (transient_manager.get("sessions").get(key) or b"")


class _StringSerializer:
    """pyramid_session_redis's serializer of the cookie's id (UTF-8 text, no JSON)."""

    def dumps(self, value: str) -> bytes:
        return value.encode("utf-8")

    def loads(self, raw: bytes) -> str:
        return raw.decode("utf-8")


def test_cookie_is_signed_as_pyramid_session_redis_signs_it(settings: dict[str, Any]) -> None:
    from webob.cookies import SignedSerializer

    upstream = SignedSerializer(
        SECRET["redis.sessions.secret"],
        "pyramid_session_redis.",
        "sha512",
        serializer=_StringSerializer(),
    )
    app = build(settings, BASIC)
    app.get("/set", {"v": "shared"})
    session_id = upstream.loads(app.cookies["session"].encode())
    assert upstream.dumps(session_id).decode() == app.cookies["session"]
    other = webtest.TestApp(app.app)
    other.set_cookie("session", upstream.dumps(session_id).decode())
    assert other.get("/get").json == {"value": "shared", "new": False}


# ------------------------------------------------------------------ conformance and values


def test_session_conforms_to_isession(settings: dict[str, Any]) -> None:
    seen: list[Any] = []

    def view(request: Any) -> dict[str, Any]:
        seen.append(request.session)
        return {}

    build(settings, {"/": view}).get("/")
    assert isinstance(seen[0], TransientSession)
    assert verifyObject(ISession, seen[0])


def test_value_the_codec_cannot_store_is_refused_naming_the_key(settings: dict[str, Any]) -> None:
    def view(request: Any) -> dict[str, Any]:
        request.session["when"] = object()
        return {}

    with pytest.raises(TypeError, match="key 'when'"):
        build(settings, {"/": view}).get("/")


class _Recorder:
    """A data manager standing for the SQL database: records whether it committed."""

    committed = False

    def __init__(self, manager: Any) -> None:
        self.transaction_manager = manager

    def abort(self, txn: Any) -> None:
        pass

    tpc_begin = commit = tpc_vote = tpc_abort = abort

    def tpc_finish(self, txn: Any) -> None:
        type(self).committed = True

    def sortKey(self) -> str:
        return "recorder"


@pytest.fixture
def recorder() -> Iterator[type[_Recorder]]:
    _Recorder.committed = False
    yield _Recorder


def test_nested_unstorable_value_aborts_the_transaction_naming_the_key(
    settings: dict[str, Any], recorder: type[_Recorder], transient_manager: RedisManager
) -> None:
    def view(request: Any) -> dict[str, Any]:
        request.tm.get().join(recorder(request.tm))
        request.session["cart"] = []
        request.session["cart"].append(object())
        return {}

    with pytest.raises(TypeError, match="key 'cart'"):
        build(settings, {"/": view}, "pyramid_tm").get("/")
    assert recorder.committed is False
    assert keys(transient_manager) == []


def test_session_larger_than_max_bytes_is_refused_during_the_request(
    settings: dict[str, Any], recorder: type[_Recorder], transient_manager: RedisManager
) -> None:
    def view(request: Any) -> dict[str, Any]:
        request.tm.get().join(recorder(request.tm))
        request.session["big"] = "x" * 300
        return {}

    app = build({**settings, "transient.sessions.max_bytes": "256"}, {"/": view}, "pyramid_tm")
    with pytest.raises(SessionTooLarge, match=r"transient\.sessions\.max_bytes \(256\)"):
        app.get("/")
    assert recorder.committed is False
    assert keys(transient_manager) == []


def test_on_commit_flash_that_overflows_max_bytes_is_logged_not_raised_after_the_commit(
    settings: dict[str, Any],
    recorder: type[_Recorder],
    transient_manager: RedisManager,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pyramid_transient.messages import flash

    def view(request: Any) -> dict[str, Any]:
        request.tm.get().join(recorder(request.tm))
        request.session["kept"] = "x" * 150
        flash(request, "y" * 150, on_commit=True)  # fits only before the commit
        return {}

    app = build({**settings, "transient.sessions.max_bytes": "256"}, {"/": view}, "pyramid_tm")
    with caplog.at_level(logging.ERROR, logger="pyramid_transient.sessions"):
        assert app.get("/").status_int == 200  # the database committed: no error page
    assert recorder.committed is True
    assert "transient.sessions.max_bytes" in caplog.text
    (key,) = keys(transient_manager)
    saved = transient_manager.get("sessions").get(key) or b""
    assert b'"kept":"' in saved  # as it was at the commit, without the late message
    assert b"yyy" not in saved


def test_session_too_large_without_pyramid_tm_is_refused_before_the_response(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    app = build({**settings, "transient.sessions.max_bytes": "256"}, BASIC)
    with pytest.raises(SessionTooLarge):
        app.get("/set", {"v": "x" * 300})
    assert keys(transient_manager) == []


def test_pickle_serializer_stores_what_json_cannot(settings: dict[str, Any]) -> None:
    def put(request: Any) -> dict[str, Any]:
        request.session["third"] = fractions.Fraction(1, 3)
        return {}

    def read(request: Any) -> dict[str, Any]:
        return {"third": str(request.session["third"])}

    app = build({**settings, "transient.sessions.serializer": "pickle"}, {"/p": put, "/r": read})
    app.get("/p")
    assert app.get("/r").json == {"third": "1/3"}


def test_payload_is_our_codec_behind_an_hmac(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    build(settings, BASIC).get("/set", {"v": "hello"})
    (key,) = keys(transient_manager)
    raw = transient_manager.get("sessions").get(key) or b""
    assert raw.startswith(b"t1.")
    assert b'{"m":{"value":"hello"},"c":' in raw


def freeze(monkeypatch: pytest.MonkeyPatch, when: float) -> None:
    """Set the sessions' clock to ``when`` (seconds since the epoch)."""
    import pyramid_transient.sessions as module

    monkeypatch.setattr(module, "_time", lambda: when)


def test_python_expires_is_enforced_in_python(
    settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    app = build(
        {**settings, "redis.sessions.python_expires": "true", "redis.sessions.timeout": "60"},
        BASIC,
    )
    app.get("/set")
    freeze(monkeypatch, time.time() + 62)
    assert app.get("/get").json == {"value": None, "new": True}


def test_session_expired_in_python_is_logged_without_its_id(
    settings: dict[str, Any],
    transient_manager: RedisManager,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import time

    app = build(
        {**settings, "redis.sessions.python_expires": "true", "redis.sessions.timeout": "60"},
        BASIC,
    )
    app.get("/set")
    (key,) = keys(transient_manager)
    session_id = key.decode().rsplit(":", 1)[1]
    freeze(monkeypatch, time.time() + 62)
    with caplog.at_level(logging.DEBUG):
        assert app.get("/get").json == {"value": None, "new": True}
    assert f"{session_id[:6]}..." in caplog.text
    assert session_id not in caplog.text  # a credential: never logged in full


def test_session_server_password_with_url_characters_is_passed_whole(
    transient_manager: RedisManager,
) -> None:
    factory = TransientSessionFactory(
        secret="s",
        manager=transient_manager,
        redis_host="sessions.example",
        redis_password="p@ss/w:rd#1?",
    )
    options = factory.client(None).connection_pool.connection_kwargs
    assert (options["host"], options["password"]) == ("sessions.example", "p@ss/w:rd#1?")


def test_adjusted_session_timeout_survives_a_request_that_only_reads(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    def remember(request: Any) -> dict[str, Any]:
        request.session["user"] = 1
        request.session.adjust_session_timeout(5000)
        return {}

    app = build(settings, {**BASIC, "/remember": remember})
    app.get("/remember")
    (key,) = keys(transient_manager)
    assert transient_manager.get("sessions").ttl(key) > 4000
    app.get("/get")
    assert transient_manager.get("sessions").ttl(key) > 4000  # not the default 1200


def test_payload_mac_is_compared_in_constant_time(
    settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hmac

    import pyramid_transient.sessions as module

    compared: list[int] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append(len(b))
        return original(a, b)

    app = build(settings, BASIC)
    app.get("/set", {"v": "kept"})
    monkeypatch.setattr(module.hmac, "compare_digest", compare_digest)
    assert app.get("/get").json == {"value": "kept", "new": False}
    assert 32 in compared  # the payload's HMAC-SHA256 (the cookie's is SHA-512)


# ------------------------------------------------------------------ ids


def test_rotate_session_keeps_the_data_under_a_new_key(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    def rotate(request: Any) -> dict[str, Any]:
        rotate_session(request)
        return {}

    app = build(settings, {**BASIC, "/rotate": rotate})
    app.get("/set", {"v": "kept"})
    before = keys(transient_manager)
    app.get("/rotate")
    after = keys(transient_manager)
    assert len(after) == 1
    assert after != before
    assert app.get("/get").json["value"] == "kept"


def test_rotating_a_new_session_deletes_nothing(
    settings: dict[str, Any], transient_manager: RedisManager, round_trips: Any
) -> None:
    def rotate(request: Any) -> dict[str, Any]:
        request.session["a"] = 1
        rotate_session(request)
        return {}

    app = build(settings, {"/rotate": rotate})
    warm(app)
    with round_trips() as rt:
        app.get("/rotate")
    assert rt.commands == ["SET"]


# ------------------------------------------------------------------ retries


def test_retryable_error_rendered_by_an_exception_view_persists_nothing(
    settings: dict[str, Any],
) -> None:
    def flaky(request: Any) -> dict[str, Any]:
        count(request)
        if request.environ["retry.attempt"] == 0:
            raise RetryableException("try again")
        return {}

    with Configurator(settings={**settings, "retry.attempts": "2"}) as config:
        config.include("pyramid_retry")
        config.include("pyramid_transient.sessions")
        config.add_route("flaky", "/flaky")
        config.add_view(flaky, route_name="flaky", renderer="json")
        config.add_route("get", "/get")
        config.add_view(count, route_name="get", renderer="json")
        config.add_exception_view(lambda exc, request: {"error": True}, renderer="json")
        app = webtest.TestApp(config.make_wsgi_app())
    app.get("/flaky")
    assert app.get("/get").json == {"n": 2}


def test_new_session_of_a_retried_attempt_leaves_no_key(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    def flaky(request: Any) -> dict[str, Any]:
        request.session["attempt"] = request.environ["retry.attempt"]
        if request.environ["retry.attempt"] == 0:
            raise RetryableException("try again")
        return {}

    app = build({**settings, "retry.attempts": "2"}, {"/": flaky}, "pyramid_retry")
    app.get("/")
    (key,) = keys(transient_manager)
    assert b'"attempt":1' in (transient_manager.get("sessions").get(key) or b"")


# ------------------------------------------------------------------ round trips


@pytest.fixture
def counting_app(settings: dict[str, Any], transient_manager: RedisManager) -> webtest.TestApp:
    def invalidate(request: Any) -> dict[str, Any]:
        request.session.invalidate()
        return {}

    def rotate(request: Any) -> dict[str, Any]:
        rotate_session(request)
        return {}

    def untouched(request: Any) -> dict[str, Any]:
        return {}

    app = build(
        settings,
        {**BASIC, "/invalidate": invalidate, "/rotate": rotate, "/untouched": untouched},
    )
    warm(app)
    return app


def test_new_session_is_saved_in_one_round_trip(
    counting_app: webtest.TestApp, round_trips: Any
) -> None:
    with round_trips() as rt:
        counting_app.get("/set")
    assert rt.commands == ["SET"]


def test_unchanged_session_is_loaded_in_one_round_trip_and_not_written(
    counting_app: webtest.TestApp, round_trips: Any
) -> None:
    counting_app.get("/set")
    with round_trips() as rt:
        counting_app.get("/get")
    assert rt.commands == ["GETEX"]


def test_view_that_does_not_touch_the_session_makes_no_round_trip(
    counting_app: webtest.TestApp, round_trips: Any
) -> None:
    counting_app.get("/set")
    with round_trips() as rt:
        counting_app.get("/untouched")
    assert rt.count == 0


def test_changed_session_is_saved_in_one_round_trip(
    counting_app: webtest.TestApp, round_trips: Any
) -> None:
    counting_app.get("/set", {"v": "a"})
    with round_trips() as rt:
        counting_app.get("/set", {"v": "b"})
    assert rt.commands == ["GETEX", "SET"]


def test_rotation_is_saved_in_one_round_trip(
    counting_app: webtest.TestApp, round_trips: Any
) -> None:
    counting_app.get("/set")
    counting_app.get("/rotate")  # the server has the script from now on
    with round_trips() as rt:
        counting_app.get("/rotate")
    # One script: the data moves to the new key only if the old key is still there.
    assert rt.commands == ["GETEX", "EVALSHA"]


def test_invalidation_is_one_delete(counting_app: webtest.TestApp, round_trips: Any) -> None:
    counting_app.get("/set")
    with round_trips() as rt:
        counting_app.get("/invalidate")
    assert rt.commands == ["GETEX", "DEL"]


def test_nested_change_is_detected_and_saved_in_one_round_trip(
    settings: dict[str, Any], round_trips: Any
) -> None:
    def start(request: Any) -> dict[str, Any]:
        request.session["cart"] = []
        return {}

    def add(request: Any) -> dict[str, Any]:
        request.session.get("cart").append("book")  # no assignment: found by comparison
        return {}

    def show(request: Any) -> dict[str, Any]:
        return {"cart": request.session.get("cart")}

    app = build(settings, {"/start": start, "/add": add, "/show": show})
    warm(app)
    app.get("/start")
    with round_trips() as rt:
        app.get("/add")
    assert rt.commands == ["GETEX", "SET"]
    assert app.get("/show").json == {"cart": ["book"]}


def test_session_larger_than_a_lowered_max_bytes_is_discarded_and_deleted_on_load(
    settings: dict[str, Any],
    transient_manager: RedisManager,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Issue 14, defect 3: such a session could be read but never saved again (every
    # request that changed it answered 500, and each load's GETEX kept it alive).
    app = build(settings, BASIC)
    app.get("/set", {"v": "x" * 400})
    (key,) = keys(transient_manager)
    views = {**BASIC, "/count": count}
    smaller = build({**settings, "transient.sessions.max_bytes": "256"}, views)
    smaller.set_cookie("session", app.cookies["session"])
    with caplog.at_level(logging.WARNING, logger="pyramid_transient.sessions"):
        assert smaller.get("/count").json == {"n": 1}  # a fresh session, not a 500
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "transient.sessions.max_bytes (256)" in warnings[0].getMessage()
    assert key.decode()[:-10] not in warnings[0].getMessage()  # the id is redacted
    assert key not in keys(transient_manager)  # deleted with the save
    assert smaller.get("/get").json == {"value": None, "new": False}


def test_timeout_trigger_rewrites_the_payload_only_near_expiry(
    settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch, round_trips: Any
) -> None:
    import time

    app = build(
        {**settings, "redis.sessions.timeout": "60", "redis.sessions.timeout_trigger": "30"},
        BASIC,
    )
    warm(app)
    now = int(time.time())
    freeze(monkeypatch, now)
    app.get("/set")
    freeze(monkeypatch, now + 10)
    with round_trips() as early:
        assert app.get("/get").json == {"value": "x", "new": False}
    freeze(monkeypatch, now + 40)
    with round_trips() as late:
        assert app.get("/get").json == {"value": "x", "new": False}
    freeze(monkeypatch, now + 90)  # 50 s after the rewrite
    assert app.get("/get").json == {"value": "x", "new": False}
    assert (early.commands, late.commands) == (["GET", "EXPIRE"], ["GET", "SET"])


def test_readheavy_off_refreshes_the_ttl_with_an_expire_at_the_end(
    settings: dict[str, Any], transient_manager: RedisManager, round_trips: Any
) -> None:
    app = build({**settings, "redis.sessions.set_redis_ttl_readheavy": "false"}, BASIC)
    app.get("/set")
    with round_trips() as rt:
        app.get("/get")
    assert rt.commands == ["GET", "EXPIRE"]


# ------------------------------------------------------------------ backends


def test_sessions_work_on_the_memory_backend(transient_memory: RedisManager) -> None:
    settings = {"transient.url": transient_memory.settings.url, **SECRET}
    app = build(settings, BASIC)
    app.get("/set", {"v": "in memory"})
    assert app.get("/get").json == {"value": "in memory", "new": False}


@pytest.mark.cluster
def test_sessions_work_on_a_cluster(transient_cluster_settings: dict[str, Any]) -> None:
    app = build({**transient_cluster_settings, **SECRET}, {**BASIC, "/count": count})
    app.get("/set", {"v": "clustered"})
    assert app.get("/get").json == {"value": "clustered", "new": False}


@pytest.mark.cluster
def test_rotation_on_a_cluster_deletes_the_old_key(
    transient_cluster_settings: dict[str, Any], transient_cluster_manager: RedisManager
) -> None:
    def rotate(request: Any) -> dict[str, Any]:
        rotate_session(request)
        return {}

    app = build({**transient_cluster_settings, **SECRET}, {**BASIC, "/rotate": rotate})
    for _ in range(5):  # old and new keys land on different nodes for some of these
        app.get("/set", {"v": "kept"})
        app.get("/rotate")
    client = transient_cluster_manager.get("sessions")
    pattern = transient_cluster_manager.keyspace("session", "sessions").pattern()
    assert len(list(client.scan_iter(match=pattern))) == 1
    assert app.get("/get").json["value"] == "kept"


@pytest.mark.sentinel
def test_sessions_work_through_sentinel(transient_sentinel_settings: dict[str, Any]) -> None:
    app = build({**transient_sentinel_settings, **SECRET}, BASIC)
    app.get("/set", {"v": "watched"})
    assert app.get("/get").json == {"value": "watched", "new": False}


@pytest.mark.parametrize("name", [*SESSION_SETTINGS, *LEGACY_KEYS])
def test_every_session_setting_is_in_the_settings_reference(name: str) -> None:
    reference = (Path(__file__).resolve().parent.parent / "docs" / "settings.rst").read_text()
    assert f"``redis.sessions.{name}``" in reference


def test_verified_payload_of_the_wrong_shape_gives_a_fresh_session(
    settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    app = build(settings, BASIC)
    app.get("/set", {"v": "real"})
    (key,) = keys(transient_manager)
    factory = app.app.registry.queryUtility(ISessionFactory)
    transient_manager.get("sessions").set(
        key, factory.seal(key.decode(), b'["not", "a", "session"]')
    )
    assert app.get("/get").json == {"value": None, "new": True}


@pytest.mark.parametrize("field", ["t", "x"])
def test_verified_payload_with_a_non_integer_timeout_gives_a_fresh_session(
    settings: dict[str, Any], transient_manager: RedisManager, field: str
) -> None:
    app = build(
        {**settings, "redis.sessions.python_expires": "true", "redis.sessions.timeout": "60"},
        BASIC,
    )
    app.get("/set", {"v": "real"})
    (key,) = keys(transient_manager)
    factory = app.app.registry.queryUtility(ISessionFactory)
    payload = {"m": {"value": "real"}, "c": 1, "v": 1, "t": 60, "x": 2**40, field: "soon"}
    sealed = factory.seal(key.decode(), codec.encode(payload))
    transient_manager.get("sessions").set(key, sealed)
    assert app.get("/get").json == {"value": None, "new": True}


def test_session_changed_by_a_new_response_subscriber_is_saved(settings: dict[str, Any]) -> None:
    from pyramid.events import NewResponse

    def stamp(event: Any) -> None:
        if event.request.path == "/stamp":
            event.request.session["stamped"] = True

    with Configurator(settings=settings) as config:
        config.include("pyramid_transient.sessions")
        config.add_subscriber(stamp, NewResponse)
        config.add_route("set", "/set")
        config.add_view(set_value, route_name="set", renderer="json")
        config.add_route("stamp", "/stamp")
        config.add_view(lambda request: {}, route_name="stamp", renderer="json")
        config.add_route("get", "/get")
        config.add_view(
            lambda request: {"stamped": request.session.get("stamped")},
            route_name="get",
            renderer="json",
        )
        app = webtest.TestApp(config.make_wsgi_app())
    app.get("/set")
    app.get("/stamp")
    assert app.get("/get").json == {"stamped": True}


# ------------------------------------------------------------------ pyramid_session_redis compat


def test_cookie_signer_given_as_an_object_is_accepted_and_used(settings: dict[str, Any]) -> None:
    # Refused before ("must be a dotted name"); pyramid_session_redis accepts an object.
    from webob.cookies import SignedSerializer

    signer = SignedSerializer(
        "signer-secret", "my-salt.", "sha256", serializer=_StringSerializer()
    )
    app = build({**settings, "redis.sessions.cookie_signer": signer}, BASIC)
    app.get("/set", {"v": "signed"})
    assert isinstance(signer.loads(app.cookies["session"].encode()), str)
    assert app.get("/get").json == {"value": "signed", "new": False}


def test_cookie_signer_without_dumps_and_loads_is_refused_at_startup(
    settings: dict[str, Any],
) -> None:
    with pytest.raises(ConfigurationError, match=r"redis\.sessions\.cookie_signer must be"):
        build({**settings, "redis.sessions.cookie_signer": "builtins.len"}, BASIC)


def test_includeme_writes_resolved_dotted_settings_back_into_the_registry(
    settings: dict[str, Any],
) -> None:
    # pyramid_session_redis does this, and code reading the settings relies on it.
    app = build(
        {
            **settings,
            "redis.sessions.id_generator": "secrets.token_hex",
            "redis.sessions.func_check_response_allow_cookies": "builtins.bool",
        },
        BASIC,
    )
    import secrets

    registered = app.app.registry.settings
    assert registered["redis.sessions.id_generator"] is secrets.token_hex
    assert registered["redis.sessions.func_check_response_allow_cookies"] is bool
    app.get("/set")
    assert len(app.cookies["session"]) > 0


def test_from_redis_is_deprecated_but_reads_the_stored_payload(settings: dict[str, Any]) -> None:
    loaded: list[Any] = []

    def view(request: Any) -> dict[str, Any]:
        with pytest.warns(DeprecationWarning, match=r"from_redis\(\) is deprecated"):
            loaded.append(request.session.from_redis())
        return {}

    app = build(settings, {**BASIC, "/old": view})
    app.get("/set", {"v": "stored"})
    app.get("/old")
    assert loaded[0]["m"] == {"value": "stored"}


def test_session_ids_carry_48_random_bytes(transient_manager: RedisManager) -> None:
    import base64

    factory = TransientSessionFactory(secret="s", manager=transient_manager)
    ids = {factory.generate_id() for _ in range(1000)}
    assert len(ids) == 1000
    for session_id in list(ids)[:20]:
        assert len(base64.urlsafe_b64decode(session_id + "=" * (-len(session_id) % 4))) == 48
