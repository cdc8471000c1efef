"""The one benchmark command: ``python -m benchmarks`` (or ``tox -e bench``).

Every row of the side-by-side table (issue 18) runs in this one process against one
private ``redis-server`` of our own on a free loopback port (never 6379), started as the
test harness starts it (:class:`pyramid_transient.testing.RedisServer`). Where ``taskset``
exists, the client (this process) and the server are pinned to the same CPU, so the
numbers do not depend on which core the scheduler picks for each.

For each row the cases run interleaved (ours, peer, PING, ours, peer, PING ...) in short
slices, so both sides see the same mix of quiet and busy moments on a shared machine. The
table prints each side's median time per operation, the ratio (the peer's time over ours:
above 1 means we are faster), the spread of the per-round ratios, the round trips each
side makes, and **the wire as the floor**: our time over N x the time of one raw ``PING``
through the same client in the same rounds (N = our round trips per operation).

Then: how cost grows with the size of the work (and that unrelated data does not change
it), the longest time one model filter holds the server, and the effect of ``hiredis``.

Options: ``--quick`` (the whole run in under four minutes), ``--json PATH`` (default
``benchmarks/results.json``), ``--only TEXT`` (rows whose name contains TEXT),
``--huge`` (the 1M-object filter row of the growth table), ``--no-pin``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import os
import platform
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the bench_*.py modules import _runner by its bare name

import redis  # noqa: E402

from pyramid_transient.testing import RedisServer, RoundTripCounter  # noqa: E402

Fn = Callable[[], object]


# ---------------------------------------------------------------------- measuring


@dataclass
class Settings:
    rounds: int
    slice_s: float
    objects: int
    quick: bool


@dataclass
class RowResult:
    name: str
    peer: str
    goal: str
    ours_us: float
    peer_us: float
    ping_us: float
    ratio: float
    ratio_lo: float
    ratio_hi: float
    ours_rt: float
    peer_rt: float
    wire: float  # ours / (ours_rt x ping)
    note: str = ""


@dataclass
class Report:
    started: str
    python: str
    redis: str
    pinned: str
    hiredis: bool
    quick: bool
    rows: list[RowResult] = field(default_factory=list)
    growth: list[dict[str, Any]] = field(default_factory=list)
    pauses: list[dict[str, Any]] = field(default_factory=list)
    parsers: list[dict[str, Any]] = field(default_factory=list)


def time_slice(fn: Fn, seconds: float) -> float:
    """Seconds per call of ``fn``, over at least one call and about ``seconds``."""
    n = 0
    perf = time.perf_counter
    start = perf()
    deadline = start + seconds
    while True:
        fn()
        n += 1
        now = perf()
        if now >= deadline:
            return (now - start) / n


def interleaved(cases: dict[str, Fn], rounds: int, slice_s: float) -> dict[str, list[float]]:
    """Per-round seconds per call of each case, the cases taking turns in every round."""
    for fn in cases.values():  # warm up: connections, scripts, caches
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            times[name].append(time_slice(fn, slice_s))
    return times


def round_trips(fn: Fn) -> float:
    fn()
    with RoundTripCounter() as rt:
        fn()
    return float(rt.count)


def ping_of(client: Any) -> Fn:
    """One raw PING through ``client``: the floor of any one-round-trip operation on it."""
    return lambda: client.execute_command("PING")


class Bench:
    def __init__(self, settings: Settings, report: Report, only: str | None) -> None:
        self.s = settings
        self.report = report
        self.only = only

    def wanted(self, name: str) -> bool:
        return self.only is None or self.only.lower() in name.lower()

    def row(
        self,
        name: str,
        peer_name: str,
        ours: Fn,
        peer: Fn,
        client: Any,
        goal: str = "",
        *,
        slow: bool = False,
        note: str = "",
    ) -> RowResult | None:
        if not self.wanted(name):
            return None
        rounds = self.s.rounds
        slice_s = self.s.slice_s * (3 if slow else 1)
        times = interleaved({"ours": ours, "peer": peer, "ping": ping_of(client)}, rounds, slice_s)
        o, p, g = (statistics.median(times[k]) for k in ("ours", "peer", "ping"))
        ratios = [pt / ot for pt, ot in zip(times["peer"], times["ours"], strict=True)]
        ratios.sort()
        # the spread: the middle 80 % of the per-round ratios (all of them for few rounds)
        cut = len(ratios) // 10
        lo, hi = ratios[cut], ratios[-1 - cut]
        ort, prt = round_trips(ours), round_trips(peer)
        result = RowResult(
            name, peer_name, goal, o * 1e6, p * 1e6, g * 1e6, p / o, lo, hi, ort, prt,
            o / (max(ort, 1) * g), note,
        )  # fmt: skip
        self.report.rows.append(result)
        print(
            f"  {name:<44} {result.ours_us:9.1f} us  {peer_name:<34} {result.peer_us:9.1f} us"
            f"  ratio {result.ratio:6.2f} ({lo:.2f}-{hi:.2f})  wire {result.wire:5.2f}",
            flush=True,
        )
        return result


# ---------------------------------------------------------------------- the server


def pin_to(cpu: int, pid: int) -> str:
    """Pin process ``pid`` to ``cpu``: ``taskset`` where it exists, else the syscall."""
    if shutil.which("taskset"):
        subprocess.run(
            ["taskset", "-a", "-p", "-c", str(cpu), str(pid)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return "taskset"
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(pid, {cpu})
        return "sched_setaffinity"
    return ""


@contextlib.contextmanager
def private_server(pin: bool) -> Iterator[tuple[RedisServer, str]]:
    with RedisServer(args=["--databases", "32"]) as server:
        how = "not pinned"
        if pin and hasattr(os, "sched_getaffinity"):
            cpu = max(os.sched_getaffinity(0))
            assert server.pid is not None
            tool = pin_to(cpu, server.pid)
            if tool:
                pin_to(cpu, os.getpid())
                how = f"client and server on CPU {cpu} ({tool})"
        yield server, how


# ---------------------------------------------------------------------- the rows


SECRET = "benchmark-secret-of-a-reasonable-length-0123456789"
VALUE: dict[str, Any] = {"user": 42, "tags": ["a", "b"], "ratio": 0.5, "name": "Zoë"}
TEN = {f"key{i}": {**VALUE, "user": i} for i in range(10)}
GROUPS = 100


def subtree(leaves: int) -> dict[str, Any]:
    """A nested dict of exactly ``leaves`` leaves, two levels deep (groups of 5)."""
    out: dict[str, Any] = {}
    for i in range(leaves):
        out.setdefault(f"g{i // 5}", {})[f"k{i % 5}"] = i
    return out


def fill_unrelated(client: Any, count: int, prefix: str = "unrelated") -> None:
    pipe = client.pipeline(transaction=False)
    for start in range(0, count, 1000):
        pipe.mset({f"{prefix}:{i}": i for i in range(start, min(count, start + 1000))})
    pipe.execute()


def manager_for(url: str, shift: int = 0) -> Any:
    """Our manager; ``shift`` moves every database (8: the growth table's twin, which
    holds the unrelated data)."""
    from pyramid_transient.connection import RedisManager

    return RedisManager.from_settings(
        {
            "transient.url": url,
            "transient.key_prefix": "bench",
            "transient.db.cache": str(1 + shift),
            "transient.db.store": str(2 + shift),
            "transient.db.models": str(3 + shift),
            "transient.db.safe": str(4 + shift),
        }
    )


# -- cache_key


def sql_rows(count: int) -> list[Any]:
    from bench_cache import Base, Row
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import StaticPool

    engine = create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Row(id=i, name="x") for i in range(count))
        session.commit()
    with Session(engine, expire_on_commit=False) as session:
        return list(session.query(Row).order_by(Row.id).all())


def cache_rows(b: Bench, manager: Any, rows: list[Any]) -> None:
    from bench_cache import alkey_style

    from pyramid_transient.cache import CacheKeyGenerator
    from pyramid_transient.invalidation import identities_of, token_store

    client = manager.get("cache")
    generator = CacheKeyGenerator(manager)
    store = token_store(manager)
    for n, goal in ((1, ">= 1.0"), (10, ">= 8"), (100, ">= 50")):
        instances = rows[:n]
        keys = [store.key(i) for row in instances for i in identities_of(row)]
        b.row(
            f"cache_key over N={n} rows",
            "alkey: one GET per row",
            lambda x=instances: generator("page", *x),
            lambda k=keys: alkey_style(client, k, store.ttl),
            client,
            goal,
        )


# -- store


def store_rows(b: Bench, manager: Any, redicts: Any, url: str, redicts_db: int) -> None:
    from pyramid_transient.store import section

    client = manager.get("store")
    value = subtree(5)
    ours = section("ours", redis=manager)
    theirs = redicts.section("theirs")
    ours.set("doc", value)
    theirs.set("doc", value)
    assert ours.get("doc").val() == value and theirs.get("doc").val() == value
    for label, goal in (("empty db", ">= 10"), ("10k unrelated keys", ">= 100")):
        if label != "empty db":  # in both databases
            fill_unrelated(client, 10_000)
            fill_unrelated(redis.Redis.from_url(f"{url}/{redicts_db}"), 10_000)
        b.row(
            f"store set, 5 leaves, {label}",
            "redicts",
            lambda: ours.set("doc", value),
            lambda: theirs.set("doc", value),
            client,
            goal,
        )
        b.row(
            f"store val, 5 leaves, {label}",
            "redicts",
            lambda: ours.get("doc").val(),
            lambda: theirs.get("doc").val(),
            client,
            goal,
        )


# -- models


def model_classes() -> dict[str, type]:
    from pyramid_transient.models import RedisModel

    class Person(RedisModel):
        __indexes__ = ("group",)
        id: int
        name: str
        age: int
        group: int

    class Plain(RedisModel):
        id: int
        name: str
        age: int
        group: int

    return {"Person": Person, "Plain": Plain}


def model_rows(b: Bench, manager: Any, url: str) -> None:
    n = b.s.objects
    classes = model_classes()
    Person, Plain = classes["Person"], classes["Plain"]
    Person.objects.bind(manager)
    Plain.objects.bind(manager)
    client = manager.get("models")

    def row(i: int) -> dict[str, Any]:
        return {"name": f"person {i}", "age": 20 + i % 50, "group": i % GROUPS}

    rng = random.Random(7)

    def pick() -> int:
        return rng.randrange(n)

    # redis-om: pydantic HashModel, plain HSET / HGETALL (no RediSearch needed for these)
    os.environ.setdefault("REDIS_OM_URL", f"{url}/26")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from redis_om import HashModel

    om_client = redis.Redis.from_url(f"{url}/26", decode_responses=True)

    class OmPerson(HashModel, index=True):  # type: ignore[call-arg]
        name: str
        age: int
        group: int

        class Meta:
            database = om_client

    # redis-schematics: hash layout (HSET/HGET) and simple layout (filter by KEYS)
    from bench_models import schematics_classes

    schem_client = redis.Redis.from_url(f"{url}/27")
    simple_client = redis.Redis.from_url(f"{url}/28")
    SchemHash, SchemSimple = schematics_classes(schem_client)
    SchemSimple.__redis_client__ = simple_client

    # walrus: indexed models on plain Redis
    from walrus import Database, IntegerField, Model, TextField

    walrus_db = Database.from_url(f"{url}/29")

    class WalrusPerson(Model):  # type: ignore[misc]
        __database__ = walrus_db
        id = IntegerField(primary_key=True)
        name = TextField()
        age = IntegerField()
        group = IntegerField(index=True)

    started = time.perf_counter()
    for i in range(n):
        Person(id=i, **row(i)).save()
        Plain(id=i, **row(i)).save()
        OmPerson(pk=str(i), **row(i)).save()
        SchemHash({"pk": str(i), **row(i)}).set()
        SchemSimple({"pk": str(i), **row(i)}).set()
        WalrusPerson.create(id=i + 1, **row(i))  # walrus generates an id for a falsy one
    print(f"  ({n:,} objects per implementation in {time.perf_counter() - started:.1f} s)")
    assert len(Person.objects.filter(group=7)) == n // GROUPS
    assert len(list(WalrusPerson.query(WalrusPerson.group == 7))) == n // GROUPS
    assert len(SchemSimple.filter(group=7)) == n // GROUPS

    def save(cls: type) -> Fn:
        def do() -> None:
            i = pick()
            cls(id=i, **row(i)).save()

        return do

    def om_save() -> None:
        i = pick()
        OmPerson(pk=str(i), **row(i)).save()

    def schem_save() -> None:
        i = pick()
        SchemHash({"pk": str(i), **row(i)}).set()

    def walrus_save() -> None:
        i = pick()
        WalrusPerson.create(id=i + 1, **row(i))

    b.row(
        "model save (no index)",
        "redis-om HashModel",
        save(Plain),
        om_save,
        client,
        ">= 1.0",
    )
    b.row(
        "model get by pk (no index)",
        "redis-om HashModel",
        lambda: Plain.objects.get(pick()),
        lambda: OmPerson.get(str(pick())),
        client,
        ">= 1.0",
    )
    b.row(
        "model save (no index) ",
        "redis-schematics HashRedisModel",
        save(Plain),
        schem_save,
        client,
        ">= 1.5",
    )
    b.row(
        "model get by pk (no index) ",
        "redis-schematics HashRedisModel",
        lambda: Plain.objects.get(pick()),
        lambda: SchemHash.match_for_pk(str(pick())),
        client,
        ">= 1.5",
    )
    b.row(
        "model save (indexed)",
        "walrus Model (indexed)",
        save(Person),
        walrus_save,
        client,
        ">= 5",
    )
    b.row(
        "model get by pk (indexed)",
        "walrus Model (indexed)",
        lambda: Person.objects.get(pick()),
        lambda: WalrusPerson.load(pick() + 1),
        client,
        ">= 1.2",
    )
    b.row(
        f"model filter 1% of {n:,}",
        "walrus Model (indexed)",
        lambda: Person.objects.filter(group=7),
        lambda: list(WalrusPerson.query(WalrusPerson.group == 7)),
        client,
        ">= 10",
        slow=True,
    )
    b.row(
        f"model filter 1% of {n:,} ",
        "redis-schematics (KEYS)",
        lambda: Person.objects.filter(group=7),
        lambda: SchemSimple.filter(group=7),
        client,
        ">= 100",
        slow=True,
    )
    for c in (om_client, schem_client, simple_client):
        c.flushdb()
    walrus_db.flushdb()


# -- safe


def safe_rows(b: Bench, manager: Any) -> None:
    from pottery import RedisDict

    from pyramid_transient.safe import get_safe

    ours = get_safe("bench.safe", manager)
    client = manager.get("safe")
    bare = redis.Redis(connection_pool=client.connection_pool)  # the same server and db
    key = "bench:bare:{safe}"
    ours["key"] = VALUE
    bare.hset(key, "key", json.dumps(VALUE))
    b.row(
        "safe set",
        "bare HSET (+ json.dumps)",
        lambda: ours.__setitem__("key", VALUE),
        lambda: bare.hset(key, "key", json.dumps(VALUE)),
        client,
        ">= 0.95",
    )
    b.row(
        "safe get",
        "bare HGET (+ json.loads)",
        lambda: ours["key"],
        lambda: json.loads(bare.hget(key, "key")),  # type: ignore[arg-type]
        client,
        ">= 0.95",
    )
    pottery_client = redis.Redis(connection_pool=client.connection_pool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = RedisDict(redis=pottery_client, key="bench:pottery")
        theirs["key"] = VALUE
    b.row(
        "safe set (dict style)",
        "pottery RedisDict",
        lambda: ours.__setitem__("key", VALUE),
        lambda: theirs.__setitem__("key", VALUE),
        client,
        ">= 1.2",
    )
    b.row(
        "safe get (dict style)",
        "pottery RedisDict",
        lambda: ours["key"],
        lambda: theirs["key"],
        client,
        ">= 1.2",
    )

    def pottery_update() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs.update(TEN)

    b.row(
        "safe update of 10",
        "pottery RedisDict",
        lambda: ours.update(TEN),
        pottery_update,
        client,
        ">= 2",
    )


# -- locks


def lock_rows(b: Bench, manager: Any) -> None:
    import redis_lock
    from pottery import Redlock

    from pyramid_transient.store import Lock

    client = manager.get("store")
    ours = Lock(manager, "locks.a.b")
    plain = client.lock("bench:plain-lock", timeout=5)
    other = redis_lock.Lock(client, "bench:redis-lock", expire=5)
    red = Redlock(key="bench:redlock", masters={client}, auto_release_time=5)

    def cycle(lock: Any) -> Fn:
        def do() -> None:
            lock.acquire()
            lock.release()

        return do

    for peer_name, peer, goal in (
        ("redis-py Lock", plain, ">= 1.0"),
        ("python-redis-lock", other, ">= 1.2"),
        ("pottery Redlock", red, ">= 4"),
    ):
        b.row(
            f"lock acquire + release vs {peer_name}",
            peer_name,
            cycle(ours),
            cycle(peer),
            client,
            goal,
        )


# -- sessions


def session_apps(url: str, shift: int = 0) -> tuple[Any, Any]:
    from bench_sessions import make_app

    upstream = make_app(
        lambda config: config.include("pyramid_session_redis"),
        {"redis.sessions.secret": SECRET, "redis.sessions.redis_url": f"{url}/22"},
    )
    ours = make_app(
        lambda config: config.include("pyramid_transient.sessions"),
        {
            "transient.url": url,
            "transient.db.sessions": str(5 + shift),
            "transient.key_prefix": "bench",
            "redis.sessions.secret": SECRET,
        },
    )
    return ours, upstream


def session_rows(b: Bench, url: str) -> None:
    from bench_sessions import Client

    from pyramid_transient import get_manager

    ours_app, upstream_app = session_apps(url)
    client = get_manager(ours_app.registry).get("sessions")
    b.row(
        "session request read + write",
        "pyramid_session_redis (pickle)",
        Client(ours_app, "/rw"),
        Client(upstream_app, "/rw"),
        client,
        ">= 1.1 (issue 14)",
        note="a whole request through the router; the wire ratio counts the router too",
    )


# ---------------------------------------------------------------------- growth


def growth(b: Bench, manager: Any, rows: list[Any], url: str, huge: bool) -> None:
    """Cost against size; each size measured interleaved in two databases, one empty but
    for the operation's own data, one that also holds unrelated data."""
    from pyramid_transient import get_manager
    from pyramid_transient.cache import CacheKeyGenerator
    from pyramid_transient.store import section

    twin = manager_for(url, 8)  # the same keys, in databases that hold unrelated data

    def pair(empty: Fn, full: Fn) -> tuple[float, float]:
        times = interleaved({"empty": empty, "full": full}, max(3, b.s.rounds // 2), b.s.slice_s)
        return statistics.median(times["empty"]) * 1e6, statistics.median(times["full"]) * 1e6

    def record(what: str, size: int, unit: str, us: tuple[float, float], extra: str) -> None:
        empty, full = us
        entry = {
            "operation": what,
            "size": size,
            "unit": unit,
            "us": round(empty, 1),
            "us_with_unrelated": round(full, 1),
            "unrelated": extra,
            "us_per_unit": round(empty / size, 2),
        }
        b.report.growth.append(entry)
        print(
            f"  {what:<30} {unit}={size:<8,} {empty:10.1f} us  {empty / size:8.2f} us/{unit}"
            f"   with {extra}: {full:10.1f} us",
            flush=True,
        )

    # store subtree reads, K leaves
    if b.wanted("growth store"):
        fill_unrelated(twin.get("store"), 100_000)
        sizes = (1, 10, 100, 1000)
        proxies = {}
        for m in (manager, twin):
            for k in sizes:
                proxies[m, k] = section(f"grow{k}", redis=m)
                proxies[m, k].set("doc", subtree(k))
        section("other", redis=twin).set("doc", subtree(1000))  # an unrelated subtree
        for k in sizes:
            us = pair(
                lambda p=proxies[manager, k]: p.get("doc").val(),
                lambda p=proxies[twin, k]: p.get("doc").val(),
            )
            record("store subtree val", k, "K", us, "100k unrelated keys")
        for m in (manager, twin):
            m.get("store").flushdb()

    if b.wanted("growth cache_key"):
        fill_unrelated(twin.get("cache"), 100_000, "bench:token:{tokens}:unrelated")
        generators = CacheKeyGenerator(manager), CacheKeyGenerator(twin)
        for n in (1, 10, 100, 1000):
            us = pair(
                lambda x=rows[:n]: generators[0]("page", *x),
                lambda x=rows[:n]: generators[1]("page", *x),
            )
            record("cache_key", n, "N", us, "100k unrelated tokens")
        for m in (manager, twin):
            m.get("cache").flushdb()

    if b.wanted("growth filter"):
        sizes = [1_000, 10_000] + ([1_000_000] if huge else [])
        other = filter_class(10_000, "Other")
        other.objects.bind(twin)
        fill_models(other, 10_000)  # another class's objects, in the twin's database only
        for n in sizes:
            alone, beside = filter_class(n), filter_class(n, "Twin")
            alone.objects.bind(manager)
            beside.objects.bind(twin)
            fill_models(alone, n)
            fill_models(beside, n)
            us = pair(
                lambda c=alone: c.objects.filter(group=7),
                lambda c=beside: c.objects.filter(group=7),
            )
            pause = worst_pause(manager.get("models"), lambda c=alone: c.objects.filter(group=7))
            record(f"model filter 1% of {n:,}", n // GROUPS, "match", us,
                   "10k objects of another class")  # fmt: skip
            b.report.pauses.append(
                {"objects": n, "matching": n // GROUPS, "worst_pause_ms": pause}
            )
            alone.objects.delete_all()
            beside.objects.delete_all()
        for m in (manager, twin):
            m.get("models").flushdb()

    if b.wanted("growth session"):
        from bench_sessions import Client

        (ours_app, _), (twin_app, _) = session_apps(url), session_apps(url, 8)
        full_client = get_manager(twin_app.registry).get("sessions")
        pipe = full_client.pipeline(transaction=False)
        payload = b"x" * 200
        for i in range(100_000):
            pipe.set(f"bench:session:{secrets.token_urlsafe(32)}", payload, ex=3600)
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        us = pair(Client(ours_app, "/rw"), Client(twin_app, "/rw"))
        record("session read + write", 1, "request", us, "100k live sessions")
        full_client.flushdb()
        get_manager(ours_app.registry).get("sessions").flushdb()
    twin.close()


_FILTER_CLASSES: dict[str, type] = {}


def filter_class(n: int, kind: str = "Filter") -> type:
    from pyramid_transient.models import RedisModel

    name = f"{kind}{n}"
    if name not in _FILTER_CLASSES:
        _FILTER_CLASSES[name] = type(
            name,
            (RedisModel,),
            {
                "__annotations__": {"id": int, "name": str, "age": int, "group": int},
                "__indexes__": ("group",),
                # the twin of a class has its keys (in the twin's databases)
                "__storage_name__": f"Filter{n}" if kind == "Twin" else name,
            },
        )
    return _FILTER_CLASSES[name]


def fill_models(cls: Any, n: int) -> None:
    for i in range(n):
        cls(id=i, name=f"person {i}", age=20 + i % 50, group=i % GROUPS).save()


def worst_pause(client: Any, fn: Fn, *, times: int = 5) -> float:
    """The longest a single command of ``fn`` ran on the server, in ms (SLOWLOG).

    Commands of 100 us or more are logged: a threshold of 0 would log every command a
    script calls too, and logging them makes the script itself several times slower.
    Below 0.1 ms the pause reads as 0.1.
    """
    old = client.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
    old_len = client.config_get("slowlog-max-len")["slowlog-max-len"]
    client.config_set("slowlog-log-slower-than", 100)
    client.config_set("slowlog-max-len", 100_000)
    try:
        client.slowlog_reset()
        for _ in range(times):
            fn()
        entries = client.slowlog_get(100_000)
    finally:
        client.config_set("slowlog-log-slower-than", old)
        client.config_set("slowlog-max-len", old_len)
    return max((e["duration"] for e in entries), default=100) / 1000


def filter_pause(b: Bench, manager: Any) -> None:
    """A filter matching 5,000 objects: the longest one call holds the server."""
    if not b.wanted("pause"):
        return
    cls = filter_class(5000, "Pause")
    cls.objects.bind(manager)
    client = manager.get("models")
    for i in range(5000):
        cls(id=i, name=f"person {i}", age=20, group=7).save()
    with RoundTripCounter() as rt:
        found = cls.objects.filter(group=7)
    assert len(found) == 5000
    pause = worst_pause(client, lambda: cls.objects.filter(group=7))
    took = statistics.median(interleaved({"x": lambda: cls.objects.filter(group=7)}, 3, 0.2)["x"])
    b.report.pauses.append(
        {"objects": 5000, "matching": 5000, "worst_pause_ms": pause, "round_trips": rt.count,
         "filter_ms": took * 1000}
    )  # fmt: skip
    print(
        f"  filter matching 5,000 objects: {took * 1000:.1f} ms in {rt.count} round trips; "
        f"the longest one command held the server: {pause:.2f} ms",
        flush=True,
    )
    client.flushdb()


# ---------------------------------------------------------------------- hiredis


def parsers(b: Bench, url: str) -> None:
    """The same operations with redis-py's pure-Python parser and with hiredis."""
    if not b.wanted("hiredis"):
        return
    from redis._parsers import _HiredisParser, _RESP2Parser
    from redis.utils import HIREDIS_AVAILABLE

    from pyramid_transient.cache import CacheKeyGenerator
    from pyramid_transient.safe import get_safe
    from pyramid_transient.store import section

    if not HIREDIS_AVAILABLE:
        print("  hiredis is not installed: pip install 'pyramid-transient[fast]'")
        return
    clients = {
        "python": redis.Redis.from_url(f"{url}/20", parser_class=_RESP2Parser),
        "hiredis": redis.Redis.from_url(f"{url}/20", parser_class=_HiredisParser),
    }
    from pyramid_transient.models import RedisModel

    models = {}
    for parser, client in clients.items():
        models[parser] = type(
            f"Parsed{parser}",
            (RedisModel,),
            {
                "__annotations__": {"id": int, "name": str, "age": int, "group": int},
                "__indexes__": ("group",),
                "__storage_name__": "Parsed",
            },
        )
        models[parser].objects.bind(client)
    fill_models(models["python"], 10_000)
    rows = sql_rows(100)

    def safe_get(p: str) -> Fn:
        safe = get_safe("bench.p", clients[p])
        return lambda: safe.get("key")

    def cache_key(p: str) -> Fn:
        generator = CacheKeyGenerator(clients[p])
        return lambda: generator("page", *rows)

    def store_val(p: str) -> Fn:
        proxy = section("parsed", redis=clients[p])
        return lambda: proxy.get("doc").val()

    ops: dict[str, Callable[[str], Fn]] = {
        "PING": lambda p: ping_of(clients[p]),
        "safe get": safe_get,
        "model get by pk": lambda p: lambda: models[p].objects.get(42),
        "model filter 100 of 10k": lambda p: lambda: models[p].objects.filter(group=7),
        "cache_key over 100 rows": cache_key,
        "store val, 100 leaves": store_val,
    }
    get_safe("bench.p", clients["python"])["key"] = VALUE
    section("parsed", redis=clients["python"]).set("doc", subtree(100))
    for name, make in ops.items():
        times = interleaved(
            {"python": make("python"), "hiredis": make("hiredis")}, b.s.rounds, b.s.slice_s
        )
        py, hi = (statistics.median(times[k]) * 1e6 for k in ("python", "hiredis"))
        b.report.parsers.append({"operation": name, "python_us": py, "hiredis_us": hi})
        print(f"  {name:<28} python parser {py:9.1f} us   hiredis {hi:9.1f} us   x{py / hi:.2f}")
    clients["python"].flushdb()


# ---------------------------------------------------------------------- output


def markdown(report: Report) -> str:
    out = [
        f"Python {report.python}, {report.redis}, {report.pinned}, "
        f"hiredis {'installed' if report.hiredis else 'not installed'}"
        f"{', --quick' if report.quick else ''}.",
        "",
        "| operation | peer | ours µs | peer µs | ratio | spread | goal | RT ours/peer "
        "| wire (ours / RT x PING) |",
        "|---|---|---:|---:|---:|---|---|---|---:|",
    ]
    for r in report.rows:
        out.append(
            f"| {r.name.strip()} | {r.peer} | {r.ours_us:,.1f} | {r.peer_us:,.1f} | "
            f"**{r.ratio:.2f}** | {r.ratio_lo:.2f} to {r.ratio_hi:.2f} | {r.goal} | "
            f"{r.ours_rt:g} / {r.peer_rt:g} | {r.wire:.2f} |"
        )
    if report.growth:
        out += [
            "",
            "| operation | size | µs | µs per unit | µs with unrelated data | unrelated data |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for g in report.growth:
            out.append(
                f"| {g['operation']} | {g['unit']} = {g['size']:,} | {g['us']:,.1f} | "
                f"{g['us_per_unit']:,.2f} | {g['us_with_unrelated']:,.1f} | {g['unrelated']} |"
            )
    if report.pauses:
        out += ["", "| filter | objects | matching | longest single command (ms) |",
                "|---|---:|---:|---:|"]  # fmt: skip
        for p in report.pauses:
            out.append(
                f"| group=7 | {p['objects']:,} | {p['matching']:,} | {p['worst_pause_ms']:.2f} |"
            )
    if report.parsers:
        out += ["", "| operation | python parser µs | hiredis µs | speed-up |",
                "|---|---:|---:|---:|"]  # fmt: skip
        for p in report.parsers:
            out.append(
                f"| {p['operation']} | {p['python_us']:,.1f} | {p['hiredis_us']:,.1f} | "
                f"{p['python_us'] / p['hiredis_us']:.2f} |"
            )
    return "\n".join(out) + "\n"


def rst(report: Report) -> str:
    """The tables as reStructuredText list-tables (for docs/performance.rst)."""

    def table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
        out = [f".. list-table:: {title}", "   :header-rows: 1", ""]
        for row in [header, *rows]:
            out.append(f"   * - {row[0]}")
            out += [f"     - {cell}" for cell in row[1:]]
        return [*out, ""]

    out = [
        f"Python {report.python}, {report.redis}, {report.pinned}, hiredis "
        f"{'installed' if report.hiredis else 'not installed'}"
        f"{', --quick' if report.quick else ''}; {report.started}.",
        "",
    ]
    out += table(
        "Side by side (ratio: the peer's time over ours; above 1, we are faster)",
        ["operation", "peer", "ours µs", "peer µs", "ratio", "spread", "goal",
         "round trips ours / peer", "ours / (RT x PING)"],
        [[r.name.strip(), r.peer, f"{r.ours_us:,.1f}", f"{r.peer_us:,.1f}",
          f"**{r.ratio:.2f}**", f"{r.ratio_lo:.2f} to {r.ratio_hi:.2f}", r.goal or "",
          f"{r.ours_rt:g} / {r.peer_rt:g}", f"{r.wire:.2f}"] for r in report.rows],
    )  # fmt: skip
    if report.growth:
        out += table(
            "How cost grows (each size measured interleaved beside unrelated data)",
            ["operation", "size", "µs", "µs per unit", "µs beside unrelated data",
             "unrelated data"],
            [[g["operation"], f"{g['unit']} = {g['size']:,}", f"{g['us']:,.1f}",
              f"{g['us_per_unit']:,.2f}", f"{g['us_with_unrelated']:,.1f}", g["unrelated"]]
             for g in report.growth],
        )  # fmt: skip
    if report.pauses:
        out += table(
            "The longest one filter call holds the server",
            ["objects", "matching", "longest single command (ms)"],
            [[f"{p['objects']:,}", f"{p['matching']:,}", f"{p['worst_pause_ms']:.2f}"]
             for p in report.pauses],
        )  # fmt: skip
    if report.parsers:
        out += table(
            "redis-py's Python parser and hiredis, the same operations",
            ["operation", "python parser µs", "hiredis µs", "speed-up"],
            [[p["operation"], f"{p['python_us']:,.1f}", f"{p['hiredis_us']:,.1f}",
              f"{p['python_us'] / p['hiredis_us']:.2f}"] for p in report.parsers],
        )  # fmt: skip
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the whole run in under 4 min")
    parser.add_argument("--json", default=str(HERE / "results.json"), help="result file")
    parser.add_argument("--markdown", default=None, help="also write the tables here")
    parser.add_argument("--rst", default=None, help="also write them as reStructuredText")
    parser.add_argument("--only", default=None, help="rows whose name contains this")
    parser.add_argument("--huge", action="store_true", help="the 1M-object filter row")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to one CPU")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per row")
    parser.add_argument("--objects", type=int, default=None, help="objects per model row")
    args = parser.parse_args(argv)

    import logging

    import redicts
    from redis.utils import HIREDIS_AVAILABLE

    # the safes' warning that the private server persists nothing is true and expected
    logging.getLogger("pyramid_transient.safe").setLevel(logging.ERROR)

    s = (
        Settings(rounds=5, slice_s=0.04, objects=10_000, quick=True)
        if args.quick
        else Settings(rounds=15, slice_s=0.1, objects=10_000, quick=False)
    )
    if args.rounds:
        s.rounds = args.rounds
    if args.objects:
        s.objects = args.objects
    started = time.perf_counter()
    with private_server(not args.no_pin) as (server, pinned):
        url = server.url
        info = redis.Redis.from_url(url).info("server")
        version = f"{server.binary.name if hasattr(server.binary, 'name') else 'redis'} " + str(
            info.get("valkey_version") or info.get("redis_version")
        )
        report = Report(
            started=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            python=platform.python_version(),
            redis=version,
            pinned=pinned,
            hiredis=HIREDIS_AVAILABLE,
            quick=s.quick,
        )
        b = Bench(s, report, args.only)
        print(f"# python -m benchmarks: {version} at {url}, {pinned}\n", flush=True)
        manager = manager_for(url)
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        redicts_db = 25
        redicts.Pool().reload({"host": parts.hostname, "port": parts.port, "database": redicts_db})
        rows = sql_rows(1000)

        print("## side by side (ratio = peer's time / ours; > 1: we are faster)", flush=True)
        cache_rows(b, manager, rows)
        store_rows(b, manager, redicts, url, redicts_db)
        model_rows(b, manager, url)
        safe_rows(b, manager)
        lock_rows(b, manager)
        session_rows(b, url)
        print("\n## how cost grows", flush=True)
        growth(b, manager, rows, url, args.huge)
        print("\n## the longest pause of one filter", flush=True)
        filter_pause(b, manager)
        print("\n## hiredis", flush=True)
        parsers(b, url)
        if (HERE / "bench_cli.py").exists() and b.wanted("cli"):
            print("\n## CLI (benchmarks/bench_cli.py)", flush=True)
            importlib.import_module("bench_cli").main()
        manager.close()
    table = markdown(report)
    print("\n" + table)
    Path(args.json).write_text(json.dumps(asdict(report), indent=1) + "\n", encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(table, encoding="utf-8")
    if args.rst:
        Path(args.rst).write_text(rst(report), encoding="utf-8")
    print(f"written {args.json}; took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
