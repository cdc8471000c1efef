"""The pytest plugin apps load: a real server when there is one, loud when there is not."""

from __future__ import annotations

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
    result.stdout.fnmatch_lines(["*URL redis://127.0.0.1:*", "*tests ran on redis-server*"])
    assert "127.0.0.1:6379" not in result.stdout.str()


def test_without_redis_server_it_falls_back_to_memory_and_says_so(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSIENT_REDIS_SERVER", MISSING)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    pytester.makepyfile(EXAMPLE)
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*NOT on a real server*"])


def test_in_ci_a_missing_server_fails_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRANSIENT_REDIS_SERVER", MISSING)
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("REDIS_URL", raising=False)
    pytester.makepyfile(EXAMPLE)
    result = pytester.runpytest_subprocess()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*CI=true but no*redis-server* binary*"])


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
