"""``[pshell] setup = pyramid_transient.pshell.setup``, run by pshell against a real app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pyramid.scripts.pshell import PShellCommand

from pyramid_transient.connection import RedisManager
from pyramid_transient.models import RedisModel


class Gizmo(RedisModel):
    """A model of the test app.

    With a docstring of several lines, which the banner must not print whole.
    """

    id: int
    name: str


def run_pshell(tmp_path: Path, settings: dict[str, Any]) -> tuple[dict[str, Any], str]:
    lines = ["[app:main]", "use = egg:pyramid-transient#demo"]
    lines += [f"{k} = {v}" for k, v in settings.items()]
    lines += ["", "[pshell]", "setup = pyramid_transient.pshell.setup", ""]
    ini = tmp_path / "shell.ini"
    ini.write_text("\n".join(lines))
    seen: dict[str, Any] = {}

    def shell(env: dict[str, Any], help: str) -> None:
        seen.update(env)
        seen["__help__"] = help
        gizmo = env["models"].Gizmo(id=1, name="g")
        gizmo.save()
        seen["got"] = env["models"].Gizmo.objects.get(1).name
        env["store"].set("docs.a", 1)
        seen["store"] = env["store"].get("docs").val()
        env["safe"]("tests.pshell")["n"] = 3
        seen["safe"] = dict(env["safe"]("tests.pshell"))
        seen["ping"] = env["redis"]["sessions"].ping() and env["redis"].default.ping()
        seen["key"] = env["cache_key"]("x", 1)

    command = PShellCommand(["pshell", str(ini)], quiet=True)
    assert command.run(shell=shell) is None
    return seen, seen.pop("__help__")


def test_pshell_setup_gives_redis_store_safe_models_and_cache_key(
    tmp_path: Path, transient_settings: dict[str, Any], transient_manager: RedisManager
) -> None:
    settings = {
        **transient_settings,
        "redis.sessions.secret": "x",
        "sqlalchemy.url": f"sqlite:///{tmp_path / 'demo.db'}",
    }
    env, help = run_pshell(tmp_path, settings)
    assert env["got"] == "g" and env["store"] == {"a": 1} and env["safe"] == {"n": 3}
    assert env["ping"] is True and isinstance(env["key"], str)
    assert set(env["redis"]) == set(transient_manager.names)
    banner = {line.split()[0]: line for line in help.splitlines()[1:] if line.strip()}
    for name in ("redis", "store", "safe", "models", "cache_key"):
        assert name in banner, help
        assert len(banner[name]) < 110, banner[name]  # one line, not a whole docstring
    assert "sessions=14" in banner["redis"] and "Gizmo" in dir(env["models"])
    assert "several lines" not in help


def test_pshell_setup_needs_no_redis_to_start(tmp_path: Path) -> None:
    settings = {
        "transient.url": "redis://127.0.0.1:1",
        "redis.sessions.secret": "x",
        "sqlalchemy.url": f"sqlite:///{tmp_path / 'demo.db'}",
    }
    lines = ["[app:main]", "use = egg:pyramid-transient#demo"]
    lines += [f"{k} = {v}" for k, v in settings.items()]
    lines += ["", "[pshell]", "setup = pyramid_transient.pshell.setup", ""]
    ini = tmp_path / "down.ini"
    ini.write_text("\n".join(lines))
    names: list[str] = []
    command = PShellCommand(["pshell", str(ini)], quiet=True)
    command.run(shell=lambda env, help: names.extend(env))
    assert {"redis", "store", "safe", "models", "cache_key"} <= set(names)
