"""Any field name: queries live on ``Model.objects``; the old class-level names warn."""

from __future__ import annotations

from typing import Any

import pytest

from pyramid_transient.exceptions import ObjectNotFound
from pyramid_transient.models import Manager, RedisModel

LAYOUTS = ["hash", "key"]


def odd_class(layout: str) -> type[RedisModel]:
    class Odd(RedisModel):
        __layout__ = layout
        __indexes__ = ("count", "filter")
        id: int
        count: int = 0
        get: str = ""
        filter: str = "x"
        all: bool = False
        delete: bool = False
        pk: str = "field"
        save: int = 0

    return Odd


@pytest.fixture(params=LAYOUTS)
def Odd(request: pytest.FixtureRequest, transient_manager: Any) -> Any:
    model = odd_class(request.param)
    model.objects.bind(transient_manager)
    model.objects.delete_all()
    yield model
    model.objects.delete_all()
    model.objects.unbind()


def test_fields_named_like_queries_save_load_and_query(Odd: Any) -> None:
    Odd.objects.save(Odd(id=1, count=3, get="g", filter="a", all=True, delete=True, pk="p"))
    Odd.objects.save(Odd(id=2, count=5, filter="b"))
    one = Odd.objects.get(1)
    assert (one.count, one.get, one.filter, one.all, one.delete, one.pk) == (
        3, "g", "a", True, True, "p",
    )  # fmt: skip
    assert Odd.objects.count() == 2
    assert [o.id for o in Odd.objects.filter(count__gte=4)] == [2]  # through the index
    assert [o.id for o in Odd.objects.filter(filter="a")] == [1]
    assert [o.id for o in Odd.objects.filter(pk="p")] == [1]  # pk is the field here
    assert sorted(o.id for o in Odd.objects.all()) == [1, 2]
    assert Odd.objects.match(id=2).count == 5
    assert Odd.objects.key_of(one) == "1"


def test_fields_shadow_the_instance_shortcuts_and_the_manager_still_works(Odd: Any) -> None:
    obj = Odd(id=7, delete=True, save=4)
    assert obj.delete is True and obj.save == 4
    Odd.objects.save(obj)
    obj.count = 9
    Odd.objects.save(obj)
    assert Odd.objects.refresh(Odd(id=7)).count == 9
    assert Odd.objects.delete(obj) is True
    with pytest.raises(ObjectNotFound):
        Odd.objects.get(7)


def test_a_field_named_like_an_old_class_name_is_the_field_not_a_query(Odd: Any) -> None:
    with pytest.raises(AttributeError):
        Odd.count  # noqa: B018 (a field: no class attribute, and no deprecated query)


def test_objects_is_reserved() -> None:
    with pytest.raises(TypeError, match="'objects'"):

        class Bad(RedisModel):
            id: int
            objects: int = 0


def test_objects_is_the_classs_manager() -> None:
    Model = odd_class("hash")
    assert isinstance(Model.objects, Manager) and Model.objects.model is Model
    with pytest.raises(AttributeError, match="through the class"):
        Model(id=1).objects  # noqa: B018


class Plain(RedisModel):
    id: int
    n: int = 0


@pytest.fixture
def plain(transient_manager: Any) -> Any:
    Plain.objects.bind(transient_manager)
    Plain.objects.delete_all()
    Plain(id=1, n=1).save()
    yield Plain
    Plain.objects.delete_all()
    Plain.objects.unbind()


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("get", lambda m: m.get(1)),
        ("match_for_pk", lambda m: m.match_for_pk(1)),
        ("match", lambda m: m.match(id=1)),
        ("match_for_values", lambda m: m.match_for_values(n=1)),
        ("filter", lambda m: m.filter(n=1)),
        ("exclude", lambda m: m.exclude(n=2)),
        ("all", lambda m: m.all()),
        ("iterate", lambda m: list(m.iterate())),
        ("count", lambda m: m.count()),
        ("delete_filter", lambda m: m.delete_filter(n=2)),
        ("delete_all", lambda m: m.delete_all()),
    ],
)
def test_old_class_level_names_warn_and_still_work(plain: Any, name: str, call: Any) -> None:
    expected = call(plain.objects)
    if name == "delete_all":
        Plain(id=1, n=1).save()
    with pytest.warns(
        DeprecationWarning, match=rf"Plain\.{name} is deprecated: use Plain\.objects\.{name}"
    ):
        got = call(plain)
    assert got == expected


def test_old_bind_and_unbind_warn_and_still_work(transient_manager: Any) -> None:
    with pytest.warns(DeprecationWarning, match=r"Plain\.bind is deprecated"):
        Plain.bind(transient_manager)
    try:
        Plain(id=3).save()
        assert Plain.objects.get(3).id == 3
        Plain.objects.delete_all()
    finally:
        with pytest.warns(DeprecationWarning, match=r"Plain\.unbind is deprecated"):
            Plain.unbind()
    assert Plain.__transient_meta__.binding is None


def test_old_pk_warns_and_names_key_of(plain: Any) -> None:
    obj = plain.objects.get(1)
    with pytest.warns(DeprecationWarning, match=r"use Plain\.objects\.key_of\(obj\)"):
        assert obj.pk == plain.objects.key_of(obj) == "1"
