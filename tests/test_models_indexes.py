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
from pyramid_transient.models import _manager as models_manager
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


# ---------------------------------------------------------------------- paged filters


@pytest.fixture
def one_per_page(monkeypatch: pytest.MonkeyPatch) -> None:
    """Filters read the index one entry per call: every filter is paged."""
    monkeypatch.setattr(models_manager, "FILTER_PAGE", 1)


@pytest.mark.parametrize(("field", "op"), CASES, ids=[f"{f}__{op}" for f, op in CASES])
def test_paged_filter_finds_what_a_full_check_finds(
    model: type[Prop], field: str, op: str, one_per_page: None
) -> None:
    @settings(
        max_examples=6,
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
        found = [o.id for o in model.objects.filter(**{f"{field}__{op}": value})]
        assert sorted(found) == expected  # each object once

    check()


def test_a_filter_reads_pages_of_filter_page_entries(
    model: type[Prop], monkeypatch: pytest.MonkeyPatch, round_trips: Any
) -> None:
    for n in range(10):
        model(id=n, i=7, s="x").save()
    model(id=99, i=8, s="y").save()
    with round_trips() as rt:
        assert sorted(o.id for o in model.objects.filter(i=7)) == list(range(10))
    pages = 1 if model.__layout__ == "hash" else 2  # + one MGET of the objects
    assert rt.count == pages  # small: one page
    monkeypatch.setattr(models_manager, "FILTER_PAGE", 4)
    for lookup in ({"i": 7}, {"s": "x"}, {"i__in": [7, 8]}):
        with round_trips() as rt:
            found = sorted(o.id for o in model.objects.filter(**lookup))
        assert found == sorted(range(10) if "i" in lookup or "s" in lookup else [*range(10), 99])
        scripts = [c for c in rt.commands if c.startswith("EVALSHA")]
        # 10 (or 11) entries in pages of 4: 3 pages, each reading at most 4 entries
        assert len(scripts) == 3


def test_objects_deleted_between_pages_never_hide_others(
    model: type[Prop], monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(12):
        model(id=n, i=7, s="x").save()
    monkeypatch.setattr(models_manager, "FILTER_PAGE", 3)
    for lookup in ({"i": 7}, {"s": "x"}):
        original = models_manager.Manager._collect
        deleted: list[int] = []

        def collect(
            self: Any,
            keys: Any,
            reply: list[Any],
            original: Any = original,
            deleted: Any = deleted,
        ) -> Any:
            page = original(self, keys, reply)
            if page and len(deleted) < 3:
                # another client deletes the last object this page listed, and one not
                # read yet: the walk goes on after the deleted one, skipping nothing
                last = max(o.id for o in page)
                ahead = [n for n in range(12) if n > last + 1 and n not in deleted]
                for n in [last, *ahead[:1]]:
                    model.objects.get(n).delete()
                    deleted.append(n)
            return page

        monkeypatch.setattr(models_manager.Manager, "_collect", collect)
        found = {o.id for o in model.objects.filter(**lookup)}
        monkeypatch.setattr(models_manager.Manager, "_collect", original)
        alive = {o.id for o in model.objects.all()}
        assert alive <= found  # every object present for the whole filter is found
        assert found <= set(range(12))
        model.objects.delete_all()
        for n in range(12):
            model(id=n, i=7, s="x").save()
