"""docs/adopting.rst, followed to the letter: the Pyramid starter layout (a sessionmaker
built at run time, pyramid_tm's explicit manager, Jinja2, an ini file) with
pyramid_transient, Celery and the toolbar panel.

The project is the page's own files (``docs/adopting/``, shown on the page with
``literalinclude``), copied as they are; its ``testing.ini`` is the page's
``development.ini`` merged with the test server's settings by
:func:`pyramid_transient.testing.app_test_settings`, as the page's test recipe says.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pyramid.paster import get_app
from pyramid.scripting import prepare

from pyramid_transient.connection import RedisManager, get_manager, set_default_manager
from pyramid_transient.safe import get_safe
from pyramid_transient.testing import app_test_settings, committing_testapp

PAGE = Path(__file__).resolve().parent.parent / "docs" / "adopting"
pytestmark = pytest.mark.slow


def write_testing_ini(where: Path, url: str, *, unhooked: bool = False) -> Path:
    """The page's development.ini, its [app:main] merged with the test server's keys."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(PAGE / "development.ini")
    # The app section as written (get_appsettings would import the project already).
    settings = {k: v for k, v in parser["app:main"].items() if k != "use"}
    merged = app_test_settings(settings, url, key_prefix="adopt")
    merged["sqlalchemy.url"] = f"sqlite:///{where / 'myproject.sqlite'}"
    section = parser["app:main"]
    for key in list(section):
        if key != "use":
            del section[key]
    for key, value in merged.items():
        if key not in ("here", "__file__"):
            section[key] = str(value)
    path = where / "testing.ini"
    with path.open("w") as f:
        parser.write(f)
    return path


def _forget_project() -> None:
    for name in [m for m in sys.modules if m == "myproject" or m.startswith("myproject.")]:
        del sys.modules[name]


@pytest.fixture
def project(
    tmp_path: Path, transient_redis_url: str, transient_manager: RedisManager
) -> Iterator[Callable[..., tuple[Path, Path]]]:
    """Copy the page's project; ``make(unhooked=False)`` gives (directory, testing.ini)."""
    made: list[Path] = []

    def make(*, unhooked: bool = False) -> tuple[Path, Path]:
        where = tmp_path / f"p{len(made)}"
        shutil.copytree(PAGE / "myproject", where / "myproject")
        if unhooked:  # the starter without the page's one line
            models = where / "myproject" / "models" / "__init__.py"
            text = models.read_text()
            assert "    register(session_factory, config.registry)\n" in text
            models.write_text(text.replace("    register(session_factory, config.registry)\n", ""))
        sys.path.insert(0, str(where))
        made.append(where)
        ini = write_testing_ini(where, transient_redis_url)
        env = {**os.environ, "PYTHONPATH": str(where)}
        subprocess.run(
            [sys.executable, "-m", "myproject.scripts.initialize_db", str(ini)],
            cwd=where,
            env=env,
            check=True,
            timeout=120,
            capture_output=True,
        )
        _forget_project()
        return where, ini

    yield make
    for where in made:
        sys.path.remove(str(where))
    _forget_project()
    set_default_manager(None)


def _app(ini: Path) -> Any:
    app = get_app(str(ini))
    return app, committing_testapp(app, REMOTE_ADDR="127.0.0.1")


def _toolbar(testapp: Any, response: Any) -> str:
    found = re.search(r"/_debug_toolbar/([0-9a-f]+)", response.text)
    assert found, "the toolbar is not on the page"
    return str(testapp.get(f"/_debug_toolbar/{found[1]}").text)


def _wait_for(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def _queue_length(manager: RedisManager) -> int:
    return int(manager.get("celery").llen("celery"))


def test_the_starter_layout_following_the_page(project: Any) -> None:
    _where, ini = project()
    app, testapp = _app(ini)
    manager = get_manager(app.registry)
    renamed = get_safe("myproject.tasks", manager)

    # the cache through register(): a page cached, then renamed, shows the new title
    assert "<h1>Welcome</h1>" in testapp.get("/page/1").text
    assert "<h1>Welcome</h1>" in testapp.get("/page/1").text  # from the region
    response = testapp.post("/page/1/rename", {"title": "Second"}).follow()
    assert "<h1>Second</h1>" in response.text
    # the Jinja2 globals: the on-commit flash, and the fragment cache's new key
    assert '<div class="msg msg-success" role="status">Renamed to Second.</div>' in response.text
    assert '<p class="footer">Page 1: Second</p>' in response.text
    assert _queue_length(manager) == 1  # the task was sent after the commit

    # an aborted rename: no change, no flash, no task
    testapp.post("/page/1/rename", {"title": "Aborted", "fail": "1"}, status=500)
    response = testapp.get("/page/1")
    assert "<h1>Second</h1>" in response.text and "Aborted" not in response.text
    assert "msg-success" not in response.text
    assert _queue_length(manager) == 1

    # the toolbar panel of the page just shown: its commands and what they did
    panel = _toolbar(testapp, response)
    assert "Redis (pyramid_transient)" in panel
    assert re.search(r"<td>cache region</td><td>\d+</td>", panel)
    assert "region hits: 2, misses: 0" in panel  # the page's value and its footer
    assert "tokens read by cache_key: 2 existing" in panel  # page and footer keys
    assert "adopt:token:{tokens}:r:pages:1" in panel

    # a worker bootstrapped from the same ini runs the committed task
    from celery.contrib.testing.worker import start_worker
    from myproject.tasks import celery_app

    from pyramid_transient.celery import bootstrap_worker

    bootstrap_worker(celery_app, str(ini))
    with start_worker(celery_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        _wait_for(lambda: renamed.get("1"))
    assert renamed.snapshot() == {"1": "Second"}
    assert _queue_length(manager) == 0  # the aborted view sent nothing

    # the commit's invalidation, in the panel of the rename's own request (a redirect
    # carries no toolbar button: its id is the toolbar's latest)
    testapp.post("/page/1/rename", {"title": "Third"}, status=303)
    ((rename_id, _),) = app.registry.pdtb_history.last(1)
    panel = testapp.get(f"/_debug_toolbar/{rename_id}").text
    assert "tokens invalidated by the commit: 2" in panel  # the row's and the table's
    assert "<code>adopt:token:{tokens}:r:pages:1</code>" in panel
    assert "written:" in panel  # the session, with the on-commit flash


def test_the_committing_test_app_refuses_the_starters_shared_transaction(project: Any) -> None:
    _where, ini = project()
    app, _ = _app(ini)
    with pytest.raises(ValueError, match="own transaction"):
        committing_testapp(app, **{"tm.active": True})


def test_a_real_celery_worker_process_runs_only_committed_tasks(
    project: Any, transient_redis_url: str
) -> None:
    where, ini = project()
    app, testapp = _app(ini)
    manager = get_manager(app.registry)
    renamed = get_safe("myproject.tasks", manager)
    testapp.post("/page/1/rename", {"title": "Never", "fail": "1"}, status=500)
    testapp.post("/page/1/rename", {"title": "Committed"}, status=303)
    # the page's command line, with a pool that suits a test
    command = "celery -A myproject.tasks worker --ini testing.ini --pool solo --loglevel INFO"
    worker = subprocess.Popen(
        [sys.executable, "-m", *command.split()],
        cwd=where,
        env={**os.environ, "PYTHONPATH": str(where)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(lambda: renamed.get("1") or worker.poll() is not None, timeout=60)
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0].decode("utf-8", "replace")
    assert renamed.snapshot() == {"1": "Committed"}, output
    assert _queue_length(manager) == 0
    assert "page_renamed" in output and "succeeded" in output, output


def test_the_warning_names_the_fix(project: Any, caplog: pytest.LogCaptureFixture) -> None:
    _where, ini = project(unhooked=True)
    app, _ = _app(ini)
    from myproject.models import Page

    env = prepare(registry=app.registry)
    request = env["request"]
    try:
        with caplog.at_level(logging.WARNING, logger="pyramid_transient.cache"), request.tm:
            request.cache_key("page", request.dbsession.get(Page, 1))
            request.cache_key("page", request.dbsession.get(Page, 1))
    finally:
        env["closer"]()
    warnings = [r.getMessage() for r in caplog.records if "invalidation hooks" in r.getMessage()]
    assert len(warnings) == 1
    assert "register(session_factory, config.registry)" in warnings[0]


def test_the_hooked_starter_does_not_warn(project: Any, caplog: pytest.LogCaptureFixture) -> None:
    _where, ini = project()
    app, _ = _app(ini)
    from myproject.models import Page

    env = prepare(registry=app.registry)
    request = env["request"]
    try:
        with caplog.at_level(logging.WARNING, logger="pyramid_transient.cache"), request.tm:
            request.cache_key("page", request.dbsession.get(Page, 1))
    finally:
        env["closer"]()
    assert not [r for r in caplog.records if "invalidation hooks" in r.getMessage()]


def test_redis_is_the_test_server(transient_redis_url: str) -> None:
    assert redis.Redis.from_url(transient_redis_url).ping()


def test_the_projects_own_suite_passes_with_the_pages_recipe(tmp_path: Path) -> None:
    # docs/adopting/tests: the conftest of the page's recipe (testing.ini merged with the
    # plugin's server by app_test_settings, transient_testapp committing each request).
    for name in ("myproject", "tests"):
        shutil.copytree(PAGE / name, tmp_path / name)
    shutil.copy(PAGE / "testing.ini", tmp_path / "testing.ini")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout, result.stdout
