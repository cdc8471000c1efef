"""The spine (binding.py): one failure vocabulary for every capability, on a real server.

Each capability's calls are run with the server killed (connections refused) and paused
with SIGSTOP (every reply times out): all raise ``Unavailable``, within the socket
timeout, with redis-py's error as ``__cause__``. Caches fail open instead.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import webtest
from dogpile.cache.api import NO_VALUE
from pyramid.config import Configurator
from pyramid.response import Response

from pyramid_transient import CorruptData, SessionUnavailable, TransientError, Unavailable
from pyramid_transient.binding import _CHECKOUT, bind, translate
from pyramid_transient.cache import BACKEND, CacheKeyGenerator, TransientRedisBackend
from pyramid_transient.connection import RedisManager
from pyramid_transient.invalidation import row_identity
from pyramid_transient.models import RedisModel
from pyramid_transient.safe import get_safe
from pyramid_transient.store import Proxy
from pyramid_transient.testing import RedisServer, test_settings

TIMEOUT = 0.3
FAST = {
    "transient.socket_timeout": str(TIMEOUT),
    "transient.socket_connect_timeout": str(TIMEOUT),
}


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A server of this module's own: its tests stop and pause it."""
    with RedisServer() as started:
        yield started


@pytest.fixture
def manager(server: RedisServer) -> Iterator[RedisManager]:
    server.start()  # a test before may have stopped it
    built = RedisManager.from_settings(test_settings(server.url, key_prefix="spine", **FAST))
    for name in built.names:
        built.get(name).flushdb()
    yield built
    built.close()


class Task(RedisModel):
    __storage_name__ = "spine_task"
    id: int
    title: str = ""


def _store_set(m: RedisManager) -> Any:
    return Proxy("jobs", redis=m).set("nightly", {"a": 1})


def _store_val(m: RedisManager) -> Any:
    return Proxy("jobs.nightly", redis=m).val()


def _store_lock(m: RedisManager) -> Any:
    with Proxy("jobs.nightly", redis=m):
        pass


def _model_save(m: RedisManager) -> Any:
    Task.objects.bind(m)
    return Task(id=1, title="x").save()


def _model_get(m: RedisManager) -> Any:
    Task.objects.bind(m)
    try:
        return Task.objects.get(1)
    except KeyError:  # ObjectNotFound: the call reached Redis, which is all this needs
        return None


def _model_filter(m: RedisManager) -> Any:
    Task.objects.bind(m)
    return Task.objects.filter(title="x")


class GenTask(RedisModel):
    __storage_name__ = "spine_gen_task"
    __indexes__ = ("title",)
    id: int | None = None
    title: str = ""


def _model_manager_call(name: str) -> Callable[[RedisManager], Any]:
    def call(m: RedisManager) -> Any:
        Task.objects.bind(m)
        return getattr(Task.objects, name)()

    return call


def _model_delete(m: RedisManager) -> Any:
    Task.objects.bind(m)
    return Task.objects.delete(Task(id=2))


def _model_delete_filter(m: RedisManager) -> Any:
    Task.objects.bind(m)
    return Task.objects.delete_filter(title="nobody")


def _model_generated_id(m: RedisManager) -> Any:
    GenTask.objects.bind(m)
    GenTask.__transient_meta__.id_blocks.forget(GenTask.objects._keys().ids)
    return GenTask(title="y").save()


def _model_rebuild_indexes(m: RedisManager) -> Any:
    GenTask.objects.bind(m)
    return GenTask.objects.rebuild_indexes()


def _safe_set(m: RedisManager) -> Any:
    get_safe("spine.tests", redis=m)["k"] = 1


def _safe_get(m: RedisManager) -> Any:
    return get_safe("spine.tests", redis=m).get("k")


def _safe_atomic(m: RedisManager) -> Any:
    with get_safe("spine.tests", redis=m).atomic() as txn:
        txn["k"] = txn.get("k", 0) + 1


CALLS: dict[str, Callable[[RedisManager], Any]] = {
    "store.set": _store_set,
    "store.val": _store_val,
    "store.lock": _store_lock,
    "models.save": _model_save,
    "models.get": _model_get,
    "models.filter": _model_filter,
    "models.count": _model_manager_call("count"),
    "models.all": _model_manager_call("all"),
    "models.delete_all": _model_manager_call("delete_all"),
    "models.delete": _model_delete,
    "models.delete_filter": _model_delete_filter,
    "models.generated_id": _model_generated_id,
    "models.rebuild_indexes": _model_rebuild_indexes,
    "safe.set": _safe_set,
    "safe.get": _safe_get,
    "safe.atomic": _safe_atomic,
}


def _raises_unavailable(call: Callable[[], Any]) -> tuple[Unavailable, float]:
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        call()
    return info.value, time.monotonic() - started


@pytest.mark.parametrize("name", CALLS)
def test_every_capability_raises_unavailable_when_the_server_is_gone(
    name: str, manager: RedisManager, server: RedisServer
) -> None:
    call = CALLS[name]
    call(manager)  # works while the server is up (and warms scripts and pools)
    server.stop()
    exc, elapsed = _raises_unavailable(lambda: call(manager))
    assert isinstance(exc, ConnectionError) and isinstance(exc, TransientError)
    assert isinstance(exc.__cause__, redis.RedisError)
    assert exc.database in ("store", "models", "safe")
    assert elapsed < 2.0


@pytest.mark.parametrize("name", CALLS)
def test_every_capability_raises_unavailable_when_the_server_stalls(
    name: str, manager: RedisManager, server: RedisServer
) -> None:
    call = CALLS[name]
    call(manager)
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        exc, elapsed = _raises_unavailable(lambda: call(manager))
    finally:
        server.process.send_signal(signal.SIGCONT)
    assert isinstance(exc.__cause__, redis.TimeoutError)
    # a store lock may time out once per attempt it makes; any call stays within a second
    assert elapsed < 1.0 + TIMEOUT


def test_session_unavailable_is_an_unavailable() -> None:
    assert issubclass(SessionUnavailable, Unavailable)


# --------------------------------------------------------------------------- translation


@pytest.mark.parametrize(
    "error",
    [
        redis.ConnectionError("Error 111 connecting"),
        redis.TimeoutError("Timeout reading from socket"),
        redis.exceptions.BusyLoadingError("LOADING Redis is loading the dataset in memory"),
        redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica."),
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.TryAgainError("TRYAGAIN Multiple keys request during rehashing"),
        redis.ResponseError("BUSY Redis is busy running a script."),
        redis.exceptions.MaxConnectionsError("Too many connections"),
        redis.exceptions.SlotNotCoveredError("slot 12 is not covered"),
    ],
    ids=lambda e: type(e).__name__ + ":" + str(e).split()[0],
)
def test_outage_errors_translate_to_unavailable(error: Exception) -> None:
    translated = translate(error, "store")
    assert isinstance(translated, Unavailable)
    assert translated.database == "store"


def test_wrongtype_translates_to_corrupt_data_naming_the_key() -> None:
    error = redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    translated = translate(error, "safe", "app:safe:{x}")
    assert isinstance(translated, CorruptData)
    assert translated.key == "app:safe:{x}" and "app:safe:{x}" in str(translated)


@pytest.mark.parametrize(
    "error", [redis.ResponseError("ERR unknown command"), redis.exceptions.DataError("bad")]
)
def test_other_errors_are_left_alone(error: Exception) -> None:
    assert translate(error, "store") is None


def test_bind_refuses_what_is_not_a_client() -> None:
    from pyramid_transient import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"needs a RedisManager"):
        bind(object(), "store")


# --------------------------------------------------------------------------- 503 view


def _app(manager_settings: dict[str, Any], *, own_view: bool = False) -> webtest.TestApp:
    def view(request: Any) -> Response:
        Proxy("page.hits", redis=request.registry).add(1)
        return Response("ok")

    def mine(exc: Unavailable, request: Any) -> Response:
        return Response("our own page", status=503)

    with Configurator(settings={**manager_settings, "redis.sessions.secret": "s"}) as config:
        config.include("pyramid_transient")
        config.add_route("page", "/")
        config.add_view(view, route_name="page")
        if own_view:
            config.add_exception_view(mine, context=Unavailable)
        app = config.make_wsgi_app()
    return webtest.TestApp(app)


def test_the_default_503_view_has_retry_after_and_shows_no_internals(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.start()
    settings = test_settings(server.url, key_prefix="spine503", **FAST)
    app = _app(settings)
    assert app.get("/").text == "ok"
    server.stop()
    with caplog.at_level(logging.WARNING, "pyramid_transient.views"):
        response = app.get("/", status=503)
    assert response.headers["Retry-After"] == "5"
    assert "try again" in response.text
    assert str(server.port) not in response.text and "127.0.0.1" not in response.text
    assert "store" in caplog.text  # the details go to the log


def test_an_app_overrides_the_503_view_with_its_own(server: RedisServer) -> None:
    server.start()
    app = _app(test_settings(server.url, key_prefix="spine503", **FAST), own_view=True)
    server.stop()
    assert app.get("/", status=503).text == "our own page"


# --------------------------------------------------------------------------- caches fail open


def _region(manager: RedisManager) -> Any:
    from pyramid_transient.cache import TransientRegion

    region = TransientRegion(name="spine")
    region.configure(
        BACKEND,
        expiration_time=60,
        arguments={"client": manager, "region": "spine", "lock_timeout": 5},
    )
    return region


@pytest.mark.parametrize("fault", ["gone", "stalled"])
def test_a_region_serves_uncached_values_during_an_outage_and_logs_once(
    fault: str, manager: RedisManager, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    region = _region(manager)
    built: list[int] = []

    def creator() -> int:
        built.append(1)
        return len(built)

    assert region.get_or_create("k", creator) == 1
    assert region.get_or_create("k", creator) == 1  # cached
    if fault == "gone":
        server.stop()
    else:
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
    try:
        with caplog.at_level(logging.WARNING, "pyramid_transient.cache"):
            assert region.get_or_create("k", creator) == 2
            assert region.get_or_create("k", creator) == 3  # built again: nothing cached
    finally:
        if fault == "stalled" and server.process is not None:
            server.process.send_signal(signal.SIGCONT)
    assert caplog.text.count("could not reach Redis") == 1


def test_a_region_value_of_the_wrong_type_is_a_miss_and_the_next_set_replaces_it(
    manager: RedisManager, caplog: pytest.LogCaptureFixture
) -> None:
    region = _region(manager)
    key = region.backend.key_mangler("k")
    manager.get("cache").hset(key, "foreign", "data")
    with caplog.at_level(logging.WARNING, "pyramid_transient.cache"):
        assert region.get("k") is NO_VALUE
        assert region.get_multi(["k"]) == [NO_VALUE]
        assert region.get_or_create("k", lambda: "fresh") == "fresh"
    assert key in caplog.text
    assert region.get("k") == "fresh"


def test_cache_key_degrades_during_an_outage(manager: RedisManager, server: RedisServer) -> None:
    generator = CacheKeyGenerator(manager)
    assert generator(row_identity("t", 1)) == generator(row_identity("t", 1))
    server.stop()
    assert generator(row_identity("t", 1)) != generator(row_identity("t", 1))


def test_a_poisoned_token_is_repaired_and_not_logged_as_an_outage(
    manager: RedisManager, caplog: pytest.LogCaptureFixture
) -> None:
    generator = CacheKeyGenerator(manager)
    identity = row_identity("t", 1)
    generator(identity)
    token = generator.store.key(identity)
    client = manager.get("cache")
    client.delete(token)
    client.rpush(token, "foreign")
    with caplog.at_level(logging.WARNING, "pyramid_transient.cache"):
        first = generator(identity)
    assert "corrupt" in caplog.text and "could not reach Redis" not in caplog.text
    assert generator(identity) == generator(identity) != first  # healed: caching again


# --------------------------------------------------------------------------- dogpile backend


def test_region_keys_of_any_type_and_text_keys_stay_distinct(manager: RedisManager) -> None:
    region = _region(manager)
    region.set(1, "int")
    region.set("1", "text")
    region.set((1, "a"), "tuple")
    assert (region.get(1), region.get("1"), region.get((1, "a"))) == ("int", "text", "tuple")


def test_the_backend_honours_distributed_lock_false(manager: RedisManager) -> None:
    backend = TransientRedisBackend(
        {"client": manager, "region": "r", "lock_timeout": 5, "distributed_lock": False}
    )
    assert backend.get_mutex("k") is None


def test_the_backend_refuses_lock_prefix_and_a_missing_client(manager: RedisManager) -> None:
    from pyramid_transient import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"lock_prefix"):
        TransientRedisBackend(
            {"client": manager, "region": "r", "lock_timeout": 5, "lock_prefix": "x"}
        )
    with pytest.raises(ConfigurationError, match=r"arguments\['client'\]"):
        TransientRedisBackend({"region": "r", "lock_timeout": 5})


# --------------------------------------------------------------------------- the pool


def test_threads_past_max_connections_wait_for_a_connection(server: RedisServer) -> None:
    server.start()
    manager = RedisManager.from_settings(
        test_settings(server.url, key_prefix="spinepool", **{"transient.max_connections": "4"})
    )
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                with Proxy("jobs.nightly", redis=manager) as job:
                    job["n"].add(1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert Proxy("jobs.nightly.n", redis=manager).val() == 30
    finally:
        manager.close()


def test_a_pool_that_stays_full_past_pool_timeout_is_unavailable(server: RedisServer) -> None:
    server.start()
    manager = RedisManager.from_settings(
        test_settings(
            server.url,
            key_prefix="spinepool",
            **{"transient.max_connections": "1", "transient.pool_timeout": "0.2"},
        )
    )
    pool = manager.get("store").connection_pool
    held = pool.get_connection(*_CHECKOUT)  # redis-py 5 wants a command name
    try:
        exc, elapsed = _raises_unavailable(lambda: Proxy("a", redis=manager).val())
        assert 0.15 < elapsed < 1.5
        assert exc.database == "store"
    finally:
        pool.release(held)
        manager.close()
