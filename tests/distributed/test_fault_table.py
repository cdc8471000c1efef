"""Every capability under every fault between the app and Redis (issue 17), as one table.

A real server behind :class:`FaultProxy`; each case warms the capability up (its
connection open, its scripts loaded), switches one fault on, makes one call, heals the
proxy and checks, on the server itself:

``refuse``
    the proxy stops listening and drops every connection: nothing reaches the server.
``stall``
    replies are held longer than the socket timeout: the command ran, its reply is late.
``cut``
    replies are cut in half and the connection closed: the command ran.
``drop``
    the reply to the capability's write is thrown away and the connection closed: the
    command ran, the client cannot know.

The outcome of each case is in :data:`EXPECTED`: the call fails fast with ``Unavailable``
(sessions: a 503), or, for the cache, fails open without raising; it sent its write
once; the write was applied as many times as the table says (never twice, never half:
a store subtree is whole, a model's index agrees with it); and once the proxy heals the
same manager and app work again, without a restart.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import webtest
from pyramid.config import Configurator

from faultproxy import FaultProxy
from pyramid_transient import RedisManager, Unavailable
from pyramid_transient.cache import CacheKeyGenerator
from pyramid_transient.connection import get_manager
from pyramid_transient.invalidation import pending_invalidations, row_identity, token_store
from pyramid_transient.models import RedisModel
from pyramid_transient.safe import Safe
from pyramid_transient.store import section
from pyramid_transient.testing import RedisServer, test_settings

TIMEOUT = 0.2
#: "Fast": the timeout plus room for a loaded machine, far below redis-py's defaults.
FAST = 0.8
FAST_SETTINGS = {
    "transient.socket_timeout": str(TIMEOUT),
    "transient.socket_connect_timeout": str(TIMEOUT),
    "redis.sessions.secret": "fault-table",
    "transient.sessions.save_before_response": "true",
}
FAULTS = ("refuse", "stall", "cut", "drop")


class Proxy(FaultProxy):
    """:class:`FaultProxy` that can also refuse connections, on the same port."""

    def refuse(self) -> None:
        self._listener.close()  # its accept loop ends
        with self._lock:
            socks = list(self._sockets)
            self._sockets.clear()
        self._close(*socks)

    def listen_again(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.05)
        self._spawn(self._accept_loop)


class Item(RedisModel):
    __storage_name__ = "fault_table_item"
    __indexes__ = ("status",)
    id: int
    n: int = 0
    status: str = ""


# ---------------------------------------------------------------------- the capabilities


@dataclass
class World:
    """What one case talks through (the proxy) and checks with (the server itself)."""

    proxy: Proxy
    manager: RedisManager  # through the proxy
    direct: RedisManager  # the same keys, straight to the server
    app: webtest.TestApp  # through the proxy
    safe: Safe  # through the proxy: one object, as a module's safe is (it prepares once)


@dataclass
class Capability:
    """One call of a capability, how to read what it wrote, and the command it writes with."""

    #: The command whose reply ``drop`` loses.
    writes: bytes
    #: Warm up; make the call under the fault; read the state (straight from the server).
    warm: Callable[[World], None]
    call: Callable[[World, int], Any]
    state: Callable[[World], Any]
    #: A cache call fails open instead of raising.
    fails_open: bool = False


def _app(settings: dict[str, Any]) -> webtest.TestApp:
    def incr(request: Any) -> dict[str, Any]:
        request.session["n"] = request.session.get("n", 0) + 1
        return {"n": request.session["n"]}

    def read(request: Any) -> dict[str, Any]:
        return {"n": request.session.get("n", 0)}

    with Configurator(settings=settings) as config:
        config.include("pyramid_transient")
        config.add_route("incr", "/incr")
        config.add_route("read", "/read")
        config.add_view(incr, route_name="incr", renderer="json")
        config.add_view(read, route_name="read", renderer="json")
        return webtest.TestApp(config.make_wsgi_app())


def _session_call(w: World, n: int) -> Any:
    answer = w.app.get("/incr", status="*")
    if answer.status_int != 200:
        raise Unavailable(f"answered {answer.status}", database="sessions")
    return answer.json["n"]


def _session_state(w: World) -> Any:
    # read after the proxy healed, through the app (the session's cookie is its)
    return w.app.get("/read").json["n"]


def _safe_atomic(w: World, n: int) -> None:
    for attempt in w.safe.atomic():
        with attempt as s:
            s["count"] = s.get("count", 0) + 1


def _tree(n: int) -> dict[str, Any]:
    return {"a": n, "b": {"c": n, "d": [n, n]}, "e": {"f": {"g": n}}}


def _store_state(w: World) -> Any:
    tree = section("faults", w.direct).get("tree").val()
    # never half written: old or new, whole
    assert tree is None or tree == _tree(tree["a"]), tree
    return None if tree is None else tree["a"]


def _model_state(w: World) -> Any:
    Item.objects.bind(w.direct)
    try:
        objects = Item.objects.all()
        # the index agrees with the objects: nothing half written
        for status in {o.status for o in objects} | {"s0", "s1"}:
            assert sorted(o.id for o in Item.objects.filter(status=status)) == sorted(
                o.id for o in objects if o.status == status
            )
        assert Item.objects.count() == len(objects)
        return (Item.objects.get(1).n, Item.objects.get(1)._version)
    finally:
        Item.objects.bind(w.manager)


def _model_save(w: World, n: int) -> None:
    Item.objects.bind(w.manager)
    Item(id=1, n=n, status=f"s{n % 2}").save()


IDENTITY = row_identity("fault_rows", 1)


def _key(w: World, n: int) -> str:
    return CacheKeyGenerator(w.manager)("page", IDENTITY)


def _invalidate(w: World, n: int) -> bool:
    return token_store(w.manager).invalidate([IDENTITY])


def _real_key(w: World) -> str:
    return CacheKeyGenerator(w.direct)("page", IDENTITY)


CAPABILITIES: dict[str, Capability] = {
    "sessions": Capability(b"SET", lambda w: _session_call(w, 0), _session_call, _session_state),
    "cache_key": Capability(b"SET", lambda w: _key(w, 0), _key, _real_key, fails_open=True),
    "invalidate": Capability(
        b"DEL", lambda w: _key(w, 0), _invalidate, _real_key, fails_open=True
    ),
    "safe_set": Capability(
        b"HSET",
        lambda w: w.safe.__setitem__("k", 0),
        lambda w, n: w.safe.__setitem__("k", n),
        lambda w: Safe("fault.table", w.direct).get("k"),
    ),
    "safe_atomic": Capability(
        b"EVALSHA",
        lambda w: _safe_atomic(w, 0),
        _safe_atomic,
        lambda w: Safe("fault.table", w.direct).get("count"),
    ),
    "store_set": Capability(
        b"EVALSHA",
        lambda w: section("faults", w.manager).set("tree", _tree(0)) and None,
        lambda w, n: section("faults", w.manager).set("tree", _tree(n)),
        _store_state,
    ),
    "store_add": Capability(
        b"EVALSHA",
        lambda w: section("faults", w.manager).get("counter").add(1) and None,
        lambda w, n: section("faults", w.manager).get("counter").add(1),
        lambda w: section("faults", w.direct).get("counter").val(),
    ),
    "models_save": Capability(b"EVALSHA", lambda w: _model_save(w, 0), _model_save, _model_state),
}


#: (capability, fault) -> how many times the faulted call's write reached the server.
#: ``refuse``: never (nothing reached it). ``stall`` and ``cut`` meet the first reply: of
#: the write itself (it ran, once), or of the read a session load or an atomic block
#: makes first (the write was never sent). ``drop`` loses the write's own reply: it ran,
#: once. The cache rows count the token command that ran (it is harmless either way).
ROWS = {
    #               refuse stall cut drop
    "sessions":     (0,     0,    0,  1),
    "cache_key":    (0,     1,    1,  1),
    "invalidate":   (0,     1,    1,  1),
    "safe_set":     (0,     1,    1,  1),
    "safe_atomic":  (0,     0,    0,  1),
    "store_set":    (0,     1,    1,  1),
    "store_add":    (0,     1,    1,  1),
    "models_save":  (0,     1,    1,  1),
}  # fmt: skip
EXPECTED = {(name, fault): row[i] for name, row in ROWS.items() for i, fault in enumerate(FAULTS)}


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with RedisServer() as started:
        yield started


@pytest.fixture
def world(server: RedisServer) -> Iterator[World]:
    proxy = Proxy(server.port)
    prefix = f"ft{time.monotonic_ns() % 10**9}"
    settings = test_settings(f"redis://127.0.0.1:{proxy.port}", key_prefix=prefix, **FAST_SETTINGS)
    manager = RedisManager.from_settings(settings)
    direct = RedisManager.from_settings(test_settings(server.url, key_prefix=prefix))
    app = _app(settings)
    yield World(proxy, manager, direct, app, Safe("fault.table", manager))
    Item.objects.unbind()
    get_manager(app.app.registry).close()
    manager.close()
    direct.close()
    proxy.stop()


def _switch_on(proxy: Proxy, fault: str, command: bytes) -> None:
    if fault == "refuse":
        proxy.refuse()
    elif fault == "stall":
        proxy.stall = 1.0
    elif fault == "cut":
        proxy.cut_mid_reply = True
    else:
        proxy.lose_replies(command)


def _heal(proxy: Proxy, fault: str) -> None:
    if fault == "refuse":
        proxy.listen_again()
    proxy.stall = 0.0
    proxy.cut_mid_reply = False


def _counted(before: Any, after: Any, name: str) -> int:
    """How many times the faulted write was applied, from the state before and after."""
    if name in ("sessions", "safe_atomic", "store_add"):
        return int(after or 0) - int(before or 0)  # counters: +1 per application
    if name == "models_save":
        return after[1] - before[1]  # the version moves by one per application
    if name == "safe_set":
        return int(after == 1)
    if name == "store_set":
        return int(after == 1)
    raise AssertionError(name)


# ---------------------------------------------------------------------- the table


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", list(CAPABILITIES))
def test_fault(world: World, name: str, fault: str) -> None:
    capability = CAPABILITIES[name]
    capability.warm(world)
    if name == "safe_atomic":
        _safe_atomic(world, 0)  # the counter exists: a lost commit is told from none
    before = capability.state(world)
    sent_before = world.proxy.count(capability.writes)
    _switch_on(world.proxy, fault, capability.writes)
    started = time.monotonic()
    try:
        if capability.fails_open:
            result = capability.call(world, 1)  # never raises
        else:
            with pytest.raises(Unavailable):
                capability.call(world, 1)
    finally:
        elapsed = time.monotonic() - started
        _heal(world.proxy, fault)
    assert elapsed < FAST, f"{name} under {fault} took {elapsed:.2f} s"
    sent = world.proxy.count(capability.writes) - sent_before

    if name == "cache_key":
        assert result != before  # a key never seen: a miss, never a stale page
        assert capability.call(world, 2) == before  # healed: the real key again
        return
    if name == "invalidate":
        assert result is False  # not acknowledged: kept for a retry
        assert pending_invalidations(world.manager) == 1
        assert _key(world, 2) != before  # healed: the next round trip carries the retry
        assert pending_invalidations(world.manager) == 0
        assert _real_key(world) != before
        return

    expected = EXPECTED[(name, fault)]
    # sent once at most: a write whose reply was lost, late or cut is never re-sent
    assert sent == expected, f"{name} under {fault}: sent {sent} times"
    after = capability.state(world)
    assert _counted(before, after, name) == expected
    # healed: the same manager (and app) works again, and applies the next call once
    capability.call(world, 2)
    again = capability.state(world)
    if name in ("sessions", "safe_atomic", "store_add", "models_save"):
        assert _counted(after, again, name) == 1
    else:
        assert again == 2


def test_the_table_covers_every_capability_and_fault() -> None:
    assert set(EXPECTED) == {(name, fault) for name in CAPABILITIES for fault in FAULTS}
