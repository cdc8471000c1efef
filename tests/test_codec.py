"""The codec: every supported type round-trips; nothing else is written; nothing runs."""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyramid_transient import codec
from pyramid_transient.exceptions import CodecError

hashable = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.binary(max_size=20)
    | st.decimals(allow_nan=False)
    | st.uuids(),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=50)
    | st.decimals(allow_nan=False)
    | st.datetimes()
    | st.datetimes(timezones=st.timezones())
    | st.dates()
    | st.times()
    | st.times(timezones=st.timezones())
    | st.timedeltas()
    | st.uuids()
)

values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(), inner, max_size=4)
        | st.dictionaries(hashable, inner, max_size=4)
        | st.sets(hashable, max_size=4)
        | st.frozensets(hashable, max_size=4)
    ),
    max_leaves=12,
)


def same(a: Any, b: Any) -> bool:
    """Equality that also checks types all the way down (1 == 1.0 == True is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return (
            len(a) == len(b)
            and all(k in b and same(v, b[k]) for k, v in a.items())
            and all(same(k, next(k2 for k2 in b if k2 == k)) for k in a)
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dt.datetime | dt.time):
        return a == b and a.tzinfo == b.tzinfo if a.tzinfo else a == b and b.tzinfo is None
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple()
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(values)
def test_every_supported_value_round_trips_with_its_types(value: Any) -> None:
    assert same(codec.decode(codec.encode(value)), value)


@settings(max_examples=100, deadline=None)
@given(values)
def test_encoding_is_valid_utf8_json(value: Any) -> None:
    json.loads(codec.encode(value).decode("utf-8"))


def test_the_design_example_round_trips() -> None:
    value = {(None,): [1, "bar", Decimal("1.0")]}
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize("special", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_floats_round_trip(special: float) -> None:
    back = codec.decode(codec.encode(special))
    assert type(back) is float and (math.isnan(back) if math.isnan(special) else back == special)


def test_decimal_specials_round_trip() -> None:
    assert codec.decode(codec.encode(Decimal("Infinity"))) == Decimal("Infinity")
    assert codec.decode(codec.encode(Decimal("NaN"))).is_nan()


def test_user_dict_that_looks_like_a_tag_stays_data() -> None:
    value = {"__t__": "bytes", "v": "AAAA"}
    assert codec.decode(codec.encode(value)) == value


def test_aware_datetime_keeps_its_offset() -> None:
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    value = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=tz)
    back = codec.decode(codec.encode(value))
    assert back == value and back.utcoffset() == value.utcoffset()


class Custom:
    pass


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (Custom(), "Custom"),
        ({"a": [1, object()]}, "builtins.object"),
        (lambda: None, "function"),
        (complex(1, 2), "builtins.complex"),
        (bytearray(b"x"), "builtins.bytearray"),
    ],
)
def test_unsupported_types_raise_typeerror_naming_the_type(value: Any, name: str) -> None:
    with pytest.raises(TypeError, match=name):
        codec.encode(value)
    with pytest.raises(TypeError, match=name):
        codec.check(value)


def test_subclasses_of_json_types_store_as_their_base() -> None:
    class Name(str):
        pass

    back = codec.decode(codec.encode({"n": Name("x")}))
    assert back == {"n": "x"} and type(back["n"]) is str


def test_too_deep_nesting_is_refused() -> None:
    value: Any = []
    for _ in range(codec.MAX_DEPTH + 5):
        value = [value]
    with pytest.raises(TypeError, match="nested deeper"):
        codec.encode(value)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"\xff\xfe",
        b"NaN",
        b'{"__t__":"os.system","v":"echo hi"}',
        b'{"__t__":"tuple"}',
        b'{"__t__":"bytes","v":"***"}',
        b'{"__t__":"decimal","v":"one"}',
        b'{"__t__":"datetime","v":"yesterday"}',
        b'{"__t__":"timedelta","v":[1]}',
        b'{"__t__":"set","v":[[1]]}',
        b'{"__t__":"dict","v":[[[1],2]]}',
        b'{"__t__":"float","v":"1e999"}',
        b"\x80\x04\x95.",  # a pickle header
        b"[" * 100000,
    ],
)
def test_corrupt_or_foreign_payloads_raise_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode(payload)


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


def test_uuid_and_bytes_round_trip() -> None:
    value = [uuid.UUID(int=1), b"\x00\xff"]
    assert codec.decode(codec.encode(value)) == value


def test_decode_takes_bytes_bytearray_and_str() -> None:
    value = {"a": (1, Decimal("2.5")), 3: {"x"}}
    data = codec.encode(value)
    assert codec.decode(data) == codec.decode(bytearray(data)) == codec.decode(data.decode())
    assert codec.decode(data) == value


def test_threads_sharing_the_encoder_and_decoder_get_their_own_values() -> None:
    # One JSONEncoder and one JSONDecoder serve the process; the decoder calls back into
    # Python for every object, so threads interleave in the middle of a decode.
    import threading

    errors: list[str] = []

    def work(n: int) -> None:
        value = {"n": n, "items": [(n, str(n), {n: Decimal(n)})] * 20, "set": {n, -n}}
        for _ in range(300):
            if codec.decode(codec.encode(value)) != value:
                errors.append(f"thread {n} read another value")
                return

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


class Color(str, enum.Enum):  # noqa: UP042 - the (str, Enum) mixin is the case under test
    RED = "red"


def test_str_mixin_enum_is_stored_as_its_value() -> None:
    # str(Color.RED) is "Color.RED": the codec silently stores the wrong string.
    assert codec.decode(codec.encode(Color.RED)) == "red"
    assert codec.decode(codec.encode({"c": Color.RED})) == {"c": "red"}


def test_lone_surrogate_string_round_trips() -> None:
    # json.loads('"\\ud800"') (e.g. a request body) gives such a str; it is a str, so
    # storing it must work (or be refused with TypeError), not raise UnicodeEncodeError.
    value = "a\ud800b"
    assert codec.decode(codec.encode(value)) == value


def test_aware_datetime_near_max_in_a_zoneinfo_zone_round_trips() -> None:
    value = dt.datetime(9999, 12, 31, 23, 0, tzinfo=ZoneInfo("America/New_York"))
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize(
    "payload",
    [
        b'{"__t__":"timedelta","v":[1000000000,0,0]}',
        b'{"__t__":"timedelta","v":[1e300,0,0]}',
        b'{"__t__":"datetime","v":["9999-12-31T23:00:00+00:00","Asia/Tokyo"]}',
    ],
)
def test_tampered_payload_raises_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode(payload)


def test_an_int_too_long_for_json_text_is_refused_with_typeerror() -> None:
    with pytest.raises(TypeError, match="cannot store this int"):
        codec.check({"n": 10**5000})
    assert codec.decode(codec.encode(10**4000)) == 10**4000


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1, 2.5, "x", None, True], "c": {"d": {}}},
        {"t": (1, 2)},
        {1: "int key"},
        {"__t__": "looks like a tag"},
        [float("nan")],
        {"n": 10**4000},
        {"deep": [[[[[]]]]]},
        "\ud800",
    ],
    ids=["plain", "tuple", "int_key", "tag_key", "nan", "huge_int", "nested", "surrogate"],
)
def test_fast_path_encodes_exactly_as_the_full_path(value: object) -> None:
    from pyramid_transient.codec import _ASCII_ENCODER, _ENCODER, _to_json

    tree = _to_json(value)
    try:
        expected = _ENCODER.encode(tree).encode("utf-8")
    except UnicodeEncodeError:
        expected = _ASCII_ENCODER.encode(tree).encode("ascii")
    assert codec.encode(value) == expected
    decoded = codec.decode(codec.encode(value))
    assert decoded == value or (isinstance(value, list) and math.isnan(decoded[0]))


def test_fast_path_refuses_what_is_too_deep() -> None:
    deep: list[object] = []
    for _ in range(codec.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(TypeError, match="nested deeper"):
        codec.encode(deep)
