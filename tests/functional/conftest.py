"""Functional tests drive the demo app through webtest, built from ``development.ini``.

The app is the one ``pserve development.ini`` serves (the ini's own ``use =`` factory and
settings), with only what a test must change overridden: ``transient.url`` points at the
suite's redis-server instead of the embedded ``memory://`` backend, each app gets a fresh
``transient.key_prefix`` (so tests never see each other's keys and nothing is flushed),
and ``sqlalchemy.url`` a SQLite file of its own. The keys written under the prefix are
deleted when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import webtest
from paste.deploy.loadwsgi import APP, loadcontext

from pyramid_transient.connection import get_manager

DEVELOPMENT_INI = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "development.ini")
)


def load_demo(**overrides: str) -> Any:
    """The WSGI app of ``development.ini``'s ``[app:main]``, ``overrides`` replacing keys."""
    if "pyramid.includes" in overrides:
        raise ValueError("test the demo as development.ini builds it: no extra includes")
    context = loadcontext(APP, f"config:{DEVELOPMENT_INI}")
    context.local_conf.update(overrides)
    return context.create()


@pytest.fixture
def app_settings(transient_redis_url: str, tmp_path: Path) -> dict[str, str]:
    """The overrides every test makes to ``development.ini``; nothing else."""
    return {
        "transient.url": transient_redis_url,
        "transient.key_prefix": f"test{uuid.uuid4().hex[:8]}",
        "sqlalchemy.url": f"sqlite:///{tmp_path / 'demo.db'}",
    }


@pytest.fixture
def make_app(app_settings: dict[str, str]) -> Iterator[Callable[..., webtest.TestApp]]:
    """Build the demo app with ``**overrides`` on top of :func:`app_settings`."""
    managers = []

    def build(**overrides: str) -> webtest.TestApp:
        app = load_demo(**{**app_settings, **overrides})
        managers.append(get_manager(app.registry))
        return webtest.TestApp(app)

    yield build
    for manager in managers:
        prefix = manager.settings.key_prefix
        if manager.mode == "standalone" and prefix:
            for name in manager.names:
                client = manager.get(name)
                with contextlib.suppress(redis.RedisError):  # a test stopped its server
                    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
                    if keys:
                        client.delete(*keys)
        manager.close()


@pytest.fixture
def testapp(make_app: Callable[..., webtest.TestApp]) -> webtest.TestApp:
    return make_app()
