"""The nested-dict store: values, paths, expiry and round trips, on the suite's real server."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
import redis
from pyramid.config import Configurator
from pyramid.request import Request, apply_request_extensions

from pyramid_transient.connection import RedisManager
from pyramid_transient.store import Lock, Proxy, get_store, root, section


@pytest.fixture
def store(transient_manager: RedisManager) -> Proxy:
    """A section of the store, on the manager (its key prefix, its ``store`` database)."""
    return section("s", redis=transient_manager)


@pytest.fixture
def client(transient_manager: RedisManager) -> Any:
    return transient_manager.get("store")


def data_key(manager: RedisManager, sect: str = "s", part: str = "data") -> str:
    return manager.keyspace("store").tagged(sect, part)


# ---------------------------------------------------------------------- values


def test_set_dict_then_val_returns_nested_structure(store: Proxy) -> None:
    value = {"a": 1, "b": {"c": [1, "x"], "d": {"e": None}}}
    store.set("doc", value)
    assert store.get("doc").val() == value


def test_val_of_a_leaf_inside_a_subtree(store: Proxy) -> None:
    store.set("doc", {"b": {"c": [1, "x"]}})
    assert store.get("doc.b.c").val() == [1, "x"]


def test_set_dict_replaces_subtree_entirely(store: Proxy) -> None:
    store.set("doc", {"a": 1, "b": 2})
    store.set("doc", {"c": 3})
    assert store.get("doc").val() == {"c": 3}


def test_replacing_dict_by_scalar_leaves_no_children(
    store: Proxy, transient_manager: RedisManager, client: Any
) -> None:
    store.set("doc", {"a": 1, "b": {"c": 2}})
    store.set("doc", 5)
    assert store.get("doc").val() == 5
    assert not store.get("doc.b.c").exists()
    assert client.hkeys(data_key(transient_manager)) == [b"doc."]


def test_writing_below_a_scalar_replaces_it_by_a_dict(store: Proxy) -> None:
    store.set("doc", 5)
    store.set("doc.a.b", 1)
    assert store.get("doc").val() == {"a": {"b": 1}}


def test_missing_path_is_none(store: Proxy) -> None:
    assert store.get("nothing.here").val() is None


def test_missing_path_gives_the_default(store: Proxy) -> None:
    assert store.get("nothing").val(default=7) == 7


def test_stored_none_is_told_apart_by_exists(store: Proxy) -> None:
    store.set("none", None)
    assert store.get("none").val(default=7) is None
    assert store.get("none").exists()
    assert not store.get("missing").exists()


def test_exists_is_true_for_a_scalar_and_a_subtree(store: Proxy) -> None:
    store.set("doc", {"a": {"b": 1}})
    assert store.get("doc.a.b").exists()
    assert store.get("doc.a").exists()
    assert store.get("doc").exists()
    assert store.exists()


def test_empty_dict_round_trips_and_exists(store: Proxy) -> None:
    store.set("doc", {"empty": {}})
    assert store.get("doc").val() == {"empty": {}}
    assert store.get("doc.empty").exists()


def test_dict_with_keys_that_are_not_path_elements_is_one_leaf(store: Proxy) -> None:
    odd = {(None,): [1, "bar", Decimal("1.0")], "with.dot": 1, "": 2}
    store.set("doc", {"odd": odd})
    assert store.get("doc.odd").val() == odd
    assert not store.get("doc.odd.with").exists()


def test_codec_types_round_trip(store: Proxy) -> None:
    value = {
        "when": dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC),
        "amount": Decimal("12.50"),
        "pair": (1, 2),
        "tags": {"a", "b"},
        "id": uuid.UUID(int=5),
        "raw": b"\x00\xff",
    }
    store.set("doc", value)
    assert store.get("doc").val() == value


def test_refused_value_raises_before_anything_changes(store: Proxy) -> None:
    store.set("doc", {"a": 1})
    with pytest.raises(TypeError, match="object"):
        store.set("doc", {"a": 2, "b": object()})
    assert store.get("doc").val() == {"a": 1}


@pytest.mark.parametrize("path", ["", ".a", "a.", "a..b", "."])
def test_bad_paths_raise_value_error(store: Proxy, path: str) -> None:
    with pytest.raises(ValueError, match=repr(path).replace(".", r"\.")):
        store.get(path)


@pytest.mark.parametrize("path", ["", ".a", "a.", "a..b"])
def test_bad_proxy_paths_raise_value_error(path: str, client: Any) -> None:
    with pytest.raises(ValueError, match="not valid"):
        Proxy(path, redis=client)


def test_section_name_with_a_dot_raises_value_error(client: Any) -> None:
    with pytest.raises(ValueError, match=r"'a\.b'"):
        section("a.b", redis=client)


def test_subtree_does_not_include_a_sibling_sharing_its_prefix(store: Proxy) -> None:
    store.set("a.b", {"x": 1})
    store.set("a.bc", 2)
    store.set("a.b-", 3)
    store.get("a.b").clear()
    assert store.get("a").val() == {"bc": 2, "b-": 3}


@pytest.mark.parametrize("glob", ["x*", "x?", "x[ab]", "x\\"])
def test_glob_characters_touch_only_their_own_subtree(store: Proxy, glob: str) -> None:
    store.set("g", {"xa": 1, "xb": 2, "x1": 3})
    store.set(f"g.{glob}", {"k": 4})
    store.get(f"g.{glob}").expire(100)
    store.delete(f"g.{glob}")
    assert store.get("g").val() == {"xa": 1, "xb": 2, "x1": 3}
    assert store.get("g.xa").time_to_live() == -1


def test_section_names_with_key_syntax_are_kept_apart(client: Any) -> None:
    section("a:b", redis=client).set("k", 1)
    section("a}{b", redis=client).set("k", 2)
    section("a", redis=client).set("b", {"k": 3})
    assert section("a:b", redis=client).val() == {"k": 1}
    assert section("a}{b", redis=client).val() == {"k": 2}
    assert section("a", redis=client).val() == {"b": {"k": 3}}


def test_delete_removes_only_that_subtree(store: Proxy) -> None:
    store.set("doc", {"a": {"x": 1}, "b": 2})
    store.delete("doc.a")
    assert store.get("doc").val() == {"b": 2}


def test_clear_removes_the_node_and_everything_below(store: Proxy, client: Any) -> None:
    store.set("doc", {"a": {"x": 1}, "b": 2})
    store.get("doc").expire(100)
    store.clear()
    assert store.val() is None
    assert client.dbsize() == 1  # only the section listing of the root remains


def test_iter_children_yields_direct_children_in_path_order(store: Proxy) -> None:
    store.set("doc", {"b": {"x": 1, "y": 2}, "a": 1, "c": {"z": {"w": 1}}})
    assert [c.key() for c in store.get("doc").iter_children()] == ["s.doc.a", "s.doc.b", "s.doc.c"]


def test_iter_children_of_a_leaf_is_empty(store: Proxy) -> None:
    store.set("leaf", 1)
    assert list(store.get("leaf").iter_children()) == []


def test_key_is_the_dotted_path(store: Proxy) -> None:
    assert store.get("a.b").key() == "s.a.b"


def test_keys_of_one_section_share_a_hash_tag(
    store: Proxy, transient_manager: RedisManager, client: Any
) -> None:
    store.set("doc", {"a": 1}, expire=100)
    store.get("doc").acquire()
    store.get("doc").release()
    prefix = transient_manager.settings.key_prefix
    keys = sorted(k.decode() for k in client.scan_iter(f"{prefix}:store:*"))
    assert keys == [
        f"{prefix}:store:sections",
        f"{prefix}:store:{{s}}:data",
        f"{prefix}:store:{{s}}:expiring",
        f"{prefix}:store:{{s}}:expiry",
        f"{prefix}:store:{{s}}:fences",
        f"{prefix}:store:{{s}}:paths",
        f"{prefix}:store:{{s}}:released",
    ]


def test_corrupt_value_is_treated_as_missing_and_logged(
    store: Proxy, transient_manager: RedisManager, client: Any, caplog: Any
) -> None:
    store.set("doc", {"a": 1, "b": 2})
    client.hset(data_key(transient_manager), "doc.a.", b"\xff{not json")
    with caplog.at_level(logging.WARNING, logger="pyramid_transient.store"):
        assert store.get("doc").val() == {"b": 2}
    assert "doc.a." in caplog.text


@pytest.mark.parametrize(
    "field", [b"\xff.", b"no-separator", b"a..", b"."], ids=["not-utf8", "no-dot", "empty", "dot"]
)
def test_a_corrupt_path_in_the_data_hash_is_skipped_and_logged(
    store: Proxy, transient_manager: RedisManager, client: Any, caplog: Any, field: bytes
) -> None:
    store.set("doc", {"a": 1})
    client.hset(data_key(transient_manager), field, b"1")
    client.zadd(data_key(transient_manager, part="paths"), {field: 0})
    with caplog.at_level(logging.WARNING, logger="pyramid_transient.store"):
        assert store.val() == {"doc": {"a": 1}}
        assert root(redis=transient_manager).val() == {"s": {"doc": {"a": 1}}}
        children = [c.key() for c in store.iter_children()]  # ends (no busy loop in Redis)
    assert "s.doc" in children
    assert all(Proxy(key, redis=client) for key in children)  # each a valid path
    assert "corrupt" in caplog.text


# ---------------------------------------------------------------------- add


def test_add_creates_a_missing_counter(store: Proxy) -> None:
    assert store.get("n").add(3) == 3
    assert store.get("n").val() == 3


def test_add_increments_an_int_exactly(store: Proxy) -> None:
    store.set("n", 2**62)
    assert store.get("n").add(5) == 2**62 + 5


def test_add_float_to_int_gives_a_float(store: Proxy) -> None:
    store.set("n", 1)
    result = store.get("n").add(0.5)
    assert result == 1.5
    assert isinstance(store.get("n").val(), float)


def test_add_keeps_float_type_on_whole_results(store: Proxy) -> None:
    store.set("n", 1.5)
    assert store.get("n").add(0.5) == 2.0
    assert isinstance(store.get("n").val(), float)


def test_add_float_is_python_float_addition(store: Proxy) -> None:
    store.set("n", 0.1)
    assert store.get("n").add(0.2) == 0.1 + 0.2


@pytest.mark.parametrize("count", ["1", None, True, Decimal(1), float("nan")])
def test_add_refuses_a_count_that_is_not_a_number(store: Proxy, count: Any) -> None:
    with pytest.raises(ValueError, match="add"):
        store.get("n").add(count)


@pytest.mark.parametrize("stored", ["text", [1], True, {"a": 1}])
def test_add_to_a_value_that_is_not_a_number_raises(store: Proxy, stored: Any) -> None:
    store.set("n", stored)
    with pytest.raises(ValueError, match="number"):
        store.get("n").add(1)
    assert store.get("n").val() == stored


def test_add_past_the_64_bit_range_raises(store: Proxy) -> None:
    store.set("n", 2**63 - 1)
    with pytest.raises(ValueError, match="range"):
        store.get("n").add(1)


# ---------------------------------------------------------------------- expiry


def test_set_with_expire_expires_the_whole_subtree(store: Proxy) -> None:
    store.set("doc", {"a": 1, "b": {"c": 2}}, expire=0.05)
    store.set("other", 1)
    time.sleep(0.08)
    assert not store.get("doc").exists()
    assert store.get("doc.b.c").val() is None
    assert store.val() == {"other": 1}


def test_expire_applies_to_the_whole_subtree(store: Proxy) -> None:
    store.set("doc", {"a": 1, "b": {"c": 2}})
    assert store.get("doc").expire(0.05) is True
    time.sleep(0.08)
    assert not store.get("doc.a").exists()
    assert not store.get("doc.b.c").exists()


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), 0, -1, "10"])
def test_expire_refuses_a_bad_number_of_seconds_naming_it(store: Proxy, seconds: Any) -> None:
    store.set("doc", 1)
    with pytest.raises(ValueError, match=f"not {seconds!r}"):
        store.get("doc").expire(seconds)
    with pytest.raises(ValueError, match=f"not {seconds!r}"):
        store.set("doc", 2, expire=seconds)
    assert store.get("doc").val() == 1
    assert store.get("doc").time_to_live() == -1


def test_expire_of_a_missing_path_returns_false(store: Proxy) -> None:
    assert store.get("missing").expire(10) is False
    assert store.get("missing").time_to_live() is None


def test_time_to_live_is_none_for_a_missing_path(store: Proxy) -> None:
    assert store.get("missing").time_to_live() is None


def test_time_to_live_is_minus_one_without_expiry(store: Proxy) -> None:
    store.set("doc", 1)
    assert store.get("doc").time_to_live() == -1


def test_time_to_live_counts_down_in_seconds(store: Proxy) -> None:
    store.set("doc", 1, expire=100)
    ttl = store.get("doc").time_to_live()
    assert ttl is not None
    assert 99 < ttl <= 100


def test_time_to_live_follows_an_ancestors_expiry(store: Proxy) -> None:
    store.set("doc", {"a": {"b": 1}})
    store.get("doc").expire(50)
    store.get("doc.a").expire(100)
    ttl = store.get("doc.a.b").time_to_live()
    assert ttl is not None
    assert 49 < ttl <= 50


def test_setting_a_node_again_replaces_its_expiry(store: Proxy) -> None:
    store.set("doc", 1, expire=100)
    store.set("doc", 2)
    assert store.get("doc").time_to_live() == -1


def test_writing_below_a_node_keeps_its_expiry(store: Proxy) -> None:
    store.set("doc", {"a": 1}, expire=100)
    store.set("doc.b", 2)
    ttl = store.get("doc.b").time_to_live()
    assert ttl is not None
    assert ttl > 99


def test_a_deleted_node_forgets_its_expiry(store: Proxy) -> None:
    store.set("doc", {"a": {"b": 1}, "z": 1})
    store.get("doc.a").expire(100)
    store.delete("doc.a.b")
    store.set("doc.a.c", 1)
    assert store.get("doc.a").time_to_live() == -1


def test_expired_subtree_is_freed_when_its_section_is_next_used(
    store: Proxy, transient_manager: RedisManager, client: Any
) -> None:
    store.set("doc", {"a": 1, "b": 2}, expire=0.03)
    store.set("keep", 1)
    time.sleep(0.05)
    store.get("keep").exists()
    assert client.hkeys(data_key(transient_manager)) == [b"keep."]
    assert client.zcard(data_key(transient_manager, part="expiry")) == 0


def test_section_expiry_bounds_the_redis_keys_themselves(
    store: Proxy, transient_manager: RedisManager, client: Any
) -> None:
    store.set("doc", {"a": 1})
    store.expire(100)
    pttl = client.pttl(data_key(transient_manager))
    assert 99_000 < pttl <= 100_000


# ---------------------------------------------------------------------- root


def test_root_val_gathers_every_section(client: Any) -> None:
    section("one", redis=client).set("a", 1)
    section("two", redis=client).set("b", {"c": 2})
    assert root(redis=client).val() == {"one": {"a": 1}, "two": {"b": {"c": 2}}}


def test_root_set_and_get_address_sections(client: Any) -> None:
    root(redis=client).set("one.a", 1)
    assert root(redis=client).get("one").val() == {"a": 1}


def test_root_clear_empties_every_section(client: Any) -> None:
    section("one", redis=client).set("a", 1)
    section("two", redis=client).set("b", 2)
    root(redis=client).clear()
    assert not root(redis=client).exists()
    assert root(redis=client).val() is None


def test_root_iter_children_lists_sections_that_hold_data(client: Any) -> None:
    section("one", redis=client).set("a", 1)
    section("two", redis=client).set("b", 2)
    section("two", redis=client).clear()
    assert [c.key() for c in root(redis=client).iter_children()] == ["one"]


def test_root_expire_needs_a_section(client: Any) -> None:
    with pytest.raises(ValueError, match="section"):
        root(redis=client).expire(1)


# ---------------------------------------------------------------------- binding


def test_bare_client_keys_have_no_prefix(client: Any) -> None:
    section("s", redis=client).set("a", 1)
    assert client.hgetall("store:{s}:data") == {b"a.": b"1"}


def test_manager_binding_uses_its_prefix_and_store_database(
    transient_manager: RedisManager,
) -> None:
    section("s", redis=transient_manager).set("a", 1)
    client = transient_manager.get("store")
    assert client.hgetall(data_key(transient_manager)) == {b"a.": b"1"}


def test_manager_binding_asks_the_manager_for_its_client_on_every_use(
    transient_manager: RedisManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a forked worker's manager hands out new clients: a bound proxy must not keep the old
    sect = section("s", redis=transient_manager)
    sect.set("a", 1)
    asked = []
    real_get = transient_manager.get

    def get(name: str = "default") -> Any:
        asked.append(name)
        return real_get(name)

    monkeypatch.setattr(transient_manager, "get", get)
    assert sect.get("a").val() == 1
    with sect.get("b"):
        sect.get("b").set("c", 2)
    assert asked and set(asked) == {"store"}
    assert len(asked) >= 4


def test_a_proxy_and_a_lock_bound_to_a_registry_use_that_apps_manager(
    transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    config = _config(transient_settings)
    section("s", redis=config.registry).set("a", 1)
    with Lock(config.registry, "s.a") as held:
        assert held.owned()
        key = transient_manager.keyspace("store").tagged("s", "locks")
        assert transient_manager.get("store").hkeys(key) == [b"a."]
    assert section("s", redis=transient_manager).val() == {"a": 1}


def _config(settings: dict[str, Any]) -> Configurator:
    config = Configurator(settings=settings)
    config.include("pyramid_transient.store")
    config.commit()
    return config


def test_proxy_without_redis_uses_the_running_apps_manager(
    transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    proxy = section("s")  # made at import time, before any app runs
    config = _config(transient_settings)
    config.begin()
    try:
        proxy.set("a", 1)
    finally:
        config.end()
    assert section("s", redis=transient_manager).val() == {"a": 1}


def test_request_store_is_the_root_bound_to_the_apps_manager(
    transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    config = _config(transient_settings)
    request = Request.blank("/")
    request.registry = config.registry
    apply_request_extensions(request)
    request.store.set("s.a", 1)
    assert request.store is request.store
    assert section("s", redis=transient_manager).val() == {"a": 1}
    assert get_store(config.registry).get("s.a").val() == 1


def test_store_settings_give_the_lock_timeouts(transient_settings: dict[str, Any]) -> None:
    settings = {**transient_settings, "transient.store.lock_expire_timeout": "7"}
    manager = RedisManager.from_settings(settings)
    try:
        lock = section("s", redis=manager).lock
        assert lock.timeout == 7.0
        assert lock.blocking_timeout == 0.5
    finally:
        manager.close()


def test_memory_backend_stores_subtrees(transient_memory: RedisManager) -> None:
    sect = section("s", redis=transient_memory)
    sect.set("doc", {"a": {"b": 1}, "c": 2}, expire=100)
    sect.delete("doc.c")
    assert sect.get("doc").val() == {"a": {"b": 1}}


# ---------------------------------------------------------------------- round trips


def _fill_unrelated(client: Any, count: int) -> None:
    """``count`` plain keys plus a big unrelated section, written in a few pipelines."""
    if not count:
        return
    pipe = client.pipeline(transaction=False)
    for start in range(0, count, 1000):
        pipe.mset({f"unrelated:{i}": i for i in range(start, start + 1000)})
    pipe.execute()
    big = {f"k{i}": i for i in range(count)}
    section("big", redis=client).set("tree", big)
    section("s", redis=client).set("sibling", big)


@pytest.fixture(params=[0, 10_000], ids=["empty-db", "10k-unrelated"])
def crowded(request: Any, client: Any) -> Proxy:
    _fill_unrelated(client, request.param)
    sect = section("s", redis=client)
    sect.set("doc", {f"leaf{i}": {"v": i} for i in range(100)})
    # Load every store script now, so that a test counting round trips does not count the
    # NOSCRIPT reload of a script no earlier test happened to run on this server.
    from pyramid_transient.store import SCRIPTS

    for source in SCRIPTS.sources.values():
        client.script_load(source)
    return sect.get("doc")


OPERATIONS = {
    "set": lambda p: p.set("sub", {f"k{i}": i for i in range(100)}),
    "val": lambda p: p.val(),
    "exists": lambda p: p.exists(),
    "expire": lambda p: p.expire(100),
    "time_to_live": lambda p: p.time_to_live(),
    "add": lambda p: p.get("counter").add(1),
    "iter_children": lambda p: list(p.iter_children()),
    "delete": lambda p: p.delete("leaf3"),
    "clear": lambda p: p.clear(),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_subtree_operation_is_one_round_trip(
    crowded: Proxy, round_trips: Any, operation: str
) -> None:
    crowded.exists()  # connect and load the scripts outside the count
    with round_trips() as rt:
        OPERATIONS[operation](crowded)
    assert rt.count == 1
    assert not any(w in " ".join(rt.commands).split() for w in ("SCAN", "KEYS"))


def test_val_of_100_leaves_is_one_script_call(crowded: Proxy, round_trips: Any) -> None:
    crowded.exists()
    with round_trips() as rt:
        assert len(crowded.val()) == 100
    assert rt.commands == ["EVALSHA"]


def test_root_val_is_two_round_trips(client: Any, round_trips: Any) -> None:
    for name in ("a", "b", "c"):
        section(name, redis=client).set("x", 1)
    root(redis=client).val()
    with round_trips() as rt:
        root(redis=client).val()
    assert rt.count == 2


# ---------------------------------------------------------------------- Cluster


@pytest.mark.cluster
def test_cluster_subtree_set_val_expire_and_lock(transient_cluster_manager: RedisManager) -> None:
    for name in ("alpha", "beta", "gamma"):
        sect = section(name, redis=transient_cluster_manager)
        sect.set("doc", {"a": {"b": 1}, "c": [1, 2]}, expire=100)
        with sect.get("doc"):
            sect.get("doc.n").add(2)
        assert sect.get("doc").val() == {"a": {"b": 1}, "c": [1, 2], "n": 2}
        assert sect.get("doc").time_to_live() is not None
    root_proxy = root(redis=transient_cluster_manager)
    assert sorted(root_proxy.val()) == ["alpha", "beta", "gamma"]


@pytest.mark.sentinel
def test_sentinel_subtree_set_val_and_lock(transient_sentinel_manager: RedisManager) -> None:
    sect = section("s", redis=transient_sentinel_manager)
    with sect.get("doc") as doc:
        doc.set("a", {"b": 1})
        doc.get("n").add(1)
    assert sect.get("doc").val() == {"a": {"b": 1}, "n": 1}


def test_a_section_can_hold_a_scalar_then_a_subtree(client: Any) -> None:
    root(redis=client).set("s", 5)
    assert section("s", redis=client).val() == 5
    root(redis=client).set("s.a", 1)
    assert section("s", redis=client).val() == {"a": 1}


def test_a_huge_section_expiry_is_refused_or_applied_never_half_written(client: Any) -> None:
    # _ms() accepts any finite positive number; 1e14 s makes the deadline >= 1e17 ms, which
    # Lua hands to PEXPIREAT as "1.0...e+17": the script fails after HSET/ZADD ran.
    try:
        root(redis=client).set("s", {"a": 1}, expire=1e14)
    except (ValueError, redis.ResponseError):
        # refused: then nothing may have been written
        assert not section("s", redis=client).exists()
    else:
        assert section("s", redis=client).val() == {"a": 1}


# ---------------------------------------------------------------------- layout


def test_each_script_is_a_lua_file_with_its_keys_and_argv_on_top() -> None:
    from importlib import resources

    from pyramid_transient.store import SCRIPTS
    from pyramid_transient.store._scripts import source

    files = resources.files("pyramid_transient.store")
    for name in SCRIPTS.sources:
        text = (files / f"{name}.lua").read_text(encoding="utf-8")
        head = text.split("\n\n")[0]
        assert head.startswith("-- ") and "KEYS" in head and "ARGV" in head, name
        full = source(name)
        assert full.startswith((files / "prelude.lua").read_text(encoding="utf-8"))
        assert full.endswith(text)
    for helper in ("prelude", "data", "locks"):
        assert (files / f"{helper}.lua").read_text(encoding="utf-8").startswith("-- ")
