"""cache_key, regions and the Pyramid glue, against real Redis, PostgreSQL and SQLite."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
from pyramid import testing as pyramid_testing
from pyramid.request import Request, apply_request_extensions
from sqlalchemy import Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from pyramid_transient import cache, invalidation
from pyramid_transient.cache import CacheKeyGenerator, TransientRegion, get_region
from pyramid_transient.connection import RedisManager
from pyramid_transient.invalidation import (
    _backlog,
    pending_invalidations,
    register,
    row_identity,
    table_identity,
    token_store,
)
from pyramid_transient.testing import RedisServer, test_settings

SUFFIX = uuid.uuid4().hex[:6]


class Base(DeclarativeBase):
    pass


class Page(Base):
    __tablename__ = f"ck_pages_{SUFFIX}"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(50))


@pytest.fixture(scope="module")
def engine(database_url: str) -> Iterator[Any]:
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def factory(engine: Any, transient_manager: RedisManager) -> Iterator[sessionmaker[Session]]:
    with engine.begin() as conn:
        conn.execute(Page.__table__.delete())
    factory = sessionmaker(engine, expire_on_commit=False)
    listener = register(factory, transient_manager)
    yield factory
    listener.remove()


@pytest.fixture
def pages(factory: sessionmaker[Session]) -> list[Page]:
    with factory() as session:
        rows = [Page(id=i, title=f"page {i}") for i in range(1, 101)]
        session.add_all(rows)
        session.commit()
    return rows


@pytest.fixture
def cache_key(transient_manager: RedisManager) -> CacheKeyGenerator:
    return CacheKeyGenerator(transient_manager)


# --------------------------------------------------------------------------- plain values


def test_same_fragments_give_the_same_key(cache_key: CacheKeyGenerator) -> None:
    assert cache_key("page", 1, {"a": [1, 2]}) == cache_key("page", 1, {"a": [1, 2]})


def test_dict_order_does_not_change_the_key(cache_key: CacheKeyGenerator) -> None:
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})


def test_values_of_different_types_give_different_keys(cache_key: CacheKeyGenerator) -> None:
    values = [1, "1", 1.0, True, None, "None", [1], (1,), {"1": 1}, Decimal("1"), b"1"]
    assert len({cache_key(v) for v in values}) == len(values)


def test_fragment_boundaries_are_part_of_the_key(cache_key: CacheKeyGenerator) -> None:
    assert cache_key("ab", "c") != cache_key("a", "bc")
    assert cache_key(["a", "b"]) != cache_key("a", "b")


def test_dates_and_uuids_enter_the_key(cache_key: CacheKeyGenerator) -> None:
    some = uuid.uuid4()
    assert cache_key(dt.date(2024, 1, 1), some) == cache_key(dt.date(2024, 1, 1), some)
    assert cache_key(dt.date(2024, 1, 1)) != cache_key(dt.date(2024, 1, 2))


def test_plain_values_only_cost_no_round_trip(
    cache_key: CacheKeyGenerator, round_trips: Any
) -> None:
    with round_trips() as rt:
        cache_key("a", 1, [2])
    assert rt.count == 0


def test_an_unsupported_fragment_is_refused_before_any_round_trip(
    cache_key: CacheKeyGenerator, round_trips: Any
) -> None:
    with round_trips() as rt, pytest.raises(TypeError, match="cannot take the identity"):
        cache_key(row_identity("t", 1), object())
    assert rt.count == 0


# --------------------------------------------------------------------------- tokens


def test_a_plain_string_is_a_value_and_an_identity_a_token(
    cache_key: CacheKeyGenerator, transient_manager: RedisManager
) -> None:
    key_value, key_token = cache_key("r:t:1"), cache_key(row_identity("t", 1))
    token_store(transient_manager).invalidate([row_identity("t", 1)])
    assert cache_key("r:t:1") == key_value
    assert cache_key(row_identity("t", 1)) != key_token


def test_key_changes_when_an_instance_is_committed(
    cache_key: CacheKeyGenerator, factory: Any, pages: list[Page]
) -> None:
    before = cache_key("page", pages[0]), cache_key("page", pages[1])
    with factory() as session:
        session.get(Page, 1).title = "changed"
        session.commit()
    after = cache_key("page", pages[0]), cache_key("page", pages[1])
    assert after[0] != before[0]
    assert after[1] == before[1]


def test_key_of_a_class_changes_on_insert(
    cache_key: CacheKeyGenerator, factory: Any, pages: list[Page]
) -> None:
    before = cache_key("list", Page)
    with factory() as session:
        session.add(Page(id=500, title="new"))
        session.commit()
    assert cache_key("list", Page) != before


@pytest.mark.parametrize("n", [1, 10, 100])
def test_key_over_n_instances_is_one_round_trip_first_time_included(
    n: int,
    cache_key: CacheKeyGenerator,
    pages: list[Page],
    transient_manager: RedisManager,
    round_trips: Any,
) -> None:
    # Connect and load the script outside the count (a key over one token needs none).
    cache_key(row_identity("warm", 1), row_identity("warm", 2))
    fragments = ["list", Page, *pages[:n]]
    with round_trips() as rt:
        first = cache_key(*fragments)
    with round_trips() as again:
        second = cache_key(*fragments)
    assert (rt.count, again.count) == (1, 1)
    assert rt.commands == ["EVALSHA"]
    assert first == second
    store = token_store(transient_manager)
    assert store.client.exists(*(store.key(i) for i in [table_identity(Page.__table__)])) == 1


def test_key_over_one_instance_is_one_set_nx_get_first_time_included(
    cache_key: CacheKeyGenerator,
    pages: list[Page],
    factory: Any,
    transient_manager: RedisManager,
    round_trips: Any,
) -> None:
    store = token_store(transient_manager)
    token_key = store.key(row_identity(Page.__table__, 1))
    store.client.ping()
    with round_trips() as rt:
        first = cache_key("detail", pages[0])
    assert (rt.count, rt.commands) == (1, ["SET"])
    created = store.client.get(token_key)
    assert created is not None and 0 < store.client.ttl(token_key) <= store.ttl
    with round_trips() as again:
        assert cache_key("detail", pages[0]) == first
    assert (again.count, again.commands) == (1, ["SET"])
    assert store.client.get(token_key) == created  # read, never overwritten
    with factory() as session:
        session.get(Page, 1).title = "changed"
        session.commit()
    assert store.client.get(token_key) is None  # invalidated; the next read makes a new one
    with round_trips() as rt:
        after = cache_key("detail", pages[0])
    assert (rt.count, rt.commands) == (1, ["SET"])
    assert after != first and store.client.get(token_key) not in (None, created)


def test_the_same_instance_twice_reads_its_token_once(
    cache_key: CacheKeyGenerator, pages: list[Page], transient_manager: RedisManager
) -> None:
    calls: list[int] = []
    original = cache_key.store.digest

    def counting(identities: Any) -> Any:
        calls.append(len(identities))
        return original(identities)

    cache_key.store.digest = counting  # type: ignore[method-assign]
    cache_key(pages[0], pages[0], row_identity(Page.__table__, 1))
    assert calls == [1]


def test_redis_down_gives_a_fresh_key_without_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with RedisServer() as server:
        manager = RedisManager.from_settings(test_settings(server.url))
        server.stop()
        generator = CacheKeyGenerator(manager)
        with caplog.at_level(logging.WARNING):
            first = generator("page", row_identity("t", 1))
            second = generator("page", row_identity("t", 1))
        manager.close()
    assert first != second and len(first) == 40
    assert caplog.text.count("could not reach Redis") == 1  # one warning per outage


def test_pending_invalidations_travel_with_the_next_key(
    pages: list[Page], factory: Any, round_trips: Any
) -> None:
    with RedisServer() as server:
        manager = RedisManager.from_settings(test_settings(server.url))
        client = manager.get("cache")
        generator = CacheKeyGenerator(manager)
        listener = register(factory, manager)
        try:
            before = generator(pages[0])
            server.stop()
            with factory() as session:
                session.get(Page, 1).title = "while down"
                session.commit()
            _backlog.backlog_of(manager).cancel()
            assert pending_invalidations(manager) == 2
            server.start()
            client.script_load(invalidation.TOKENS_SCRIPT)  # a restarted server forgot it
            with round_trips() as rt:
                after = generator(pages[0])
            assert (rt.count, rt.commands) == (1, ["EVALSHA"])  # the DELs, then the read
            assert after != before
            assert pending_invalidations(manager) == 0
        finally:
            listener.remove()
            manager.close()


@pytest.mark.parametrize("n", [1, 3], ids=["one token (SET)", "three (script)"])
def test_cache_key_works_on_the_memory_backend(
    n: int, transient_memory: RedisManager, round_trips: Any
) -> None:
    generator = CacheKeyGenerator(transient_memory)
    store = token_store(transient_memory)
    generator(row_identity("warm", 1), row_identity("warm", 2))  # loads the script
    ids = [row_identity("t", i) for i in range(1, n + 1)]
    store.client.set(store.key(ids[0]), b"existing")
    with round_trips() as rt:
        before = generator(*ids)
    assert (rt.count, rt.commands) == (1, ["SET"] if n == 1 else ["EVALSHA"])
    assert store.client.get(store.key(ids[0])) == b"existing"  # never overwritten
    tokens = store.tokens(ids)
    assert store.digest(ids) == hashlib.sha1(b",".join(tokens)).hexdigest().encode()
    for identity in ids[1:]:
        assert 0 < store.client.ttl(store.key(identity)) <= store.ttl  # created, with a TTL
    assert generator(*ids) == before
    store.invalidate([ids[0]])
    assert generator(*ids) != before
    assert 0 < store.client.ttl(store.key(ids[0])) <= store.ttl


@pytest.mark.cluster
def test_cache_key_on_a_cluster_is_one_round_trip(
    transient_cluster_manager: RedisManager, round_trips: Any
) -> None:
    generator = CacheKeyGenerator(transient_cluster_manager)
    generator(row_identity("warm", 1), row_identity("warm", 2))  # loads the script
    fragments = [row_identity(f"t{i % 7}", i) for i in range(100)] + [table_identity("t")]
    with round_trips() as rt:
        generator(*fragments)
    assert (rt.count, rt.commands) == (1, ["EVALSHA"])
    with round_trips() as rt:
        generator("detail", row_identity("t0", 0))
    assert (rt.count, rt.commands) == (1, ["SET"])


# --------------------------------------------------------------------------- regions


@pytest.fixture
def region_settings(transient_settings: dict[str, Any]) -> dict[str, Any]:
    return {
        **transient_settings,
        "transient.cache.regions": "pages short",
        "transient.cache.region.short.expiration": "5",
        "transient.cache.lock_timeout": "7",
    }


@pytest.fixture
def regions(region_settings: dict[str, Any]) -> Iterator[dict[str, TransientRegion]]:
    manager = RedisManager.from_settings(region_settings)
    for name in ("default", "cache"):
        manager.get(name).flushdb()
    yield cache.make_regions(manager)
    manager.close()


def test_regions_come_from_settings_with_their_expiration(
    regions: dict[str, TransientRegion],
) -> None:
    assert sorted(regions) == ["default", "pages", "short"]
    assert regions["short"].expiration_time == 5
    assert regions["pages"].expiration_time == 3600


def test_region_values_are_stored_as_json(
    regions: dict[str, TransientRegion], transient_redis_url: str
) -> None:
    region = regions["pages"]
    region.set("k", {"when": dt.date(2024, 1, 2), "ids": (1, 2)})
    client = region.backend.writer_client
    raw = client.get(region.backend.key_mangler("k"))
    assert raw.split(b"|", 1)[1] == (
        b'{"when":{"__t__":"date","v":"2024-01-02"},"ids":{"__t__":"tuple","v":[1,2]}}'
    )
    assert region.get("k") == {"when": dt.date(2024, 1, 2), "ids": (1, 2)}


def test_region_keys_follow_the_key_layout(
    regions: dict[str, TransientRegion], region_settings: dict[str, Any]
) -> None:
    key = regions["pages"].backend.key_mangler("a key:with {braces}")
    prefix = region_settings["transient.key_prefix"]
    assert key == f"{prefix}:cache:pages:v:a%20key%3Awith%20%7Bbraces%7D"


@pytest.mark.parametrize("garbage", [b"not ours", b'{"ct": 1}|not json', b"\xff|\x00"])
def test_a_corrupt_region_value_is_a_miss(
    garbage: bytes, regions: dict[str, TransientRegion], caplog: pytest.LogCaptureFixture
) -> None:
    region = regions["pages"]
    region.backend.writer_client.set(region.backend.key_mangler("k"), garbage)
    with caplog.at_level(logging.WARNING):
        assert region.get_or_create("k", lambda: "fresh") == "fresh"
    assert "corrupt" in caplog.text


def test_fill_lock_has_the_configured_timeout(regions: dict[str, TransientRegion]) -> None:
    region = regions["pages"]
    client = region.backend.writer_client
    seen: list[int] = []

    def creator() -> str:
        seen.append(client.pttl(region.backend._locks + "k"))
        return "value"

    region.get_or_create("k", creator)
    assert len(seen) == 1 and 0 < seen[0] <= 7000


def test_get_or_create_for_takes_the_key_before_running_the_creator(
    regions: dict[str, TransientRegion],
    factory: Any,
    pages: list[Page],
    transient_manager: RedisManager,
) -> None:
    region = regions["pages"]
    generator = CacheKeyGenerator(transient_manager)

    def creator_racing_a_commit() -> str:
        with factory() as session:  # a commit lands while the old value is being built
            session.get(Page, 1).title = "new"
            session.commit()
        return "old"

    assert region.get_or_create_for(generator, ["p", pages[0]], creator_racing_a_commit) == "old"
    assert region.get_or_create_for(generator, ["p", pages[0]], lambda: "new") == "new"


# --------------------------------------------------------------------------- Pyramid


@pytest.fixture
def config(region_settings: dict[str, Any]) -> Iterator[Any]:
    config = pyramid_testing.setUp(settings=region_settings)
    config.include("pyramid_transient.cache")
    yield config
    pyramid_testing.tearDown()


def _request(config: Any) -> Request:
    request = Request.blank("/")
    request.registry = config.registry
    config.commit()
    apply_request_extensions(request)
    return request


def test_request_cache_key_is_one_generator_per_request(config: Any) -> None:
    request = _request(config)
    assert isinstance(request.cache_key, CacheKeyGenerator)
    assert request.cache_key is request.cache_key
    assert _request(config).cache_key is not request.cache_key


def test_get_region_takes_a_request_or_a_registry(config: Any) -> None:
    request = _request(config)
    assert get_region(request, "pages") is get_region(config.registry, "pages")


def test_unknown_region_lists_the_configured_ones(config: Any) -> None:
    with pytest.raises(LookupError, match="'default', 'pages', 'short'"):
        get_region(config.registry, "nope")


def test_sqlalchemy_session_setting_binds_the_hooks(
    region_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyramid_transient.demo import models

    bound: list[tuple[Any, Any]] = []
    monkeypatch.setattr(cache, "register", lambda t, r: bound.append((t, r)))
    name = "pyramid_transient.demo.models.session_factory"
    config = pyramid_testing.setUp(
        settings={**region_settings, "transient.cache.sqlalchemy_session": name}
    )
    try:
        config.include("pyramid_transient.cache")
    finally:
        pyramid_testing.tearDown()
    assert len(bound) == 1 and bound[0][0] is models.session_factory
    assert isinstance(bound[0][1], RedisManager)


def test_cache_key_never_raises_on_a_redis_error_it_can_answer(
    transient_manager: RedisManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = CacheKeyGenerator(transient_manager)

    def broken(identities: Any, *, digest: bool) -> Any:
        raise redis.TimeoutError("slow")

    # below the spine's translation, where redis-py's errors arise
    monkeypatch.setattr(generator.store, "_read_tokens", broken)
    assert generator(row_identity("t", 1)) != generator(row_identity("t", 1))


# --------------------------------------------------------------------------- review fixes


class _RunsOnUnpickle:
    """Unpickling this calls :func:`_unpickled`: evidence that a payload was unpickled."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_unpickled, ())


UNPICKLED: list[bool] = []


def _unpickled() -> str:
    UNPICKLED.append(True)
    return "executed"


def test_a_region_configured_directly_on_our_backend_never_pickles(
    transient_manager: RedisManager,
) -> None:
    import pickle

    from dogpile.cache.api import NO_VALUE
    from dogpile.cache.region import CacheRegion

    # No serializer given: dogpile would take the backend's (pickle, for RedisBackend).
    region = CacheRegion().configure(
        cache.BACKEND,
        arguments={
            "client": transient_manager.get("cache"),
            "keyspace": transient_manager.keyspace("cache"),
            "region": "direct",
            "lock_timeout": 5,
        },
    )
    region.set("k", {"when": dt.date(2024, 1, 2)})
    raw = region.backend.writer_client.get(region.backend.key_mangler("k"))
    assert raw.split(b"|", 1)[1] == b'{"when":{"__t__":"date","v":"2024-01-02"}}'
    assert region.get("k") == {"when": dt.date(2024, 1, 2)}
    metadata = raw.split(b"|", 1)[0]
    hostile = metadata + b"|" + pickle.dumps(_RunsOnUnpickle())
    region.backend.writer_client.set(region.backend.key_mangler("k"), hostile)
    assert region.get("k") is NO_VALUE
    assert UNPICKLED == []


@pytest.mark.parametrize(
    "garbage",
    [
        b'{}|"x"',  # no metadata fields
        b'{"ct": "x", "v": 2}|"x"',  # creation time not a number
        b'{"ct": null, "v": 2}|"x"',
        b'{"ct": 1e400, "v": 2}|"x"',  # infinite: never expires
        b'{"ct": true, "v": 2}|"x"',
        b"[" * 100_000 + b'|"x"',  # nested too deep for the JSON parser
    ],
    ids=["empty", "ct str", "ct null", "ct inf", "ct bool", "deep"],
)
def test_a_region_entry_with_corrupt_metadata_is_a_miss(
    garbage: bytes, regions: dict[str, TransientRegion], caplog: pytest.LogCaptureFixture
) -> None:
    from dogpile.cache.api import NO_VALUE

    region = regions["pages"]
    key = region.backend.key_mangler("k")
    with caplog.at_level(logging.WARNING):
        region.backend.writer_client.set(key, garbage)
        assert region.get("k") is NO_VALUE
        assert region.get_multi(["k"]) == [NO_VALUE]
        assert region.get_or_create("k", lambda: "fresh") == "fresh"
    assert "corrupt" in caplog.text


def _dead_cluster_settings(transient_settings: dict[str, Any]) -> dict[str, Any]:
    from pyramid_transient.testing import free_port

    settings = {k: v for k, v in transient_settings.items() if k != "transient.url"}
    return {**settings, "transient.cluster.nodes": f"127.0.0.1:{free_port()}"}


def test_request_cache_key_never_raises_when_a_cluster_is_unreachable_at_first_use(
    transient_settings: dict[str, Any],
) -> None:
    # redis-py's cluster client connects in its constructor: the first use of the cache
    # client while the cluster is down raises there, not in a command.
    config = pyramid_testing.setUp(settings=_dead_cluster_settings(transient_settings))
    try:
        config.include("pyramid_transient.cache")
        first = _request(config).cache_key("page", row_identity("t", 1))
        second = _request(config).cache_key("page", row_identity("t", 1))
    finally:
        pyramid_testing.tearDown()
    assert first != second and len(first) == 40


def test_an_outage_is_logged_once_for_every_request_of_the_app(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with RedisServer() as server:
        manager = RedisManager.from_settings(test_settings(server.url))
        server.stop()
        with caplog.at_level(logging.WARNING):
            for _ in range(3):  # request.cache_key: a generator per request
                CacheKeyGenerator(manager)("page", row_identity("t", 1))
        manager.close()
    assert caplog.text.count("could not reach Redis") == 1


def test_cache_key_never_raises_on_a_cluster_client_error(
    transient_manager: RedisManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    # redis-py's cluster errors (no node for a slot, ...) are not all RedisErrors.
    from redis.exceptions import SlotNotCoveredError

    generator = CacheKeyGenerator(transient_manager)

    def broken(identities: Any, *, digest: bool) -> Any:
        raise SlotNotCoveredError("slot 1 is not covered by the cluster")

    monkeypatch.setattr(generator.store, "_read_tokens", broken)
    assert generator(row_identity("t", 1)) != generator(row_identity("t", 1))


@pytest.mark.parametrize("timeout", [None, 0, -1, "30", float("inf"), True])
def test_the_backend_refuses_a_fill_lock_without_a_positive_timeout(
    timeout: Any, transient_manager: RedisManager
) -> None:
    arguments = {"client": transient_manager, "region": "r", "lock_timeout": timeout}
    if timeout is None:
        del arguments["lock_timeout"]
    with pytest.raises(ValueError, match=r"lock_timeout must be a positive number of seconds"):
        cache.TransientRedisBackend(arguments)


@pytest.mark.cluster
def test_regions_on_a_cluster(transient_cluster_manager: RedisManager) -> None:
    from dogpile.cache.api import NO_VALUE

    region = cache.make_regions(transient_cluster_manager)["default"]
    region.set_multi({f"k{i}": {"i": i} for i in range(20)})  # keys on several nodes
    assert region.get_multi([f"k{i}" for i in range(20)]) == [{"i": i} for i in range(20)]
    seen: list[int] = []

    def creator() -> str:
        seen.append(region.backend.writer_client.pttl(region.backend._locks + "new"))
        return "made"

    assert region.get_or_create("new", creator) == "made"
    assert len(seen) == 1 and seen[0] > 0  # the fill lock, with its timeout
    region.delete_multi([f"k{i}" for i in range(20)])
    assert region.get("k3") is NO_VALUE


def test_a_region_with_its_own_key_mangler_still_writes_under_our_prefix(
    transient_manager: RedisManager,
) -> None:
    from dogpile.cache.region import CacheRegion
    from dogpile.cache.util import sha1_mangle_key

    region = CacheRegion(key_mangler=sha1_mangle_key).configure(
        cache.BACKEND,
        arguments={"client": transient_manager, "region": "own", "lock_timeout": 5},
    )
    region.set("k", "v")
    region.set_multi({"a": 1, "b": 2})
    assert region.get_or_create("c", lambda: 3) == 3
    assert region.get_multi(["k", "a", "b", "c"]) == ["v", 1, 2, 3]
    prefix = f"{transient_manager.settings.key_prefix}:cache:own:v:"
    keys = sorted(k.decode() for k in transient_manager.get("cache").scan_iter())
    assert len(keys) == 4 and all(k.startswith(prefix) for k in keys), keys
    region.delete_multi(["a", "b"])
    region.delete("k")
    assert [k.decode() for k in transient_manager.get("cache").scan_iter()] == [
        prefix + sha1_mangle_key("c")
    ]
