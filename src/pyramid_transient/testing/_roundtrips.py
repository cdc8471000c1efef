"""Counting round trips to Redis: :class:`RoundTripCounter`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

from redis.connection import AbstractConnection


class RoundTripCounter:
    """Counts round trips to Redis made by this process while active.

    A round trip is one packed send to a server followed by reading its replies: a single
    command, a whole pipeline or one script call each count one. The handshake of a new
    connection (HELLO, AUTH, SELECT) is not counted, since pools amortise it.
    Counts every connection in the process, memory backend included.
    """

    _lock = threading.Lock()
    _active: ClassVar[list[RoundTripCounter]] = []
    _original: ClassVar[Callable[..., Any] | None] = None
    _original_handshakes: ClassVar[dict[str, Callable[..., Any]]] = {}
    _handshake = threading.local()

    def __init__(self) -> None:
        #: Round trips since the counter was entered.
        self.count = 0
        #: The command names of each round trip, e.g. ``"MULTI GET GET EXEC"``.
        self.commands: list[str] = []
        #: The server of each round trip, ``"host:port"`` (a Unix socket's path): on a
        #: Cluster, which node it went to.
        self.servers: list[str] = []

    def __call__(self) -> RoundTripCounter:
        """Return a fresh counter for ``with round_trips() as rt:``."""
        return RoundTripCounter()

    def __enter__(self) -> RoundTripCounter:
        self.reset()
        cls = type(self)
        with cls._lock:
            if not cls._active:
                cls._install()
            cls._active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        cls = type(self)
        with cls._lock:
            cls._active.remove(self)
            if not cls._active:
                cls._uninstall()

    def reset(self) -> None:
        self.count = 0
        self.commands = []
        self.servers = []

    def per_server(self) -> dict[str, int]:
        """Round trips by server (``"host:port"``), e.g. one per Cluster node that a
        pipeline spread over several nodes reached."""
        counts: dict[str, int] = {}
        for server in self.servers:
            counts[server] = counts.get(server, 0) + 1
        return counts

    # The methods that perform a new connection's handshake, in redis-py 5 to 8.
    _HANDSHAKES = ("on_connect", "on_connect_check_health")

    @classmethod
    def _install(cls) -> None:
        original_send: Callable[..., Any] = AbstractConnection.send_packed_command
        cls._original = original_send
        cls._original_handshakes = {
            name: vars(AbstractConnection)[name]
            for name in cls._HANDSHAKES
            if name in vars(AbstractConnection)
        }
        handshake = cls._handshake

        def send_packed_command(self: Any, command: Any, check_health: bool = True) -> Any:
            if not getattr(handshake, "on", False):
                names = _command_names(command)
                server = _server_of(self)
                for counter in list(cls._active):
                    counter.count += 1
                    counter.commands.append(names)
                    counter.servers.append(server)
            return original_send(self, command, check_health)

        def quiet(original: Callable[..., Any]) -> Callable[..., Any]:
            def during_handshake(self: Any, *args: Any, **kwargs: Any) -> Any:
                outer = getattr(handshake, "on", False)
                handshake.on = True
                try:
                    return original(self, *args, **kwargs)
                finally:
                    handshake.on = outer

            return during_handshake

        AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
        for name, original in cls._original_handshakes.items():
            setattr(AbstractConnection, name, quiet(original))

    @classmethod
    def _uninstall(cls) -> None:
        if cls._original is not None:
            AbstractConnection.send_packed_command = cls._original  # type: ignore[method-assign]
            for name, original in cls._original_handshakes.items():
                setattr(AbstractConnection, name, original)
            cls._original = None


def _server_of(connection: Any) -> str:
    path = getattr(connection, "path", None)
    if path:
        return str(path)
    return f"{getattr(connection, 'host', '?')}:{getattr(connection, 'port', '?')}"


def _command_names(packed: Any) -> str:
    chunks = packed if isinstance(packed, list | tuple) else [packed]
    data = b"".join(c if isinstance(c, bytes) else bytes(c) for c in chunks)
    names = []
    for part in data.split(b"\r\n*")[0:]:
        lines = part.split(b"\r\n")
        if len(lines) >= 3:
            names.append(lines[2].decode("utf-8", "replace").upper())
    return " ".join(names)
