"""The store's Lua scripts, read from the ``.lua`` files beside this module.

Each script is ``prelude.lua`` (the server clock, key types, the lock-record format, the
codec's numbers, the notes of repairs), then the helpers of its family (``data.lua`` or
``locks.lua``, whose head comment lists the KEYS every script of the family takes), then
its own file, whose head comment gives its ARGV and reply. Every script answers
``{result, note...}``: the notes are the repairs it made (see :func:`split_reply`).
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

from ..lua import ScriptSet

log = logging.getLogger(__name__)

__all__ = ["SCRIPTS", "source", "split_reply"]

#: The scripts of each family.
DATA_SCRIPTS = ("set", "get", "exists", "delete", "expire", "ttl", "add", "children")
LOCK_SCRIPTS = ("acquire", "release", "extend", "state")


def _read(name: str) -> str:
    return (resources.files(__package__) / f"{name}.lua").read_text(encoding="utf-8")


def source(name: str) -> str:
    """The full Lua source of script ``name``, prelude and helpers included."""
    family = "data" if name in DATA_SCRIPTS else "locks"
    return "\n".join((_read("prelude"), _read(family), _read(name)))


#: Every store script, registered once per client.
SCRIPTS = ScriptSet(**{name: source(name) for name in DATA_SCRIPTS + LOCK_SCRIPTS})


def split_reply(raw: Any) -> Any:
    """The result of a store script's reply; the repairs it reports are logged, one
    WARNING each (each names the key it repaired)."""
    result, *notes = raw
    for text in notes:
        log.warning(
            "%s", text.decode("utf-8", "backslashreplace") if isinstance(text, bytes) else text
        )
    return result
