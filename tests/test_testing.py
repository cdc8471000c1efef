"""The pytest plugin apps load: a real server, or one message saying what to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

EXAMPLE = """
pytest_plugins = ["pyramid_transient.testing"]

def test_uses_the_server(transient_redis, transient_redis_url):
    transient_redis.set("k", "v")
    assert transient_redis.get("k") == b"v"
    print("URL", transient_redis_url)
"""


MISSING = "/nonexistent/redis-server"


def test_plugin_starts_a_real_server_on_a_free_port(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(EXAMPLE)
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*URL redis://127.0.0.1:*",
            # the binary, its version and where it came from
            "pyramid_transient: tests ran on * [0-9]*.[0-9]*.[0-9]* (/*, *) at redis://127.0.0.1:*",
        ]
    )
    assert "127.0.0.1:6379" not in result.stdout.str()


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_server_variable_naming_no_binary_stops_the_run_with_one_message(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setenv("TRANSIENT_REDIS_SERVER", MISSING)
    monkeypatch.setenv("CI", ci)
    monkeypatch.delenv("REDIS_URL", raising=False)
    pytester.makepyfile(EXAMPLE + EXAMPLE.replace("test_uses_the_server", "test_second"))
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    output = result.stdout.str() + result.stderr.str()
    lines = [line for line in output.splitlines() if MISSING in line]
    assert len(lines) == 1, output
    assert "TRANSIENT_REDIS_SERVER='/nonexistent/redis-server' is not an executable" in lines[0]
    assert "Traceback" not in output
    result.assert_outcomes()  # nothing ran: no pile of errors, no memory:// stand-in


def test_tests_that_need_no_server_run_without_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSIENT_REDIS_SERVER", MISSING)
    monkeypatch.delenv("REDIS_URL", raising=False)
    pytester.makepyfile(
        """
        pytest_plugins = ["pyramid_transient.testing"]

        def test_memory_backend(transient_memory):
            transient_memory.get("default").set("k", "v")
            assert transient_memory.get("default").get("k") == b"v"
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_round_trips_fixture_counts_a_pipeline_as_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        pytest_plugins = ["pyramid_transient.testing"]

        def test_count(transient_redis, round_trips):
            transient_redis.ping()
            with round_trips() as rt:
                transient_redis.pipeline().set("a", 1).get("a").execute()
            assert rt.count == 1
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_a_test_that_stops_the_shared_server_does_not_break_the_next(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        pytest_plugins = ["pyramid_transient.testing"]

        def test_stops_it(transient_redis_server):
            transient_redis_server.stop()

        def test_next(transient_redis):
            assert transient_redis.ping()
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=2)


def test_the_classes_import_without_pytest() -> None:
    # The plugin's hooks and fixtures live apart: an app's script may start a server.
    code = (
        "import sys; sys.modules['pytest'] = None; "
        "from pyramid_transient.testing import RedisServer, RoundTripCounter, test_settings"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


DANGER = """
pytest_plugins = ["pyramid_transient.testing"]

def test_where(transient_manager, transient_redis_url):
    print("URL", transient_redis_url)
"""


def test_the_generic_redis_url_variable_is_never_read(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, transient_redis_url: str
) -> None:
    # An app's environment often sets REDIS_URL for its own server: the plugin flushes the
    # databases of the server it uses, so it must not take that one.
    from redis import Redis

    victim = Redis.from_url(transient_redis_url, db=14)
    victim.set("an app's key", "precious")
    monkeypatch.setenv("REDIS_URL", transient_redis_url)
    monkeypatch.delenv("TRANSIENT_TEST_REDIS_URL", raising=False)
    pytester.makepyfile(DANGER)
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    assert f"URL {transient_redis_url}\n" not in result.stdout.str()
    assert victim.get("an app's key") == b"precious"
    victim.delete("an app's key")
    victim.close()


def test_a_server_of_your_own_is_named_on_purpose(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, transient_redis_url: str
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("TRANSIENT_TEST_REDIS_URL", transient_redis_url)
    pytester.makepyfile(DANGER)
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    assert f"URL {transient_redis_url}" in result.stdout.str()
    monkeypatch.delenv("TRANSIENT_TEST_REDIS_URL")
    # an option of a plugin: loaded from a conftest.py, or named with -p
    pytester.makeconftest('pytest_plugins = ["pyramid_transient.testing"]')
    result = pytester.runpytest_subprocess("-s", f"--redis-url={transient_redis_url}")
    assert f"URL {transient_redis_url}" in result.stdout.str()
