"""The models' Lua scripts, read from the ``.lua`` files beside this module.

Every script but ``ids`` is ``prelude.lua`` (the KEYS and ARGV every script starts with,
and the helpers they share) followed by its own file; each file starts with a comment on
its KEYS and ARGV.
"""

from __future__ import annotations

from importlib import resources

from ..lua import ScriptSet

__all__ = ["SCRIPTS", "source"]

#: The scripts on a class's keys (``prelude.lua`` + ``<name>.lua``).
NAMES = ("save", "get", "delete", "find", "scan", "count", "clear", "reindex")
#: The scripts on a key of their own (``<name>.lua`` alone).
STANDALONE = ("ids",)


def source(name: str) -> str:
    """The Lua text of ``name`` (a file of this package, without ``.lua``)."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _scripts() -> ScriptSet:
    prelude = source("prelude")
    sources = {name: prelude + "\n" + source(name) for name in NAMES}
    sources.update((name, source(name)) for name in STANDALONE)
    return ScriptSet(**sources)


SCRIPTS = _scripts()
