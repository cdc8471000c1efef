"""How models' values become index entries and lookups: index kinds, scores, lexical
members, and the conditions of ``filter()``.

An indexed field is a sorted set ``idx:<field>``: score = the value for numbers, dates and
datetimes (member = pk); score 0 and member = ``value NUL pk`` for str, bool, Enum and UUID,
so equality, ``__in``, ``__startswith`` and ranges are ``ZRANGEBYLEX`` slices.
"""

from __future__ import annotations

import datetime as dt
import enum
import types
import typing
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from pydantic import TypeAdapter

LOOKUPS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "startswith", "isnull")


_NONE_TYPE = type(None)
_BOOL: TypeAdapter[bool] = TypeAdapter(bool)
_STR: TypeAdapter[str] = TypeAdapter(str)


def _strip(annotation: Any) -> Any:
    """The annotation without ``Annotated`` and without ``None`` in an optional union."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not _NONE_TYPE]
        if len(args) == 1:
            return _strip(args[0])
    return annotation


def _generated_id_type(pk_fields: tuple[str, ...], fields: Mapping[str, Any]) -> type | None:
    """``str`` or ``int`` for a key that is one optional ``id`` field of that type."""
    if pk_fields != ("id",):
        return None
    annotation = fields["id"].annotation
    base = _strip(annotation)
    if base not in (str, int) or base is annotation:
        return None  # not optional: an id of None is a mistake to report, not to fill in
    return cast(type, base)


def _index_kind(annotation: Any) -> str | None:
    """``"score"``, ``"text"`` (str: ranges and prefixes too), ``"lex"`` or None."""
    base = _strip(annotation)
    if not isinstance(base, type):
        return None
    if issubclass(base, bool | enum.Enum | uuid.UUID):
        return "lex"
    if issubclass(base, int | float | Decimal | dt.date):
        return "score"
    if issubclass(base, str):
        return "text"
    return None


def _score(value: Any) -> float | None:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return float(value.timestamp())
    if isinstance(value, dt.date):
        return float(value.toordinal())
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range sorts at its end
        return float("inf") if value > 0 else float("-inf")
    return None if number != number else number  # NaN cannot be a score


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, enum.Enum):
        return _text(value.value)
    return str(value)


def _lex(value: Any) -> bytes:
    # \0 separates value and pk in a member, so values carry no \0: \1 escapes \0 and itself.
    # UTF-8 preserves code point order, so byte ranges are string ranges.
    return _text(value).replace("\x01", "\x01\x02").replace("\x00", "\x01\x01").encode()


def _score_text(score: float) -> str:
    return repr(score)


@dataclass(frozen=True)
class _Index:
    field: str
    kind: str  # "score", "lex" or "text"


def _expire_ms(owner: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise TypeError(
            f"{owner}.__expire__ must be a positive number of seconds or None, not {value!r}"
        )
    return max(1, round(value * 1000))


@dataclass(frozen=True)
class _Cond:
    field: str
    op: str
    value: Any

    def test(self, obj: Any) -> bool:
        actual = getattr(obj, self.field, None)
        op, value = self.op, self.value
        try:
            if op == "eq":
                return bool(actual == value)
            if op == "isnull":
                return (actual is None) is bool(value)
            if actual is None:
                return False
            if op == "ne":
                return value is None or bool(actual != value)
            if op == "lt":
                return bool(actual < value)
            if op == "lte":
                return bool(actual <= value)
            if op == "gt":
                return bool(actual > value)
            if op == "gte":
                return bool(actual >= value)
            if op == "in":
                return actual in value
            if op == "contains":
                return value in actual
            if op == "startswith":
                return isinstance(actual, str) and actual.startswith(value)
        except TypeError:  # e.g. an aware and a naive datetime: not a match, not a crash
            return False
        raise AssertionError(op)  # pragma: no cover  (ops are checked when parsed)

    def ranges(self, kind: str) -> list[tuple[Any, Any]] | None:
        """Index ranges holding every match, or None when the index cannot serve it."""
        op, value = self.op, self.value
        if op == "eq" and value is None:
            return None
        if op == "isnull":
            return None if value else ([("-inf", "+inf")] if kind == "score" else [("-", "+")])
        if op == "in":  # None is in no index, and test() matches it with nothing
            value = [v for v in value if v is not None]
        elif value is None:  # a comparison with None: test() matches nothing
            return [] if op in ("lt", "lte", "gt", "gte", "startswith") else None
        if kind == "score":
            if op in ("eq", "in"):
                scores = (_score(v) for v in (value if op == "in" else [value]))
                return [(_score_text(s), _score_text(s)) for s in scores if s is not None]
            if op in ("lt", "lte", "gt", "gte"):
                # Bounds are inclusive: float() of a Decimal or a datetime is monotonic but
                # may round, and the exact comparison runs on the loaded objects.
                score = _score(value)
                if score is None:
                    return []
                text = _score_text(score)
                return [("-inf", text)] if op in ("lt", "lte") else [(text, "+inf")]
            return None
        if op in ("eq", "in"):
            return [
                (b"[" + _lex(v) + b"\x00", b"(" + _lex(v) + b"\x01")
                for v in (value if op == "in" else [value])
            ]
        if kind != "text":
            return None
        lex = _lex(value)
        if op == "startswith":
            return [(b"[" + lex, b"(" + lex + b"\xff")]  # no UTF-8 byte is 0xff
        if op == "lt":
            return [(b"-", b"(" + lex)]
        if op == "lte":
            return [(b"-", b"(" + lex + b"\x01")]
        if op == "gt":
            return [(b"(" + lex + b"\x01", b"+")]
        if op == "gte":
            return [(b"[" + lex, b"+")]
        return None


def _item_annotation(annotation: Any) -> Any:
    base = _strip(annotation)
    if isinstance(base, type) and issubclass(base, str):
        return base
    origin = typing.get_origin(base)
    args = typing.get_args(base)
    if origin in (list, set, frozenset, tuple) and args:
        return args[0]
    if origin is dict and args:
        return args[0]
    return Any
