"""``transient.*`` settings for tests: the test databases, on one server or a group."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: The database numbers the tests use, by name (``transient.db.*`` of :func:`test_settings`).
TEST_DBS = {"default": 13, "sessions": 14, "cache": 14, "celery": 15}


def with_test_dbs(where: dict[str, Any], *, key_prefix: str, **extra: Any) -> dict[str, Any]:
    """``where`` (the server's or the group's address settings) with the databases of
    :data:`TEST_DBS`, ``key_prefix`` and ``extra``."""
    settings: dict[str, Any] = {**where, "transient.key_prefix": key_prefix}
    settings.update({f"transient.db.{name}": str(db) for name, db in TEST_DBS.items()})
    settings.update(extra)
    return settings


def test_settings(url: str, *, key_prefix: str = "", **extra: Any) -> dict[str, Any]:
    """``transient.*`` settings for tests: the databases of :data:`TEST_DBS` on ``url``."""
    return with_test_dbs({"transient.url": url}, key_prefix=key_prefix, **extra)


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a test, despite its name


#: Server keys of an app's settings that :func:`app_test_settings` replaces.
_SERVER_KEYS = re.compile(
    r"^transient\.(url|key_prefix|db\..+|sentinel\..+|cluster\..+|username|password|ssl\..+)$"
)


def app_test_settings(
    settings: Mapping[str, Any], url: str, *, key_prefix: str = "tapp"
) -> dict[str, Any]:
    """An app's own settings (its ``testing.ini``, read with
    ``pyramid.paster.get_appsettings``) pointed at the test server ``url``: every server key
    (``transient.url``, ``transient.db.*``, Sentinel, Cluster, TLS, the key prefix) is
    replaced by :func:`test_settings`' databases of :data:`TEST_DBS`; every other key
    (regions, ``sqlalchemy.url``, ``redis.sessions.secret``, ...) is kept."""
    kept = {k: v for k, v in settings.items() if not _SERVER_KEYS.match(k)}
    return {**kept, **test_settings(url, key_prefix=key_prefix)}
