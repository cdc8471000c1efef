"""Shared fixtures of our own suite; apps get theirs from ``pyramid_transient.testing``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

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
