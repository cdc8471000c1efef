"""pyramid_transient.celery: the broker from url_for("celery"), tasks sent after commit.

The end-to-end runs (a real worker in-process and a real ``celery worker`` process) are
in tests/test_adopting.py, on the starter layout.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import transaction
from celery import Celery

from pyramid_transient.celery import configure, delay_after_commit, setup_worker
from pyramid_transient.connection import RedisManager
from pyramid_transient.exceptions import ConfigurationError, InvalidArgument, UsageError


class Request:
    def __init__(self, tm: Any = None) -> None:
        self.tm = tm


def test_configure_points_broker_and_backend_at_the_celery_database() -> None:
    manager = RedisManager.from_settings(
        {"transient.url": "redis://10.0.0.5:6380", "transient.db.celery": "3"}
    )
    app = Celery("t")
    configure(app, manager)
    assert app.conf.broker_url == "redis://10.0.0.5:6380/3"
    assert app.conf.result_backend == "redis://10.0.0.5:6380/3"


def test_configure_on_sentinel_gives_kombu_the_master_name_and_the_sentinels_password() -> None:
    manager = RedisManager.from_settings(
        {
            "transient.sentinel.service": "mymaster",
            "transient.sentinel.nodes": "10.0.0.1:26379 10.0.0.2:26379",
            "transient.sentinel.password": "s3",
            "transient.db.celery": "3",
        }
    )
    app = Celery("t")
    configure(app, manager)
    assert app.conf.broker_url == "sentinel://10.0.0.1:26379/3;sentinel://10.0.0.2:26379/3"
    expected = {"master_name": "mymaster", "sentinel_kwargs": {"password": "s3"}}
    assert app.conf.broker_transport_options == expected
    assert app.conf.result_backend_transport_options == expected


def test_configure_refuses_memory() -> None:
    manager = RedisManager.from_settings(
        {"transient.url": "memory://x", "transient.db.celery": "3"}
    )
    with pytest.raises(ConfigurationError, match="no other process"):
        configure(Celery("t"), manager)


class Task:
    name = "tasks.add"

    def __init__(self) -> None:
        self.sent: list[tuple[Any, Any]] = []

    def apply_async(self, args: Any, kwargs: Any) -> None:
        self.sent.append((args, kwargs))


@pytest.mark.parametrize("commit", [True, False])
def test_delay_after_commit_sends_only_when_request_tm_commits(commit: bool) -> None:
    tm = transaction.TransactionManager(explicit=True)
    tm.begin()
    task = Task()
    delay_after_commit(Request(tm), task, 1, b=2)
    assert task.sent == []
    if commit:
        tm.commit()
        assert task.sent == [((1,), {"b": 2})]
    else:
        tm.abort()
        assert task.sent == []
    assert not transaction.manager.get()._resources  # the thread's default was not joined


def test_delay_after_commit_checks_its_arguments_at_the_call() -> None:
    with pytest.raises(InvalidArgument, match="needs a Celery task"):
        delay_after_commit(Request(transaction.TransactionManager()), lambda: None)
    with pytest.raises(UsageError, match="include pyramid_tm"):
        delay_after_commit(Request(None), Task())


def test_setup_worker_adds_the_ini_option() -> None:
    app = Celery("t")
    setup_worker(app)
    assert any("--ini" in option.opts for option in app.user_options["preload"])


def test_the_worker_command_lists_the_ini_option(tmp_path: Any) -> None:
    (tmp_path / "tasks_mod.py").write_text(
        "from celery import Celery\n"
        "from pyramid_transient.celery import setup_worker\n"
        "app = Celery('t')\nsetup_worker(app)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks_mod", "worker", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "--ini" in result.stdout, result.stdout + result.stderr
