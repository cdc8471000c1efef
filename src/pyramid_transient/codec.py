"""The one safe encoding of every value pyramid_transient stores.

JSON (UTF-8, compact), with tagged objects for what JSON lacks. A tagged object is a JSON
object with exactly the keys ``"__t__"`` (the tag) and ``"v"`` (the payload):

=============  ===================================================================
tag            payload
=============  ===================================================================
``tuple``      list of items
``set``        list of items
``frozenset``  list of items
``bytes``      base64 string
``decimal``    string, ``str(Decimal)`` (``NaN``, ``Infinity`` included)
``float``      ``"nan"``, ``"inf"`` or ``"-inf"`` (JSON has no such numbers)
``datetime``   ISO 8601 string, with its UTC offset when aware; for a
               :class:`zoneinfo.ZoneInfo` zone, ``[iso string, zone key]``
``date``       ISO 8601 string
``time``       as ``datetime``
``timedelta``  ``[days, seconds, microseconds]``
``uuid``       canonical hex string
``dict``       list of ``[key, value]`` pairs: a dict with a non-string key, or one
               whose keys include ``"__t__"`` (so user data never looks like a tag)
=============  ===================================================================

Supported values are ``None``, ``bool``, ``int``, ``float``, ``str`` and the types above,
nested in ``list``, ``tuple``, ``dict``, ``set`` and ``frozenset`` (subclasses of ``str``,
``int``, ``float``, ``list``, ``tuple`` and ``dict`` are stored as their base type). Any
other value raises :class:`TypeError` naming the type, before anything is written.

Aware datetimes and times keep their UTC offset; a :class:`zoneinfo.ZoneInfo` zone is kept
by its key (``"Europe/Paris"``), so arithmetic across DST still works after a round trip.
Other ``tzinfo`` implementations (pytz, dateutil) come back as a fixed-offset
:class:`datetime.timezone`.

Decoding only builds these types: it never imports or calls anything named in the data.
A payload that is not valid raises :class:`~pyramid_transient.exceptions.CodecError`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .exceptions import CodecError, UnsupportedValue

TAG = "__t__"
VALUE = "v"

#: Deepest nesting accepted; deeper structures are refused rather than overflowing the stack.
MAX_DEPTH = 200

__all__ = ["MAX_DEPTH", "TAG", "check", "decode", "encode"]


def _tagged(tag: str, value: Any) -> dict[str, Any]:
    return {TAG: tag, VALUE: value}


def _to_json(value: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise UnsupportedValue(f"cannot store values nested deeper than {MAX_DEPTH} levels")
    # bool before int: bool is an int subclass; exact types first for speed.
    if value is None or value is True or value is False:
        return value
    cls = type(value)
    if cls is str:
        return value
    if cls is int:
        return value if value.bit_length() < 13_000 else _huge_int(value)
    if cls is float:
        return value if math.isfinite(value) else _tagged("float", repr(value))
    if cls is list:
        return [_to_json(v, depth + 1) for v in value]
    if cls is dict:
        return _dict_to_json(value, depth)
    if cls is tuple:
        return _tagged("tuple", [_to_json(v, depth + 1) for v in value])
    if cls is set:
        return _tagged("set", [_to_json(v, depth + 1) for v in value])
    if cls is frozenset:
        return _tagged("frozenset", [_to_json(v, depth + 1) for v in value])
    if cls is bytes:
        return _tagged("bytes", base64.b64encode(value).decode("ascii"))
    if cls is Decimal:
        return _tagged("decimal", str(value))
    if cls is dt.datetime or cls is dt.time:
        tag = "datetime" if cls is dt.datetime else "time"
        if isinstance(value.tzinfo, ZoneInfo):
            return _tagged(tag, [value.isoformat(), value.tzinfo.key])
        return _tagged(tag, value.isoformat())
    if cls is dt.date:
        return _tagged("date", value.isoformat())
    if cls is dt.timedelta:
        return _tagged("timedelta", [value.days, value.seconds, value.microseconds])
    if cls is uuid.UUID:
        return _tagged("uuid", str(value))
    # Subclasses of the JSON types are stored as their base type's value, read through the
    # base type's own method: str() of a (str, Enum) member is "Color.RED", not "red".
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return _to_json(int.__int__(value), depth)
    if isinstance(value, float):
        return _to_json(float.__float__(value), depth)
    if isinstance(value, tuple):
        return _tagged("tuple", [_to_json(v, depth + 1) for v in value])
    if isinstance(value, list):
        return [_to_json(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return _dict_to_json(value, depth)
    raise UnsupportedValue(
        f"cannot store a value of type {cls.__module__}.{cls.__qualname__}: "
        "pyramid_transient stores None, bool, int, float, str, bytes, Decimal, datetime, date, "
        "time, timedelta, UUID and list/tuple/dict/set/frozenset of those"
    )


def _huge_int(value: int) -> int:
    # Python refuses to turn an int of more than sys.get_int_max_str_digits() digits (4300
    # by default) into text, so JSON cannot hold it: refuse it here, as a type we cannot
    # store, rather than with a ValueError from the encoder after the checks passed.
    try:
        str(value)
    except ValueError as exc:
        raise UnsupportedValue(f"cannot store this int: {exc}") from None
    return value


def _dict_to_json(value: dict[Any, Any], depth: int) -> Any:
    if all(type(k) is str for k in value) and TAG not in value:
        return {k: _to_json(v, depth + 1) for k, v in value.items()}
    return _tagged(
        "dict", [[_to_json(k, depth + 1), _to_json(v, depth + 1)] for k, v in value.items()]
    )


def check(value: Any) -> None:
    """Raise :class:`TypeError` if ``value`` cannot be stored; write nothing."""
    _to_json(value)


# One encoder and one decoder for the process (json.dumps and json.loads with options build
# new ones at every call); like json's own default ones, they keep no state between calls.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# For text holding a lone surrogate ("\ud800", which json.loads of a request body can give):
# UTF-8 cannot carry it, a \u escape can.
_ASCII_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


_PLAIN_SCALARS = frozenset({str, bool, type(None)})


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is JSON as it is: nothing needs a tag, so the C encoder's output is
    exactly :func:`_to_json`'s (exact types only; a tuple, a non-str key, a ``"__t__"`` key,
    a float that is not finite or a huge int says no, and the full path decides)."""
    if depth > MAX_DEPTH:
        return False
    cls = type(value)
    if cls in _PLAIN_SCALARS:
        return True
    if cls is int:
        return bool(value.bit_length() < 13_000)
    if cls is float:
        return math.isfinite(value)
    if cls is dict:
        if TAG in value:
            return False
        for key, item in value.items():
            if type(key) is not str:
                return False
            kind = type(item)
            if kind is str or (kind is int and item.bit_length() < 13_000):
                continue
            if kind not in _PLAIN_SCALARS and not _plain(item, depth + 1):
                return False
        return True
    if cls is list:
        for item in value:
            kind = type(item)
            if kind is str or (kind is int and item.bit_length() < 13_000):
                continue
            if kind not in _PLAIN_SCALARS and not _plain(item, depth + 1):
                return False
        return True
    return False


def encode(value: Any) -> bytes:
    """Encode ``value``; raises :class:`TypeError` for a value of an unsupported type."""
    # The fast path: a value that needs no tag goes to the C encoder as it is.
    tree = value if _plain(value) else _to_json(value)
    try:
        return _ENCODER.encode(tree).encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(tree).encode("ascii")


def encode_str(value: Any) -> str:
    """:func:`encode`, as text (for APIs that want ``str``)."""
    return encode(value).decode("utf-8")


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        raise CodecError("a dict key decoded to a list, which cannot be a key")
    return value


def _untag(obj: dict[str, Any]) -> Any:
    if TAG not in obj:
        return obj
    if len(obj) != 2 or VALUE not in obj:
        raise CodecError(f"malformed tagged value: {sorted(obj)!r}")
    tag, v = obj[TAG], obj[VALUE]
    try:
        if tag == "tuple":
            return tuple(v)
        if tag == "set":
            return {_hashable(x) for x in v}
        if tag == "frozenset":
            return frozenset(_hashable(x) for x in v)
        if tag == "bytes":
            return base64.b64decode(v.encode("ascii"), validate=True)
        if tag == "decimal":
            return Decimal(v)
        if tag == "float":
            if v not in ("nan", "inf", "-inf"):
                raise CodecError(f"bad float payload {v!r}")
            return float(v)
        if tag == "datetime":
            if isinstance(v, list):
                iso, zone = v
                return _in_zone(dt.datetime.fromisoformat(iso), _zone(zone))
            return dt.datetime.fromisoformat(v)
        if tag == "date":
            return dt.date.fromisoformat(v)
        if tag == "time":
            if isinstance(v, list):
                iso, zone = v
                return dt.time.fromisoformat(iso).replace(tzinfo=_zone(zone))
            return dt.time.fromisoformat(v)
        if tag == "timedelta":
            days, seconds, micros = v
            return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
        if tag == "uuid":
            return uuid.UUID(v)
        if tag == "dict":
            return {_hashable(k): val for k, val in v}
    except CodecError:
        raise
    except (
        TypeError,
        ValueError,
        AttributeError,
        OverflowError,
        InvalidOperation,
        binascii.Error,
    ) as exc:
        raise CodecError(f"malformed {tag!r} value: {exc}") from None
    raise CodecError(f"unknown tag {tag!r}")


def _in_zone(stamp: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    # The stored text is the wall time in the zone with its offset. Put the zone back on
    # the wall time (the second of a repeated hour has fold=1) rather than converting
    # through UTC, which overflows near datetime.max and datetime.min.
    local = stamp.replace(tzinfo=zone)
    if local.utcoffset() != stamp.utcoffset():
        local = local.replace(fold=1)
        if local.utcoffset() != stamp.utcoffset():
            return stamp.astimezone(zone)  # an offset the zone never had there (foreign)
    return local


def _zone(key: str) -> ZoneInfo:
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise CodecError(f"unknown time zone {key!r}") from exc


def decode(data: bytes | str) -> Any:
    """Decode a payload made by :func:`encode`; raises
    :class:`~pyramid_transient.exceptions.CodecError` if it is not one."""
    try:
        return _DECODER.decode(
            data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        )
    except CodecError:
        raise
    except (ValueError, TypeError, RecursionError) as exc:
        raise CodecError(f"not a pyramid_transient payload: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise CodecError(f"JSON constant {name} is not part of the encoding")


_DECODER = json.JSONDecoder(object_hook=_untag, parse_constant=_refuse_constant)
