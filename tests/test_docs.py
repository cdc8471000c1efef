"""The documentation keeps up with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyramid_transient.settings import settings_keys

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("key", list(settings_keys()))
def test_every_setting_is_in_the_settings_reference(key: str) -> None:
    reference = (ROOT / "docs" / "settings.rst").read_text()
    assert f"``{key}``" in reference, f"{key} is missing from docs/settings.rst"


def _readme_test_command() -> str:
    readme = (ROOT / "README.rst").read_text()
    commands = [line.strip() for line in readme.splitlines() if "pytest" in line and "pip" in line]
    assert len(commands) == 1, commands
    return commands[0]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    command = _readme_test_command().replace("python3.11", "$PY")
    assert command in ci


def test_every_module_has_an_api_page() -> None:
    pages = " ".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.rst"))
    modules = {
        f"pyramid_transient.{p.stem}"
        for p in (ROOT / "src" / "pyramid_transient").glob("*.py")
        if not p.stem.startswith("_")
    }
    documented = set(re.findall(r"pyramid_transient(?:\.\w+)?", pages))
    assert modules <= documented, sorted(modules - documented)
