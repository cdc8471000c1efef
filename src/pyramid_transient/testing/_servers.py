"""One server process of our own: :class:`RedisServer`, and the ports it runs on."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence

import redis

from ._binaries import binary_for


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


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
        self.binary = binary_for(executable)
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
        self._end(kill=False)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL, as a crash would); :meth:`start` restarts it."""
        self._end(kill=True)

    def _end(self, *, kill: bool) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            if kill:
                process.kill()
            else:
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


def start_with_retries(make: Callable[[], RedisServer], attempts: int = 3) -> RedisServer:
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
