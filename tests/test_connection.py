"""The connection manager against a real server."""

from __future__ import annotations

import uuid

import pytest
import redis

from pyramid_transient import RedisManager, UnknownDatabase
from pyramid_transient.testing import test_settings


def test_named_databases_are_isolated(transient_manager: RedisManager) -> None:
    transient_manager.get("sessions").set("k", "in-sessions")
    transient_manager.get("celery").set("k", "in-celery")
    assert transient_manager.get("sessions").get("k") == b"in-sessions"
    assert transient_manager.get("celery").get("k") == b"in-celery"
    assert transient_manager.db_number("sessions") == 14
    assert transient_manager.db_number("celery") == 15


def test_unknown_name_lists_configured_names(transient_manager: RedisManager) -> None:
    with pytest.raises(UnknownDatabase) as info:
        transient_manager.get("nope")
    assert "'celery'" in str(info.value) and "'sessions'" in str(info.value)
    assert info.value.name == "nope"


def test_round_trip_counter_counts_one_per_command_and_pipeline(
    transient_redis: redis.Redis, round_trips
) -> None:
    transient_redis.ping()  # connect outside the count
    with round_trips() as rt:
        transient_redis.set("a", 1)
        with transient_redis.pipeline() as pipe:
            pipe.get("a").get("b").execute()
    assert rt.count == 2
    assert rt.commands == ["SET", "MULTI GET GET EXEC"]


def test_known_name_that_is_not_mapped_falls_back_to_default() -> None:
    manager = RedisManager.from_settings({"transient.url": "redis://127.0.0.1:1"})
    assert manager.resolve("store") == "default"
    assert manager.db_number("store") == 0


def test_memory_url_is_shared_by_every_client_of_that_url() -> None:
    url = "memory://shared-by-test"
    first = RedisManager.from_settings({"transient.url": url, "transient.db.celery": "3"})
    second = RedisManager.from_settings({"transient.url": url, "transient.db.celery": "3"})
    first.get("celery").set("k", "v")
    assert second.get("celery").get("k") == b"v"
    assert second.get("default").get("k") is None  # another db of that server


def test_memory_urls_with_different_names_are_separate() -> None:
    a = RedisManager.from_settings({"transient.url": "memory://one-of-two"})
    b = RedisManager.from_settings({"transient.url": "memory://two-of-two"})
    a.get().set("k", "v")
    assert b.get().get("k") is None


def test_memory_backend_runs_lua(transient_memory: RedisManager) -> None:
    client = transient_memory.get()
    assert client.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "k", "v") == b"OK"
    assert client.get("k") == b"v"


def _app(settings: dict[str, str]):
    from pyramid.config import Configurator

    config = Configurator(settings={"redis.sessions.secret": "s", **settings})
    config.include("pyramid_transient")
    return config.make_wsgi_app()


def test_get_redis_on_request_and_registry_return_the_same_client(
    transient_settings: dict[str, str],
) -> None:
    from pyramid.request import Request
    from pyramid.scripting import prepare

    from pyramid_transient import get_redis

    app = _app(transient_settings)
    env = prepare(request=Request.blank("/"), registry=app.registry)
    try:
        request = env["request"]
        assert get_redis(request, "celery") is get_redis(app.registry, "celery")
        assert request.redis is get_redis(app.registry)
    finally:
        env["closer"]()


def test_request_redis_talks_to_the_default_database(transient_settings: dict[str, str]) -> None:
    from pyramid.request import Request
    from pyramid.scripting import prepare

    app = _app(transient_settings)
    env = prepare(request=Request.blank("/"), registry=app.registry)
    try:
        info = env["request"].redis.connection_pool.connection_kwargs
        assert info["db"] == 13
    finally:
        env["closer"]()


def _probe_app(settings: dict[str, str]):
    from pyramid.config import Configurator
    from pyramid.response import Response

    seen: list = []

    def probe(request):
        seen.append(request)
        return Response("ok")

    config = Configurator(settings={"redis.sessions.secret": "s", **settings})
    config.include("pyramid_transient")
    config.add_route("probe", "/probe")
    config.add_view(probe, route_name="probe")
    return config.make_wsgi_app(), seen


def test_request_attributes_do_not_give_each_request_its_own_class(
    transient_settings: dict[str, str],
) -> None:
    # A reified request property makes Pyramid build a new request class per request;
    # ours are plain attributes, set as the router creates the request.
    from pyramid.request import Request
    from webob import Request as WebObRequest

    app, seen = _probe_app(transient_settings)
    for _ in range(2):
        assert WebObRequest.blank("/probe").get_response(app).status_int == 200
    first, second = seen
    assert type(first) is Request and type(second) is Request
    assert first.redis is second.redis
    assert first.cache_key is first.cache_key and first.cache_key is not second.cache_key
    assert first.store is first.store and first.store is not second.store


@pytest.mark.parametrize(
    "settings",
    [
        {"transient.url": "redis://127.0.0.1:1"},
        {"transient.cluster.nodes": "127.0.0.1:1"},
        {"transient.sentinel.service": "mymaster", "transient.sentinel.nodes": "127.0.0.1:1"},
    ],
    ids=["standalone", "cluster", "sentinel"],
)
def test_a_view_that_does_not_use_redis_answers_while_redis_is_down(
    settings: dict[str, str],
) -> None:
    from webob import Request as WebObRequest

    app, seen = _probe_app(settings)
    assert WebObRequest.blank("/probe").get_response(app).status_int == 200
    with pytest.raises(redis.ConnectionError):
        seen[0].redis.ping()


def test_get_redis_without_include_says_what_to_do() -> None:
    from pyramid.registry import Registry

    from pyramid_transient import ConfigurationError, get_redis

    with pytest.raises(ConfigurationError, match=r"config.include\('pyramid_transient'\)"):
        get_redis(Registry())


def test_url_for_gives_the_database_of_the_name() -> None:
    manager = RedisManager.from_settings(
        {"transient.url": "redis://:s3cret@10.0.0.5:6380/0", "transient.db.celery": "3"}
    )
    assert manager.url_for("celery") == "redis://:s3cret@10.0.0.5:6380/3"
    assert manager.url_for() == "redis://:s3cret@10.0.0.5:6380/0"


def test_url_for_unix_socket_uses_db_query() -> None:
    manager = RedisManager.from_settings(
        {"transient.url": "unix:///run/redis.sock?db=0", "transient.db.celery": "3"}
    )
    assert manager.url_for("celery") == "unix:///run/redis.sock?db=3"


def test_password_stays_out_of_repr() -> None:
    manager = RedisManager.from_settings({"transient.url": "redis://user:s3cret@h:1"})
    assert "s3cret" not in repr(manager)
    assert "user:***@h:1" in repr(manager)


def test_keyspace_carries_prefix_and_capability(transient_manager: RedisManager) -> None:
    prefix = transient_manager.settings.key_prefix
    assert transient_manager.keyspace("store").key("a") == f"{prefix}:store:a"


def test_keyspace_of_unknown_name_is_an_error(transient_manager: RedisManager) -> None:
    with pytest.raises(UnknownDatabase):
        transient_manager.keyspace("store", "nope")


@pytest.mark.parametrize(
    ("args", "idempotent"),
    [
        (("GET", "k"), True),
        (("SET", "k", "v"), True),
        (("SET", "k", "v", "EX", 5), True),
        (("SET", "k", "v", "NX"), False),
        (("SET", "k", "v", "GET"), False),
        (("INCR", "k"), False),
        (("EVALSHA", "abc", 0), False),
        (("DEL", "k"), False),
        (("HGETALL", "k"), True),
        (("GETEX", "k", "EX", 60), True),
        ((b"SET", b"k", b"v", b"px", b"1500"), True),
        (("SET", "k", "v", "EX", 5, "NX"), False),
        (("SET", "k", "v", "KEEPTTL"), False),
        # redis-py 8's compare-and-set: sent twice after a lost reply, the second answers
        # nil and the caller is told its CAS failed although it succeeded.
        (("SET", "k", "new", "IFEQ", "old"), False),
        (("SET", "k", "new", "IFDEQ", "abcd"), False),
        (("SET", "k", "new", "EX", 5, "IFNE", "old"), False),
    ],
)
def test_only_idempotent_commands_are_retried(args: tuple[object, ...], idempotent: bool) -> None:
    from pyramid_transient.connection import _is_idempotent

    assert _is_idempotent(args) is idempotent


def test_timeouts_come_from_settings(transient_settings: dict[str, str]) -> None:
    manager = RedisManager.from_settings(
        {
            **transient_settings,
            "transient.socket_timeout": "0.3",
            "transient.socket_connect_timeout": "0.2",
        }
    )
    kwargs = manager.get().connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.3
    assert kwargs["socket_connect_timeout"] == 0.2
    assert kwargs["retry"]._retries == 0  # get_retries() is redis-py 5.1 and newer


def test_round_trip_counter_ignores_the_handshake_of_a_new_connection(
    transient_redis_url: str, round_trips
) -> None:
    client = redis.Redis.from_url(transient_redis_url, db=13)  # not connected yet
    try:
        with round_trips() as rt:
            client.set("a", 1)
        assert rt.commands == ["SET"]
    finally:
        client.close()


def test_close_forgets_the_clients_and_get_builds_new_ones(
    transient_settings: dict[str, str],
) -> None:
    manager = RedisManager.from_settings(transient_settings)
    first = manager.get("celery")
    assert manager.get("celery") is first
    first.ping()
    manager.close()
    second = manager.get("celery")
    assert second is not first
    assert second.ping()
    manager.close()


def test_database_number_in_url_does_not_override_named_databases(
    transient_redis_url: str,
) -> None:
    # docs/settings.rst: "A database number in the URL is ignored: databases come from
    # transient.db.*". redis-py's ConnectionPool.from_url lets the URL's db win over the
    # db= keyword, so every named database lands in the URL's database.
    settings = test_settings(transient_redis_url + "/15", key_prefix="review")
    manager = RedisManager.from_settings(settings)
    key = f"review-{uuid.uuid4().hex}"
    try:
        manager.get("sessions").set(key, b"1", ex=60)
        direct = redis.Redis.from_url(transient_redis_url, db=14)
        try:
            assert direct.get(key) == b"1", "sessions (db 14) wrote to the URL's db 15"
        finally:
            direct.delete(key)
            direct.close()
    finally:
        manager.get("celery").delete(key)  # db 15, where it landed
        manager.close()


def test_sentinel_url_for_brackets_ipv6_hosts() -> None:
    manager = RedisManager.from_settings(
        {"transient.sentinel.service": "mymaster", "transient.sentinel.nodes": "[::1]:26379"}
    )
    assert manager.url_for() == "sentinel://[::1]:26379/0"


def test_single_commands_take_the_lean_path_with_redis_pys_replies(
    transient_manager: RedisManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = transient_manager.get("default")
    plain = redis.Redis(connection_pool=client.connection_pool)  # redis-py's own path
    taken: list[str] = []
    lean = type(client)._send_lean

    def spy(self: object, *args: object, **options: object) -> object:
        taken.append(str(args[0]))
        return lean(self, *args, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(type(client), "_send_lean", spy)
    base = f"lean:{uuid.uuid4().hex}"

    def calls(c: redis.Redis, k: str) -> list[object]:
        return [
            c.set(k, "v"),
            c.set(k, "w", nx=True, get=True),
            c.set(k, "w", get=True),
            c.get(k),
            c.hset(k + "h", "f", "1"),
            c.hgetall(k + "h"),
            c.exists(k, k + "h"),
            c.hget(k + "h", "nope"),
            c.delete(k, k + "h"),
        ]

    replies = {"ours": calls(client, base + ":ours"), "redis-py": calls(plain, base + ":py")}
    assert len(taken) == 9
    assert replies["ours"][5] == replies["redis-py"][5] == {b"f": b"1"}
    assert replies["ours"] == replies["redis-py"]
    assert client.ping() is True and client.info("server")["redis_version"]
    assert len(taken) == 11
    with pytest.raises(redis.ResponseError):  # an error reply leaves the connection usable
        client.execute_command("HGET", base)
    assert client.ping() is True


def test_clients_the_lean_path_does_not_fit_take_redis_pys(transient_redis_url: str) -> None:
    from pyramid_transient.connection import TransientRedis

    retrying = TransientRedis.from_url(transient_redis_url)  # redis-py's default retries
    single = TransientRedis.from_url(
        transient_redis_url, single_connection_client=True, retry=redis.retry.Retry(
            redis.backoff.NoBackoff(), 0
        )
    )  # fmt: skip
    try:
        for client in (retrying, single):
            assert client.ping() is True
            assert client._lean is False
    finally:
        retrying.close()
        single.close()
