"""``ptransient``: inspect, back up, restore and flush what an app keeps in Redis.

Usage::

    ptransient development.ini info
    ptransient development.ini keys [--db NAME] [--capability CAP] [--limit N]
    ptransient development.ini show KEY [--db NAME]
    ptransient development.ini backup FILE [--db NAME ...] [--capability CAP ...]
    ptransient development.ini restore FILE [--replace] [--dry-run] [--from-prefix P]
                                            [--db NAME ...] [--capability CAP ...] [--partial]
    ptransient development.ini flush --db NAME [--capability CAP ...] --yes

It reads the ``transient.*`` settings of the ini file's ``[app:main]`` section and touches
only keys under the app's ``transient.key_prefix``. Listing uses ``SCAN`` with an escaped
pattern, never ``KEYS``. Results go to stdout; errors (one line, a traceback only with
``--verbose``) and progress go to stderr. Exit status: 0 success, 1 partial (some keys
refused), 2 usage or configuration error, 3 Redis unreachable, 130 interrupted.

The backup format is described in ``pyramid_transient.scripts._backup`` and
docs/cli.rst.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ..binding import guard
from ..connection import RedisManager, redact_url
from ..exceptions import (
    ConfigurationError,
    InvalidArgument,
    TransientError,
    Unavailable,
    UnknownDatabase,
    UsageError,
)
from . import _backup as fmt
from . import _show
from ._progress import Progress

__all__ = ["EXIT_CODES", "build_parser", "main"]

#: Exit statuses, by meaning.
EXIT_CODES = {"ok": 0, "partial": 1, "usage": 2, "unavailable": 3, "interrupted": 130}

#: Keys per pipeline in ``flush``, per Lua call in ``backup`` and ``restore``.
BATCH = fmt.BATCH


class _Usage(Exception):
    """A usage or configuration error found by ptransient itself (exit status 2)."""


class _Context:
    def __init__(
        self,
        settings: dict[str, Any],
        manager: RedisManager,
        args: argparse.Namespace,
        out: TextIO,
        err: TextIO,
    ) -> None:
        self.settings = settings
        self.manager = manager
        self.args = args
        self.out = out
        self.err = err


def _load(config_uri: str) -> tuple[dict[str, Any], RedisManager]:
    from pyramid.paster import get_appsettings, setup_logging

    try:
        setup_logging(config_uri)
        settings = dict(get_appsettings(config_uri))
    except FileNotFoundError:
        raise _Usage(f"cannot read {config_uri}: no such file") from None
    except LookupError as exc:  # no [app:main], no such section
        raise _Usage(f"{config_uri} has no app section to read ({exc})") from None
    except TransientError:
        raise
    except Exception as exc:  # malformed ini (configparser, plaster, paste.deploy)
        raise _Usage(f"cannot read {config_uri}: {exc}".replace("\n", " ")) from None
    manager = RedisManager.from_settings(settings)
    if manager.mode == "memory":
        raise _Usage(
            f"transient.url is {manager.settings.url!r}: a memory server lives inside one "
            "process (the app's), so ptransient cannot see its data; point transient.url "
            "at a Redis server"
        )
    return settings, manager


def _names(manager: RedisManager, given: Sequence[str] | None) -> list[str]:
    """The names of ``--db`` (each checked now, before anything is read), or all."""
    if not given:
        return list(manager.names)
    for name in given:
        manager.resolve(name)
    return list(dict.fromkeys(given))


def _where(manager: RedisManager) -> str:
    s = manager.settings
    if manager.mode == "cluster":
        return " ".join(f"{h}:{p}" for h, p in s.cluster_nodes)
    if manager.mode == "sentinel":
        return f"{s.sentinel_service} via " + " ".join(f"{h}:{p}" for h, p in s.sentinel_nodes)
    return redact_url(s.url)


# ---------------------------------------------------------------------- info, keys, show


def cmd_info(ctx: _Context) -> int:
    manager = ctx.manager
    prefix = manager.settings.key_prefix
    ctx.out.write(f"mode: {manager.mode} ({_where(manager)})\n")
    ctx.out.write(f"key prefix: {prefix or '(none)'}\n")
    rows: list[tuple[int, str, str]] = []
    for source in fmt.sources(manager, list(manager.names)):
        counts: dict[str, int] = {}
        ours = 0
        for keys in fmt.scan(source):
            for key in keys:
                rest = key[source.cut :]
                if source.cluster:
                    namespace, _, rest = rest.partition(b":")
                    label = namespace.decode("utf-8", "replace") + "/"
                else:
                    label = ""
                segment = rest.partition(b":")[0].decode("utf-8", "replace")
                counts[label + segment] = counts.get(label + segment, 0) + 1
                ours += 1
        with guard(source.label):
            total = int(source.client.dbsize())
        other = max(total - ours, 0)
        if source.cluster:
            db, aliases = 0, f"master {source.label}"
        else:
            db = manager.db_number(source.label)
            aliases = ", ".join(n for n in manager.names if manager.db_number(n) == db)
        if counts:
            summary = ", ".join(f"{cap}: {n}" for cap, n in sorted(counts.items()))
            if other:
                summary += f"; {other} other keys"
        elif other:
            summary = f"no keys under prefix {prefix!r}; {other} other keys"
        else:
            summary = "no keys"
        rows.append((db, aliases, summary))
    for db, aliases, summary in sorted(rows, key=lambda r: r[0]):
        ctx.out.write(f"db {db} ({aliases}): {summary}\n")
    return 0


def cmd_keys(ctx: _Context) -> int:
    args, manager = ctx.args, ctx.manager
    segment = fmt.CAPABILITIES.get(args.capability or "", args.capability)
    shown = 0
    for source in fmt.sources(manager, _names(manager, [args.db] if args.db else None)):
        for keys in fmt.scan(source):
            for key in keys:
                rest = key[source.cut :]
                name = source.label
                if source.cluster:
                    namespace, _, rest = rest.partition(b":")
                    name = namespace.decode("utf-8", "replace")
                    if args.db and manager.namespace(args.db) != name:
                        continue
                if segment and rest.partition(b":")[0] != segment.encode():
                    continue
                ctx.out.write(f"{name}\t{key.decode('utf-8', 'backslashreplace')}\n")
                shown += 1
                if args.limit and shown >= args.limit:
                    return 0
    return 0


def _session_checker(ctx: _Context) -> Callable[[bytes, str], bool] | None:
    if not ctx.settings.get("redis.sessions.secret"):
        return None
    from ..sessions import session_factory_from_settings

    factory = session_factory_from_settings(ctx.settings, ctx.manager)

    def verify(raw: bytes, key: str) -> bool:
        return factory.unseal(key, raw) is not None

    return verify


def cmd_show(ctx: _Context) -> int:
    manager, key, out = ctx.manager, ctx.args.key, ctx.out
    name = ctx.args.db
    manager.resolve(name)
    with guard(name, key):
        client = manager.get(name)
        raw_kind = client.type(key)
        kind = raw_kind.decode() if isinstance(raw_kind, bytes) else str(raw_kind)
        ttl = client.pttl(key)
    if kind == "none":
        out.write(f"{key}: no such key\n")
        return 1
    head = manager.keyspace("x", name).base[:-1]  # prefix and namespace, with their ":"
    rest = key[len(head) :] if head and key.startswith(head) else key
    capability = rest.partition(":")[0]
    label = fmt._SEGMENT_TO_CAPABILITY.get(
        capability, "not ours" if head and rest is key else "other"
    )
    if capability == "token":
        label = "cache token"
    out.write(
        f"{key}: {kind}, ttl {'none' if ttl < 0 else f'{ttl / 1000:g}s'}, capability {label}\n"
    )
    with guard(name, key):
        if kind == "string":
            raw: Any = client.get(key) or b""
            verify = _session_checker(ctx) if capability == "session" else None
            check = (lambda r: verify(r, key)) if verify is not None else None
            out.write(_show.string_value(capability, rest, raw, check) + "\n")
        elif kind == "hash":
            for f, value in sorted(client.hscan_iter(key, count=1000)):
                shown = f.decode("utf-8", "backslashreplace").replace("\x00", "\\0")
                out.write(f"  {shown}: {_show.field_value(capability, rest, value)}\n")
        elif kind == "set":
            for member in sorted(client.sscan_iter(key, count=1000)):
                out.write(f"  {member!r}\n")
        elif kind == "zset":
            for member, score in client.zscan_iter(key, count=1000):
                out.write(f"  {score:g} {member!r}\n")
        elif kind == "list":
            for item in client.lrange(key, 0, 999):
                out.write(f"  {item!r}\n")
        else:
            out.write(f"  ({kind}: not shown)\n")
    return 0


# ---------------------------------------------------------------------- backup


def cmd_backup(ctx: _Context) -> int:
    args, manager = ctx.args, ctx.manager
    names = _names(manager, args.db)
    capabilities = fmt.selection(args.capability, fmt.DEFAULT_CAPABILITIES)
    try:
        writer = fmt.BackupWriter(args.file)
    except OSError as exc:
        raise _Usage(f"cannot write {args.file}.partial: {exc.strerror or exc}") from None
    progress: Progress | None = None
    try:
        all_sources = list(fmt.sources(manager, names))
        total = 0
        server = ""
        for source in all_sources:
            with guard(source.label):
                total += int(source.client.dbsize())
                if not server:
                    info = source.client.info("server")
                    product = "valkey" if "valkey_version" in info else "redis"
                    server = f"{product} {info.get('valkey_version') or info['redis_version']}"
        writer.header(
            {
                "key_prefix": manager.settings.key_prefix,
                "mode": manager.mode,
                "server": server,
                "created": dt.datetime.now(dt.UTC).isoformat(),
                "capabilities": sorted(capabilities),
            }
        )
        progress = Progress("backup", ctx.err, total=total, estimate=True, quiet=args.quiet)
        chosen = set(names)
        for source in all_sources:
            for scanned, blob, count in fmt.Reader(source, capabilities, chosen).pages():
                writer.lines(blob, count)
                progress.advance(scanned)
        writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        if progress is not None:
            progress.close()
    ctx.out.write(f"backed up {writer.keys} keys to {args.file}\n")
    return 0


# ---------------------------------------------------------------------- restore


def _rekey_sessions(ctx: _Context, header: dict[str, Any], outcome: fmt.Outcome) -> Any:
    """A rekey function for :class:`~pyramid_transient.scripts._backup.Restorer`: a
    session is sealed (HMAC) for its key, so a session restored under another key (a new
    prefix, a Cluster namespace) is sealed again with the app's secret, or refused."""
    import base64
    import json

    old_prefix = str(header.get("key_prefix") or "")
    old_cluster = header.get("mode") == "cluster"
    factory: Any = None
    if ctx.settings.get("redis.sessions.secret"):
        from ..sessions import session_factory_from_settings

        factory = session_factory_from_settings(ctx.settings, ctx.manager)

    heads: dict[str, str] = {}

    def rekey(entry: fmt.Entry, new_key: str) -> bytes | None:
        if entry.cap != "sessions" or entry.data["t"] != "string":
            return entry.raw
        head = heads.get(entry.name)
        if head is None:
            parts = [old_prefix, entry.name if old_cluster else ""]
            head = heads[entry.name] = ":".join(p for p in parts if p)
        old_key = (head + ":" if head else "") + entry.rel.decode("utf-8", "replace")
        if old_key == new_key:
            return entry.raw
        data = json.loads(entry.raw)  # the whole line: entry.data may hold its head only
        enc = data.get("enc")
        if enc == "b64":
            raw = base64.b64decode(data["v"])
        elif enc == "latin1":
            raw = str(data["v"]).encode("latin-1")
        else:
            raw = str(data["v"]).encode("utf-8")
        why = "no redis.sessions.secret in the ini to seal it again"
        if factory is not None:
            payload = factory.unseal(old_key, raw)
            if payload is None:
                why = "its HMAC does not verify with this ini's secret"
            else:
                sealed = factory.seal(new_key, payload)
                data["v"] = sealed.decode("latin-1")
                data["key"] = entry.rel.decode("latin-1")
                data["enc"] = "latin1"
                return json.dumps(data, separators=(",", ":")).encode()
        outcome.note(
            f"sessions sealed for their old key, refused ({why})",
            f"line {entry.number}: {new_key}: session sealed for {old_key!r}: {why}",
            refused=True,
        )
        return None

    return rekey


def cmd_restore(ctx: _Context) -> int:
    args, manager, out = ctx.args, ctx.manager, ctx.out
    try:
        check = fmt.check_file(args.file)
    except OSError as exc:
        raise _Usage(f"cannot read {args.file}: {exc.strerror or exc}") from None
    except fmt.BackupFileError as exc:
        raise _Usage(str(exc)) from None
    if check.problem and not args.partial:
        raise _Usage(
            f"{args.file} is damaged: {check.problem}; nothing was restored "
            "(--partial restores the lines it holds)"
        )
    header = check.header
    theirs = str(header.get("key_prefix") or "")
    ours = manager.settings.key_prefix
    if args.from_prefix is not None and args.from_prefix != theirs:
        raise _Usage(
            f"--from-prefix {args.from_prefix!r} does not match the backup, taken under "
            f"key prefix {theirs!r}"
        )
    if theirs != ours and args.from_prefix is None:
        raise _Usage(
            f"{args.file} was taken under key prefix {theirs!r} and this app's is {ours!r}; "
            f"nothing was restored (--from-prefix {theirs or chr(39) * 2} restores it under "
            f"{ours!r})"
        )
    names = set(_names(manager, args.db)) if args.db else None
    capabilities = fmt.selection(args.capability, tuple(fmt.CAPABILITIES))
    outcome = fmt.Outcome(details=out if args.verbose else None)
    bad: list[str] = []

    def on_bad(number: int, why: str) -> None:
        outcome.note("damaged lines", f"line {number}: {why}", refused=True)
        bad.append(why)

    restorer = fmt.Restorer(
        manager,
        outcome,
        replace=args.replace,
        dry_run=args.dry_run,
        rekey=_rekey_sessions(ctx, header, outcome),
    )
    progress = Progress(
        "restore" if not args.dry_run else "dry run",
        ctx.err,
        total=check.size,
        quiet=args.quiet,
    )
    known: dict[str, str] = {}  # per database name: "ok", "unselected" or "unknown"
    step = 0
    try:
        for entry, read in fmt.entries(args.file, on_bad, fast=not check.problem):
            step += 1
            if step == 512:
                progress.advance(step, read)
                step = 0
            if entry.rel.startswith(b"token:"):
                outcome.note("tokens (derived data, never restored)", f"line {entry.number}")
                continue
            if entry.cap not in capabilities:
                outcome.note("not selected (--db, --capability)", f"line {entry.number}")
                continue
            state = known.get(entry.name)
            if state is None:
                try:
                    served = manager.resolve(entry.name)
                except UnknownDatabase:
                    state = "unknown"
                else:
                    state = "ok" if names is None or served in names else "unselected"
                known[entry.name] = state
            if state == "unknown":
                outcome.note(
                    f"no database named {entry.name!r} in this ini "
                    f"(add transient.db.{entry.name})",
                    f"line {entry.number}: {entry.name}",
                    refused=True,
                )
                continue
            if state == "unselected":
                outcome.note("not selected (--db, --capability)", f"line {entry.number}")
                continue
            restorer.add(entry)
        restorer.flush()
        progress.advance(step, check.size)
    except BaseException:
        restorer.abort()  # a reply left unread must not go back to the pool
        raise
    finally:
        progress.close()
    if check.problem:
        out.write(f"{args.file} is damaged: {check.problem}; restored the lines it holds\n")
    verb = "would restore" if args.dry_run else "restored"
    out.write(f"{'dry run: ' if args.dry_run else ''}{verb} {outcome.restored} keys\n")
    for reason, count in sorted(outcome.reasons.items(), key=lambda kv: -kv[1]):
        out.write(f"  {count} {reason}\n")
    if outcome.reasons and not args.verbose:
        out.write("  (--verbose lists each key)\n")
    return 1 if outcome.refused or check.problem else 0


# ---------------------------------------------------------------------- flush


def cmd_flush(ctx: _Context) -> int:
    args, manager = ctx.args, ctx.manager
    if not args.db:
        raise _Usage("flush needs --db NAME (repeatable): the databases whose keys to delete")
    names = _names(manager, args.db)
    segments: set[bytes] | None = None
    if args.capability:
        fmt.selection(args.capability, ())
        segments = set()
        for cap in args.capability:
            if cap == "other":
                raise InvalidArgument("flush --capability other is not supported: name each")
            segments.add(fmt.CAPABILITIES[cap].encode())
            if cap == "cache":
                segments.add(b"token")  # a cache emptied of its values keeps no tokens
    what = ", ".join(args.capability) if args.capability else "every key"
    if not args.yes:
        raise _Usage(
            f"flush deletes {what} under key prefix {manager.settings.key_prefix!r} in "
            f"{', '.join(names)}: add --yes to do it"
        )
    deleted = 0
    for source in fmt.sources(manager, names):
        for keys in fmt.scan(source):
            doomed = []
            for key in keys:
                rest = key[source.cut :]
                if source.cluster:
                    namespace, _, rest = rest.partition(b":")
                    if namespace.decode("utf-8", "replace") not in source.names:
                        continue
                elif not _in_names(manager, source, rest, names):
                    continue
                if segments is not None and rest.partition(b":")[0] not in segments:
                    continue
                doomed.append(key)
            if doomed:
                with guard(source.label):
                    pipe = source.client.pipeline(transaction=False)
                    for key in doomed:
                        pipe.unlink(key)
                    deleted += sum(pipe.execute())
    ctx.out.write(f"deleted {deleted} keys ({what}) from {', '.join(names)}\n")
    return 0


def _in_names(manager: RedisManager, source: fmt.Source, rest: bytes, names: list[str]) -> bool:
    # Names that share a database: a key belongs to the name its capability records
    # (tokens to the cache's).
    cap, _ = fmt.capability_of(rest)
    return source.serving[cap or "cache"] in names


# ---------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="list each key of a summary; a traceback with errors",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress on stderr",
    )
    parser = argparse.ArgumentParser(
        prog="ptransient",
        description="Inspect, back up, restore and flush pyramid_transient data.",
        parents=[common],
    )
    parser.add_argument("config_uri", help="the app's ini file, e.g. production.ini")
    sub = parser.add_subparsers(dest="command", required=True)
    caps = ", ".join(fmt.CAPABILITIES)
    sub.add_parser("info", parents=[common], help="server, databases and key counts")
    keys = sub.add_parser("keys", parents=[common], help="list the app's keys (SCAN)")
    keys.add_argument("--db", help="only this named database")
    keys.add_argument("--capability", help=f"only this capability ({caps}, or a key segment)")
    keys.add_argument("--limit", type=int, default=0, help="stop after N keys")
    show = sub.add_parser("show", parents=[common], help="show one key, decoded")
    show.add_argument("key")
    show.add_argument("--db", default="default", help="named database (default: default)")
    backup = sub.add_parser("backup", parents=[common], help="write the app's keys to a file")
    backup.add_argument("file")
    backup.add_argument("--db", action="append", help="only this named database (repeatable)")
    backup.add_argument(
        "--capability",
        action="append",
        help=f"only this capability (repeatable): {caps}; cache values only when named",
    )
    restore = sub.add_parser("restore", parents=[common], help="load keys from a backup file")
    restore.add_argument("file")
    restore.add_argument("--replace", action="store_true", help="overwrite existing keys")
    restore.add_argument(
        "--dry-run",
        action="store_true",
        help="say what would be restored, kept and refused; write nothing",
    )
    restore.add_argument(
        "--from-prefix",
        metavar="PREFIX",
        help="restore a backup taken under PREFIX under this app's prefix",
    )
    restore.add_argument("--db", action="append", help="only this named database (repeatable)")
    restore.add_argument("--capability", action="append", help=f"only this capability: {caps}")
    restore.add_argument(
        "--partial",
        action="store_true",
        help="restore what a damaged (truncated, corrupted) file holds",
    )
    flush = sub.add_parser("flush", parents=[common], help="delete the app's keys of databases")
    flush.add_argument("--db", action="append", help="a named database (repeatable)")
    flush.add_argument("--capability", action="append", help=f"only this capability: {caps}")
    flush.add_argument("--yes", action="store_true", help="really delete")
    return parser


COMMANDS: dict[str, Callable[[_Context], int]] = {
    "info": cmd_info,
    "keys": cmd_keys,
    "show": cmd_show,
    "backup": cmd_backup,
    "restore": cmd_restore,
    "flush": cmd_flush,
}


def _fail(err: TextIO, verbose: bool, message: str, status: int) -> int:
    if verbose:
        traceback.print_exc(file=err)
    err.write(f"ptransient: {message}\n")
    err.flush()
    return status


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Entry point of the ``ptransient`` console script; returns the exit status."""
    stdout = out or sys.stdout
    stderr = err or sys.stderr
    try:
        with contextlib.redirect_stderr(stderr):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the usage on stderr
        return int(exc.code or 0)
    args.verbose = getattr(args, "verbose", False)
    args.quiet = getattr(args, "quiet", False)
    verbose = args.verbose
    manager: RedisManager | None = None
    try:
        settings, manager = _load(args.config_uri)
        return COMMANDS[args.command](_Context(settings, manager, args, stdout, stderr))
    except KeyboardInterrupt:
        return _fail(stderr, verbose, "interrupted; nothing half-written was left", 130)
    except Unavailable as exc:
        return _fail(stderr, verbose, str(exc), 3)
    except (_Usage, ConfigurationError, UnknownDatabase, InvalidArgument, UsageError) as exc:
        return _fail(stderr, verbose, str(exc), 2)
    except OSError as exc:
        return _fail(stderr, verbose, f"{exc.strerror or exc}: {exc.filename or ''}", 2)
    except TransientError as exc:
        return _fail(stderr, verbose, str(exc), 1)
    except Exception as exc:
        hint = "" if verbose else " (--verbose shows the traceback)"
        return _fail(stderr, verbose, f"{type(exc).__name__}: {exc}{hint}", 1)
    finally:
        if manager is not None:
            manager.close()
        stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
