"""Dotted paths, and the flat (stored path, encoded value) form of a subtree."""

from __future__ import annotations

import logging
from typing import Any

from ..codec import decode, encode
from ..exceptions import CodecError

log = logging.getLogger(__name__)

SEPARATOR = "."


def split(path: str, what: str = "path") -> tuple[str, ...]:
    """The elements of a dotted path; ValueError for an empty path or element."""
    if not isinstance(path, str):
        raise TypeError(f"store {what} must be a str, not {type(path).__name__}: {path!r}")
    parts = tuple(path.split(SEPARATOR))
    if not path or any(not p for p in parts):
        raise ValueError(
            f"store {what} {path!r} is not valid: use dot-separated, non-empty elements "
            "such as 'a.b.c' (no leading, trailing or doubled dots)"
        )
    return parts


def node(elements: tuple[str, ...]) -> str:
    """The stored form of a node path below its section: ``("a", "b")`` -> ``"a.b."``."""
    return "".join(e + SEPARATOR for e in elements)


def is_subtree(value: Any) -> bool:
    """A dict whose keys can all be path elements is stored as a subtree; any other dict
    (non-string keys, keys with dots, empty keys, or no keys at all) is one leaf."""
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and k and SEPARATOR not in k for k in value)
    )


def flatten(value: Any, prefix: str, out: list[bytes | str]) -> None:
    """Append the (stored path, encoded value) pairs of ``value`` at ``prefix`` to ``out``."""
    if is_subtree(value):
        for k, v in value.items():
            flatten(v, prefix + k + SEPARATOR, out)
    else:
        out.append(prefix)
        out.append(encode(value))


def stored_path(raw: bytes | str, node: str, key: str = "") -> list[str] | None:
    """The elements of stored path ``raw`` below ``node`` (``[]`` for the node itself), or
    None, logged, for a field that is not a path we write (not UTF-8, not ending with the
    separator, an empty element, outside ``node``): written by something else."""
    try:
        field = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        field = None
    if field == node:
        return []
    if field is not None and field.startswith(node) and field.endswith(SEPARATOR):
        rest = field[len(node) :].split(SEPARATOR)[:-1]
        if all(rest):
            return rest
    log.warning("ignoring a corrupt store path %r below %r in %s", raw, node, key or "the store")
    return None


def build(node: str, flat: list[Any], key: str = "") -> tuple[bool, Any]:
    """Rebuild the value of ``node`` from flat (path, encoded value) pairs read from the
    data hash ``key``; a value that cannot be decoded is missing, logged."""
    tree: dict[str, Any] = {}
    found = False
    for i in range(0, len(flat), 2):
        rest = stored_path(flat[i], node, key)
        raw = flat[i + 1]
        if raw is None or rest is None:
            continue
        try:
            value = decode(raw)
        except CodecError as exc:
            log.warning(
                "ignoring a corrupt store value in %s at %r (read as missing): %s",
                key or "the store",
                flat[i],
                exc,
            )
            continue
        if not rest:
            return True, value
        branch = tree
        for part in rest[:-1]:
            nxt = branch.get(part)
            if not isinstance(nxt, dict):
                nxt = branch[part] = {}
            branch = nxt
        branch[rest[-1]] = value
        found = True
    return found, tree
