"""A loopback TCP proxy in front of a real server, for the tests' network faults.

Used by tests/distributed/test_faults.py and tests/test_deferred_faults.py through the
``fault_proxy`` fixture of tests/conftest.py (or directly).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any


class FaultProxy:
    """A loopback TCP proxy to ``upstream_port`` whose faults a test switches on.

    ``blackhole``
        When true, accept connections and read what clients send, but forward nothing and
        answer nothing (a server that hangs, or a network that dropped the route).
    :meth:`lose_replies`
        The replies to the next ``n`` sends of a command are thrown away and the client's
        connection closed instead: the command ran, its reply is lost.
    :meth:`drop_ratio`
        The same for a random share of the sends of a command (seeded: repeatable);
        :attr:`dropped` counts them.
    ``cut_mid_reply``
        When true, forward the first half of each reply, then close: a reply cut short.
    ``stall``
        Seconds to hold each reply before forwarding it (a slow or paused server).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.blackhole = False
        self.cut_mid_reply = False
        self.stall = 0.0
        self._ratio: tuple[bytes, float] = (b"", 0.0)
        self._random = random.Random(12)
        #: Replies thrown away so far (by :meth:`lose_replies` or :meth:`drop_ratio`).
        self.dropped = 0
        self._lose: tuple[bytes, int] = (b"", 0)
        self._losing: set[socket.socket] = set()
        #: Connections accepted so far.
        self.accepted = 0
        #: Everything clients sent, forwarded or not.
        self.received = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)

    @staticmethod
    def _token(command: bytes) -> bytes:
        return (b"$%d\r\n%s\r\n" % (len(command), command)).upper()

    def count(self, command: bytes) -> int:
        """How many times clients sent ``command`` (as a RESP bulk string)."""
        with self._lock:
            data = bytes(self.received)
        return data.upper().count(self._token(command))

    def lose_replies(self, command: bytes, times: int = 1) -> None:
        """Lose the replies to the next ``times`` sends of ``command``."""
        with self._lock:
            self._lose = (self._token(command), times)

    def drop_ratio(self, command: bytes, ratio: float) -> None:
        """Lose the replies to a share ``ratio`` of the sends of ``command`` from now on."""
        with self._lock:
            self._ratio = (self._token(command), ratio)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self._track(client)
            with self._lock:
                self.accepted += 1
            upstream: socket.socket | None = None
            if not self.blackhole:
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
                except OSError:
                    self._close(client)
                    continue
                self._track(upstream)
                self._spawn(self._replies, upstream, client)
            self._spawn(self._requests, client, upstream)

    def _requests(self, client: socket.socket, upstream: socket.socket | None) -> None:
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._close(client, upstream)
                return
            with self._lock:
                self.received += data
                token, times = self._lose
                if times and token in data.upper():
                    # Marked before forwarding, so the reply cannot overtake the mark.
                    self._lose = (token, times - 1)
                    self._losing.add(client)
                token, ratio = self._ratio
                if ratio and token in data.upper() and self._random.random() < ratio:
                    self._losing.add(client)
            if self.blackhole or upstream is None:
                continue
            try:
                upstream.sendall(data)
            except OSError:
                self._close(client, upstream)
                return

    def _replies(self, upstream: socket.socket, client: socket.socket) -> None:
        while True:
            try:
                data = upstream.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._close(client, upstream)
                return
            with self._lock:
                drop = client in self._losing
                self._losing.discard(client)
                if drop:
                    self.dropped += 1
            if drop:
                self._close(client, upstream)
                return
            if self.blackhole:
                continue
            if self.stall:
                time.sleep(self.stall)
            if self.cut_mid_reply:
                with contextlib.suppress(OSError):
                    client.sendall(data[: max(1, len(data) // 2)])
                self._close(client, upstream)
                return
            try:
                client.sendall(data)
            except OSError:
                self._close(client, upstream)
                return

    @staticmethod
    def _close(*socks: socket.socket | None) -> None:
        for sock in socks:
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            socks = list(self._sockets)
        self._close(*socks)
        for thread in self._threads:
            thread.join(2)
