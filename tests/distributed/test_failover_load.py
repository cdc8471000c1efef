"""Failover under load, on Sentinel and on Cluster (issue 17).

A client loop writes sessions, cache invalidations, safe entries, store values and models
while a master is killed, after its replica was made to lag: the replica is stopped
(``SIGSTOP``) and the master drops its link (``CLIENT KILL TYPE replica``), so every write
the master acknowledges from then on exists on the master only, then the master is killed
(``SIGKILL``) and the replica resumed and promoted. Every group is this module's own,
started once: the scenarios damage them.

What each scenario proves, on the same manager and apps throughout (no restart):

* once the group is healthy again, every call of every capability succeeds;
* every write acknowledged *with the capability's replica wait* (sessions with
  ``wait_replicas`` and ``save_before_response``, the safe with ``wait_replicas``, cache
  invalidations) is readable afterwards, or a later write of the same key is;
* no cache key taken before an acknowledged invalidation is computed again afterwards
  (a page would be served stale);
* no store subtree and no model or index is left half written;
* on Cluster, keys on the shards whose master stayed up never stop working, for any
  capability, even with the scripts flushed from those shards during the outage.

The windows (first to last failure after the kill) and the writes acknowledged without a
replica wait and lost are printed, for docs/scaling.rst.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import webtest
from pyramid.config import Configurator
from pyramid.interfaces import ISessionFactory

from pyramid_transient import RedisManager, TransientError
from pyramid_transient.cache import CacheKeyGenerator, get_region
from pyramid_transient.invalidation import pending_invalidations, row_identity, token_store
from pyramid_transient.models import RedisModel
from pyramid_transient.safe import Safe
from pyramid_transient.store import section
from pyramid_transient.testing import RedisClusterGroup, RedisServer, SentinelGroup
from pyramid_transient.testing._groups import ask, info_fields, wait_until

pytestmark = pytest.mark.slow

#: The replica wait of every capability that has one, and how long it waits.
WAIT = {"replicas": 1, "timeout": "1"}
#: Seconds of load before the lag, of lag before the kill, and after the group healed.
WARM, LAG, AFTER = 1.0, 1.0, 1.5
TAGS_PER_SHARD = 2


# ---------------------------------------------------------------------- a Cluster with replicas


class ReplicatedCluster(RedisClusterGroup):
    """:class:`RedisClusterGroup` plus one replica per master, and a master to kill."""

    def __init__(self, masters: int = 3, **kwargs: Any) -> None:
        super().__init__(masters, **kwargs)
        self.replicas: dict[int, RedisServer] = {}  # master port -> its replica
        self.killed: RedisServer | None = None

    def _node_ok(self, port: int) -> bool:
        info = info_fields(ask(port, "CLUSTER", "INFO"))
        return (
            info.get("cluster_state") == "ok"
            and info.get("cluster_slots_ok") == str(self.SLOTS)
            and info.get("cluster_known_nodes") == str(len(self.live()))
        )

    def live(self) -> list[RedisServer]:
        return [s for s in [*self.servers, *self.replicas.values()] if s.process is not None]

    def start(self, timeout: float = 30.0) -> ReplicatedCluster:
        super().start(timeout)
        try:
            masters = list(self.servers)
            for index, master in enumerate(masters):
                replica = self._start_node(len(masters) + index)
                self.replicas[master.port] = replica
                meet: list[Any] = ["CLUSTER", "MEET", "127.0.0.1", master.port]
                if self.binary.at_least(7):
                    meet.append(self._bus_ports[master.port])
                ask(replica.port, *meet)
            for master in masters:
                replica = self.replicas[master.port]
                master_id = ask(master.port, "CLUSTER", "MYID")
                wait_until(
                    f"node {replica.port} to learn of {master.port}",
                    functools.partial(self._knows, replica.port, master_id),
                    timeout,
                )
                ask(replica.port, "CLUSTER", "REPLICATE", master_id)
            for replica in self.replicas.values():
                wait_until(
                    f"replica {replica.port} to sync",
                    functools.partial(self._replica_up, replica.port),
                    timeout,
                )
            self.wait_ok(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _start_node(self, index: int) -> RedisServer:
        # Without it every node refuses every key while one shard has no master (between
        # the failure report and the promotion): see docs/scaling.rst.
        server = super()._start_node(index)
        ask(server.port, "CONFIG", "SET", "cluster-require-full-coverage", "no")
        server.args += ["--cluster-require-full-coverage", "no"]  # for a restart
        return server

    @staticmethod
    def _knows(port: int, node_id: str) -> bool:
        return node_id in str(ask(port, "CLUSTER", "NODES"))

    @staticmethod
    def _replica_up(port: int) -> bool:
        info = info_fields(ask(port, "INFO", "replication"))
        if info.get("role") != "slave" or info.get("master_link_status") != "up":
            return False
        # and counted by its master (what WAIT counts): online, not still loading
        master = info_fields(ask(int(info["master_port"]), "INFO", "replication"))
        return any(
            re.search(rf"port\W+{port}\b", value) is not None and "online" in value
            for name, value in master.items()
            if name.startswith("slave")
        )

    def wait_ok(self, timeout: float = 30.0) -> None:
        for server in self.live():
            wait_until(
                f"cluster_state:ok on 127.0.0.1:{server.port}",
                functools.partial(self._node_ok, server.port),
                timeout,
            )

    def kill_master(self, master: RedisServer, *, then: Callable[[], None]) -> RedisServer:
        """Kill ``master``, call ``then()``, wait until its replica took its slots."""
        replica = self.replicas.pop(master.port)
        master.kill()
        self.killed = master
        then()
        self.servers[self.servers.index(master)] = replica
        wait_until(
            f"replica {replica.port} to become master",
            lambda: info_fields(ask(replica.port, "INFO", "replication")).get("role") == "master",
            30,
        )
        # the killed node is still known (failed) until it returns
        for server in self.live():
            wait_until(
                f"cluster_state:ok on 127.0.0.1:{server.port}",
                functools.partial(self._state_ok, server.port),
                30,
            )
        return replica

    @staticmethod
    def _state_ok(port: int) -> bool:
        info = info_fields(ask(port, "CLUSTER", "INFO"))
        return info.get("cluster_state") == "ok" and info.get("cluster_slots_ok") == "16384"

    def restore(self, new_master: RedisServer, timeout: float = 30.0) -> None:
        """Restart the killed node: it finds its slots taken and replicates their owner."""
        killed, self.killed = self.killed, None
        if killed is None:
            return
        killed.start()
        self.replicas[new_master.port] = killed
        wait_until(
            f"node {killed.port} to replicate {new_master.port}",
            functools.partial(self._replica_up, killed.port),
            timeout,
        )
        self.wait_ok(timeout)

    def flushall(self) -> None:
        for server in self.servers:
            ask(server.port, "FLUSHALL")

    def stop(self) -> None:
        super().stop()
        for replica in self.replicas.values():
            replica.stop()
        if self.killed is not None:
            self.killed.stop()


# ---------------------------------------------------------------------- what the loop records


@dataclass
class Op:
    """One call of the loop: what it wrote, when, and how it ended."""

    capability: str
    shard: str  # "failing", "healthy" or "" (Sentinel: one shard)
    key: Any
    value: Any
    waited: bool  # acknowledged with a replica wait when ok
    started: float
    ended: float = 0.0
    ok: bool = False
    error: str = ""


@dataclass
class Load:
    """Threads calling one capability each until stopped; every call recorded."""

    ops: list[Op] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    crashed: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, name: str, step: Callable[[int], list[Op]]) -> None:
        def loop() -> None:
            seq = 0
            try:
                while not self.stop.is_set():
                    seq += 1
                    done = step(seq)
                    with self.lock:
                        self.ops.extend(done)
                    time.sleep(0.002)
            except BaseException as exc:  # a bug of the test: fail it, do not hang it
                self.crashed.append(exc)

        thread = threading.Thread(target=loop, name=f"load-{name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def finish(self) -> list[Op]:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not self.crashed, self.crashed
        return list(self.ops)


def call(op: Op, fn: Callable[[], Any]) -> Op:
    try:
        result = fn()
    except (TransientError, redis.RedisError) as exc:
        op.error = f"{type(exc).__name__}: {exc}"[:200]
    else:
        op.ok = result is not False
        if not op.ok:
            op.error = "not acknowledged"
    op.ended = time.monotonic()
    return op


def windows(ops: list[Op], killed_at: float) -> dict[tuple[str, str], tuple[int, int, float]]:
    """(capability, shard) -> (calls, failures, seconds from the kill to the last failure)."""
    table: dict[tuple[str, str], tuple[int, int, float]] = {}
    for op in ops:
        calls, failures, window = table.get((op.capability, op.shard), (0, 0, 0.0))
        if not op.ok:
            failures += 1
            window = max(window, op.ended - killed_at)
        table[(op.capability, op.shard)] = (calls + 1, failures, window)
    return table


# ---------------------------------------------------------------------- the app and its loops


def session_app(settings: dict[str, Any]) -> Any:
    def put(request: Any) -> dict[str, Any]:
        # every write adds its own entry: a lost one stays missing
        request.session["seen"] = [*request.session.get("seen", []), int(request.matchdict["n"])]
        factory = request.registry.getUtility(ISessionFactory)
        return {"key": factory.key(request.session.session_id)}

    def get(request: Any) -> dict[str, Any]:
        return {"seen": request.session.get("seen", [])}

    with Configurator(settings=settings) as config:
        config.include("pyramid_tm")
        config.include("pyramid_transient")
        config.add_route("put", "/put/{n}")
        config.add_route("get", "/get")
        config.add_view(put, route_name="put", renderer="json")
        config.add_view(get, route_name="get", renderer="json")
        return config.make_wsgi_app()


def model_class(storage: str) -> type[RedisModel]:
    class Item(RedisModel):
        __storage_name__ = storage
        __indexes__ = ("status",)
        id: int
        n: int = 0
        status: str = ""

    Item.__name__ = Item.__qualname__ = f"Item_{storage}"
    return Item


@dataclass
class Scenario:
    """The apps, names and loops of one run, with ``shard_of`` telling where a tag lives."""

    manager: RedisManager
    waiting: RedisManager  # the same servers, with every replica wait on
    wsgi: dict[str, Any]  # "waiting" and "plain": the session apps
    shard_of: Callable[[str], str]
    tags: list[str]
    models: dict[str, type[RedisModel]]
    identities: dict[str, list[str]]  # invalidated, per kind: "cache", "cache-nowait"
    apps: dict[str, list[webtest.TestApp]] = field(default_factory=dict)
    session_keys: dict[tuple[str, int], str] = field(default_factory=dict)

    def start(self, load: Load) -> None:
        keys = CacheKeyGenerator(self.manager)
        tokens = token_store(self.waiting)
        plain = token_store(self.manager)
        region = get_region(self.wsgi["plain"].registry, "default")
        # one safe per tag (its name is its hash tag): field "w" written with the wait
        waiting_safes = {t: Safe(t, self.waiting) for t in self.tags}
        plain_safes = {t: Safe(t, self.manager) for t in self.tags}

        def sessions(kind: str, seq: int) -> list[Op]:
            done = []
            for index, app in enumerate(self.apps[kind]):
                key = self.session_keys[(kind, index)]
                op = Op("sessions" + ("" if kind == "waiting" else "-nowait"),
                        self.shard_of(key), (kind, index), seq, kind == "waiting",
                        time.monotonic())  # fmt: skip
                done.append(
                    call(op, lambda a=app: a.get(f"/put/{seq}", status="*").status_int == 200)
                )
            return done

        def cache(waited: bool, seq: int) -> list[Op]:
            # each identity invalidated once, its token created before the load began;
            # "cache" with transient.cache.wait_replicas when this version has it
            shard = self.shard_of("tokens")
            done: list[Op] = []
            name, store = ("cache", tokens) if waited else ("cache-nowait", plain)
            identity = self.identities[name][seq]
            before = Op("cache-key", shard, identity, None, False, time.monotonic())
            taken: list[str] = []
            call(before, lambda: taken.append(keys("page", identity)))
            op = Op(name, shard, identity, taken[0], waited, time.monotonic())
            done += [before, call(op, lambda: store.invalidate([identity]))]
            for tag in self.tags if waited else ():  # region values on every shard
                get = Op("cache-region", self.shard_of(tag), tag, seq, False, time.monotonic())
                done.append(
                    call(get, lambda t=tag: region.set("{%s}:v" % t, seq) or True)  # noqa: UP031
                )
            return done

        def safe(waited: bool, seq: int) -> list[Op]:
            done = []
            for tag, one in (waiting_safes if waited else plain_safes).items():
                op = Op("safe" if waited else "safe-nowait", self.shard_of(tag), tag, seq,
                        waited, time.monotonic())  # fmt: skip
                field = f"{'w' if waited else 'p'}{seq}"
                done.append(call(op, lambda s=one, f=field: s.__setitem__(f, seq) or True))
            return done

        def store(seq: int) -> list[Op]:
            done = []
            for tag in self.tags:
                op = Op("store", self.shard_of(tag), tag, seq, False, time.monotonic())
                tree = {"a": seq, "b": {"c": seq, "d": [seq, seq]}, "e": seq}
                done.append(
                    call(
                        op,
                        lambda t=tag, v=tree: section(t, self.manager).set(f"t{seq}", v) or True,
                    )
                )
            return done

        def models(seq: int) -> list[Op]:
            done = []
            for tag, klass in self.models.items():
                obj = klass(id=seq, n=seq, status=f"s{seq % 3}")
                op = Op("models", self.shard_of(tag), tag, seq, False, time.monotonic())
                done.append(call(op, lambda o=obj: o.save() or True))
            return done

        load.run("sessions", functools.partial(sessions, "waiting"))
        load.run("sessions-nowait", functools.partial(sessions, "plain"))
        load.run("cache", functools.partial(cache, True))
        load.run("cache-nowait", functools.partial(cache, False))
        load.run("safe", functools.partial(safe, True))
        load.run("safe-nowait", functools.partial(safe, False))
        load.run("store", store)
        load.run("models", models)

    # ------------------------------------------------------------------ after the run

    def lost(self, ops: list[Op]) -> dict[str, tuple[int, int]]:
        """capability -> (writes acknowledged, of which not found afterwards). Every write
        goes to a key (a field, a path, an object, an entry of a session's list) of its
        own, never written again, so a later write cannot hide a lost one."""
        found: dict[str, set[Any]] = {}
        for kind, apps in self.apps.items():
            capability = "sessions" if kind == "waiting" else "sessions-nowait"
            kept = found.setdefault(capability, set())
            for index, app in enumerate(apps):
                kept.update(((kind, index), n) for n in app.get("/get").json["seen"])
        for tag in self.tags:
            snapshot = Safe(tag, self.manager).snapshot()
            for name, waited in (("safe", "w"), ("safe-nowait", "p")):
                found.setdefault(name, set()).update(
                    (tag, v) for k, v in snapshot.items() if k.startswith(waited)
                )
            tree = section(tag, self.manager).val() or {}
            for path, subtree in tree.items():
                seq = int(path[1:])
                # never half written: every leaf of the subtree comes from one write
                assert subtree == {"a": seq, "b": {"c": seq, "d": [seq, seq]}, "e": seq}
                found.setdefault("store", set()).add((tag, seq))
            klass = self.models[tag]
            found.setdefault("models", set()).update(
                (tag, o.n)
                for o in klass.objects.all()  # type: ignore[attr-defined]
            )
        result: dict[str, tuple[int, int]] = {}
        keys = CacheKeyGenerator(self.manager)
        for op in ops:
            if op.ok and op.capability in ("cache", "cache-nowait"):
                # stale: the key taken before the acknowledged invalidation is back
                acked, missing = result.get(op.capability, (0, 0))
                result[op.capability] = (acked + 1, missing + (keys("page", op.key) == op.value))
            elif op.ok and op.capability in found:
                acked, missing = result.get(op.capability, (0, 0))
                gone = (op.key, op.value) not in found[op.capability]
                result[op.capability] = (acked + 1, missing + gone)
        return result

    def check_models(self) -> None:
        """Every index agrees with the objects: nothing half written."""
        for klass in self.models.values():
            objects = klass.objects.all()  # type: ignore[attr-defined]
            assert klass.objects.count() == len(objects)  # type: ignore[attr-defined]
            for status in ("s0", "s1", "s2"):
                found = klass.objects.filter(status=status)  # type: ignore[attr-defined]
                assert sorted(o.id for o in found) == sorted(
                    o.id for o in objects if o.status == status
                )


def warm_sessions(scenario: Scenario, per_shard: dict[str, int]) -> None:
    """Visitors of each app with their sessions, ``per_shard[shard]`` on each shard."""
    for kind, wsgi in scenario.wsgi.items():
        apps = scenario.apps[kind] = []
        wanted = dict(per_shard)
        for _ in range(500):
            app = webtest.TestApp(wsgi)
            key = app.get("/put/0").json["key"]
            shard = scenario.shard_of(key)
            if wanted.get(shard, 0) > 0:
                wanted[shard] -= 1
                scenario.session_keys[(kind, len(apps))] = key
                apps.append(app)
            if not any(wanted.values()):
                break
        assert not any(wanted.values()), wanted


def report(
    title: str, ops: list[Op], lag_at: float, killed_at: float, lost: dict[str, tuple[int, int]]
) -> None:
    lines = [f"\n{title}: capability, shard, calls, failures, window (s from the kill)"]
    for (capability, shard), (calls, failures, window) in sorted(windows(ops, killed_at).items()):
        lines.append(f"  {capability:16} {shard or '-':8} {calls:6} {failures:5} {window:6.2f}")
    lines.append(
        "  capability, writes acknowledged, of which during the lag, "
        "lost (cache: served stale) afterwards:"
    )
    for capability, (acked, missing) in sorted(lost.items()):
        in_lag = sum(
            1
            for op in ops
            if op.capability == capability and op.ok and lag_at <= op.started < killed_at
        )
        lines.append(f"  {capability:16} {acked:6} {in_lag:5} {missing:5}")
    print("\n".join(lines))


def assert_outcome(
    scenario: Scenario, ops: list[Op], healed_at: float, lost: dict[str, tuple[int, int]]
) -> None:
    # The app continues without a restart: once healed, every call succeeds.
    late = [op for op in ops if op.started > healed_at and not op.ok]
    assert not late, sorted({(o.capability, o.shard, o.error) for o in late})[:10]
    # The witness that the lag took: writes acknowledged without a wait were lost.
    assert lost["safe-nowait"][1] > 0 and lost["cache-nowait"][1] > 0, lost
    # Writes acknowledged with a replica wait are kept.
    assert lost["sessions"][1] == 0, lost
    assert lost["safe"][1] == 0, lost
    # No page is served stale after its invalidation was acknowledged: no key taken
    # before one is computed again.
    assert lost["cache"][1] == 0, f"pages stale after an acknowledged invalidation: {lost}"
    scenario.check_models()


def lag(master: RedisServer, replica: RedisServer) -> None:
    """From now on the master acknowledges writes its replica never gets: the replica is
    stopped, and the master drops its link (checked: it counts no replica)."""
    pause(replica)
    wait_until(
        f"master {master.port} to drop its replica",
        lambda: (
            ask(master.port, "CLIENT", "KILL", "TYPE", "replica") >= 0
            and info_fields(ask(master.port, "INFO", "replication")).get("connected_slaves") == "0"
        ),
        5,
    )


def pause(server: RedisServer) -> None:
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)


def resume(server: RedisServer) -> None:
    assert server.pid is not None
    os.kill(server.pid, signal.SIGCONT)


def make_scenario(
    settings: dict[str, Any], shard_of: Callable[[str], str], tags: list[str]
) -> Scenario:
    waits = {
        "transient.sessions.save_before_response": "true",
        "transient.sessions.wait_replicas": str(WAIT["replicas"]),
        "transient.sessions.wait_timeout": WAIT["timeout"],
        "transient.safe.wait_replicas": str(WAIT["replicas"]),
        "transient.safe.wait_timeout": WAIT["timeout"],
    }
    from pyramid_transient.settings import CacheSettings

    if "wait_replicas" in CacheSettings.__dataclass_fields__:  # issue 17 item 1
        waits["transient.cache.wait_replicas"] = str(WAIT["replicas"])
        waits["transient.cache.wait_timeout"] = WAIT["timeout"]
    base = {**settings, "redis.sessions.secret": "failover", "transient.key_prefix": "fo"}
    # one app of each kind; each visitor a TestApp of its own (its cookie, its session)
    wsgi = {"waiting": session_app({**base, **waits}), "plain": session_app(dict(base))}
    manager = RedisManager.from_settings(base)
    waiting = RedisManager.from_settings({**base, **waits})
    models = {tag: model_class(tag) for tag in tags}  # the storage name is the hash tag
    for klass in models.values():
        klass.objects.bind(manager)  # type: ignore[attr-defined]
    identities = {
        "cache": [row_identity("fo_rows", i) for i in range(20_000)],
        "cache-nowait": [row_identity("fo_rows_nowait", i) for i in range(20_000)],
    }
    # on master and replica before the lag (in slices: each is one script call)
    every = [*identities["cache"], *identities["cache-nowait"]]
    for start in range(0, len(every), 1000):
        token_store(manager).tokens(every[start : start + 1000])
    return Scenario(manager, waiting, wsgi, shard_of, tags, models, identities)


@contextlib.contextmanager
def closing_all(scenario: Scenario) -> Iterator[Scenario]:
    from pyramid_transient.connection import get_manager

    try:
        yield scenario
    finally:
        for klass in scenario.models.values():
            klass.objects.unbind()  # type: ignore[attr-defined]
        for wsgi in scenario.wsgi.values():
            get_manager(wsgi.registry).close()
        scenario.manager.close()
        scenario.waiting.close()


def settle_invalidations(scenario: Scenario) -> None:
    """Invalidations the outage left for retry are sent by the next round trip."""
    store = token_store(scenario.waiting)

    def sent() -> bool:
        store.tokens(["fo_probe"])  # carries the retries
        return pending_invalidations(scenario.waiting) == 0

    wait_until("the invalidations kept for retry to be sent", sent, 10)


# ---------------------------------------------------------------------- Sentinel


@pytest.fixture(scope="module")
def sentinel() -> Iterator[SentinelGroup]:
    with SentinelGroup("failover-load") as group:
        yield group


def finish(
    load: Any,
    scenario: Any,
    kind: str,
    lag_at: float,
    killed_at: float,
    promoted_at: float,
    healed_at: float,
) -> tuple[Any, Any]:
    """Let the load run on after the healing, stop it, settle the invalidations, report
    the windows; the operations and the writes lost."""
    time.sleep(AFTER)
    ops = load.finish()
    settle_invalidations(scenario)
    lost = scenario.lost(ops)
    report(
        f"{kind}: promoted {promoted_at - killed_at:.2f} s after the kill, "
        f"healed (old master back as replica) {healed_at - killed_at:.2f} s",
        ops, lag_at, killed_at, lost,
    )  # fmt: skip
    return ops, lost


@pytest.mark.sentinel
def test_sentinel_master_killed_under_load_after_its_replica_lagged(
    sentinel: SentinelGroup,
) -> None:
    group = sentinel
    group.restore()
    group.flushall()
    tags = ["fosentinel"]
    with closing_all(make_scenario(group.settings(), lambda key: "", tags)) as scenario:
        warm_sessions(scenario, {"": 6})
        load = Load()
        scenario.start(load)
        time.sleep(WARM)
        assert group.replica is not None and group.master is not None
        replica, master = group.replica, group.master
        lag_at = time.monotonic()
        lag(master, replica)
        time.sleep(LAG)
        killed_at = time.monotonic()
        timer = threading.Timer(0.1, resume, [replica])
        timer.start()
        try:
            group.kill_master()
        finally:
            timer.join()
        promoted_at = time.monotonic()
        group.restore()
        healed_at = time.monotonic()
        ops, lost = finish(load, scenario, "Sentinel", lag_at, killed_at, promoted_at, healed_at)
        assert_outcome(scenario, ops, healed_at, lost)


# ---------------------------------------------------------------------- Cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[ReplicatedCluster]:
    with ReplicatedCluster() as group:
        yield group


def _tags_by_shard(client: Any, failing_port: int) -> tuple[list[str], Callable[[str], str]]:
    """Names whose hash tag lives on the failing shard, and on each healthy one."""
    owner: dict[str, int] = {}
    counts: dict[int, int] = {}
    for i in range(10_000):
        tag = f"fo{i}"
        port = client.get_node_from_key("{%s}" % tag).port  # noqa: UP031
        if counts.get(port, 0) < TAGS_PER_SHARD:
            counts[port] = counts.get(port, 0) + 1
            owner[tag] = port
        if len(owner) == TAGS_PER_SHARD * 3:
            break
    owner["tokens"] = client.get_node_from_key("{tokens}").port
    failing = {t for t, p in owner.items() if p == failing_port}

    def shard_of(key: str) -> str:
        if key in owner:
            return "failing" if key in failing else "healthy"
        return "failing" if client.get_node_from_key(key).port == failing_port else "healthy"

    return [t for t in owner if t != "tokens"], shard_of


@pytest.mark.cluster
def test_cluster_master_killed_under_load_after_its_replica_lagged(
    cluster: ReplicatedCluster,
) -> None:
    group = cluster
    group.flushall()
    probe = RedisManager.from_settings(group.settings())
    client: Any = probe.get("default")
    # the shard of the cache tokens fails: invalidations are what a lag loses
    failing_port = client.get_node_from_key("{tokens}").port
    tags, by_port = _tags_by_shard(client, failing_port)
    frozen: dict[str, str] = {}

    def shard_of(key: str) -> str:  # where it lived before the kill
        if key not in frozen:
            frozen[key] = by_port(key)
        return frozen[key]

    for tag in [*tags, "tokens"]:
        shard_of(tag)
    master = next(s for s in group.servers if s.port == failing_port)
    replica = group.replicas[failing_port]
    healthy = [s for s in group.servers if s.port != failing_port]
    with closing_all(make_scenario(group.settings(), shard_of, tags)) as scenario:
        warm_sessions(scenario, {"failing": 3, "healthy": 3})
        load = Load()
        scenario.start(load)
        time.sleep(WARM)
        lag_at = time.monotonic()
        lag(master, replica)
        time.sleep(LAG)
        killed_at = time.monotonic()
        new_master = group.kill_master(master, then=lambda: resume(replica))
        promoted_at = time.monotonic()
        for server in healthy:  # the scripts' first use again, with a primary just back
            ask(server.port, "SCRIPT", "FLUSH")
        group.restore(new_master)
        healed_at = time.monotonic()
        ops, lost = finish(load, scenario, "Cluster", lag_at, killed_at, promoted_at, healed_at)
        # Keys on the healthy shards never stop working, for any capability.
        failed = [op for op in ops if op.shard == "healthy" and not op.ok]
        assert not failed, sorted({(o.capability, o.error) for o in failed})[:10]
        assert_outcome(scenario, ops, healed_at, lost)
    probe.close()
