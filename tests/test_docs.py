"""The documentation keeps up with the code."""

from __future__ import annotations

import ast
import importlib
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


#: Packages that are not library API: the demo app and the command (narrative docs).
NOT_API = ("demo", "scripts")


def _public_modules() -> set[str]:
    # Modules and packages, and their public submodules: a name with a leading underscore
    # (a file or any package above it) is private, documented through its package.
    src = ROOT / "src"
    found = set()
    for path in (src / "pyramid_transient").rglob("*.py"):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if len(parts) > 1 and parts[1] in NOT_API:
            continue
        if not any(part.startswith("_") for part in parts):
            found.add(".".join(parts))
    return found - {"pyramid_transient"}


def test_every_module_has_an_api_page() -> None:
    pages = " ".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.rst"))
    documented = set(re.findall(r"pyramid_transient(?:\.\w+)*", pages))
    modules = _public_modules()
    assert {"pyramid_transient.testing", "pyramid_transient.invalidation"} <= modules
    assert modules <= documented, sorted(modules - documented)


@pytest.mark.parametrize(
    ("page", "module", "names"),
    [
        ("testing", "pyramid_transient.testing", {"TEST_DBS", "PACKAGES"}),
        ("cache", "pyramid_transient.invalidation", {"DEFAULT_TOKEN_TTL"}),
    ],
)
def test_the_values_written_on_an_api_page_are_the_code_s(
    page: str, module: str, names: set[str]
) -> None:
    # Constants a package re-exports are documented with ``.. data::`` and a written
    # ``:value:`` (autodoc finds their comments only in the module that assigns them).
    text = (ROOT / "docs" / "api" / f"{page}.rst").read_text()
    values = dict(re.findall(r"^\.\. data:: (\w+)\n   :value: (.+)$", text, re.MULTILINE))
    assert set(values) == names
    for name, value in values.items():
        assert ast.literal_eval(value) == getattr(importlib.import_module(module), name), name
