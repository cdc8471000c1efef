"""The models' Lua: files beside the package, each with its contract on top."""

from __future__ import annotations

from importlib import resources

import pytest

from pyramid_transient.models import _scripts as scripts

LUA = sorted(
    f.name
    for f in resources.files("pyramid_transient.models").iterdir()
    if f.name.endswith(".lua")
)


def test_every_script_has_its_file_and_every_file_is_used() -> None:
    names = {*scripts.NAMES, *scripts.STANDALONE, "prelude"}
    assert {f"{name}.lua" for name in names} == set(LUA)


@pytest.mark.parametrize("name", LUA)
def test_every_file_starts_with_a_comment_on_its_keys_and_argv(name: str) -> None:
    text = scripts.source(name.removesuffix(".lua"))
    head = []
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        head.append(line)
    assert head, f"{name} starts with no comment"
    assert "ARGV" in "\n".join(head), name
    if name in ("prelude.lua", "ids.lua"):
        assert "KEYS[1]" in "\n".join(head)


def test_scripts_are_the_prelude_then_their_own_file() -> None:
    prelude = scripts.source("prelude")
    for name in scripts.NAMES:
        assert scripts.SCRIPTS.sources[name] == prelude + "\n" + scripts.source(name)
    for name in scripts.STANDALONE:
        assert scripts.SCRIPTS.sources[name] == scripts.source(name)
