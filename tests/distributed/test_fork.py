"""A forked child (a pre-forking server's worker) never uses its parent's connections."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from pyramid_transient import RedisManager

pytestmark = pytest.mark.slow


@pytest.fixture(
    params=[
        "standalone",
        pytest.param("cluster", marks=pytest.mark.cluster),
        pytest.param("sentinel", marks=pytest.mark.sentinel),
    ]
)
def manager(request: pytest.FixtureRequest) -> RedisManager:
    fixture = {
        "standalone": "transient_manager",
        "cluster": "transient_cluster_manager",
        "sentinel": "transient_sentinel_manager",
    }[request.param]
    built: RedisManager = request.getfixturevalue(fixture)
    if built.mode == "memory":
        pytest.fail("the fork tests need a real server (redis-server on PATH)")
    return built


def _client_id(client: Any, manager: RedisManager) -> int:
    """``CLIENT ID`` of the connection ``client`` uses (on the key ``k``'s node on a Cluster)."""
    if manager.mode == "cluster":
        node = client.get_node_from_key("k")
        return int(client.execute_command("CLIENT ID", target_nodes=node))
    return int(client.client_id())


def _in_child(work: Callable[[], Any]) -> Any:
    """Run ``work`` in a forked child; return what it returned (JSON), or fail with its error."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(read_end)
            try:
                payload = {"result": work()}
            except BaseException as exc:
                payload = {"error": repr(exc)}
            os.write(write_end, json.dumps(payload).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    payload = json.loads(data)
    if "error" in payload:
        pytest.fail(f"the child failed: {payload['error']}")
    return payload["result"]


def test_forked_child_gets_fresh_connections(manager: RedisManager) -> None:
    parent_client = manager.get("default")
    parent_id = _client_id(parent_client, manager)

    def child() -> dict[str, Any]:
        client = manager.get("default")
        client.incr("k")
        seen = {"same_client": client is parent_client, "id": _client_id(client, manager)}
        manager.close()  # a worker shutting down cleanly must not close the parent's sockets
        return seen

    seen = _in_child(child)
    assert seen["same_client"] is False
    assert seen["id"] != parent_id
    # The parent's own connection is untouched by the child: same connection, still working.
    assert _client_id(parent_client, manager) == parent_id
    assert parent_client.get("k") == b"1"


def test_client_taken_before_fork_reconnects_in_the_child(manager: RedisManager) -> None:
    """Even a client object kept from before the fork opens its own connections."""
    parent_client = manager.get("default")
    parent_id = _client_id(parent_client, manager)
    child_id = _in_child(lambda: _client_id(parent_client, manager))
    assert child_id != parent_id
    assert _client_id(parent_client, manager) == parent_id


def test_fork_while_another_thread_holds_the_manager_lock_does_not_deadlock(
    transient_memory: RedisManager,
) -> None:
    manager = transient_memory
    held, release = threading.Event(), threading.Event()

    def hold() -> None:  # e.g. a thread building a Cluster client (network I/O) under the lock
        with manager._lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(5)
    pid = os.fork()
    if pid == 0:  # child
        try:
            done = threading.Event()

            def use() -> None:
                manager.get("default")
                done.set()

            threading.Thread(target=use, daemon=True).start()
            os._exit(0 if done.wait(3) else 1)
        except BaseException:
            os._exit(2)
    release.set()
    thread.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child deadlocked in get()"
