"""The ptransient command against a real server."""

from __future__ import annotations

import io
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from pyramid_transient import RedisManager, codec, encode
from pyramid_transient.scripts import _backup, _progress
from pyramid_transient.scripts.ptransient import main
from pyramid_transient.testing import RedisServer


def write_ini(path: Path, settings: dict[str, Any], **overrides: str) -> str:
    lines = ["[app:main]", "use = egg:pyramid-transient#demo"]
    lines += [f"{key} = {value}" for key, value in {**settings, **overrides}.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def ini(tmp_path: Path, transient_settings: dict[str, str]) -> str:
    return write_ini(tmp_path / "app.ini", transient_settings)


class Result:
    def __init__(self, status: int, out: str, err: str) -> None:
        self.status, self.out, self.err = status, out, err

    def __iter__(self) -> Any:  # status, text = run(...)
        return iter((self.status, self.out))

    def __getitem__(self, index: int) -> Any:
        return (self.status, self.out)[index]


def run(*argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), out=out, err=err)
    return Result(status, out.getvalue(), err.getvalue())


def key_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:-1]]


def rewrite(path: Path, lines: list[str]) -> None:
    """Write ``lines`` (header and key lines) with a matching end line."""
    import hashlib

    body = "".join(line + "\n" for line in lines)
    digest = hashlib.sha256(body.encode()).hexdigest()
    end = {"end": "ptransient-backup", "keys": len(lines) - 1, "sha256": digest}
    path.write_text(body + json.dumps(end) + "\n")


# ---------------------------------------------------------------------- info, keys, show


def test_info_counts_keys_per_capability(ini: str, transient_manager: RedisManager) -> None:
    store = transient_manager.keyspace("store")
    transient_manager.get("store").set(store.key("a"), encode(1))
    transient_manager.get("store").set(store.key("b"), encode(2))
    transient_manager.get("sessions").set(
        transient_manager.keyspace("session", "sessions").key("x"), b"1"
    )
    status, text = run(ini, "info")
    assert status == 0
    assert "db 13 (default): store: 2" in text
    assert "db 14 (cache, sessions): session: 1" in text


def test_info_lists_databases_in_numeric_order_and_foreign_keys(
    tmp_path: Path, transient_settings: dict[str, str], transient_manager: RedisManager
) -> None:
    ini = write_ini(
        tmp_path / "a.ini",
        transient_settings,
        **{"transient.db.celery": "3", "transient.db.jobs": "2"},
    )
    manager = RedisManager.from_settings(
        {**transient_settings, "transient.db.celery": "3", "transient.db.jobs": "2"}
    )
    try:
        for name in ("celery", "jobs"):
            manager.get(name).flushdb()
        manager.get("celery").set("celery-task-meta-1", b"x")
        manager.get("celery").set("_kombu.binding.celery", b"x")
        status, text = run(ini, "info")
        dbs = [int(line.split()[1]) for line in text.splitlines() if line.startswith("db ")]
        assert status == 0 and dbs == sorted(dbs) == [2, 3, 13, 14]
        prefix = transient_settings["transient.key_prefix"]
        assert f"db 3 (celery): no keys under prefix {prefix!r}; 2 other keys" in text
        assert "db 2 (jobs): no keys\n" in text
    finally:
        for name in ("celery", "jobs"):
            manager.get(name).flushdb()
        manager.close()


def test_info_never_prints_the_password(tmp_path: Path) -> None:
    with RedisServer() as server:
        redis.Redis(port=server.port).config_set("requirepass", "s3cr3t-pw")
        url = f"redis://user:s3cr3t-pw@127.0.0.1:{server.port}"
        ini = write_ini(tmp_path / "pw.ini", {"transient.url": url.replace("user:", ":")})
        result = run(ini, "info")
        assert result.status == 0, result.err
        assert "s3cr3t-pw" not in result.out + result.err and "***" in result.out
        wrong = write_ini(
            tmp_path / "bad.ini", {"transient.url": url.replace("s3cr3t-pw", "nope-pw")}
        )
        result = run(wrong, "info")
        assert result.status == 3 and "nope-pw" not in result.out + result.err


def test_keys_lists_only_the_apps_prefix(ini: str, transient_manager: RedisManager) -> None:
    client = transient_manager.get()
    client.set(transient_manager.keyspace("store").key("mine"), b"1")
    client.set("someone-elses-key", b"1")
    status, text = run(ini, "keys", "--db", "default")
    assert status == 0
    assert "store:mine" in text and "someone-elses-key" not in text


def test_show_decodes_our_encoding(ini: str, transient_manager: RedisManager) -> None:
    key = transient_manager.keyspace("store").key("k")
    transient_manager.get().set(key, encode({"a": [1, 2]}))
    status, text = run(ini, "show", key)
    assert status == 0 and '{"a": [1, 2]}' in text and "capability store" in text


def test_show_of_a_missing_key_fails(ini: str, transient_manager: RedisManager) -> None:
    assert run(ini, "show", "nothing-here")[0] == 1


def test_show_a_dict_with_non_string_keys(ini: str, transient_manager: RedisManager) -> None:
    key = transient_manager.keyspace("store").key("k")
    value: Any = {(None,): [1, "bar"]}  # the example of DESIGN section 4
    transient_manager.get().set(key, codec.encode(value))
    status, text = run(ini, "show", key)
    assert status == 0 and "bar" in text


# ---------------------------------------------------------------------- every capability's data


def fill_app(manager: RedisManager, settings: dict[str, Any]) -> dict[str, str]:
    """Data of every capability written by the library itself; returns a key of each."""
    from pyramid.config import Configurator

    from pyramid_transient.cache import get_region
    from pyramid_transient.invalidation import token_store
    from pyramid_transient.models import RedisModel
    from pyramid_transient.safe import get_safe
    from pyramid_transient.store import section

    class Gadget(RedisModel):
        __indexes__ = ("kind",)
        id: int
        kind: str

    Gadget.objects.bind(manager)
    try:
        Gadget(id=1, kind="a").save()
    finally:
        Gadget.objects.unbind()
    section("docs", redis=manager).set("d", {"a": 1, "b": [1, "x"]})
    get_safe("tests.cli", manager)["n"] = 5
    token_store(manager).tokens(["items:1"])

    config = Configurator(
        settings={
            **settings,
            "redis.sessions.secret": "cli-secret",
            "transient.cache.regions": "pages",
        }
    )
    config.include("pyramid_transient.sessions")
    config.include("pyramid_transient.cache")
    registry = config.registry
    get_region(registry, "pages").set("home", {"html": "<p>hi</p>"})
    config.commit()

    def write(request: Any) -> dict[str, Any]:
        request.session["user"] = "ann"
        return {}

    import webtest

    config.add_route("w", "/w")
    config.add_view(write, route_name="w", renderer="json")
    webtest.TestApp(config.make_wsgi_app()).get("/w")
    found: dict[str, str] = {}
    for name in ("default", "sessions"):
        for key in manager.get(name).scan_iter(match=f"{manager.settings.key_prefix}:*"):
            segment = key.decode().split(":")[1]
            found.setdefault(segment, key.decode())
    return found


def test_show_decodes_every_encoding_with_its_capability(
    tmp_path: Path, transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    ini = write_ini(
        tmp_path / "s.ini", transient_settings, **{"redis.sessions.secret": "cli-secret"}
    )
    keys = fill_app(transient_manager, transient_settings)
    assert set(keys) >= {"session", "token", "cache", "store", "model", "safe"}

    def show(key: str) -> str:
        db = (
            "sessions" if ":session:" in key or ":cache:" in key or ":token:" in key else "default"
        )
        result = run(ini, "show", key, "--db", db)
        assert result.status == 0, result.err
        return result.out

    text = show(keys["session"])
    assert "capability sessions" in text and "HMAC verified" in text and '"ann"' in text
    assert "cache token" in show(keys["token"])
    text = show(keys["cache"])
    assert "capability cache" in text and "cache region value" in text and "<p>hi</p>" in text
    assert "not codec" not in show(keys["store"])
    assert "capability models" in show(keys["model"])
    text = show(keys["safe"])
    assert "capability safe" in text and "n: 5" in text


# ---------------------------------------------------------------------- backup and restore


def test_backup_and_restore_round_trip_with_ttl(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    client: redis.Redis = transient_manager.get()
    key = transient_manager.keyspace("safe").key("m")
    client.hset(key, mapping={"a": encode(1), "b": encode("x")})
    expiring = transient_manager.keyspace("store").key("e")
    client.set(expiring, encode(5), ex=1000)
    backup = tmp_path / "backup.jsonl"
    status, text = run(ini, "backup", str(backup))
    assert status == 0 and "backed up 2 keys" in text
    assert json.loads(backup.read_text().splitlines()[0])["format"] == "ptransient-backup"

    client.flushdb()
    status, text = run(ini, "restore", str(backup))
    assert status == 0 and "restored 2 keys" in text
    assert client.hgetall(key) == {b"a": encode(1), b"b": encode("x")}
    assert 990 < client.ttl(expiring) <= 1000


def test_backup_file_is_private(ini: str, transient_manager: RedisManager, tmp_path: Path) -> None:
    transient_manager.get().set(transient_manager.keyspace("store").key("a"), b"1")
    backup = tmp_path / "b.jsonl"
    old = os.umask(0o022)
    try:
        assert run(ini, "backup", str(backup)).status == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600


def test_every_type_round_trips_with_its_ttl(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    client = transient_manager.get()
    ks = transient_manager.keyspace("store")
    client.set(ks.key("s"), b"text", px=500_000)
    client.set(ks.key("bin"), b"\xff\x00\x80 binary")
    client.set(ks.key("\xe9t\xe9"), "\u00e9\u00e8")
    client.hset(ks.key("h"), mapping={"f": b"1", b"\xfe": b"\xff"})
    client.rpush(ks.key("l"), b"a", b"b", b"a")
    client.sadd(ks.key("set"), b"x", b"y")
    client.zadd(ks.key("z"), {b"m": 1.5, b"n": float("inf"), b"o": 1 / 3})
    client.xadd(ks.key("x"), {b"f": b"v"}, id="5-1")
    client.xadd(ks.key("x"), {b"g": b"w"}, id="7-0")
    client.xgroup_create(ks.key("x"), "workers", id="5-1")
    client.pfadd(ks.key("hll"), "a", "b")
    client.setbit(ks.key("bits"), 100, 1)
    before = {k: client.dump(k) for k in client.scan_iter(match=ks.pattern())}
    backup = tmp_path / "all.jsonl"
    result = run(ini, "backup", str(backup))
    assert result.status == 0, result.err
    client.flushdb()
    result = run(ini, "restore", str(backup))
    assert result.status == 0 and f"restored {len(before)} keys" in result.out
    assert client.get(ks.key("bin")) == b"\xff\x00\x80 binary"
    assert client.get(ks.key("\xe9t\xe9")) == "\u00e9\u00e8".encode()
    assert client.hgetall(ks.key("h")) == {b"f": b"1", b"\xfe": b"\xff"}
    assert client.lrange(ks.key("l"), 0, -1) == [b"a", b"b", b"a"]
    assert client.smembers(ks.key("set")) == {b"x", b"y"}
    assert client.zrange(ks.key("z"), 0, -1, withscores=True) == [
        (b"o", 1 / 3),
        (b"m", 1.5),
        (b"n", float("inf")),
    ]
    assert client.xrange(ks.key("x")) == [(b"5-1", {b"f": b"v"}), (b"7-0", {b"g": b"w"})]
    groups = client.xinfo_groups(ks.key("x"))
    assert [(g["name"], g["last-delivered-id"]) for g in groups] == [(b"workers", b"5-1")]
    assert client.pfcount(ks.key("hll")) == 2 and client.getbit(ks.key("bits"), 100) == 1
    assert 490_000 < client.pttl(ks.key("s")) <= 500_000
    assert client.ttl(ks.key("l")) == -1


def test_expired_keys_are_skipped_by_backup_and_restore(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    client = transient_manager.get()
    ks = transient_manager.keyspace("store")
    client.set(ks.key("soon"), b"1", px=1500)
    client.set(ks.key("gone"), b"1", px=1)
    client.set(ks.key("stays"), b"1")
    time.sleep(0.01)
    backup = tmp_path / "b.jsonl"
    assert run(ini, "backup", str(backup)).out.startswith("backed up 2 keys")
    time.sleep(1.6)  # "soon" expired after the backup
    client.flushdb()
    result = run(ini, "restore", str(backup))
    assert result.status == 0 and "restored 1 keys" in result.out
    assert "1 expired since the backup" in result.out
    assert client.exists(ks.key("soon")) == 0 and client.exists(ks.key("stays")) == 1


def test_tokens_are_never_backed_up_nor_restored(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    from pyramid_transient.invalidation import token_store

    tokens = token_store(transient_manager)
    tokens.tokens(["items:1", "items:2"])
    client = transient_manager.get("cache")
    client.set(transient_manager.keyspace("cache").key("pages", "v", "home"), b"x")
    backup = tmp_path / "b.jsonl"
    result = run(ini, "backup", "--capability", "cache", "--capability", "sessions", str(backup))
    assert result.status == 0 and "backed up 1 keys" in result.out
    assert [line["cap"] for line in key_lines(backup)] == ["cache"]
    assert run(ini, "backup", "--capability", "tokens", str(backup)).status == 2

    # A file that holds a token line anyway (edited, or from elsewhere): not restored.
    lines = backup.read_text().splitlines()[:-1]
    token_line = dict(json.loads(lines[1]), key="token:{tokens}:items:9", v="abc-1")
    rewrite(backup, [*lines, json.dumps(token_line)])
    client.flushdb()
    result = run(ini, "restore", str(backup))
    assert result.status == 0 and "1 tokens (derived data, never restored)" in result.out
    assert client.exists(tokens.key("items:9")) == 0


def test_store_lock_records_are_not_backed_up(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    from pyramid_transient.store import section

    docs = section("docs", redis=transient_manager)
    docs.set("a", 1)
    lock = docs.get("a").lock
    lock.acquire()
    try:
        backup = tmp_path / "b.jsonl"
        assert run(ini, "backup", str(backup)).status == 0
        keys = [line["key"] for line in key_lines(backup)]
        assert keys and not [k for k in keys if k.endswith((":locks", ":lockpaths"))]
    finally:
        lock.release()


def test_cache_values_only_when_asked(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    client = transient_manager.get("cache")
    client.set(transient_manager.keyspace("cache").key("pages", "v", "home"), b"x")
    client.set(transient_manager.keyspace("session", "sessions").key("s"), b"x")
    backup = tmp_path / "b.jsonl"
    assert run(ini, "backup", str(backup)).status == 0
    assert [line["cap"] for line in key_lines(backup)] == ["sessions"]
    assert run(ini, "backup", "--capability", "cache", str(backup)).status == 0
    assert [line["cap"] for line in key_lines(backup)] == ["cache"]


def test_restore_does_not_overwrite_without_replace_and_summarises(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    client = transient_manager.get()
    ks = transient_manager.keyspace("store")
    for i in range(5):
        client.set(ks.key(f"k{i}"), b"old")
    backup = tmp_path / "b.jsonl"
    run(ini, "backup", str(backup))
    for i in range(5):
        client.set(ks.key(f"k{i}"), b"new")
    result = run(ini, "restore", str(backup))
    assert result.status == 0 and client.get(ks.key("k0")) == b"new"
    assert "restored 0 keys" in result.out
    assert "5 already there (kept; --replace overwrites)" in result.out
    assert "k3" not in result.out  # one line per reason, not per key
    assert "k3" in run(ini, "restore", "--verbose", str(backup)).out
    assert run(ini, "restore", "--replace", str(backup)).status == 0
    assert client.get(ks.key("k0")) == b"old"


def test_dry_run_writes_nothing(ini: str, transient_manager: RedisManager, tmp_path: Path) -> None:
    client = transient_manager.get()
    ks = transient_manager.keyspace("store")
    client.set(ks.key("a"), b"1")
    client.set(ks.key("b"), b"1")
    backup = tmp_path / "b.jsonl"
    run(ini, "backup", str(backup))
    client.delete(ks.key("a"))
    result = run(ini, "restore", "--dry-run", str(backup))
    assert result.status == 0 and "dry run: would restore 1 keys" in result.out
    assert "1 already there" in result.out and client.exists(ks.key("a")) == 0


def test_restore_refuses_a_file_that_is_not_a_backup(ini: str, tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text("hello\n")
    result = run(ini, "restore", str(path))
    assert result.status == 2 and "is not a ptransient backup" in result.err
    assert result.out == "" and "Traceback" not in result.err


def test_backup_and_restore_send_one_call_per_batch_of_keys(
    ini: str, transient_manager: RedisManager, tmp_path: Path, round_trips: Any
) -> None:
    client = transient_manager.get()
    store = transient_manager.keyspace("store")
    client.mset({store.key(f"k{i}"): encode(i) for i in range(1200)})
    backup = tmp_path / "many.jsonl"
    with round_trips() as rt:
        status, text = run(ini, "backup", str(backup))
    assert status == 0 and "backed up 1200 keys" in text
    # One script call per SCAN page of about 500 keys (the server reads them and writes
    # the lines), where one round trip per key would be 1,200 (2,400 with the expiries).
    assert 2 <= len([c for c in rt.commands if c.startswith("EVALSHA")]) <= 5
    assert rt.count <= 12  # and DBSIZE, INFO, SCRIPT LOAD per database

    client.flushdb()
    with round_trips() as rt:
        status, text = run(ini, "restore", str(backup))
    assert status == 0 and "restored 1200 keys" in text
    assert len([c for c in rt.commands if c.startswith("EVALSHA")]) == 3
    assert rt.count <= 5
    assert client.get(store.key("k1199")) == encode(1199)


# ---------------------------------------------------------------------- damaged files


def two_key_backup(ini: str, manager: RedisManager, tmp_path: Path) -> Path:
    client = manager.get()
    store = manager.keyspace("store")
    client.set(store.key("a"), encode(1))
    client.set(store.key("b"), encode(2))
    backup = tmp_path / "b.jsonl"
    assert run(ini, "backup", str(backup)).status == 0
    client.flushdb()
    return backup


def test_a_truncated_backup_is_refused_unless_partial(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    backup = two_key_backup(ini, transient_manager, tmp_path)
    lines = backup.read_text().splitlines()
    backup.write_text("\n".join(lines[:-2]) + "\n")  # lost its last key and its end line
    result = run(ini, "restore", str(backup))
    assert result.status == 2 and "ends without its end line" in result.err
    assert "nothing was restored" in result.err and transient_manager.get().dbsize() == 0
    result = run(ini, "restore", "--partial", str(backup))
    assert result.status == 1 and "restored 1 keys" in result.out
    assert transient_manager.get().dbsize() == 1


def test_a_corrupted_backup_is_refused_unless_partial(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    backup = two_key_backup(ini, transient_manager, tmp_path)
    data = bytearray(backup.read_bytes())
    lines = data.split(b"\n")
    lines[1] = lines[1].replace(b'"exp"', b'"ex\x00')  # one line damaged, same length
    backup.write_bytes(b"\n".join(lines))
    result = run(ini, "restore", str(backup))
    assert result.status == 2 and "corrupted" in result.err
    result = run(ini, "restore", "--partial", str(backup))
    assert result.status == 1 and "restored 1 keys" in result.out
    assert "1 damaged lines" in result.out


def test_an_end_line_that_does_not_match_the_file_is_reported(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    backup = two_key_backup(ini, transient_manager, tmp_path)
    lines = backup.read_text().splitlines()
    lines[-1] = json.dumps({"end": "ptransient-backup", "keys": 5})
    backup.write_text("\n".join(lines) + "\n")
    result = run(ini, "restore", "--replace", str(backup))
    assert result.status == 2 and "its end line counts 5 keys, the file holds 2" in result.err


def test_a_version_1_backup_is_refused(ini: str, tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps({"format": "ptransient-backup", "version": 1}) + "\n")
    result = run(ini, "restore", str(path))
    assert result.status == 2 and "version 1" in result.err


# ---------------------------------------------------------------------- prefix and names


def test_a_prefix_mismatch_is_refused_and_from_prefix_rewrites(
    tmp_path: Path, transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    ini = write_ini(tmp_path / "a.ini", transient_settings)
    client = transient_manager.get()
    mine = transient_manager.keyspace("store").key("a")
    client.set(mine, b"1")
    backup = tmp_path / "b.jsonl"
    assert run(ini, "backup", str(backup)).status == 0
    other = write_ini(tmp_path / "o.ini", transient_settings, **{"transient.key_prefix": "other"})
    result = run(other, "restore", str(backup))
    prefix = transient_settings["transient.key_prefix"]
    assert result.status == 2 and f"taken under key prefix {prefix!r}" in result.err
    assert client.exists("other:store:a") == 0
    assert run(other, "restore", "--from-prefix", "wrong", str(backup)).status == 2
    result = run(other, "restore", "--from-prefix", prefix, str(backup))
    assert result.status == 0 and client.get("other:store:a") == b"1"


def test_sessions_restored_under_another_prefix_still_load(
    tmp_path: Path, transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    import webtest
    from pyramid.config import Configurator

    def count(request: Any) -> dict[str, int]:
        request.session["n"] = request.session.get("n", 0) + 1
        return {"n": request.session["n"]}

    def app(prefix: str) -> webtest.TestApp:
        settings = {
            **transient_settings,
            "transient.key_prefix": prefix,
            "redis.sessions.secret": "s",
        }
        with Configurator(settings=settings) as config:
            config.include("pyramid_transient.sessions")
            config.add_route("r", "/r")
            config.add_view(count, route_name="r", renderer="json")
            return webtest.TestApp(config.make_wsgi_app())

    old = app(transient_settings["transient.key_prefix"])
    assert old.get("/r").json == {"n": 1}
    assert old.get("/r").json == {"n": 2}
    cookie = old.cookies
    extra = {"redis.sessions.secret": "s"}
    ini = write_ini(tmp_path / "a.ini", transient_settings, **extra)
    backup = tmp_path / "b.jsonl"
    assert run(ini, "backup", str(backup)).status == 0
    new_ini = write_ini(
        tmp_path / "n.ini", transient_settings, **{**extra, "transient.key_prefix": "moved"}
    )
    result = run(
        new_ini,
        "restore",
        "--from-prefix",
        transient_settings["transient.key_prefix"],
        str(backup),
    )
    assert result.status == 0, result.out + result.err
    new = app("moved")
    for name, value in cookie.items():
        new.set_cookie(name, value)
    assert new.get("/r").json == {"n": 3}  # the session was found: sealed for its new key
    transient_manager.get("sessions").delete(*transient_manager.get("sessions").keys("moved:*"))


def test_show_and_restore_tell_a_session_of_another_secret(
    tmp_path: Path, transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    # A session sealed with another secret (or tampered with) does not verify: show says
    # so, and a restore under another prefix refuses to seal it again for its new key.
    keys = fill_app(transient_manager, transient_settings)
    other = write_ini(
        tmp_path / "o.ini", transient_settings, **{"redis.sessions.secret": "another-secret"}
    )
    shown = run(other, "show", keys["session"], "--db", "sessions")
    assert shown.status == 0, shown.err
    assert "HMAC does NOT verify" in shown.out
    backup = tmp_path / "b.jsonl"
    assert run(other, "backup", "--capability", "sessions", str(backup)).status == 0
    moved = write_ini(
        tmp_path / "m.ini",
        transient_settings,
        **{"redis.sessions.secret": "another-secret", "transient.key_prefix": "moved2"},
    )
    result = run(
        moved, "restore", "--from-prefix", transient_settings["transient.key_prefix"], str(backup)
    )
    assert result.status == 1, result.out + result.err
    assert "does not verify" in result.out + result.err
    assert transient_manager.get("sessions").keys("moved2:*") == []


def test_a_name_moved_to_another_db_is_restored_where_it_maps_today(
    tmp_path: Path, transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    ini = write_ini(tmp_path / "a.ini", transient_settings)
    sessions = transient_manager.keyspace("session", "sessions").key("abc")
    page = transient_manager.keyspace("cache").key("p", "v", "home")
    transient_manager.get("sessions").set(sessions, b"s")
    transient_manager.get("cache").set(page, b"c")  # db 14 too: cache and sessions share it
    backup = tmp_path / "b.jsonl"
    assert (
        run(ini, "backup", "--capability", "sessions", "--capability", "cache", str(backup)).status
        == 0
    )
    assert sorted(line["db"] for line in key_lines(backup)) == ["cache", "sessions"]
    transient_manager.get("sessions").flushdb()
    moved = write_ini(tmp_path / "m.ini", transient_settings, **{"transient.db.sessions": "12"})
    db12 = RedisManager.from_settings({**transient_settings, "transient.db.sessions": "12"})
    try:
        db12.get("sessions").flushdb()
        result = run(moved, "restore", str(backup))
        assert result.status == 0 and "restored 2 keys" in result.out
        assert db12.get("sessions").get(sessions) == b"s"
        assert transient_manager.get("cache").get(page) == b"c"  # still db 14
        assert transient_manager.get("cache").exists(sessions) == 0
    finally:
        db12.get("sessions").flushdb()
        db12.close()


def test_backup_and_restore_of_chosen_databases(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    transient_manager.get().set(transient_manager.keyspace("store").key("a"), b"1")
    sessions = transient_manager.keyspace("session", "sessions")
    transient_manager.get("sessions").set(sessions.key("s"), b"1")
    backup = tmp_path / "b.jsonl"
    assert run(ini, "backup", "--db", "sessions", str(backup)).status == 0
    assert [line["db"] for line in key_lines(backup)] == ["sessions"]
    assert run(ini, "backup", str(backup)).status == 0
    transient_manager.get().flushdb()
    transient_manager.get("sessions").flushdb()
    result = run(ini, "restore", "--db", "default", str(backup))
    assert "restored 1 keys" in result.out and "1 not selected" in result.out
    assert transient_manager.get("sessions").dbsize() == 0


# ---------------------------------------------------------------------- exit codes


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing ini", "no such file"),
        ("malformed ini", "cannot read"),
        ("no app section", "no app section"),
        ("missing backup", "cannot read"),
        ("unwritable path", "cannot write"),
        ("unknown db", "no Redis database is named 'nope'"),
        ("bad setting", "transient.db.cache must be an integer"),
        ("memory", "a memory server lives inside one process"),
        ("flush without yes", "add --yes"),
        ("bad option", "usage:"),
    ],
)
def test_usage_and_configuration_errors_exit_2_with_one_line(
    case: str, message: str, ini: str, tmp_path: Path
) -> None:
    argv = {
        "missing ini": [str(tmp_path / "nope.ini"), "info"],
        "malformed ini": [write_text(tmp_path / "m.ini", "[app:main\nx"), "info"],
        "no app section": [write_text(tmp_path / "n.ini", "[server:main]\nuse = x\n"), "info"],
        "missing backup": [ini, "restore", str(tmp_path / "none.jsonl")],
        "unwritable path": [ini, "backup", str(tmp_path / "no" / "dir" / "b.jsonl")],
        "unknown db": [ini, "backup", "--db", "nope", str(tmp_path / "b.jsonl")],
        "bad setting": [
            write_text(
                tmp_path / "b.ini",
                "[app:main]\nuse = egg:pyramid-transient#demo\ntransient.db.cache = x\n",
            ),
            "info",
        ],
        "memory": [
            write_text(
                tmp_path / "mem.ini",
                "[app:main]\nuse = egg:pyramid-transient#demo\ntransient.url = memory://x\n",
            ),
            "info",
        ],
        "flush without yes": [ini, "flush", "--db", "default"],
        "bad option": [ini, "restore", "--no-such-option"],
    }[case]
    result = run(*argv)
    assert result.status == 2, (result.out, result.err)
    assert message in result.err and "Traceback" not in result.err
    if case != "bad option":
        assert result.err.count("\n") == 1 and result.out == ""
    assert not list(tmp_path.glob("*.partial"))


def write_text(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    result = run(str(tmp_path / "nope.ini"), "info", "--verbose")
    assert result.status == 2 and "Traceback" in result.err


def test_an_unreachable_server_fails_fast_with_3_and_writes_nothing(tmp_path: Path) -> None:
    ini = write_ini(tmp_path / "down.ini", {"transient.url": "redis://127.0.0.1:1"})
    backup = tmp_path / "nightly.jsonl"
    backup.write_text("yesterday's backup\n")
    started = time.monotonic()
    result = run(ini, "backup", str(backup))
    assert time.monotonic() - started < 3
    assert (
        result.status == 3
        and result.err.startswith("ptransient: ")
        and "Traceback" not in result.err
    )
    assert backup.read_text() == "yesterday's backup\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["down.ini", "nightly.jsonl"]
    for argv in (
        ["info"],
        ["keys"],
        ["restore", str(backup)],
        ["flush", "--db", "default", "--yes"],
    ):
        started = time.monotonic()
        assert run(ini, *argv).status in (2, 3)  # restore: the file is refused first
        assert time.monotonic() - started < 3


def test_ctrl_c_exits_130_and_leaves_no_partial_file(
    ini: str, transient_manager: RedisManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transient_manager.get().set(transient_manager.keyspace("store").key("a"), b"1")

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(_backup.Reader, "pages", interrupted)
    result = run(ini, "backup", str(tmp_path / "b.jsonl"))
    assert result.status == 130 and "interrupted" in result.err and "Traceback" not in result.err
    assert list(tmp_path.iterdir()) == [Path(ini)]


# ---------------------------------------------------------------------- progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def fake_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    now = [1000.0]
    monkeypatch.setattr(_progress, "clock", lambda: now[0])

    def advance(seconds: float) -> None:
        now[0] += seconds

    return advance


def test_progress_on_a_terminal_shows_counts_rate_and_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    tick = fake_clock(monkeypatch)
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)  # our own line
    stream = Terminal()
    progress = _progress.Progress("backup", stream, total=1000)
    for _ in range(5):
        tick(1)
        progress.advance(100)
    progress.close()
    text = stream.getvalue()
    assert "\r" in text and "backup: 500 keys (50%), ETA 5s, 100 keys/s" in text


def test_progress_on_a_terminal_uses_tqdm_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tqdm")
    stream = Terminal()
    progress = _progress.Progress("restore", stream, total=10)
    progress.advance(5)
    progress.close()
    assert "restore" in stream.getvalue() and "5/10" in stream.getvalue()


def test_progress_elsewhere_prints_plain_periodic_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    tick = fake_clock(monkeypatch)
    stream = io.StringIO()
    progress = _progress.Progress("restore", stream, total=0)
    for _ in range(30):
        tick(1)
        progress.advance(10)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "\r" not in stream.getvalue()
    assert lines[0] == "restore: 100 keys, 10 keys/s"


def test_backup_reports_progress_on_stderr_only(
    ini: str, transient_manager: RedisManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_progress, "INTERVAL", 0.0)
    transient_manager.get().set(transient_manager.keyspace("store").key("a"), b"1")
    result = run(ini, "backup", str(tmp_path / "b.jsonl"))
    assert "backup: 1 keys" in result.err and "backup:" not in result.out


# ---------------------------------------------------------------------- flush


def test_flush_deletes_only_our_namespace_of_the_database(
    ini: str, transient_manager: RedisManager
) -> None:
    client = transient_manager.get()
    ks = transient_manager.keyspace("store")
    client.set(ks.key("a"), b"1")
    client.set(transient_manager.keyspace("safe").key("s"), b"1")
    client.set("foreign", b"1")
    sessions = transient_manager.keyspace("session", "sessions")
    transient_manager.get("sessions").set(sessions.key("x"), b"1")
    result = run(ini, "flush", "--db", "default", "--capability", "store", "--yes")
    assert result.status == 0 and "deleted 1 keys" in result.out
    assert client.exists(ks.key("a")) == 0 and client.exists("foreign") == 1
    assert run(ini, "flush", "--db", "default", "--yes").out.startswith("deleted 1 keys")
    assert client.exists("foreign") == 1
    assert transient_manager.get("sessions").dbsize() == 1


# ---------------------------------------------------------------------- memory


def test_memory_stays_constant_whatever_the_key_count(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    import tracemalloc

    client = transient_manager.get()
    store = transient_manager.keyspace("store")

    def peak(n: int) -> tuple[int, int]:
        client.flushdb()
        for start in range(0, n, 1000):
            client.mset({store.key(f"k{i}"): encode("x" * 40) for i in range(start, start + 1000)})
        backup = tmp_path / f"b{n}.jsonl"
        peaks = []
        # the restore finds every key there: its summary must not keep a line per key
        for argv in (["backup", str(backup)], ["restore", str(backup)]):
            tracemalloc.start()
            try:
                assert run(ini, "-q", *argv).status == 0
                peaks.append(tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()
        return peaks[0], peaks[1]

    small, large = peak(2_000), peak(16_000)
    # eight times the keys, about the same peak (a batch of 500 lines, a SCAN page)
    assert large[0] < small[0] * 1.5 + 200_000, (small, large)
    assert large[1] < small[1] * 1.5 + 200_000, (small, large)


def test_ctrl_c_during_a_restore_exits_130(
    ini: str, transient_manager: RedisManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = transient_manager.get()
    client.mset({transient_manager.keyspace("store").key(f"k{i}"): b"1" for i in range(1200)})
    backup = tmp_path / "b.jsonl"
    assert run(ini, "backup", str(backup)).status == 0
    client.flushdb()
    calls = []
    original = _backup.Restorer.add

    def add(self: Any, entry: Any) -> None:
        calls.append(1)
        if len(calls) == 1100:  # two batches sent, one reply still in flight
            raise KeyboardInterrupt
        original(self, entry)

    monkeypatch.setattr(_backup.Restorer, "add", add)
    result = run(ini, "restore", str(backup))
    assert result.status == 130 and "interrupted" in result.err and "Traceback" not in result.err
    monkeypatch.undo()
    # the connection whose reply was never read went nowhere: the next command is fine
    assert client.ping() and run(ini, "restore", str(backup)).status == 0
    assert client.dbsize() == 1200
