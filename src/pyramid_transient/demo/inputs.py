"""What the demo accepts from a form, and how it shows stored values.

Every limit is stated on the page that applies it. Input past a limit, or input that is
not what a field asks for, is a :class:`FormError` whose message the page shows with a
400; nothing here raises anything else on hostile input (no ``RecursionError`` on deep
JSON, no ``ValueError`` from ``int()`` on thousands of digits).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

#: Longest JSON text a form takes, in characters.
MAX_JSON_CHARS = 10_000
#: Deepest nesting of lists and objects a stored value may have.
MAX_VALUE_DEPTH = 10
#: Longest plain-text value, in characters.
MAX_TEXT_CHARS = 10_000
#: Most characters of one value a page shows; the rest is summarised.
SHOWN_CHARS = 2_000

_DIGITS = re.compile(r"[0-9]{1,18}")


class FormError(ValueError):
    """A form field holds something the demo does not accept; the message says why."""


def depth(value: Any) -> int:
    """How deep lists, tuples and dicts nest in ``value`` (a scalar is 0), iteratively."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple | set | frozenset):
            children = item
        else:
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def json_value(text: str, what: str = "the value") -> Any:
    """``text`` parsed as JSON, within :data:`MAX_JSON_CHARS` and :data:`MAX_VALUE_DEPTH`."""
    if len(text) > MAX_JSON_CHARS:
        raise FormError(
            f"{what} is {len(text):,} characters long; the demo takes at most {MAX_JSON_CHARS:,}"
        )
    try:
        value = json.loads(text)
    except RecursionError:
        raise FormError(
            f"{what} is nested too deeply; the demo takes at most {MAX_VALUE_DEPTH} levels"
        ) from None
    except ValueError as exc:  # JSONDecodeError, and int() refusing too many digits
        raise FormError(f"{what} {shorten(text)!r} is not JSON ({exc})") from None
    if depth(value) > MAX_VALUE_DEPTH:
        raise FormError(
            f"{what} is nested {depth(value)} levels deep; the demo takes at most "
            f"{MAX_VALUE_DEPTH}"
        )
    return value


def text_value(text: str, what: str = "the value") -> str:
    if len(text) > MAX_TEXT_CHARS:
        raise FormError(
            f"{what} is {len(text):,} characters long; the demo takes at most {MAX_TEXT_CHARS:,}"
        )
    return text


def whole_number(text: str, what: str, low: int, high: int) -> int:
    """``text`` as a whole number from ``low`` to ``high`` (ASCII digits only)."""
    text = text.strip()
    if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise FormError(
            f"{what} must be a whole number from {low} to {high}, not {shorten(text)!r}"
        )
    return int(text)


def seconds(text: str, what: str, high: float) -> float:
    """``text`` as a number of seconds, more than 0 and at most ``high``."""
    text = text.strip()
    try:
        value = float(text) if len(text) <= 32 else math.nan
    except ValueError:
        value = math.nan
    if not 0 < value <= high:  # also refuses nan and inf
        raise FormError(
            f"{what} must be a number of seconds, more than 0 and at most {high:,.0f}, "
            f"not {shorten(text)!r}"
        )
    return value


def shown(value: Any) -> str:
    """``value`` as indented JSON for a page: never deeper than :data:`MAX_VALUE_DEPTH`
    levels of rendering (whatever got stored), never longer than :data:`SHOWN_CHARS`."""
    if depth(value) > MAX_VALUE_DEPTH:
        text = _flat(value)
    else:
        text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return shorten(text, SHOWN_CHARS)


def shown_repr(value: Any) -> str:
    """``repr(value)`` for a page, with the caps of :func:`shown`."""
    text = _flat(value) if depth(value) > MAX_VALUE_DEPTH else repr(value)
    return shorten(text, SHOWN_CHARS)


def _flat(value: Any) -> str:
    """A shallow summary of a value nested too deep to render whole."""
    kind = type(value).__name__
    size = len(value) if hasattr(value, "__len__") else 0
    return f"({kind} of {size} items, nested {depth(value)} levels deep: too deep to show)"


def shorten(text: str, limit: int = 60) -> str:
    """``text``, or its first ``limit`` characters and how many more there are."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"
