"""Index ranges never miss a match: an indexed filter equals a check of every object."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyramid_transient.connection import RedisManager
from pyramid_transient.models import RedisModel
from pyramid_transient.models._encoding import _Cond


class Prop(RedisModel):
    __indexes__ = ("i", "f", "s", "d")
    id: int
    i: int | None = None
    f: float | None = None
    s: str | None = None
    d: Decimal | None = None


class PropByKey(Prop):
    __layout__ = "key"


TEXT = st.text(
    alphabet=st.sampled_from(["a", "b", "\x00", "\x01", "\x02", "ÿ", "é", "😀"]), max_size=4
)
VALUES = {
    "i": st.integers(-(2**70), 2**70) | st.integers(-3, 3),
    "f": st.floats(allow_nan=True) | st.sampled_from([0.0, -0.0, 1.0, float("inf")]),
    "s": TEXT,
    "d": st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-5, max_value=5)
    | st.decimals(allow_nan=False, allow_infinity=False),
}
OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "isnull", "startswith")


CASES = [(f, op) for f in sorted(VALUES) for op in OPS if op != "startswith" or f == "s"]


@st.composite
def objects_and_value(draw: Any, field: str, op: str) -> tuple[list[dict[str, Any]], Any]:
    rows = []
    for n in range(draw(st.integers(0, 8))):
        row: dict[str, Any] = {"id": n}
        for name, values in VALUES.items():
            row[name] = draw(st.none() | values)
        rows.append(row)
    # lookup values are often values stored, where range bounds matter most
    stored = [row[field] for row in rows if row[field] is not None]
    values = st.sampled_from(stored) | VALUES[field] if stored else VALUES[field]
    if op == "isnull":
        value: Any = draw(st.booleans())
    elif op == "in":
        value = draw(st.lists(values, max_size=3))
    elif op == "startswith" and stored:
        value = draw(st.sampled_from(stored).map(lambda text: text[: len(text) // 2]) | values)
    else:
        value = draw(values)
    return rows, value


@pytest.fixture(params=[Prop, PropByKey], ids=["hash", "key"])
def model(request: Any, transient_manager: RedisManager) -> Iterator[type[Prop]]:
    request.param.objects.bind(transient_manager)
    yield request.param
    request.param.objects.unbind()


@pytest.mark.parametrize(("field", "op"), CASES, ids=[f"{f}__{op}" for f, op in CASES])
def test_indexed_filter_finds_what_a_full_check_finds(
    model: type[Prop], field: str, op: str
) -> None:
    @settings(
        max_examples=12,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(case=objects_and_value(field, op))
    def check(case: Any) -> None:
        rows, value = case
        model.objects.delete_all()
        saved = [model(**row).save() for row in rows]
        cond = _Cond(field, op, model.objects._coerce(field, value, op))
        expected = sorted(o.id for o in saved if cond.test(o))
        found = sorted(o.id for o in model.objects.filter(**{f"{field}__{op}": value}))
        assert found == expected

    check()


@pytest.mark.parametrize(
    ("stored", "prefix"), [("aé", "a"), ("a😀", "a"), ("aÿ", "a"), ("a\x7f", "a"), ("ab", "ab")]
)
def test_startswith_finds_every_continuation(model: type[Prop], stored: str, prefix: str) -> None:
    model(id=1, s=stored).save()
    model(id=2, s="b").save()
    assert [o.id for o in model.objects.filter(s__startswith=prefix)] == [1]
