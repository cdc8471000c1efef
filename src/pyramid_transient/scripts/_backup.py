"""The backup format and the two halves that read and write it (docs/cli.rst, "Format").

A backup is ASCII JSON lines:

* a header: ``{"format": "ptransient-backup", "version": 2, "key_prefix": ..., "mode":
  ..., "server": ..., "created": ..., "capabilities": [...]}``;
* one line per key: ``db`` (the database *name*), ``cap`` (the capability), ``key`` (the
  key without the app's prefix and namespace), ``t`` (its Redis type, or ``dump``),
  ``v`` (its value in a portable form per type), ``exp`` (absolute expiry, Unix
  milliseconds, 0 for none) and ``enc`` = ``"latin1"`` when each character of the key's
  and the value's strings stands for one byte (binary data, escaped as ``\u0080`` ..
  ``\u00ff``; ``"b64"``, base64, is read too), for a key or value that is not ASCII;
* an end line: ``{"end": "ptransient-backup", "keys": N, "sha256": ...}``, the digest of
  every byte before it.

Nothing here is tied to a server's RDB version: values are written back with ``SET``,
``HSET``, ``RPUSH``, ``SADD``, ``ZADD``, ``XADD``; only a type with no portable form (a
module's) is kept as a ``DUMP`` payload, which a server of another version may refuse.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import IO, Any

from ..binding import _CHECKOUT, guard
from ..connection import RedisManager
from ..exceptions import InvalidArgument
from ..keys import glob_escape

FORMAT = "ptransient-backup"
VERSION = 2

#: Keys per Lua call or pipeline in ``backup`` and ``restore``: a script over this many
#: small keys holds the server for a few milliseconds.
BATCH = 500

#: Capabilities by the name the command takes, and the key segment each writes.
CAPABILITIES = {
    "sessions": "session",
    "cache": "cache",
    "store": "store",
    "models": "model",
    "safe": "safe",
    "other": "",  # anything else under the app's prefix (an app's own keys)
}
#: What ``backup`` takes without ``--capability``: cache values only when asked for.
DEFAULT_CAPABILITIES = ("sessions", "store", "models", "safe", "other")
#: Key segments that hold derived data, never backed up nor restored (a token restored
#: after the row changed would make a stale page valid again).
DERIVED = ("token",)
#: The named database each capability uses by default.
OWN_NAME = {
    "sessions": "sessions",
    "cache": "cache",
    "store": "store",
    "models": "models",
    "safe": "safe",
}

_SEGMENT_TO_CAPABILITY = {seg: cap for cap, seg in CAPABILITIES.items() if seg}

BACKUP_LUA = (resources.files(__package__ or __name__) / "backup.lua").read_text("utf-8")
RESTORE_LUA = (resources.files(__package__ or __name__) / "restore.lua").read_text("utf-8")


class BackupFileError(Exception):
    """The file is not a backup this version reads, or it is damaged."""


def capability_of(rest: bytes) -> tuple[str | None, bool]:
    """``(capability, kept)`` of a key without its prefix and namespace.

    ``capability`` is None for derived data (tokens); ``kept`` is False for records that a
    restore must not bring back (tokens, tree lock records, dogpile's lock keys).
    """
    segment, _, tail = rest.partition(b":")
    seg = segment.decode("utf-8", "replace")
    if seg in DERIVED:
        return None, False
    capability = _SEGMENT_TO_CAPABILITY.get(seg, "other")
    if capability == "store" and (tail.endswith(b":locks") or tail.endswith(b":lockpaths")):
        return capability, False
    if capability == "cache" and tail.partition(b":")[2].startswith(b"l:"):
        return capability, False
    return capability, True


def name_for(manager: RedisManager, capability: str, db: int) -> str:
    """The database name recorded for a key of ``capability`` found in database ``db``:
    the capability's own name when the ini maps it there, else the first name of ``db``."""
    own = OWN_NAME.get(capability)
    if own is not None and manager.db_number(own) == db:
        return own
    for name in manager.names:
        if manager.db_number(name) == db:
            return name
    return "default"


def _latin1(data: bytes) -> str:
    return data.decode("latin-1")


def entry_line(db: str, cap: str, rel: bytes, kind: str, value: Any, exp: int) -> str:
    """One backup line (without its newline) from Python values (bytes everywhere)."""
    flat: list[bytes] = [rel]
    if kind == "stream":
        for entry_id, fields in value["entries"]:
            flat.append(entry_id)
            flat.extend(fields)
        for group in value["groups"]:
            flat.extend(group)
        flat.append(value["last"])
    elif kind in ("string", "dump"):
        flat.append(value)
    else:
        flat.extend(value)
    text = kind != "dump"
    if text:
        try:
            for item in flat:
                item.decode("utf-8")
        except UnicodeDecodeError:
            text = False
    conv: Callable[[bytes], str] = (lambda b: b.decode("utf-8")) if text else _latin1
    if kind == "stream":
        v: Any = {
            "entries": [[conv(i), [conv(f) for f in fs]] for i, fs in value["entries"]],
            "groups": [[conv(g), conv(d)] for g, d in value["groups"]],
            "last": conv(value["last"]),
        }
    elif kind in ("string", "dump"):
        v = conv(value)
    else:
        v = [conv(item) for item in value]
    # The order of backup.lua's lines: a restore reads the head without parsing the value.
    line: dict[str, Any] = {"db": db, "cap": cap, "key": conv(rel), "t": kind, "exp": exp}
    if not text:
        line["enc"] = "latin1"
    line["v"] = v
    return json.dumps(line, separators=(",", ":"))


# ---------------------------------------------------------------------- backup


@dataclass
class Source:
    """One database (or one Cluster master) to read, and how its keys map to names."""

    label: str  # the name the errors use
    client: Any
    pattern: str
    cut: int  # bytes of prefix to remove from each key
    cluster: bool
    #: standalone: (capability -> name); Cluster: names by namespace
    names: dict[str, str]
    #: standalone: (capability -> the configured name serving it)
    serving: dict[str, str] = field(default_factory=dict)


def sources(manager: RedisManager, names: Sequence[str]) -> Iterator[Source]:
    """Where ``backup``, ``flush`` and ``info`` read, one per distinct database or
    Cluster master."""
    prefix = manager.settings.key_prefix
    pattern = glob_escape(prefix) + ":*" if prefix else "*"
    cut = len(prefix.encode()) + 1 if prefix else 0
    if manager.mode == "cluster":
        with guard("default"):
            cluster: Any = manager.get("default")
            nodes = cluster.get_primaries()
        chosen = {manager.namespace(n): n for n in names}
        for node in nodes:
            client = cluster.get_redis_connection(node)
            yield Source(f"{node.host}:{node.port}", client, pattern, cut, True, chosen)
        return
    seen: set[int] = set()
    for name in names:
        db = manager.db_number(name)
        if db in seen:
            continue
        seen.add(db)
        mapping = {cap: name_for(manager, cap, db) for cap in CAPABILITIES}
        serving = {cap: manager.resolve(n) for cap, n in mapping.items()}
        yield Source(name, manager.get(name), pattern, cut, False, mapping, serving)


def scan(source: Source, count: int = 1000) -> Iterator[list[bytes]]:
    """The keys under the prefix, one ``SCAN`` page at a time (constant memory)."""
    cursor: Any = 0
    while True:
        with guard(source.label):
            cursor, keys = source.client.scan(cursor, match=source.pattern, count=count)
        if keys:
            yield keys
        if int(cursor) == 0:
            return


@dataclass
class Picked:
    """A key chosen for the backup: its name, capability and key without the prefix."""

    key: bytes
    rel: bytes
    cap: str
    name: str


def pick(
    source: Source, keys: Iterable[bytes], capabilities: set[str], names: set[str]
) -> Iterator[Picked]:
    """The keys of ``keys`` that the backup takes, with what each line records;
    ``names`` are configured names (a key is taken when the name it records is served
    by one of them)."""
    cut = source.cut
    for key in keys:
        rest = key[cut:]
        if source.cluster:
            namespace, _, rest = rest.partition(b":")
            name = source.names.get(namespace.decode("utf-8", "replace"))
            if name is None:
                continue  # not one of the names asked for
        cap, kept = capability_of(rest)
        if cap is None or not kept or cap not in capabilities:
            continue
        if not source.cluster:
            name = source.names[cap]
            if source.serving[cap] not in names:
                continue
        yield Picked(key, rest, cap, str(name))


_READERS = {
    "string": ("GET",),
    "hash": ("HGETALL",),
    "list": ("LRANGE", 0, -1),
    "set": ("SMEMBERS",),
    "zset": ("ZRANGE", 0, -1, "WITHSCORES"),
}


def _now_ms(reply: Any) -> int:
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def read_with_pipelines(source: Source, picked: Sequence[Picked]) -> list[str]:
    """Lines for ``picked`` read with two pipelines (type and expiry, then values): the
    way on a Cluster, and for what the script leaves (streams, module types, non-UTF-8)."""
    client = source.client
    with guard(source.label):
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("TIME")
        for p in picked:
            pipe.execute_command("TYPE", p.key)
            pipe.execute_command("PTTL", p.key)
        replies = pipe.execute()
        now = _now_ms(replies[0])
        kinds = [k.decode() if isinstance(k, bytes) else str(k) for k in replies[1::2]]
        ttls = replies[2::2]
        pipe = client.pipeline(transaction=False)
        plan: list[tuple[Picked, str, int, int]] = []  # picked, kind, ttl, replies used
        for p, kind, ttl in zip(picked, kinds, ttls, strict=True):
            if kind == "none" or ttl == -2:
                continue
            if kind in _READERS:
                command = _READERS[kind]
                pipe.execute_command(command[0], p.key, *command[1:])
                plan.append((p, kind, ttl, 1))
            elif kind == "stream":
                pipe.execute_command("XRANGE", p.key, "-", "+")
                pipe.execute_command("XINFO", "STREAM", p.key)
                pipe.execute_command("XINFO", "GROUPS", p.key)
                plan.append((p, kind, ttl, 3))
            else:
                pipe.execute_command("DUMP", p.key)
                plan.append((p, "dump", ttl, 1))
        values = pipe.execute(raise_on_error=False)
    lines: list[str] = []
    at = 0
    for p, kind, ttl, used in plan:
        got = values[at : at + used]
        at += used
        if any(isinstance(g, Exception) for g in got) or got[0] is None:
            continue  # gone (or changed type) between the two pipelines
        exp = now + ttl if ttl > 0 else 0
        value: Any = got[0]
        if kind == "hash" and isinstance(value, dict):
            value = [x for pair in value.items() for x in pair]
        elif kind == "zset":  # redis-py reads the scores as floats: repr() gives them back
            if value and not isinstance(value[0], list | tuple):
                value = list(zip(value[::2], value[1::2], strict=True))  # flat from older redis-py
            value = [x for m, score in value for x in (m, repr(float(score)).encode())]
        elif kind == "stream":
            info = _pairs(got[1])
            value = {
                "entries": [(i, _flat(f)) for i, f in value],
                "last": info[b"last-generated-id"],
                "groups": [(g[b"name"], g[b"last-delivered-id"]) for g in map(_pairs, got[2])],
            }
        lines.append(entry_line(p.name, p.cap, p.rel, kind, value, exp))
    return lines


def _flat(fields: Any) -> list[bytes]:
    if isinstance(fields, dict):
        return [x for pair in fields.items() for x in pair]
    return list(fields or [])


def _joined(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8")


def _pairs(reply: Any) -> dict[bytes, Any]:
    if isinstance(reply, dict):
        return {(k if isinstance(k, bytes) else str(k).encode()): v for k, v in reply.items()}
    items = list(reply)
    return {items[i]: items[i + 1] for i in range(0, len(items), 2)}


class Reader:
    """Reads the keys a backup takes from one source, one ``SCAN`` page at a time: with
    the Lua script on a single server (one round trip per page, the lines built by the
    server), with pipelines on a Cluster and for what the script leaves to Python."""

    def __init__(self, source: Source, capabilities: set[str], names: set[str]) -> None:
        self.source = source
        self.capabilities = capabilities
        self.names = names
        self.sha: str | None = None

    def _triples(self) -> list[str]:
        source = self.source
        triples: list[str] = []
        for cap, seg in CAPABILITIES.items():
            taken = cap in self.capabilities and source.serving[cap] in self.names
            triples += [seg or "*", cap if taken else "", source.names[cap]]
        return triples

    def pages(self, count: int = BATCH) -> Iterator[tuple[int, bytes, int]]:
        """``(keys scanned, lines, how many)`` per page, until the scan is complete: the
        lines as the file's bytes, each ending with a newline."""
        source = self.source
        if source.cluster:
            for keys in scan(source, count):
                picked = list(pick(source, keys, self.capabilities, self.names))
                lines = read_with_pipelines(source, picked) if picked else []
                yield len(keys), _joined(lines), len(lines)
            return
        client = source.client
        triples = self._triples()
        cursor: Any = 0
        while True:
            with guard(source.label):
                if self.sha is None:
                    self.sha = client.script_load(BACKUP_LUA)
                cursor, scanned, text, later = client.evalsha(
                    self.sha, 0, cursor, source.pattern, count, source.cut,
                    len(triples) // 3, *triples,
                )  # fmt: skip
            # The script's text is ASCII (cjson escapes nothing above 127, so the script
            # leaves such bytes to Python or base64): it goes to the file as it is.
            blob: bytes = text
            if not blob.isascii():
                raise ValueError("the backup script answered text that is not ASCII")
            count_here = blob.count(b"\n")
            if later:
                picked = list(pick(source, later, self.capabilities, self.names))
                lines = read_with_pipelines(source, picked)
                blob += _joined(lines)
                count_here += len(lines)
            yield int(scanned), blob, count_here
            if int(cursor) == 0:
                return


class BackupWriter:
    """Writes ``path`` as ``path.partial`` (mode 0600: it holds sessions and CSRF
    tokens), renamed when complete; :meth:`abort` removes it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.partial = f"{path}.partial"
        fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an old .partial keeps its mode through O_TRUNC
        self.file: IO[bytes] = os.fdopen(fd, "wb", buffering=1 << 20)
        self.digest = hashlib.sha256()
        self.keys = 0

    def _write(self, data: bytes) -> None:
        self.digest.update(data)
        self.file.write(data)

    def header(self, fields: dict[str, Any]) -> None:
        self._write((json.dumps({"format": FORMAT, "version": VERSION, **fields}) + "\n").encode())

    def lines(self, blob: bytes, count: int) -> None:
        """``count`` lines, as bytes, each ending with a newline."""
        if blob:
            self._write(blob)
            self.keys += count

    def finish(self) -> None:
        end = {"end": FORMAT, "keys": self.keys, "sha256": self.digest.hexdigest()}
        self.file.write((json.dumps(end) + "\n").encode())
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        self.file.close()
        with contextlib.suppress(OSError):
            os.remove(self.partial)


# ---------------------------------------------------------------------- restore


@dataclass
class Check:
    """What the first pass over a backup file found."""

    header: dict[str, Any]
    keys: int  # lines between the header and the end
    size: int
    problem: str | None  # why the file is damaged, or None


def check_file(path: str) -> Check:
    """Read ``path`` once (constant memory): its header, and whether its end line and
    digest match what it holds. Raises :class:`BackupFileError` for a file that is not
    a backup of a version this reads."""
    digest = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        first = fh.readline()
        try:
            header = json.loads(first)
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise BackupFileError(f"{path} is not a ptransient backup")
        version = header.get("version")
        if version != VERSION:
            raise BackupFileError(
                f"{path} is a version {version!r} ptransient backup; this ptransient reads "
                f"version {VERSION} (version 1 held server-bound DUMP payloads and tokens: "
                "take a new backup)"
            )
        digest.update(first)
        keys = 0
        end: Any = None
        for line in fh:
            if line.startswith(b'{"end"'):
                try:
                    end = json.loads(line)
                except ValueError:
                    end = None
                break
            digest.update(line)
            keys += 1
        trailing = fh.read(1)
    if not isinstance(end, dict) or end.get("end") != FORMAT:
        problem = "it ends without its end line (truncated?)"
    elif end.get("keys") != keys:
        problem = f"its end line counts {end.get('keys')!r} keys, the file holds {keys}"
    elif end.get("sha256") != digest.hexdigest():
        problem = "its content does not match the digest of its end line (corrupted)"
    elif trailing:
        problem = "it goes on after its end line"
    else:
        problem = None
    return Check(header, keys, size, problem)


@dataclass(slots=True)
class Entry:
    """One key line, parsed as far as restore needs."""

    number: int
    raw: bytes
    name: str
    cap: str
    rel: bytes
    data: dict[str, Any]


_TYPES = frozenset(("string", "hash", "list", "set", "zset", "stream", "dump"))


#: The head of a line as backup writes it (names and keys without JSON escapes): read
#: without parsing the value, which the restore script decodes.
HEAD = re.compile(
    rb'\{"db":"([\w.-]+)","cap":"(\w+)","key":"([^"\\]*)","t":"(\w+)","exp":(\d+),'
    rb'(?:"enc":"(b64|latin1)",)?"v":'
)


def entries(
    path: str, on_bad: Callable[[int, str], None], *, fast: bool = False
) -> Iterator[tuple[Entry, int]]:
    """The key lines of ``path`` with the bytes read so far; a line that does not parse
    goes to ``on_bad(number, why)``. ``fast`` (for a file whose digest matched) reads
    only the head of lines written in the usual order."""
    decode = json.JSONDecoder().decode
    with open(path, "rb") as fh:
        read = len(fh.readline())
        number = 1
        for line in fh:
            number += 1
            read += len(line)
            if line.startswith(b'{"end"'):
                return
            head = HEAD.match(line) if fast else None
            if head is not None:  # the file's digest matched: the line is as written
                db, cap, key, kind, exp, enc = head.groups()
                rel = base64.b64decode(key) if enc == b"b64" else key  # latin1: ASCII
                data = {"t": kind.decode(), "exp": int(exp)}
                entry = Entry(number, line.rstrip(b"\n"), db.decode(), cap.decode(), rel, data)
                yield entry, read
                continue
            try:
                data = decode(line.decode("utf-8"))
                rel_text = data["key"]
                if data.get("enc") == "b64":
                    rel = base64.b64decode(rel_text, validate=True)
                elif data.get("enc") == "latin1":
                    rel = rel_text.encode("latin-1")
                else:
                    rel = rel_text.encode("utf-8")
                if data["t"] not in _TYPES:
                    raise ValueError(f"unknown type {data['t']!r}")
                if type(data["exp"]) is not int:
                    raise ValueError("exp is not an integer")
                entry = Entry(number, line.rstrip(b"\n"), str(data["db"]), str(data["cap"]),
                              rel, data)  # fmt: skip
            except (ValueError, KeyError, TypeError, AttributeError) as exc:  # UnicodeError too
                on_bad(number, f"not a backup line ({exc})")
                continue
            yield entry, read


@dataclass
class Outcome:
    """Counts of a restore (or a dry run), by reason; with ``details`` (``--verbose``),
    each key's line is written there as it comes (nothing per key is kept in memory)."""

    restored: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    details: IO[str] | None = None

    def note(self, reason: str, detail: str, *, refused: bool = False) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        if refused:
            self.refused += 1
        if self.details is not None:
            self.details.write(f"    {detail}\n")


REASONS = {
    "exists": "already there (kept; --replace overwrites)",
    "expired": "expired since the backup",
    "would-restore": "would be restored",
    "would-replace": "would replace a key that is there",
}


class Restorer:
    """Sends entries to the restore script: one call per :data:`BATCH` keys of a
    database on a single server, one pipeline of single-key calls on a Cluster."""

    def __init__(
        self,
        manager: RedisManager,
        outcome: Outcome,
        *,
        replace: bool,
        dry_run: bool,
        rekey: Callable[[Entry, str], bytes | None] | None = None,
    ) -> None:
        self.manager = manager
        self.outcome = outcome
        self.replace = replace
        self.dry_run = dry_run
        self.rekey = rekey
        self.cluster = manager.mode == "cluster"
        self.pending: dict[Any, list[tuple[bytes, bytes, Entry]]] = {}
        self.names: dict[Any, str] = {}
        self.shas: dict[int, str] = {}
        self._places: dict[str, tuple[Any, bytes]] = {}
        self._conns: dict[Any, tuple[Any, Any]] = {}  # per database: connection, pool
        self._inflight: dict[Any, tuple[Any, str, list[tuple[bytes, bytes, Entry]]]] = {}

    def target_key(self, entry: Entry) -> bytes:
        parts = [self.manager.settings.key_prefix, self.manager.namespace(entry.name)]
        head = ":".join(p for p in parts if p)
        return (head.encode() + b":" if head else b"") + entry.rel

    def _place(self, name: str) -> tuple[Any, bytes]:
        place = self._places.get(name)
        if place is None:
            parts = [self.manager.settings.key_prefix, self.manager.namespace(name)]
            head = ":".join(p for p in parts if p)
            slot = "cluster" if self.cluster else self.manager.db_number(name)
            place = self._places[name] = (slot, head.encode() + b":" if head else b"")
            self.names.setdefault(slot, name)
        return place

    def add(self, entry: Entry) -> None:
        slot, head = self._place(entry.name)
        key = head + entry.rel
        raw = entry.raw
        if self.rekey is not None and entry.cap == "sessions":
            changed = self.rekey(entry, key.decode("utf-8", "replace"))
            if changed is None:
                return
            raw = changed
        batch = self.pending.get(slot)
        if batch is None:
            batch = self.pending[slot] = []
        batch.append((key, raw, entry))
        if len(batch) >= BATCH:
            self.flush(slot)

    def flush(self, slot: Any = None) -> None:
        """Send the pending batch of ``slot`` (of every slot when None; then also wait for
        the replies still in flight)."""
        for one in [slot] if slot is not None else list(self.pending):
            batch = self.pending.pop(one, [])
            if batch:
                self._send(one, self.names[one], batch)
        if slot is None:
            self.finish()

    def finish(self) -> None:
        """Read the replies in flight and give the connections back."""
        for one in list(self._inflight):
            conn, name, batch = self._inflight.pop(one)
            with guard(name):
                statuses = conn.read_response()
            self._release(one)
            self._tally(batch, statuses)

    def abort(self) -> None:
        """Drop the connections of calls in flight (their replies are not read)."""
        for one in list(self._conns):
            conn, pool = self._conns.pop(one)
            conn.disconnect()
            pool.release(conn)
        self._inflight.clear()

    def _release(self, slot: Any) -> None:
        conn, pool = self._conns.pop(slot)
        pool.release(conn)

    def _sha(self, client: Any) -> str:
        sha = self.shas.get(id(client))
        if sha is None:
            sha = self.shas[id(client)] = client.script_load(RESTORE_LUA)
        return sha

    def _send(self, slot: Any, name: str, batch: list[tuple[bytes, bytes, Entry]]) -> None:
        flag = "1" if self.replace else "0"
        with guard(name):
            client: Any = self.manager.get(name)
            if self.dry_run:
                statuses: Any = [self._dry(client, batch), []]
            elif self.cluster:
                sha = self._sha(client)
                pipe = client.pipeline(transaction=False)
                for key, raw, _ in batch:
                    # execute_command, not pipe.evalsha(): redis-py before 8.2 blocks the
                    # method on a cluster pipeline, though it routes the command by its key
                    pipe.execute_command("EVALSHA", sha, 1, key, flag, raw)
                replies = pipe.execute()
                statuses = [
                    b"".join(r[0] if isinstance(r[0], bytes) else r[0].encode() for r in replies),
                    [m for r in replies for m in r[1]],
                ]
            else:
                # One script call per batch, sent before the previous call's reply is
                # read: the server runs a batch while Python parses the next one.
                sha = self._sha(client)
                held = self._conns.get(slot)
                if held is None:
                    pool = client.connection_pool
                    held = self._conns[slot] = (pool.get_connection(*_CHECKOUT), pool)
                conn = held[0]
                keys = [key for key, _, _ in batch]
                conn.send_command("EVALSHA", sha, len(keys), *keys, flag,
                                  *(raw for _, raw, _ in batch))  # fmt: skip
                previous = self._inflight.get(slot)
                self._inflight[slot] = (conn, name, batch)
                if previous is None:
                    return
                statuses = conn.read_response()
                batch = previous[2]
        self._tally(batch, statuses)

    def _tally(self, batch: list[tuple[bytes, bytes, Entry]], reply: Any) -> None:
        codes, refusals = reply
        if isinstance(codes, bytes):
            codes = codes.decode("ascii")
        self.outcome.restored += codes.count("o")
        if codes.count("o") == len(codes):
            return
        why = iter(refusals)
        for (key, _, entry), code in zip(batch, codes, strict=True):
            if code == "o":
                continue
            shown = key.decode("utf-8", "backslashreplace")
            where = f"line {entry.number}: {shown}"
            if code == "r":
                text = next(why)
                text = text.decode() if isinstance(text, bytes) else str(text)
                self.outcome.note(
                    f"refused by the server ({text.split(' ')[0] or '?'} ...)",
                    f"{where}: refused: {text}",
                    refused=True,
                )
            elif code == "R":  # a dry run: would replace a key that is there
                self.outcome.note(REASONS["would-replace"], f"{where}: would replace")
            else:
                reason = REASONS["exists" if code == "e" else "expired"]
                self.outcome.note(reason, f"{where}: {reason}")

    def _dry(self, client: Any, batch: list[tuple[bytes, bytes, Entry]]) -> str:
        pipe = client.pipeline(transaction=False)
        if not self.cluster:
            pipe.execute_command("TIME")
        for key, _, _ in batch:
            pipe.exists(key)
        replies = pipe.execute()
        now = _now_ms(replies[0]) if not self.cluster else int(time.time() * 1000)
        exists = replies[1:] if not self.cluster else replies
        statuses: list[str] = []
        for (_, _, entry), there in zip(batch, exists, strict=True):
            exp = entry.data["exp"]
            if exp and exp <= now:
                statuses.append("x")
            elif there:
                statuses.append("R" if self.replace else "e")
            else:
                statuses.append("o")
        return "".join(statuses)


def selection(values: Sequence[str] | None, default: Sequence[str]) -> set[str]:
    """The capabilities named by ``--capability`` (each checked), or ``default``."""
    if not values:
        return set(default)
    unknown = [v for v in values if v not in CAPABILITIES]
    if unknown:
        raise InvalidArgument(
            f"--capability {unknown[0]!r} is not one of {', '.join(CAPABILITIES)} "
            "(tokens are derived data and are never backed up)"
        )
    return set(values)
