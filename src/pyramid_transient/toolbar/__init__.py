"""A pyramid_debugtoolbar panel of the Redis commands each request sent.

Enable it with ``debugtoolbar.includes = pyramid_transient.toolbar`` (the ``toolbar``
extra installs pyramid_debugtoolbar). For each request the panel lists every command with
its database, key, duration and the capability that sent it (read from the key's layout,
``{prefix}:{capability}:...``), the round trips per capability, the session's size and
whether it was written, the cache region's hits and misses and the tokens ``cache_key``
read, and the tokens a commit invalidated.

Commands are seen where redis-py sends and reads them (the connection's
``send_packed_command`` and ``read_response``, as
:class:`~pyramid_transient.testing.RoundTripCounter` counts them), so one hook sees every
capability. The hook is installed only when this module is included, that is only in an
app running the toolbar, and records only while a request the toolbar follows is
current; an app without the toolbar pays nothing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.connection import AbstractConnection
from redis.exceptions import ResponseError

__all__ = [
    "Command",
    "RedisPanel",
    "capability_of",
    "includeme",
    "install",
    "parse_packed",
    "summarize",
]

_ATTRIBUTE = "pdtb_transient_commands"

#: Key segments that name our capabilities, and the names the panel shows.
CAPABILITIES = {
    "session": "sessions",
    "token": "cache_key",
    "cache": "cache region",
    "store": "store",
    "lock": "store",
    "model": "models",
    "safe": "safe",
}

_NO_KEY = {"PING", "SELECT", "HELLO", "AUTH", "CLIENT", "INFO", "CONFIG", "SCRIPT", "MULTI",
           "EXEC", "DISCARD", "WAIT", "READONLY", "ECHO", "TIME", "DBSIZE"}  # fmt: skip


@dataclass
class Command:
    """One command a request sent, as the panel shows it."""

    db: int
    args: list[bytes]
    started: float
    round_trip: int
    duration: float | None = None  #: seconds until its reply was read
    reply: Any = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.args[0].decode("ascii", "replace").upper() if self.args else ""

    @property
    def key(self) -> str | None:
        name = self.name
        if name in _NO_KEY or len(self.args) < 2:
            return None
        if name in ("EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL"):
            if len(self.args) > 3 and self.args[2] not in (b"0",):
                return self.args[3].decode("utf-8", "replace")
            return None
        return self.args[1].decode("utf-8", "replace")

    def keys(self) -> list[str]:
        """Every key of a script call, else the key."""
        if self.name in ("EVALSHA", "EVAL") and len(self.args) > 2:
            n = int(self.args[2])
            return [a.decode("utf-8", "replace") for a in self.args[3 : 3 + n]]
        return [self.key] if self.key else []


@dataclass
class _Recording:
    commands: list[Command] = field(default_factory=list)
    round_trips: int = 0


def parse_packed(packed: Any) -> list[list[bytes]]:
    """The commands (argument lists) of what redis-py packed for one send."""
    chunks = packed if isinstance(packed, list | tuple) else [packed]
    data = b"".join(bytes(c) for c in chunks)
    commands: list[list[bytes]] = []
    i = 0
    while i < len(data) and data[i : i + 1] == b"*":
        end = data.index(b"\r\n", i)
        count = int(data[i + 1 : end])
        i = end + 2
        args = []
        for _ in range(count):
            end = data.index(b"\r\n", i)
            size = int(data[i + 1 : end])
            args.append(data[end + 2 : end + 2 + size])
            i = end + 2 + size + 2
        commands.append(args)
    return commands


_local = threading.local()
_installed: list[bool] = []


def _recording() -> _Recording | None:
    if getattr(_local, "handshake", False):
        return None
    from pyramid.threadlocal import get_current_request

    request = get_current_request()
    return getattr(request, _ATTRIBUTE, None) if request is not None else None


def install() -> None:
    """Hook redis-py's connections (once per process; idempotent)."""
    if _installed:
        return
    _installed.append(True)
    send: Callable[..., Any] = AbstractConnection.send_packed_command
    read: Callable[..., Any] = AbstractConnection.read_response
    on_connect: Callable[..., Any] = AbstractConnection.on_connect

    def send_packed_command(self: Any, command: Any, check_health: bool = True) -> Any:
        recording = _recording()
        if recording is None:
            return send(self, command, check_health)
        started = time.perf_counter()
        result = send(self, command, check_health)
        recording.round_trips += 1
        pending = self.__dict__.setdefault("_pdtb_pending", deque())
        for args in parse_packed(command):
            entry = Command(int(getattr(self, "db", 0) or 0), args, started, recording.round_trips)
            recording.commands.append(entry)
            pending.append(entry)
        return result

    def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        pending = self.__dict__.get("_pdtb_pending")
        if not pending:
            return read(self, *args, **kwargs)
        entry = pending.popleft()
        try:
            reply = read(self, *args, **kwargs)
        except Exception as exc:
            entry.error = f"{type(exc).__name__}: {exc}"
            entry.duration = time.perf_counter() - entry.started
            if not isinstance(exc, ResponseError):
                pending.clear()  # the connection is gone: its other replies never come
            raise
        entry.duration = time.perf_counter() - entry.started
        entry.reply = reply
        return reply

    def quiet_on_connect(self: Any, *args: Any, **kwargs: Any) -> Any:
        outer = getattr(_local, "handshake", False)
        _local.handshake = True
        try:
            return on_connect(self, *args, **kwargs)
        finally:
            _local.handshake = outer

    AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
    AbstractConnection.read_response = read_response  # type: ignore[method-assign]
    AbstractConnection.on_connect = quiet_on_connect  # type: ignore[method-assign]


def capability_of(key: str | None, prefix: str) -> str:
    """The capability that owns ``key``, from our key layout; ``"-"`` for none of ours."""
    if not key:
        return "-"
    rest = key[len(prefix) + 1 :] if prefix and key.startswith(prefix + ":") else key
    for part in rest.split(":")[:3]:
        if part in CAPABILITIES:
            return CAPABILITIES[part]
    return "-"


def _size(value: Any) -> int:
    return len(value) if isinstance(value, bytes | str) else 0


def summarize(commands: list[Command], prefix: str) -> dict[str, Any]:
    """What the panel shows, from the commands of one request."""
    rows = []
    trips: Counter[str] = Counter()
    seen_trips: set[int] = set()
    session: dict[str, int | None] = {"read": None, "written": None}
    cache: dict[str, list[str]] = {"hits": [], "misses": []}
    tokens: dict[str, list[str]] = {"existing": [], "created": [], "script": []}
    invalidated: list[str] = []
    for command in commands:
        key = command.key
        capability = capability_of(key, prefix)
        if command.round_trip not in seen_trips:
            seen_trips.add(command.round_trip)
            trips[capability] += 1
        name = command.name
        rows.append(
            {
                "db": command.db,
                "name": name,
                "key": key or "",
                "ms": None if command.duration is None else command.duration * 1000,
                "capability": capability,
                "error": command.error,
            }
        )
        if capability == "sessions":
            if name in ("GET", "GETEX"):
                session["read"] = _size(command.reply)
            elif name in ("SET", "SETEX", "PSETEX") and len(command.args) > 2:
                session["written"] = len(command.args[2])
        elif capability == "cache region" and name == "GET" and key:
            cache["misses" if command.reply is None else "hits"].append(key)
        elif capability == "cache_key":
            if name == "SET" and key:
                tokens["created" if command.reply is None else "existing"].append(key)
            elif name in ("EVALSHA", "EVAL"):
                tokens["script"].extend(command.keys())
            elif name in ("DEL", "UNLINK"):
                invalidated.extend(a.decode("utf-8", "replace") for a in command.args[1:])
    return {
        "commands": rows,
        "round_trips": dict(trips),
        "total_round_trips": len(seen_trips),
        "session": session,
        "cache": cache,
        "tokens": tokens,
        "invalidated": invalidated,
    }


try:
    from pyramid_debugtoolbar.panels import DebugPanel
except ImportError:  # pragma: no cover - the toolbar extra is not installed
    DebugPanel = object


class RedisPanel(DebugPanel):  # type: ignore[misc]
    """The toolbar's *Redis* tab."""

    name = "pyramid_transient"
    template = "pyramid_transient.toolbar:redis.dbtmako"
    title = "Redis (pyramid_transient)"
    nav_title = "Redis"
    has_content = True

    def __init__(self, request: Any) -> None:
        self.recording = _Recording()
        setattr(request, _ATTRIBUTE, self.recording)
        self.prefix = ""
        try:
            from ..connection import get_manager

            self.prefix = get_manager(request.registry).settings.key_prefix
        except Exception:  # an app without pyramid_transient: commands are still shown
            self.prefix = ""

    @property
    def nav_subtitle(self) -> str:
        return str(self.recording.round_trips)

    def render_vars(self, request: Any) -> dict[str, Any]:
        return summarize(list(self.recording.commands), self.prefix)


def includeme(config: Any) -> None:
    """Add the panel to the toolbar (``debugtoolbar.includes = pyramid_transient.toolbar``)
    and hook redis-py's connections."""
    install()
    config.add_debugtoolbar_panel(RedisPanel)
