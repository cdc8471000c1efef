"""A Redis Cluster of real servers on loopback ports, for tests: :class:`RedisClusterGroup`."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import tempfile
from typing import Any

from ._binaries import binary_for
from ._groups import ask, info_fields, wait_until
from ._servers import RedisServer, free_port, start_with_retries
from ._settings import with_test_dbs


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
        self.binary = binary_for(executable)
        self.directory = tempfile.mkdtemp(prefix="ptransient-cluster-")
        self.servers: list[RedisServer] = []
        self._bus_ports: dict[int, int] = {}

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node."""
        return [("127.0.0.1", server.port) for server in self.servers]

    def settings(self, *, key_prefix: str = "", **extra: Any) -> dict[str, Any]:
        """``transient.*`` settings for this Cluster with the test database names."""
        nodes = " ".join(f"{h}:{p}" for h, p in self.nodes)
        return with_test_dbs({"transient.cluster.nodes": nodes}, key_prefix=key_prefix, **extra)

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

        return start_with_retries(make)

    def _create(self, timeout: float) -> None:
        # What ``redis-cli --cluster create --cluster-replicas 0`` does, over the protocol:
        # no CLI binary (whose version may differ from the server's) is needed. Each node
        # gets a contiguous range of slots and its own config epoch, then meets the first.
        count = len(self.servers)
        for index, server in enumerate(self.servers):
            first = index * self.SLOTS // count
            last = (index + 1) * self.SLOTS // count - 1
            ask(server.port, "CLUSTER", "ADDSLOTS", *range(first, last + 1))
            ask(server.port, "CLUSTER", "SET-CONFIG-EPOCH", index + 1)
        first_node = self.servers[0]
        for server in self.servers[1:]:
            meet: list[Any] = ["CLUSTER", "MEET", "127.0.0.1", first_node.port]
            if self.binary.at_least(7):
                meet.append(self._bus_ports[first_node.port])
            ask(server.port, *meet)

    def _node_ok(self, port: int) -> bool:
        info = info_fields(ask(port, "CLUSTER", "INFO"))
        if info.get("cluster_state") != "ok":
            return False
        if info.get("cluster_slots_ok") != str(self.SLOTS):
            return False
        if info.get("cluster_known_nodes") != str(self.masters):
            return False
        ranges = ask(port, "CLUSTER", "SLOTS")
        covered = sum(int(r[1]) - int(r[0]) + 1 for r in ranges)
        return covered == self.SLOTS and len(ranges) >= self.masters

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every node says ``cluster_state:ok`` and knows every slot's owner."""
        for server in self.servers:
            wait_until(
                f"cluster_state:ok on 127.0.0.1:{server.port}",
                functools.partial(self._node_ok, server.port),
                timeout,
            )

    def flushall(self) -> None:
        """Delete every key on every node."""
        for server in self.servers:
            ask(server.port, "FLUSHALL")

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
