"""Shared fixtures of our own suite; apps get theirs from ``pyramid_transient.testing``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

pytest_plugins = ["pyramid_transient.testing", "pytester"]


def _postgres_url() -> str | None:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    try:
        import psycopg

        with psycopg.connect(
            "host=127.0.0.1 port=5432 dbname=test user=postgres", connect_timeout=2
        ):
            pass
    except Exception:
        return None
    return "postgresql+psycopg://postgres@127.0.0.1:5432/test"


_PG = _postgres_url()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which SQL databases the SQLAlchemy tests used, as the plugin says which Redis."""
    from sqlalchemy.engine import make_url

    if _PG is None:
        where = "SQLite only (PostgreSQL not reachable)"
    else:
        where = "SQLite and " + make_url(_PG).render_as_string(hide_password=True)
    terminalreporter.write_line(f"pyramid_transient: SQLAlchemy tests ran on {where}")


@pytest.fixture(scope="session", params=["postgresql", "sqlite"])
def database_url(request: Any, tmp_path_factory: Any) -> Iterator[str]:
    """Each SQLAlchemy test runs on PostgreSQL (``TEST_DATABASE_URL``, else 127.0.0.1:5432
    database ``test``) and on SQLite. Without PostgreSQL the postgresql case fails in CI
    and is skipped, saying why, elsewhere."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
        return
    if _PG is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true but PostgreSQL is not reachable (set TEST_DATABASE_URL)")
        pytest.skip("PostgreSQL is not reachable; set TEST_DATABASE_URL")
    yield _PG


@pytest.fixture
def fault_proxy() -> Iterator[Any]:
    """``fault_proxy(port)``: a :class:`faultproxy.FaultProxy` in front of a server of the
    test's, stopped at the end of the test."""
    from faultproxy import FaultProxy

    started: list[FaultProxy] = []

    def start(port: int) -> FaultProxy:
        proxy = FaultProxy(port)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


def _wait_for_replica(master: redis.Redis, replica: redis.Redis) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (
            replica.info("replication").get("master_link_status") == "up"
            and master.info("replication").get("connected_slaves") == 1
        ):
            return
        time.sleep(0.05)
    raise AssertionError("the replica did not connect within 10 s")


@pytest.fixture(scope="module")
def replicated() -> Iterator[tuple[Any, Any]]:
    """A master and its replica of the module's own (for WAIT: safes, cache
    invalidations), the replica connected."""
    from pyramid_transient.testing import RedisServer  # (the plugin, imported by pytest)

    master = RedisServer(args=["--repl-diskless-sync-delay", "0"])
    with master, RedisServer(args=["--replicaof", "127.0.0.1", str(master.port)]) as replica:
        m, r = redis.Redis(port=master.port), redis.Redis(port=replica.port)
        _wait_for_replica(m, r)
        m.close()
        r.close()
        yield master, replica
