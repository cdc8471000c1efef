"""Test support for apps that use pyramid_transient (and for our own suite).

Load it as a pytest plugin from your ``conftest.py``::

    pytest_plugins = ["pyramid_transient.testing"]

Fixtures:

``transient_redis_url``
    (session) URL of a real ``redis-server`` started for the run on a free loopback port
    (never 6379), or the server named by ``--redis-url`` / ``REDIS_URL``. Without a
    ``redis-server`` binary it falls back to ``memory://`` and says so in the summary,
    except under ``CI=true``, where a missing server fails the run.
``transient_redis_server``
    (session) the :class:`RedisServer` started for the run (``None`` when external or
    memory), for tests that stop and restart it.
``transient_settings``
    ``transient.*`` settings for that server: ``sessions``/``cache`` on db 14, ``celery``
    on 15, ``default`` on 13, a key prefix per test.
``transient_manager``
    a :class:`~pyramid_transient.connection.RedisManager` for those settings, its
    databases flushed before the test.
``transient_redis``
    the ``default`` client of that manager.
``transient_memory``
    a manager on a fresh ``memory://`` server of its own.
``round_trips``
    a :class:`RoundTripCounter`: ``with round_trips() as rt: ...; assert rt.count == 1``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import redis
from redis.connection import AbstractConnection

from .connection import RedisManager

__all__ = [
    "RedisServer",
    "RoundTripCounter",
    "free_port",
    "test_settings",
]

TEST_DBS = {"default": 13, "sessions": 14, "cache": 14, "celery": 15}


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


class RedisServer:
    """A ``redis-server`` process of our own on a loopback port, keeping nothing on disk.

    >>> server = RedisServer().start()   # doctest: +SKIP
    >>> server.url                       # doctest: +SKIP
    'redis://127.0.0.1:40123'
    >>> server.stop()                    # doctest: +SKIP
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        args: Sequence[str] = (),
        executable: str = "redis-server",
        directory: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.args = list(args)
        self.executable = executable
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="ptransient-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        return [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--daemonize", "no",
            "--protected-mode", "no",
            "--logfile", os.path.join(self.directory, f"redis-{self.port}.log"),
            *self.args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server on port {self.port} exited: {err.strip()}")
            try:
                client = redis.Redis(port=self.port, host="127.0.0.1", socket_timeout=0.5)
                try:
                    if client.ping():
                        return
                finally:
                    client.close()
            except redis.RedisError as exc:
                last = exc
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not start: {last}")

    def stop(self) -> None:
        """Stop the server (only the process we started, by its pid)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stderr:
            process.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


# ---------------------------------------------------------------------- round trips


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
    _original_connect: ClassVar[Callable[..., Any] | None] = None
    _handshake = threading.local()

    def __init__(self) -> None:
        #: Round trips since the counter was entered.
        self.count = 0
        #: The command names of each round trip, e.g. ``"MULTI GET GET EXEC"``.
        self.commands: list[str] = []

    def __call__(self) -> RoundTripCounter:
        """Return a fresh counter for ``with round_trips() as rt:``."""
        return RoundTripCounter()

    def __enter__(self) -> RoundTripCounter:
        self.count = 0
        self.commands = []
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

    @classmethod
    def _install(cls) -> None:
        original_send = AbstractConnection.send_packed_command
        original_connect = AbstractConnection.on_connect
        cls._original = original_send
        cls._original_connect = original_connect
        handshake = cls._handshake

        def send_packed_command(self: Any, command: Any, check_health: bool = True) -> Any:
            if not getattr(handshake, "on", False):
                names = _command_names(command)
                for counter in list(cls._active):
                    counter.count += 1
                    counter.commands.append(names)
            return original_send(self, command, check_health)

        def on_connect(self: Any) -> Any:
            handshake.on = True
            try:
                return original_connect(self)
            finally:
                handshake.on = False

        AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
        AbstractConnection.on_connect = on_connect  # type: ignore[method-assign]

    @classmethod
    def _uninstall(cls) -> None:
        if cls._original is not None:
            AbstractConnection.send_packed_command = cls._original  # type: ignore[method-assign]
            AbstractConnection.on_connect = cls._original_connect  # type: ignore[method-assign]
            cls._original = None


def _command_names(packed: Any) -> str:
    chunks = packed if isinstance(packed, list | tuple) else [packed]
    data = b"".join(c if isinstance(c, bytes) else bytes(c) for c in chunks)
    names = []
    for part in data.split(b"\r\n*")[0:]:
        lines = part.split(b"\r\n")
        if len(lines) >= 3:
            names.append(lines[2].decode("utf-8", "replace").upper())
    return " ".join(names)


# ---------------------------------------------------------------------- settings


def test_settings(url: str, *, key_prefix: str = "", **extra: Any) -> dict[str, Any]:
    """``transient.*`` settings for tests: the databases of test.ini on ``url``."""
    settings: dict[str, Any] = {"transient.url": url, "transient.key_prefix": key_prefix}
    settings.update({f"transient.db.{name}": str(db) for name, db in TEST_DBS.items()})
    settings.update(extra)
    return settings


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


# ---------------------------------------------------------------------- pytest plugin

try:  # the plugin part needs pytest; the classes above do not
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]


if pytest is not None:

    def pytest_addoption(parser: Any) -> None:
        group = parser.getgroup("pyramid_transient")
        group.addoption(
            "--redis-url",
            default=os.environ.get("REDIS_URL"),
            help="use this Redis server instead of starting one (also REDIS_URL); "
            "tests flush databases 13 to 15 on it",
        )

    @dataclass
    class _Target:
        url: str
        server: RedisServer | None
        note: str

    _TARGET: list[_Target] = []

    def pytest_terminal_summary(terminalreporter: Any) -> None:
        for target in _TARGET:
            terminalreporter.write_line(f"pyramid_transient: {target.note}")

    @pytest.fixture(scope="session")
    def _transient_target(request: Any) -> Iterator[_Target]:
        given = request.config.getoption("--redis-url")
        if given:
            target = _Target(given, None, f"tests used the Redis server at {given}")
            _TARGET.append(target)
            yield target
            return
        if shutil.which("redis-server") is None:
            if in_ci():
                pytest.fail(
                    "CI=true but no redis-server binary is on PATH: install redis-server "
                    "(the suite needs a real server in CI)",
                    pytrace=False,
                )
            target = _Target(
                "memory://transient-tests",
                None,
                "no redis-server on PATH: tests ran on the embedded memory:// backend "
                "(fakeredis), NOT on a real server",
            )
            _TARGET.append(target)
            yield target
            return
        server = RedisServer().start()
        target = _Target(server.url, server, f"tests ran on redis-server at {server.url}")
        _TARGET.append(target)
        try:
            yield target
        finally:
            server.cleanup()

    @pytest.fixture(scope="session")
    def transient_redis_url(_transient_target: _Target) -> str:
        return _transient_target.url

    @pytest.fixture(scope="session")
    def transient_redis_server(_transient_target: _Target) -> RedisServer | None:
        return _transient_target.server

    @pytest.fixture
    def transient_settings(transient_redis_url: str) -> dict[str, Any]:
        return test_settings(transient_redis_url, key_prefix=f"t{uuid.uuid4().hex[:8]}")

    @pytest.fixture
    def transient_manager(transient_settings: dict[str, Any]) -> Iterator[RedisManager]:
        manager = RedisManager.from_settings(transient_settings)
        _ensure_up(manager)
        for name in TEST_DBS:
            manager.get(name).flushdb()
        yield manager
        manager.close()

    @pytest.fixture
    def transient_redis(transient_manager: RedisManager) -> redis.Redis:
        return transient_manager.get("default")

    @pytest.fixture
    def transient_memory() -> Iterator[RedisManager]:
        manager = RedisManager.from_settings(
            test_settings(f"memory://test-{uuid.uuid4().hex}")
        )
        yield manager
        manager.close()

    @pytest.fixture
    def round_trips() -> RoundTripCounter:
        return RoundTripCounter()

    def _ensure_up(manager: RedisManager) -> None:
        """A test that stopped the shared server must not break the next one."""
        target = _TARGET[-1] if _TARGET else None
        if target is None or target.server is None:
            return
        with contextlib.suppress(redis.RedisError):
            manager.get("default").ping()
            return
        target.server.start()
