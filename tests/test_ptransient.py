"""The ptransient command against a real server."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import redis

from pyramid_transient import RedisManager, codec, encode
from pyramid_transient.scripts.ptransient import main


@pytest.fixture
def ini(tmp_path: Path, transient_settings: dict[str, str]) -> str:
    lines = ["[app:main]", "use = egg:pyramid-transient#demo"]
    lines += [f"{key} = {value}" for key, value in transient_settings.items()]
    path = tmp_path / "app.ini"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), out=out)
    return status, out.getvalue()


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
    assert status == 0 and '{"a": [1, 2]}' in text


def test_show_of_a_missing_key_fails(ini: str, transient_manager: RedisManager) -> None:
    assert run(ini, "show", "nothing-here")[0] == 1


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
    assert status == 0 and "restored 2 keys, skipped 0" in text
    assert client.hgetall(key) == {b"a": encode(1), b"b": encode("x")}
    assert 0 < client.ttl(expiring) <= 1000


def test_restore_does_not_overwrite_without_replace(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    client = transient_manager.get()
    key = transient_manager.keyspace("store").key("k")
    client.set(key, b"old")
    backup = tmp_path / "b.jsonl"
    run(ini, "backup", str(backup))
    client.set(key, b"new")
    status, text = run(ini, "restore", str(backup))
    assert status == 1 and "not restored" in text and client.get(key) == b"new"
    assert run(ini, "restore", "--replace", str(backup))[0] == 0
    assert client.get(key) == b"old"


def test_restore_refuses_a_file_that_is_not_a_backup(ini: str, tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text("hello\n")
    status, text = run(ini, "restore", str(path))
    assert status == 2 and "is not a ptransient backup" in text


def test_a_bad_setting_is_reported_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "bad.ini"
    path.write_text("[app:main]\nuse = egg:pyramid-transient#demo\ntransient.db.cache = x\n")
    status, text = run(str(path), "info")
    assert status == 2 and "transient.db.cache must be an integer" in text


def test_backup_and_restore_send_one_pipeline_per_batch_of_keys(
    ini: str, transient_manager: RedisManager, tmp_path: Path, round_trips
) -> None:
    client = transient_manager.get()
    store = transient_manager.keyspace("store")
    client.mset({store.key(f"k{i}"): encode(i) for i in range(1200)})
    backup = tmp_path / "many.jsonl"
    with round_trips() as rt:
        status, text = run(ini, "backup", str(backup))
    assert status == 0 and "backed up 1200 keys" in text
    # SCAN pages (1,000 keys asked per page) and 3 pipelines of at most 500 keys each,
    # where one round trip per key would be 1,200.
    pipelines = [c for c in rt.commands if c.startswith("DUMP")]
    assert len(pipelines) == 3
    assert rt.count <= 12

    client.flushdb()
    with round_trips() as rt:
        status, text = run(ini, "restore", str(backup))
    assert status == 0 and "restored 1200 keys, skipped 0" in text
    assert rt.count == 3
    assert client.get(store.key("k1199")) == encode(1199)


def test_a_truncated_backup_is_reported_and_what_it_holds_is_restored(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    client = transient_manager.get()
    store = transient_manager.keyspace("store")
    client.set(store.key("a"), encode(1))
    client.set(store.key("b"), encode(2))
    backup = tmp_path / "b.jsonl"
    assert run(ini, "backup", str(backup))[0] == 0
    lines = backup.read_text().splitlines()
    assert json.loads(lines[-1]) == {"end": "ptransient-backup", "keys": 2}

    client.flushdb()
    backup.write_text("\n".join(lines[:-2]) + "\n")  # lost its last key and its end line
    status, text = run(ini, "restore", str(backup))
    assert status == 1
    assert "ends without its end line" in text and "restored 1 keys, skipped 0" in text
    assert client.dbsize() == 1


def test_an_end_line_that_does_not_match_the_file_is_reported(
    ini: str, transient_manager: RedisManager, tmp_path: Path
) -> None:
    transient_manager.get().set(transient_manager.keyspace("store").key("a"), encode(1))
    backup = tmp_path / "b.jsonl"
    run(ini, "backup", str(backup))
    lines = backup.read_text().splitlines()
    lines[-1] = json.dumps({"end": "ptransient-backup", "keys": 5})
    backup.write_text("\n".join(lines) + "\n")
    status, text = run(ini, "restore", "--replace", str(backup))
    assert status == 1 and "its end line counts 5 keys, the file holds 1" in text


def test_a_failed_backup_leaves_the_previous_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "down.ini"
    path.write_text(
        "[app:main]\nuse = egg:pyramid-transient#demo\ntransient.url = redis://127.0.0.1:1\n"
    )
    backup = tmp_path / "nightly.jsonl"
    backup.write_text("yesterday's backup\n")
    status, text = run(str(path), "backup", str(backup))
    assert status == 1 and "ptransient:" in text
    assert backup.read_text() == "yesterday's backup\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["down.ini", "nightly.jsonl"]


def test_show_a_dict_with_non_string_keys(ini: str, transient_manager: RedisManager) -> None:
    from pyramid_transient.scripts.ptransient import main

    key = transient_manager.keyspace("store").key("k")
    value: Any = {(None,): [1, "bar"]}  # the example of DESIGN section 4
    transient_manager.get().set(key, codec.encode(value))
    out = io.StringIO()
    assert main([ini, "show", key], out=out) == 0
    assert "bar" in out.getvalue()
