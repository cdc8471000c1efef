"""The pytest plugin: the ``--redis-url`` option, the run's hooks and the fixtures.

``pytest_plugins = ["pyramid_transient.testing"]`` loads the package, whose own
``pytest_plugins`` loads this module. What one run needs to remember (the shared server,
the lines of its summary) lives on that run's ``config.stash``, not in this module.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import redis

from ..connection import RedisManager
from ..safe import THROWAWAY_SERVERS
from ._binaries import ServerBinary, ServerNotFound, find_server
from ._cluster import RedisClusterGroup
from ._roundtrips import RoundTripCounter
from ._sentinel import SentinelGroup
from ._servers import RedisServer, start_with_retries
from ._settings import TEST_DBS, test_settings

#: The one environment variable that points the tests at a server of your own (whose
#: databases 13 to 15 they flush): named for this plugin, so that it is set on purpose.
#: The generic ``REDIS_URL`` of an app's environment is never read.
URL_VARIABLE = "TRANSIENT_TEST_REDIS_URL"

#: Fixtures that start servers of ours: a test using one needs a server binary.
_NEEDS_BINARY = ("transient_cluster", "transient_sentinel")


@dataclass
class _Target:
    """The server the tests talk to: the URL, and the server when it is ours."""

    url: str
    server: RedisServer | None


@dataclass
class _Run:
    """What one pytest run remembers, on its ``config.stash``."""

    #: The shared server when it is ours (:func:`transient_manager` restarts it if stopped).
    server: RedisServer | None = None
    #: What each server ran on, for the summary.
    notes: list[str] = field(default_factory=list)


_RUN = pytest.StashKey[_Run]()


def _run(config: pytest.Config) -> _Run:
    return config.stash.setdefault(_RUN, _Run())


# ---------------------------------------------------------------------- hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pyramid_transient")
    group.addoption(
        "--redis-url",
        default=os.environ.get(URL_VARIABLE) or None,
        help=f"use this Redis server instead of starting one (also {URL_VARIABLE}; the "
        "generic REDIS_URL is never read): the tests FLUSHDB its databases 13 to 15",
    )


def pytest_collection_finish(session: pytest.Session) -> None:
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
    for note in _run(terminalreporter.config).notes:
        terminalreporter.write_line(f"pyramid_transient: {note}")


def _require_server(what: str) -> ServerBinary:
    # pytest_collection_finish stops the run first; this covers a fixture requested
    # dynamically (request.getfixturevalue), with the same one message.
    try:
        return find_server()
    except ServerNotFound as exc:
        pytest.exit(f"pyramid_transient: {what}: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)


# ---------------------------------------------------------------------- one server


@pytest.fixture(scope="session")
def _transient_target(request: pytest.FixtureRequest) -> Iterator[_Target]:
    run = _run(request.config)
    given = request.config.getoption("--redis-url")
    if given:
        run.notes.append(f"tests used the Redis server at {given}")
        yield _Target(given, None)
        return
    binary = _require_server("the tests need a server")
    try:
        server = start_with_retries(lambda: RedisServer(executable=binary.path))
    except RuntimeError as exc:
        pytest.fail(f"could not start {binary.describe()}: {exc}", pytrace=False)
    run.server = server
    run.notes.append(f"tests ran on {binary.describe()} at {server.url}")
    # It persists nothing on purpose: the safes need not warn about it.
    address = ("127.0.0.1", server.port)
    THROWAWAY_SERVERS.add(address)
    try:
        yield _Target(server.url, server)
    finally:
        THROWAWAY_SERVERS.discard(address)
        run.server = None
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
def transient_manager(
    request: pytest.FixtureRequest, transient_settings: dict[str, Any]
) -> Iterator[RedisManager]:
    with contextlib.closing(RedisManager.from_settings(transient_settings)) as manager:
        _ensure_up(manager, _run(request.config).server)
        for name in TEST_DBS:
            manager.get(name).flushdb()
        yield manager


@pytest.fixture
def transient_redis(transient_manager: RedisManager) -> redis.Redis:
    return transient_manager.get("default")


@pytest.fixture
def transient_memory() -> Iterator[RedisManager]:
    settings = test_settings(f"memory://test-{uuid.uuid4().hex}")
    with contextlib.closing(RedisManager.from_settings(settings)) as manager:
        yield manager


@pytest.fixture
def round_trips() -> RoundTripCounter:
    return RoundTripCounter()


@pytest.fixture
def transient_testapp(request: pytest.FixtureRequest) -> Any:
    """:func:`~pyramid_transient.testing.committing_testapp` over the ``app`` fixture of
    the suite using the plugin (the WSGI app, any scope)."""
    from ._apps import committing_testapp

    return committing_testapp(request.getfixturevalue("app"))


def _ensure_up(manager: RedisManager, server: RedisServer | None) -> None:
    """A test that stopped the shared server must not break the next one."""
    if server is None:
        return
    with contextlib.suppress(redis.RedisError):
        manager.get("default").ping()
        return
    server.start()


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

_Group = TypeVar("_Group", RedisClusterGroup, SentinelGroup)


def _started(
    request: pytest.FixtureRequest, make: Callable[[str], _Group], what: str
) -> Iterator[_Group]:
    """The body of a group's session fixture: start it on the run's binary, stop it after."""
    binary = _require_server(f"the {what} tests need a server")
    group = make(binary.path)
    try:
        group.start()  # stops whatever it started when it fails
    except Exception as exc:
        pytest.fail(f"could not start the {what} on {binary.describe()}: {exc}", pytrace=False)
    _run(request.config).notes.append(f"the {what} ran on {binary.describe()}")
    try:
        yield group
    finally:
        group.cleanup()


@pytest.fixture(scope="session")
def transient_cluster(request: pytest.FixtureRequest) -> Iterator[RedisClusterGroup]:
    yield from _started(request, lambda path: RedisClusterGroup(executable=path), "Redis Cluster")


@pytest.fixture(scope="session")
def transient_cluster_settings(transient_cluster: RedisClusterGroup) -> dict[str, Any]:
    return transient_cluster.settings(key_prefix="tcluster")


@pytest.fixture
def transient_cluster_manager(
    transient_cluster: RedisClusterGroup, transient_cluster_settings: dict[str, Any]
) -> Iterator[RedisManager]:
    transient_cluster.flushall()
    with contextlib.closing(RedisManager.from_settings(transient_cluster_settings)) as manager:
        yield manager


@pytest.fixture(scope="session")
def transient_sentinel(request: pytest.FixtureRequest) -> Iterator[SentinelGroup]:
    yield from _started(request, lambda path: SentinelGroup(executable=path), "Sentinel group")


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
    with contextlib.closing(RedisManager.from_settings(transient_sentinel_settings)) as manager:
        yield manager
