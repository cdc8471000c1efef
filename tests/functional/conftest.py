"""Functional tests drive the demo app through webtest, configured from ``test.ini``.

The suite's own redis-server replaces ``transient.url``; each test gets its own key prefix
and flushed databases.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import webtest
from pyramid.paster import get_appsettings

from pyramid_transient.connection import get_manager
from pyramid_transient.demo import main

TEST_INI = os.path.join(os.path.dirname(__file__), "..", "..", "test.ini")


@pytest.fixture
def app_settings(transient_redis_url: str) -> dict[str, Any]:
    """``test.ini``'s settings, pointed at the suite's server, with a fresh key prefix."""
    settings = dict(get_appsettings(TEST_INI))
    settings["transient.url"] = transient_redis_url
    settings["transient.key_prefix"] = f"test{uuid.uuid4().hex[:8]}"
    return settings


@pytest.fixture
def make_app(app_settings: dict[str, Any]) -> Iterator[Callable[..., webtest.TestApp]]:
    """Build the demo app, with ``**overrides`` applied to the settings."""
    managers = []

    def build(**overrides: Any) -> webtest.TestApp:
        settings = {**app_settings, **overrides}
        app = main({}, **settings)
        manager = get_manager(app.registry)
        for name in manager.names:
            manager.get(name).flushdb()
        managers.append(manager)
        return webtest.TestApp(app)

    yield build
    for manager in managers:
        manager.close()


@pytest.fixture
def testapp(make_app: Callable[..., webtest.TestApp]) -> webtest.TestApp:
    return make_app()
