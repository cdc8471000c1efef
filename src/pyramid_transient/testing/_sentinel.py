"""A Sentinel group of real servers on loopback ports, for tests: :class:`SentinelGroup`."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from typing import Any

from ._binaries import binary_for
from ._groups import ask, info_fields, pairs, wait_until
from ._servers import RedisServer, start_with_retries
from ._settings import with_test_dbs

log = logging.getLogger(__name__)


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
        self.binary = binary_for(executable)
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
        where = {
            "transient.sentinel.service": self.service,
            "transient.sentinel.nodes": " ".join(f"{h}:{p}" for h, p in self.sentinel_nodes),
        }
        return with_test_dbs(where, key_prefix=key_prefix, **extra)

    def reported_masters(self) -> list[tuple[str, int]]:
        """The master address each sentinel reports now."""
        result = []
        for _, port in self.sentinel_nodes:
            host, master_port = ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            result.append((str(host), int(master_port)))
        return result

    # ------------------------------------------------------------ start and stop

    def start(self, timeout: float = 30.0) -> SentinelGroup:
        """Start master and replica, then the sentinels; wait until they see both."""
        try:
            master = self._data_dir("master")
            self.master = start_with_retries(
                lambda: RedisServer(
                    executable=self.binary.path, directory=master, args=self._replicaof(None)
                )
            )
            replica = self._data_dir("replica")
            self.replica = start_with_retries(
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
                    start_with_retries(
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
            info = info_fields(ask(replica.port, "INFO", "replication"))
            return (
                info.get("role") == "slave"
                and info.get("master_port") == str(self.master_port)
                and info.get("master_link_status") == "up"
            )

        wait_until(f"the replica on port {replica.port} to sync", up, timeout)

    def _sentinel_healthy(self, port: int) -> bool:
        _, master_port = ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        if int(master_port) != self.master_port:
            return False
        replicas = ask(port, "SENTINEL", "REPLICAS", self.service)
        healthy = [
            r
            for r in (pairs(r) for r in replicas)
            if self.replica is not None
            and int(r.get("port", 0)) == self.replica.port
            and not {"s_down", "o_down", "disconnected"} & set(r.get("flags", "").split(","))
        ]
        if not healthy:
            return False
        others = ask(port, "SENTINEL", "SENTINELS", self.service)
        if len(others) < self.sentinel_count - 1:
            return False
        return str(ask(port, "SENTINEL", "CKQUORUM", self.service)).startswith("OK")

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until every sentinel reports the master, sees the replica and the others."""
        for _, port in self.sentinel_nodes:
            wait_until(
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
        ask(self.sentinels[0].port, "SENTINEL", "FAILOVER", self.service)
        self._wait_reported(new.port, timeout)
        wait_until(
            f"127.0.0.1:{new.port} to become master",
            lambda: info_fields(ask(new.port, "INFO", "replication")).get("role") == "master",
            timeout,
        )
        ask(old.port, "REPLICAOF", "127.0.0.1", str(new.port))
        ask(old.port, "CLIENT", "KILL", "TYPE", "normal")
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
        old.kill()
        self._killed = old
        self.master, self.replica = new, None
        self._wait_reported(new.port, timeout)
        wait_until(
            f"127.0.0.1:{new.port} to become master",
            lambda: info_fields(ask(new.port, "INFO", "replication")).get("role") == "master",
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
        wait_until(
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
        wait_until(
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
        wait_until(
            f"127.0.0.1:{port} to become master",
            lambda: info_fields(ask(port, "INFO", "replication")).get("role") == "master",
            timeout,
        )
        self._wait_replica_up(self.replica, timeout)
        self.wait_healthy(timeout)

    def flushall(self) -> None:
        """Delete every key on the master (the replica follows)."""
        self.sync()
        ask(self.master_port, "FLUSHALL")

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
