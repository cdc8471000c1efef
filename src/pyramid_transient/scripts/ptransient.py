"""``ptransient``: inspect, back up and restore what an app keeps in Redis.

Usage::

    ptransient development.ini info
    ptransient development.ini keys [--db NAME] [--capability CAP] [--limit N]
    ptransient development.ini show KEY [--db NAME]
    ptransient development.ini backup FILE [--db NAME ...]
    ptransient development.ini restore FILE [--replace]

It reads the ``transient.*`` settings of the ini file's app section and touches only keys
under the app's ``transient.key_prefix`` (with an empty prefix: every key of the mapped
databases). Listing uses ``SCAN`` with an escaped pattern, never ``KEYS``, so it does not
block the server; it is an operator's tool, not something for the request path.

A backup is a JSON-lines file: a header line, then one line per key with the database
name, the key, its remaining time to live and Redis's own ``DUMP`` payload (base64), then
an end line with the number of keys. It is written under a temporary name and renamed when
complete, so a backup that failed half-way never stands under the name asked for, and
``restore`` reports a file that lost its end. ``restore`` gives each payload back to
``RESTORE``; the server, not Python, parses it. Both send one pipeline per
:data:`BATCH` keys.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TextIO

import redis

from ..codec import decode
from ..connection import RedisManager, redact_url
from ..exceptions import CodecError, TransientError
from ..keys import glob_escape

FORMAT = "ptransient-backup"
VERSION = 1
#: Keys per pipeline in ``backup`` and ``restore``.
BATCH = 500


def _manager(config_uri: str) -> RedisManager:
    from pyramid.paster import get_appsettings, setup_logging

    setup_logging(config_uri)
    return RedisManager.from_settings(dict(get_appsettings(config_uri)))


def _databases(manager: RedisManager, names: Sequence[str] | None) -> dict[str, int]:
    """The names to visit, one per distinct database (the first name wins)."""
    chosen: dict[str, int] = {}
    seen: set[int] = set()
    for name in names or manager.names:
        db = manager.db_number(name)
        if db not in seen or manager.mode == "cluster":
            seen.add(db)
            chosen[name] = db
    return chosen


def _base(manager: RedisManager, name: str, capability: str | None = None) -> str:
    parts = (manager.settings.key_prefix, manager.namespace(name), capability or "")
    return ":".join(p for p in parts if p)


def _pattern(manager: RedisManager, name: str, capability: str | None = None) -> str:
    base = _base(manager, name, capability)
    return glob_escape(base) + ":*" if base else "*"


def _scan(client: redis.Redis, pattern: str) -> Iterator[bytes]:
    yield from client.scan_iter(match=pattern, count=1000)


def _batches(items: Iterable[Any], size: int = BATCH) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def cmd_info(manager: RedisManager, args: argparse.Namespace, out: TextIO) -> int:
    where = {
        "cluster": " ".join(f"{h}:{p}" for h, p in manager.settings.cluster_nodes),
        "sentinel": f"{manager.settings.sentinel_service} via "
        + " ".join(f"{h}:{p}" for h, p in manager.settings.sentinel_nodes),
    }.get(manager.mode, redact_url(manager.settings.url))
    out.write(f"mode: {manager.mode} ({where})\n")
    out.write(f"key prefix: {manager.settings.key_prefix or '(none)'}\n")
    for name, db in _databases(manager, None).items():
        client = manager.get(name)
        counts: dict[str, int] = {}
        skip = len(_base(manager, name))
        for key in _scan(client, _pattern(manager, name)):
            rest = key.decode("utf-8", "replace")[skip + 1 if skip else 0 :]
            capability = rest.split(":", 1)[0]
            counts[capability] = counts.get(capability, 0) + 1
        aliases = [n for n in manager.names if manager.db_number(n) == db]
        summary = ", ".join(f"{cap}: {n}" for cap, n in sorted(counts.items())) or "no keys"
        out.write(f"db {db} ({', '.join(aliases)}): {summary}\n")
    return 0


def cmd_keys(manager: RedisManager, args: argparse.Namespace, out: TextIO) -> int:
    names = [args.db] if args.db else None
    shown = 0
    for name in _databases(manager, names):
        client = manager.get(name)
        for key in _scan(client, _pattern(manager, name, args.capability)):
            out.write(f"{name}\t{key.decode('utf-8', 'backslashreplace')}\n")
            shown += 1
            if args.limit and shown >= args.limit:
                return 0
    return 0


def _show_value(raw: bytes | str) -> str:
    try:
        value = decode(raw)
    except CodecError:
        return f"(not our encoding) {raw[:200]!r}"
    try:
        return json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):  # dict keys JSON cannot hold, such as tuples
        return repr(value)


def cmd_show(manager: RedisManager, args: argparse.Namespace, out: TextIO) -> int:
    client = manager.get(args.db)
    key = args.key
    raw_kind = client.type(key)
    kind = raw_kind.decode() if isinstance(raw_kind, bytes) else str(raw_kind)
    ttl = client.pttl(key)
    if kind == "none":
        out.write(f"{key}: no such key\n")
        return 1
    out.write(f"{key}: {kind}, ttl {'none' if ttl < 0 else f'{ttl / 1000:g}s'}\n")
    if kind == "string":
        out.write(_show_value(client.get(key) or b"") + "\n")
    elif kind == "hash":
        for field, value in sorted(client.hscan_iter(key, count=1000)):
            out.write(f"  {field.decode('utf-8', 'backslashreplace')}: {_show_value(value)}\n")
    elif kind == "set":
        for member in sorted(client.sscan_iter(key, count=1000)):
            out.write(f"  {member!r}\n")
    elif kind == "zset":
        for member, score in client.zscan_iter(key, count=1000):
            out.write(f"  {score:g} {member!r}\n")
    elif kind == "list":
        for item in client.lrange(key, 0, 999):
            out.write(f"  {item!r}\n")
    return 0


def cmd_backup(manager: RedisManager, args: argparse.Namespace, out: TextIO) -> int:
    count = 0
    partial = f"{args.file}.partial"
    try:
        with open(partial, "w", encoding="utf-8") as fh:
            header = {
                "format": FORMAT,
                "version": VERSION,
                "key_prefix": manager.settings.key_prefix,
                "created": dt.datetime.now(dt.UTC).isoformat(),
            }
            fh.write(json.dumps(header) + "\n")
            for name in _databases(manager, args.db or None):
                client = manager.get(name)
                for keys in _batches(_scan(client, _pattern(manager, name))):
                    with client.pipeline(transaction=False) as pipe:
                        for key in keys:
                            pipe.dump(key)
                            pipe.pttl(key)
                        replies = pipe.execute()
                    for key, payload, ttl in zip(keys, replies[::2], replies[1::2], strict=True):
                        # Gone since SCAN saw it (no payload), or expired between DUMP and
                        # PTTL (-2): restoring it without its expiry would revive it.
                        if payload is None or ttl == -2:
                            continue
                        line = {
                            "db": name,
                            "key": base64.b64encode(key).decode("ascii"),
                            "ttl_ms": ttl if ttl > 0 else 0,
                            "dump": base64.b64encode(payload).decode("ascii"),
                        }
                        fh.write(json.dumps(line) + "\n")
                        count += 1
            fh.write(json.dumps({"end": FORMAT, "keys": count}) + "\n")
        os.replace(partial, args.file)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(partial)
        raise
    out.write(f"backed up {count} keys to {args.file}\n")
    return 0


class _Restorer:
    """Sends RESTOREs in one pipeline per database and :data:`BATCH` keys."""

    def __init__(self, manager: RedisManager, replace: bool, out: TextIO) -> None:
        self.manager = manager
        self.replace = replace
        self.out = out
        self.pending: dict[str, list[tuple[int, bytes, int, bytes]]] = {}
        self.restored = 0
        self.skipped = 0

    def add(self, number: int, db: str, key: bytes, ttl: int, payload: bytes) -> None:
        batch = self.pending.setdefault(db, [])
        batch.append((number, key, ttl, payload))
        if len(batch) >= BATCH:
            self.flush(db)

    def flush(self, db: str | None = None) -> None:
        for name in [db] if db is not None else list(self.pending):
            batch = self.pending.pop(name, [])
            if not batch:
                continue
            with self.manager.get(name).pipeline(transaction=False) as pipe:
                for _, key, ttl, payload in batch:
                    pipe.restore(key, ttl, payload, replace=self.replace)
                replies = pipe.execute(raise_on_error=False)
            for (number, key, _, _), reply in zip(batch, replies, strict=True):
                if isinstance(reply, redis.ResponseError):
                    self.out.write(f"line {number}: {key!r} not restored: {reply}\n")
                    self.skipped += 1
                elif isinstance(reply, Exception):
                    raise reply
                else:
                    self.restored += 1


def cmd_restore(manager: RedisManager, args: argparse.Namespace, out: TextIO) -> int:
    restorer = _Restorer(manager, args.replace, out)
    entries = 0
    end: dict[str, Any] | None = None
    with open(args.file, encoding="utf-8") as fh:
        try:
            header = json.loads(fh.readline())
        except ValueError:
            header = {}
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            out.write(f"{args.file} is not a ptransient backup\n")
            return 2
        for number, line in enumerate(fh, start=2):
            try:
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("end") == FORMAT:
                    end = entry
                    break
                entries += 1
                key = base64.b64decode(entry["key"], validate=True)
                payload = base64.b64decode(entry["dump"], validate=True)
                ttl = int(entry["ttl_ms"])
                db = str(entry["db"])
                manager.db_number(db)  # an unknown name is refused here, not mid-batch
            except (ValueError, KeyError, TypeError, TransientError) as exc:
                out.write(f"line {number}: skipped, {exc}\n")
                restorer.skipped += 1
                continue
            restorer.add(number, db, key, ttl, payload)
    restorer.flush()
    complete = end is not None and end.get("keys") == entries
    if not complete:
        out.write(
            f"{args.file} is incomplete: "
            + (
                "it ends without its end line (truncated?)"
                if end is None
                else f"its end line counts {end.get('keys')!r} keys, the file holds {entries}"
            )
            + "; the keys it does hold were restored as listed\n"
        )
    out.write(f"restored {restorer.restored} keys, skipped {restorer.skipped}\n")
    return 0 if complete and not restorer.skipped else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptransient", description="Inspect, back up and restore pyramid_transient data."
    )
    parser.add_argument("config_uri", help="the app's ini file, e.g. production.ini")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="server, databases and key counts per capability")
    keys = sub.add_parser("keys", help="list the app's keys (SCAN, never KEYS)")
    keys.add_argument("--db", help="only this named database")
    keys.add_argument("--capability", help="only this capability (session, token, store, ...)")
    keys.add_argument("--limit", type=int, default=0, help="stop after N keys")
    show = sub.add_parser("show", help="show one key, decoded")
    show.add_argument("key")
    show.add_argument("--db", default="default", help="named database (default: default)")
    backup = sub.add_parser("backup", help="write the app's keys to a file")
    backup.add_argument("file")
    backup.add_argument("--db", action="append", help="only this named database (repeatable)")
    restore = sub.add_parser("restore", help="load keys from a backup file")
    restore.add_argument("file")
    restore.add_argument("--replace", action="store_true", help="overwrite existing keys")
    return parser


COMMANDS = {
    "info": cmd_info,
    "keys": cmd_keys,
    "show": cmd_show,
    "backup": cmd_backup,
    "restore": cmd_restore,
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``ptransient`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    stream = out or sys.stdout
    try:
        manager = _manager(args.config_uri)
    except TransientError as exc:
        stream.write(f"ptransient: {exc}\n")
        return 2
    try:
        return COMMANDS[args.command](manager, args, stream)
    except (redis.RedisError, TransientError) as exc:
        stream.write(f"ptransient: {exc}\n")
        return 1
    finally:
        manager.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
