"""RedisModel: keys, round trip of values, lookups, indexes, expiry; both layouts, real server."""

from __future__ import annotations

import datetime as dt
import enum
import logging
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel

from pyramid_transient.connection import RedisManager, get_manager
from pyramid_transient.exceptions import MultipleFound, ObjectNotFound
from pyramid_transient.models import FullScanRefused, RedisModel
from pyramid_transient.models import _keys as models_keys
from pyramid_transient.models import _manager as models_manager

LAYOUTS = ("hash", "key")


class Role(enum.StrEnum):
    admin = "admin"
    member = "member"


class Level(enum.IntEnum):
    low = 1
    high = 2


class Address(BaseModel):
    street: str
    zip: str


def build(layout: str) -> SimpleNamespace:
    class User(RedisModel):
        __layout__ = layout
        __indexes__ = ("age", "role", "name", "born", "score", "active", "level")
        id: int
        name: str
        age: int | None = None
        role: Role = Role.member
        level: Level = Level.low
        born: dt.datetime | None = None
        score: Decimal | None = None
        active: bool = True
        city: str | None = None
        address: Address | None = None
        tags: list[str] = []

    class UserX(RedisModel):  # its name starts with "User"
        __layout__ = layout
        __indexes__ = ("age",)
        id: int
        name: str
        age: int | None = None
        city: str | None = None

    class Note(RedisModel):  # no id: generated keys
        __layout__ = layout
        text: str
        pinned: bool = False

    class Member(RedisModel):
        __layout__ = layout
        __unique_together__ = ("org", "login")
        org: str
        login: str
        level: int = 0

    class Temp(RedisModel):
        __layout__ = layout
        __expire__ = 0.1
        __indexes__ = ("n", "tag")
        id: int
        n: int
        tag: str = "x"

    class Strict(RedisModel):
        __layout__ = layout
        __strict__ = True
        __indexes__ = ("n",)
        id: int
        n: int
        label: str = ""

    class Rich(RedisModel):
        __layout__ = layout
        id: str
        when: dt.datetime
        day: dt.date
        amount: Decimal
        ratio: float
        span: dt.timedelta
        uid: uuid.UUID
        blob: bytes
        role: Role
        address: Address
        history: list[Address]
        extra: dict[str, int]
        maybe: int | None = None

    return SimpleNamespace(
        User=User, UserX=UserX, Note=Note, Member=Member, Temp=Temp, Strict=Strict, Rich=Rich
    )


MODELS = {layout: build(layout) for layout in LAYOUTS}


@pytest.fixture(params=LAYOUTS)
def m(request: Any, transient_manager: RedisManager) -> Iterator[SimpleNamespace]:
    RedisModel.objects.bind(transient_manager)
    yield MODELS[request.param]
    RedisModel.objects.unbind()


@pytest.fixture
def people(m: SimpleNamespace) -> SimpleNamespace:
    User = m.User
    born = dt.datetime(1990, 5, 17, 8, 30, tzinfo=dt.UTC)
    User(id=1, name="Ann", age=31, role="admin", born=born, score=Decimal("9.5"), city="Oslo",
         tags=["a", "b"]).save()  # fmt: skip
    User(id=2, name="Bob", age=25, born=born.replace(year=2000), score=Decimal("3.25")).save()
    User(id=3, name="Bea", age=None, active=False, level=Level.high, city="Bergen").save()
    User(id=4, name="Cid", age=40, role="admin", tags=["b"]).save()
    return m


def ids(objs: list[Any]) -> list[int]:
    return sorted(o.id for o in objs)


# ------------------------------------------------------------------ keys


def test_save_then_get_round_trips_every_type_exactly(m: SimpleNamespace) -> None:
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    obj = m.Rich(
        id="r1",
        when=dt.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=tz),
        day=dt.date(2024, 1, 2),
        amount=Decimal("12345678901234567890.000100"),
        ratio=float("inf"),
        span=dt.timedelta(days=2, seconds=3, microseconds=4),
        uid=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        blob=b"\x00\xff\xfe binary",
        role=Role.admin,
        address=Address(street="Main 1", zip="0123"),
        history=[Address(street="Old 2", zip="0001")],
        extra={"a": 1},
    ).save()
    loaded = m.Rich.objects.get("r1")
    assert loaded == obj
    assert loaded.when.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert str(loaded.amount) == "12345678901234567890.000100"
    assert type(loaded.role) is Role and type(loaded.address) is Address


def test_id_zero_is_a_valid_key(m: SimpleNamespace) -> None:
    m.User(id=0, name="Zero").save()
    assert m.User.objects.get(0).name == "Zero"


def test_generated_keys_are_distinct_per_object(m: SimpleNamespace) -> None:
    a = m.Note(text="a").save()
    b = m.Note(text="b").save()
    key_of = m.Note.objects.key_of
    assert key_of(a) != key_of(b)
    assert m.Note.objects.get(key_of(a)).text == "a"
    assert m.Note.objects.get(key_of(b)).text == "b"
    assert m.Note.objects.count() == 2


def test_loaded_object_keeps_its_generated_key(m: SimpleNamespace) -> None:
    note = m.Note(text="a").save()
    loaded = m.Note.objects.get(m.Note.objects.key_of(note))
    loaded.text = "changed"
    loaded.save()
    assert m.Note.objects.count() == 1
    assert m.Note.objects.get(m.Note.objects.key_of(note)).text == "changed"


def test_unique_together_forms_the_key(m: SimpleNamespace) -> None:
    m.Member(org="acme", login="ann", level=1).save()
    m.Member(org="acme", login="bob", level=2).save()
    m.Member(org="acme", login="ann", level=3).save()  # same key: replaces
    assert m.Member.objects.count() == 2
    assert m.Member.objects.get(("acme", "ann")).level == 3
    assert m.Member.objects.get({"org": "acme", "login": "bob"}).level == 2


def test_key_parts_with_separators_stay_distinct(m: SimpleNamespace) -> None:
    m.Member(org="a:b", login="c").save()
    m.Member(org="a", login="b:c").save()
    assert m.Member.objects.get(("a:b", "c")).org == "a:b"
    assert m.Member.objects.get(("a", "b:c")).login == "b:c"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_none_and_the_text_null_are_distinct_key_parts(
    transient_manager: RedisManager, layout: str
) -> None:
    class Seat(RedisModel):
        __layout__ = layout
        __unique_together__ = ("room", "row")
        room: str | None
        row: int
        label: str = ""

    Seat.objects.bind(transient_manager)
    Seat(room=None, row=1, label="unassigned").save()
    Seat(room="null", row=1, label="room null").save()
    assert Seat.objects.count() == 2
    assert Seat.objects.get((None, 1)).label == "unassigned"
    assert Seat.objects.get(("null", 1)).label == "room null"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_int_and_text_ids_of_a_union_field_are_distinct_keys(
    transient_manager: RedisManager, layout: str
) -> None:
    class Ticket(RedisModel):
        __layout__ = layout
        id: int | str
        label: str = ""

    Ticket.objects.bind(transient_manager)
    Ticket(id=1, label="number").save()
    Ticket(id="1", label="text").save()
    assert Ticket.objects.count() == 2
    assert Ticket.objects.get(1).label == "number"
    assert Ticket.objects.get("1").label == "text"


def test_get_of_a_missing_key_raises_not_found_which_is_a_key_error(m: SimpleNamespace) -> None:
    with pytest.raises(ObjectNotFound) as info:
        m.User.objects.get(99)
    assert isinstance(info.value, KeyError)


def test_get_coerces_the_key_to_the_field_type(m: SimpleNamespace) -> None:
    m.User(id=5, name="Eve").save()
    assert m.User.objects.get("5").name == "Eve"


def test_get_with_a_key_of_the_wrong_type_is_a_clear_error(m: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match=r"User.id__eq: 'five' is not a valid value"):
        m.User.objects.get("five")


def test_saving_with_id_none_of_a_type_that_cannot_be_generated_is_a_clear_error(
    m: SimpleNamespace,
) -> None:
    class Opt(RedisModel):
        id: int | str | None = None  # which kind of key to generate is not known

    with pytest.raises(ValueError, match=r"Opt\.id is None"):
        Opt().save()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", [str, int])
def test_an_optional_id_gets_a_generated_key_on_first_save(
    transient_manager: RedisManager, layout: str, kind: type
) -> None:
    class Job(RedisModel):
        __layout__ = layout
        __indexes__ = ("state",)
        id: kind | None = None  # type: ignore[valid-type]
        state: str = "new"

    Job.objects.bind(transient_manager)
    a = Job().save()
    b = Job(state="done").save()
    assert isinstance(a.id, kind) and isinstance(b.id, kind)
    assert a.id != b.id
    assert Job.objects.get(a.id).state == "new"
    assert Job.objects.get(b.id).id == b.id  # the stored payload carries the generated id
    assert [j.id for j in Job.objects.filter(state="done")] == [b.id]
    a.state = "again"
    a.save()  # a second save keeps the key
    assert Job.objects.count() == 2 and Job.objects.get(a.id).state == "again"
    explicit = Job(id=kind(7)).save()
    assert Job.objects.get(kind(7)).id == explicit.id == kind(7)


def test_generated_int_ids_take_one_round_trip_per_block(
    transient_manager: RedisManager, round_trips: Any
) -> None:
    class Job(RedisModel):
        id: int | None = None

    Job.objects.bind(transient_manager)
    Job().save()  # the first one reserves a block
    with round_trips() as counted:
        jobs = [Job().save() for _ in range(10)]
    assert counted.count == 10  # the saves only
    assert [j.id for j in jobs] == list(range(2, 12))


def test_generated_ids_are_distinct_across_processes(transient_manager: RedisManager) -> None:
    import multiprocessing

    Shared.objects.bind(transient_manager)
    ctx = multiprocessing.get_context("fork")
    Shared().save()  # the parent holds a block its children must not reuse
    with ctx.Pool(4) as pool:
        batches = pool.map(_save_shared, [1500] * 4)
    drawn = [i for batch in batches for i in batch]
    assert len(set(drawn)) == len(drawn) == 12000
    assert Shared.objects.count() == 6001


class Shared(RedisModel):
    __storage_name__ = "test_models_shared_ids"
    id: int | None = None
    text: str | None = None


def _save_shared(n: int) -> list[Any]:
    ids: list[Any] = []
    for _ in range(n):
        ids.append(Shared().save().id)
        ids.append(models_keys._new_text_id())
    return ids


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_generated_id_that_collides_never_overwrites(
    transient_manager: RedisManager, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyramid_transient.exceptions import ConflictError

    class Job(RedisModel):
        __layout__ = layout
        id: str | None = None
        owner: str = ""

    Job.objects.bind(transient_manager)
    monkeypatch.setattr(models_keys, "_new_text_id", lambda: "same")
    Job(owner="first").save()
    with pytest.raises(ConflictError):
        Job(owner="second").save()
    assert Job.objects.get("same").owner == "first"


def test_refresh_reloads_fields(m: SimpleNamespace) -> None:
    a = m.User(id=1, name="Ann").save()
    m.User(id=1, name="Anna").save()
    assert a.refresh().name == "Anna"


def test_refresh_of_a_deleted_object_raises_not_found(m: SimpleNamespace) -> None:
    a = m.User(id=1, name="Ann").save()
    a.delete()
    with pytest.raises(ObjectNotFound):
        a.refresh()


def test_set_is_save(m: SimpleNamespace) -> None:
    m.User(id=1, name="Ann").set()
    assert m.User.objects.get(1).name == "Ann"


# ------------------------------------------------------------------ match


def test_match_with_key_and_matching_field_finds_it(people: SimpleNamespace) -> None:
    assert people.User.objects.match(id=1, name="Ann").id == 1


def test_match_with_key_and_non_matching_field_is_not_found(people: SimpleNamespace) -> None:
    with pytest.raises(ObjectNotFound):
        people.User.objects.match(id=1, name="Bob")


def test_match_with_pk_lookup(people: SimpleNamespace) -> None:
    assert people.User.objects.match(pk=2).name == "Bob"


def test_match_on_values_finds_the_one(people: SimpleNamespace) -> None:
    assert people.User.objects.match(name="Bea").id == 3


def test_match_of_several_raises_multiple_found(people: SimpleNamespace) -> None:
    with pytest.raises(MultipleFound):
        people.User.objects.match(role="admin")


def test_match_of_none_raises_not_found(people: SimpleNamespace) -> None:
    with pytest.raises(ObjectNotFound):
        people.User.objects.match(name="Nobody")


def test_match_for_pk_is_get(people: SimpleNamespace) -> None:
    assert people.User.objects.match_for_pk(4).name == "Cid"


def test_match_on_unique_together_fields_checks_the_rest(m: SimpleNamespace) -> None:
    m.Member(org="acme", login="ann", level=1).save()
    assert m.Member.objects.match(org="acme", login="ann", level=1).level == 1
    with pytest.raises(ObjectNotFound):
        m.Member.objects.match(org="acme", login="ann", level=2)


# ------------------------------------------------------------------ lookups

BORN_1995 = dt.datetime(1995, 1, 1, tzinfo=dt.UTC)
LOOKUP_CASES = [
    ({"age": 31}, [1]),
    ({"age__ne": 31}, [2, 4]),
    ({"age__lt": 31}, [2]),
    ({"age__lte": 31}, [1, 2]),
    ({"age__gt": 31}, [4]),
    ({"age__gte": 25}, [1, 2, 4]),
    ({"age__in": [25, 40, 99]}, [2, 4]),
    ({"age__isnull": True}, [3]),
    ({"age__isnull": False}, [1, 2, 4]),
    ({"age": None}, [3]),
    ({"role": "admin"}, [1, 4]),
    ({"role__in": ["admin", "member"]}, [1, 2, 3, 4]),
    ({"level": 2}, [3]),
    ({"active": False}, [3]),
    ({"name__startswith": "B"}, [2, 3]),
    ({"name__lt": "Bob"}, [1, 3]),
    ({"name__gte": "Bob"}, [2, 4]),
    ({"name__contains": "e"}, [3]),
    ({"born__gt": BORN_1995}, [2]),
    ({"born__lte": "1995-01-01T00:00:00Z"}, [1]),
    ({"score__gt": "3.25"}, [1]),
    ({"score__gte": Decimal("3.25")}, [1, 2]),
    ({"city": "Oslo"}, [1]),
    ({"city__in": ["Oslo", "Bergen"]}, [1, 3]),
    ({"city__isnull": True}, [2, 4]),
    ({"tags__contains": "b"}, [1, 4]),
    ({"role": "admin", "age__gt": 35}, [4]),
    ({"role": "admin", "city": "Oslo"}, [1]),
    ({"age__in": []}, []),
]


@pytest.mark.parametrize(
    ("lookups", "expected"), LOOKUP_CASES, ids=[str(c[0]) for c in LOOKUP_CASES]
)
def test_filter(people: SimpleNamespace, lookups: dict[str, Any], expected: list[int]) -> None:
    assert ids(people.User.objects.filter(**lookups)) == expected


def test_exclude_keeps_objects_not_matching_all_lookups(people: SimpleNamespace) -> None:
    assert ids(people.User.objects.exclude(role="admin", age__gt=35)) == [1, 2, 3]


def test_objects_missing_the_field_are_excluded_not_a_crash(people: SimpleNamespace) -> None:
    assert ids(people.User.objects.filter(city__startswith="O")) == [1]
    assert ids(people.User.objects.filter(age__ne=1)) == [1, 2, 4]


def test_comparing_aware_and_naive_datetimes_matches_nothing(people: SimpleNamespace) -> None:
    assert people.User.objects.filter(born__gt=dt.datetime(1980, 1, 1)) == []


def test_unknown_field_is_a_clear_error(people: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match=r"User has no field 'colour' \(lookup 'colour__in'\)"):
        people.User.objects.filter(colour__in=["red"])


def test_unknown_lookup_is_a_clear_error(people: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match=r"'age__near': unknown lookup 'near'; accepted: __ne"):
        people.User.objects.filter(age__near=3)


def test_uncoercible_value_is_a_clear_error(people: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match=r"User.age__gt: 'old' is not a valid value"):
        people.User.objects.filter(age__gt="old")


def test_in_needs_a_collection(people: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match=r"User.age__in: 'ab'"):
        people.User.objects.filter(age__in="ab")


def test_decimal_bounds_are_exact_despite_float_scores(m: SimpleNamespace) -> None:
    m.User(id=1, name="a", score=Decimal("0.1000000000000000001")).save()
    m.User(id=2, name="b", score=Decimal("0.1")).save()
    assert ids(m.User.objects.filter(score__gt=Decimal("0.1"))) == [1]
    assert ids(m.User.objects.filter(score=Decimal("0.1"))) == [2]


def test_int_beyond_float_range_is_indexed(m: SimpleNamespace) -> None:
    m.User(id=1, name="big", age=10**400).save()
    m.User(id=2, name="small", age=-(10**400)).save()
    assert ids(m.User.objects.filter(age__gt=5)) == [1]
    assert ids(m.User.objects.filter(age__lt=5)) == [2]


def test_text_index_handles_control_characters(m: SimpleNamespace) -> None:
    m.User(id=1, name="a\x00b").save()
    m.User(id=2, name="a\x01").save()
    m.User(id=3, name="a").save()
    assert ids(m.User.objects.filter(name="a\x00b")) == [1]
    assert ids(m.User.objects.filter(name="a")) == [3]
    assert ids(m.User.objects.filter(name__startswith="a\x00")) == [1]
    assert ids(m.User.objects.filter(name__gt="a")) == [1, 2]


def test_all_and_count(people: SimpleNamespace) -> None:
    assert ids(people.User.objects.all()) == [1, 2, 3, 4]
    assert people.User.objects.count() == 4
    assert people.User.objects.count(role="admin") == 2


def test_unindexed_filter_reads_in_batches(
    m: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, round_trips: Any
) -> None:
    # more than 128 objects, so the pk index is a skiplist and ZSCAN honours COUNT
    for i in range(200):
        m.User(id=i, name=f"u{i}", city="Oslo" if i == 7 else None).save()
    monkeypatch.setattr(models_manager, "SCAN_BATCH", 50)
    with round_trips() as rt:
        found = m.User.objects.filter(city="Oslo")
    assert ids(found) == [7]
    assert rt.count >= 4


def test_object_deleted_during_iteration_is_skipped(
    m: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(200):
        m.User(id=i, name=f"u{i}").save()
    monkeypatch.setattr(models_manager, "SCAN_BATCH", 10)
    seen = []
    for obj in m.User.objects.iterate():
        if not seen:
            m.User.objects.delete_filter(id__ne=obj.id)
        seen.append(obj.id)
    assert 1 <= len(seen) <= 40  # the first page, read before the deletes


# ------------------------------------------------------------------ classes apart


def test_class_whose_name_shares_a_prefix_is_never_mixed_in(people: SimpleNamespace) -> None:
    people.UserX(id=1, name="X", age=31, city="Oslo").save()
    assert people.User.objects.count() == 4
    assert ids(people.User.objects.filter(age=31)) == [1]
    assert all(type(u) is people.User for u in people.User.objects.filter(city="Oslo"))
    assert len(people.User.objects.filter(city="Oslo")) == 1
    people.User.objects.delete_all()
    assert people.UserX.objects.get(1).name == "X"


def test_every_key_of_a_class_shares_its_hash_tag(
    people: SimpleNamespace, transient_manager: RedisManager
) -> None:
    client = transient_manager.get("models")
    names = [k.decode() for k in client.scan_iter(count=1000)]
    prefix = transient_manager.settings.key_prefix
    assert names
    assert all(n.startswith(f"{prefix}:model:{{User}}:") for n in names)


def test_filters_never_scan_the_keyspace(people: SimpleNamespace, transient_redis: Any) -> None:
    before = transient_redis.info("commandstats")
    people.User.objects.filter(city="Oslo")
    people.User.objects.filter(age__gt=1)
    people.User.objects.all()
    after = transient_redis.info("commandstats")
    for command in ("cmdstat_scan", "cmdstat_keys"):
        assert after.get(command, {}).get("calls", 0) == before.get(command, {}).get("calls", 0)


# ------------------------------------------------------------------ indexes


def test_save_replaces_the_old_index_entries(m: SimpleNamespace, transient_manager: Any) -> None:
    user = m.User(id=1, name="Ann", age=31).save()
    user.age = 32
    user.name = "Anna"
    user.save()
    assert m.User.objects.filter(age=31) == []
    assert m.User.objects.filter(name="Ann") == []
    assert ids(m.User.objects.filter(age=32)) == [1]
    client = transient_manager.get("models")
    ks = transient_manager.keyspace("model", "models")
    assert client.zcard(ks.tagged("User", "idx", "age")) == 1
    assert client.zcard(ks.tagged("User", "idx", "name")) == 1


def test_blind_overwrite_replaces_the_old_index_entries(m: SimpleNamespace) -> None:
    m.User(id=1, name="Ann", age=31).save()
    m.User(id=1, name="Ann", age=50).save()  # a new instance, never read
    assert m.User.objects.filter(age=31) == []


def test_delete_removes_index_entries(m: SimpleNamespace, transient_manager: Any) -> None:
    m.User(id=1, name="Ann", age=31).save().delete()
    client = transient_manager.get("models")
    ks = transient_manager.keyspace("model", "models")
    assert client.exists(ks.tagged("User", "idx", "age")) == 0
    assert m.User.objects.filter(age=31) == []


def test_indexed_filter_cost_follows_matches_not_class_size(
    m: SimpleNamespace, transient_redis: Any
) -> None:
    for i in range(300):
        m.User(id=i, name=f"u{i}", age=i % 100, city="c").save()

    def reads(**lookups: Any) -> tuple[int, int]:
        before = transient_redis.info("commandstats").get("cmdstat_hget", {}).get("calls", 0)
        found = m.User.objects.filter(**lookups)
        after = transient_redis.info("commandstats").get("cmdstat_hget", {}).get("calls", 0)
        return len(found), after - before

    assert reads(age=7) == (3, 6 if m.User.__layout__ == "hash" else 3)
    assert reads(age__in=[1, 2]) == (6, 12 if m.User.__layout__ == "hash" else 6)


def test_strict_class_refuses_an_unindexed_filter(m: SimpleNamespace) -> None:
    with pytest.raises(FullScanRefused, match=r"Strict is strict and no index serves \['label'\]"):
        m.Strict.objects.filter(label="x")


def test_full_scan_refused_lives_in_exceptions_and_is_a_transient_error() -> None:
    from pyramid_transient import exceptions

    assert FullScanRefused is exceptions.FullScanRefused
    assert issubclass(FullScanRefused, exceptions.TransientError)


def test_strict_class_refuses_exclude(m: SimpleNamespace) -> None:
    with pytest.raises(FullScanRefused):
        m.Strict.objects.exclude(n=1)


def test_strict_class_serves_indexed_lookups(m: SimpleNamespace) -> None:
    m.Strict(id=1, n=5, label="x").save()
    assert [s.id for s in m.Strict.objects.filter(n=5, label="x")] == [1]
    assert [s.id for s in m.Strict.objects.all()] == [1]


# ------------------------------------------------------------------ deletes


def test_delete_returns_whether_it_existed(m: SimpleNamespace) -> None:
    user = m.User(id=1, name="Ann").save()
    assert user.delete() is True
    assert user.delete() is False
    with pytest.raises(ObjectNotFound):
        m.User.objects.get(1)


def test_delete_filter_deletes_the_matches_only(people: SimpleNamespace) -> None:
    assert people.User.objects.delete_filter(role="admin") == 2
    assert ids(people.User.objects.all()) == [2, 3]


def test_delete_filter_leaves_an_object_written_since_the_filter(
    people: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    User = people.User
    manager_class = type(User.objects)
    real_filter = manager_class.filter

    def filter_then_someone_writes(self: Any, **lookups: Any) -> list[Any]:
        found = real_filter(self, **lookups)
        User(id=1, name="Ann", role="member").save()  # meanwhile, Ann is no admin any more
        return found

    monkeypatch.setattr(manager_class, "filter", filter_then_someone_writes)
    assert User.objects.delete_filter(role="admin") == 1
    assert User.objects.get(1).role == "member"
    with pytest.raises(ObjectNotFound):
        User.objects.get(4)


def test_delete_all_leaves_no_key(people: SimpleNamespace, transient_manager: Any) -> None:
    assert people.User.objects.delete_all() == 4
    assert people.User.objects.count() == 0
    assert transient_manager.get("models").dbsize() == 0


# ------------------------------------------------------------------ expiry


def test_object_expires_after_expire_seconds(m: SimpleNamespace) -> None:
    m.Temp(id=1, n=1).save()
    assert m.Temp.objects.get(1).n == 1
    time.sleep(0.15)
    with pytest.raises(ObjectNotFound):
        m.Temp.objects.get(1)


def test_one_save_never_extends_another_objects_life(m: SimpleNamespace) -> None:
    m.Temp(id=1, n=1).save(expire=0.05)
    m.Temp(id=2, n=2).save(expire=30)
    time.sleep(0.1)
    assert [t.id for t in m.Temp.objects.all()] == [2]
    assert m.Temp.objects.count() == 1
    with pytest.raises(ObjectNotFound):
        m.Temp.objects.get(1)


def test_saving_again_restarts_the_objects_clock(m: SimpleNamespace) -> None:
    # Margins of a few hundred ms: a loaded 2-core machine oversleeps by tens of them.
    temp = m.Temp(id=1, n=1).save(expire=0.6)
    time.sleep(0.4)
    temp.save(expire=0.6)
    time.sleep(0.4)  # 0.8 s after the first save: alive only because the second restarted it
    assert m.Temp.objects.get(1).n == 1


def test_expired_object_is_skipped_and_its_index_entries_cleaned(
    m: SimpleNamespace, transient_manager: Any
) -> None:
    m.Temp(id=1, n=1, tag="a").save(expire=0.03)
    m.Temp(id=2, n=1, tag="a").save(expire=30)
    time.sleep(0.06)
    assert [t.id for t in m.Temp.objects.filter(n=1)] == [2]
    client = transient_manager.get("models")
    ks = transient_manager.keyspace("model", "models")
    assert client.zcard(ks.tagged("Temp", "idx", "n")) == 1
    assert client.zcard(ks.tagged("Temp", "idx", "tag")) == 1
    assert client.zcard(ks.tagged("Temp", "all")) == 1
    assert client.hexists(ks.tagged("Temp", "meta"), "1") == 0


def test_saves_clean_up_expired_objects(m: SimpleNamespace, transient_manager: Any) -> None:
    for i in range(5):
        m.Temp(id=i, n=i).save(expire=0.02)
    time.sleep(0.05)
    m.Temp(id=99, n=99).save(expire=30)
    client = transient_manager.get("models")
    ks = transient_manager.keyspace("model", "models")
    assert client.zcard(ks.tagged("Temp", "all")) == 1
    assert client.hlen(ks.tagged("Temp", "meta")) == 2  # object 99 and the version counter


def test_class_keys_vanish_once_every_object_expired(
    m: SimpleNamespace, transient_manager: Any
) -> None:
    m.Temp(id=1, n=1).save(expire=0.03)
    time.sleep(0.06)
    assert list(transient_manager.get("models").scan_iter()) == []  # SCAN skips expired keys


def test_class_key_emptied_by_a_clean_up_and_refilled_still_expires(
    m: SimpleNamespace, transient_manager: Any
) -> None:
    m.User(id=1, name="a", age=1).save(expire=0.03)  # the only object with an age
    m.User(id=2, name="b").save(expire=30)
    time.sleep(0.05)
    m.User(id=3, name="c", age=3).save(expire=0.03)  # cleans 1 up: idx:age empties, refills
    time.sleep(0.05)
    ks = transient_manager.keyspace("model", "models")
    assert transient_manager.get("models").exists(ks.tagged("User", "idx", "age")) == 0


def test_no_expiry_keeps_objects(m: SimpleNamespace, transient_manager: Any) -> None:
    m.User(id=1, name="Ann").save()
    client = transient_manager.get("models")
    assert all(client.ttl(k) == -1 for k in client.scan_iter())


def test_bad_expire_is_a_clear_error(m: SimpleNamespace) -> None:
    with pytest.raises(TypeError, match=r"Temp.__expire__ must be a positive number"):
        m.Temp(id=1, n=1).save(expire=-1)


# ------------------------------------------------------------------ corrupt data


def test_corrupt_payload_is_treated_as_missing_and_logged(
    m: SimpleNamespace, transient_manager: Any, caplog: pytest.LogCaptureFixture
) -> None:
    m.User(id=1, name="Ann", age=3).save()
    m.User(id=2, name="Bob", age=3).save()
    client = transient_manager.get("models")
    ks = transient_manager.keyspace("model", "models")
    if m.User.__layout__ == "hash":
        client.hset(ks.tagged("User", "data"), "1", b"\x80not json")
    else:
        client.set(ks.tagged("User", "obj", "1"), b"\x80not json")
    with caplog.at_level(logging.WARNING, logger="pyramid_transient.models"):
        with pytest.raises(ObjectNotFound):
            m.User.objects.get(1)
        assert ids(m.User.objects.filter(age=3)) == [2]
    bad_key = ks.tagged("User", "data" if m.User.__layout__ == "hash" else "obj:1")
    assert f"Redis key {bad_key!r}: stored User '1' does not validate" in caplog.text


@pytest.mark.parametrize(
    "record", [b"garbage", b"7|abc", b"7|x:age", b"7|3:age", b"7|3:age99:x", b"x|"]
)
def test_corrupt_bookkeeping_record_does_not_break_the_object(
    m: SimpleNamespace, transient_manager: Any, record: bytes
) -> None:
    m.User(id=1, name="Ann", age=3).save()
    client = transient_manager.get("models")
    ks = transient_manager.keyspace("model", "models")
    client.hset(ks.tagged("User", "meta"), "1", record)
    assert m.User.objects.get(1).name == "Ann"
    m.User(id=1, name="Anna", age=4).save()
    assert ids(m.User.objects.filter(age=4)) == [1]
    assert m.User.objects.get(1).delete() is True


def test_foreign_member_in_a_text_index_is_skipped_and_removed(
    m: SimpleNamespace, transient_manager: Any
) -> None:
    m.User(id=1, name="Ann").save()
    client = transient_manager.get("models")
    key = transient_manager.keyspace("model", "models").tagged("User", "idx", "name")
    client.zadd(key, {"Anx": 0})  # no NUL: not a member we wrote
    assert ids(m.User.objects.filter(name__startswith="A")) == [1]
    assert client.zscore(key, "Anx") is None


# ------------------------------------------------------------------ round trips


@pytest.fixture
def unrelated_keys(transient_manager: RedisManager) -> None:
    client = transient_manager.get("models")
    pipe = client.pipeline(transaction=False)
    for i in range(10_000):
        pipe.set(f"other:{i}", i)
    pipe.execute()


def test_save_is_one_round_trip(
    m: SimpleNamespace, unrelated_keys: None, round_trips: Any
) -> None:
    m.User(id=0, name="warm").save()
    with round_trips() as rt:
        m.User(id=1, name="Ann", age=31, role="admin").save()
    assert rt.count == 1


def test_get_is_one_round_trip(m: SimpleNamespace, unrelated_keys: None, round_trips: Any) -> None:
    m.User(id=1, name="Ann").save()
    m.User.objects.get(1)
    with round_trips() as rt:
        m.User.objects.get(1)
    assert rt.count == 1


def test_get_of_a_sound_class_checks_no_key_types(
    m: SimpleNamespace, transient_manager: RedisManager
) -> None:
    # get reads first and checks its keys' types only when a read fails (prelude.lua):
    # the repairs of a key of the wrong type are the corrupt-data tests'
    m.User(id=1, name="Ann").save()
    client = transient_manager.get("models")

    def types() -> int:
        return int(client.info("commandstats").get("cmdstat_type", {}).get("calls", 0))

    m.User.objects.get(1)
    before = types()
    for _ in range(3):
        m.User.objects.get(1)
    with pytest.raises(ObjectNotFound):
        m.User.objects.get(2)
    # the key layout reads the object key's type (a value of another type reads as missing)
    assert types() - before == (0 if m.User.__layout__ == "hash" else 3)


def test_indexed_filter_round_trips_with_unrelated_keys(
    people: SimpleNamespace, unrelated_keys: None, round_trips: Any
) -> None:
    people.User.objects.filter(age__gte=30)
    with round_trips() as rt:
        found = people.User.objects.filter(age__gte=30, role="admin")
    assert ids(found) == [1, 4]
    assert rt.count == (1 if people.User.__layout__ == "hash" else 2)


def test_count_is_one_round_trip(people: SimpleNamespace, round_trips: Any) -> None:
    people.User.objects.count()
    with round_trips() as rt:
        assert people.User.objects.count() == 4
    assert rt.count == 1


def test_delete_is_one_round_trip(m: SimpleNamespace, round_trips: Any) -> None:
    m.User(id=0, name="warm").save().delete()
    user = m.User(id=1, name="Ann", age=1).save()
    with round_trips() as rt:
        user.delete()
    assert rt.count == 1


def test_match_on_the_key_is_one_round_trip(people: SimpleNamespace, round_trips: Any) -> None:
    people.User.objects.match(id=1)
    with round_trips() as rt:
        people.User.objects.match(id=1, name="Ann")
    assert rt.count == 1


# ------------------------------------------------------------------ class options


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Bad.__layout__ must be 'hash' or 'key', not 'tree'"):

        class Bad(RedisModel):
            __layout__ = "tree"  # type: ignore[assignment]
            id: int


def test_index_on_a_missing_field_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Bad.__indexes__ names 'age', which is not a field"):

        class Bad(RedisModel):
            __indexes__ = ("age",)
            id: int


def test_index_on_an_unindexable_type_is_refused() -> None:
    with pytest.raises(TypeError, match=r"field 'tags' of type list\[str\] cannot be indexed"):

        class Bad(RedisModel):
            __indexes__ = ("tags",)
            id: int
            tags: list[str]


def test_unique_together_on_a_missing_field_is_refused() -> None:
    with pytest.raises(TypeError, match=r"Bad.__unique_together__ names 'b'"):

        class Bad(RedisModel):
            __unique_together__ = ("a", "b")
            a: int


def test_storage_name_option_names_the_keys(transient_manager: RedisManager) -> None:
    class Renamed(RedisModel):
        __storage_name__ = "people"
        id: int

    Renamed.objects.bind(transient_manager)
    Renamed(id=1).save()
    client = transient_manager.get("models")
    prefix = transient_manager.settings.key_prefix
    assert client.exists(f"{prefix}:model:{{people}}:all") == 1


def test_bare_client_binding_writes_unprefixed_keys(transient_redis: Any) -> None:
    class Plain(RedisModel):
        id: int

    Plain.objects.bind(transient_redis)
    Plain(id=1).save()
    assert transient_redis.exists("model:{Plain}:data") == 1
    assert Plain.objects.get(1).id == 1


def test_registry_binding_uses_its_apps_manager(transient_settings: dict[str, Any]) -> None:
    from pyramid import testing

    class Registered(RedisModel):
        id: int

    config = testing.setUp(settings=transient_settings)
    try:
        config.include("pyramid_transient.models")
        manager = get_manager(config.registry)
        Registered.objects.bind(config.registry)
        Registered(id=1).save()
        prefix = manager.settings.key_prefix
        assert manager.get("models").exists(f"{prefix}:model:{{Registered}}:data") == 1
        Registered.objects.delete_all()
        manager.close()
    finally:
        testing.tearDown()


def test_manager_binding_asks_the_manager_for_its_client_on_every_use(
    transient_manager: RedisManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a forked worker's manager hands out new clients: a bound class must not keep the old
    class Forked(RedisModel):
        id: int

    Forked.objects.bind(transient_manager)
    Forked(id=1).save()
    asked = []
    real_get = transient_manager.get

    def get(name: str = "default") -> Any:
        asked.append(name)
        return real_get(name)

    monkeypatch.setattr(transient_manager, "get", get)
    assert Forked.objects.get(1).id == 1
    Forked(id=2).save()
    assert asked == ["models", "models"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_memory_backend_runs_the_same_scripts(transient_memory: RedisManager, layout: str) -> None:
    class Mem(RedisModel):
        __layout__ = layout
        __indexes__ = ("n", "s")
        id: int
        n: int
        s: str

    Mem.objects.bind(transient_memory)
    Mem(id=1, n=1, s="a").save()
    Mem(id=2, n=2, s="b").save()
    Mem(id=3, n=3, s="c").save(expire=0.02)
    time.sleep(0.04)
    assert [x.id for x in Mem.objects.filter(n__gte=2)] == [2]
    assert [x.id for x in Mem.objects.filter(s="a")] == [1]
    assert sorted(x.id for x in Mem.objects.all()) == [1, 2]
    assert Mem.objects.get(1).save(if_unmodified=True).n == 1
    assert Mem.objects.delete_all() == 2


# ------------------------------------------------------------------ edge values


@pytest.mark.parametrize("layout", LAYOUTS)
def test_nan_float_is_found_by_an_indexed_isnull_false(
    transient_manager: RedisManager, layout: str
) -> None:
    class Measure(RedisModel):
        __layout__ = layout
        __indexes__ = ("value",)
        id: int
        value: float | None = None

    Measure.objects.bind(transient_manager)
    Measure(id=1, value=float("nan")).save()
    Measure(id=2, value=1.5).save()
    Measure(id=3).save()
    assert ids(Measure.objects.filter(value__isnull=False)) == [1, 2]
    assert ids(Measure.objects.filter(value__gte=1)) == [2]
    assert ids(Measure.objects.filter(value__lt=1)) == []


@pytest.mark.parametrize(
    ("lookups", "expected"),
    [
        ({"age__in": [None, 25]}, [2]),
        ({"age__lt": None}, []),
        ({"age__gte": None}, []),
        ({"born__gt": None}, []),
        ({"role__in": [None, "admin"]}, [1, 4]),
        ({"name__startswith": None}, []),
        ({"name__gt": None}, []),
    ],
    ids=str,
)
def test_none_in_an_indexed_lookup_matches_nothing_not_a_crash(
    people: SimpleNamespace, lookups: dict[str, Any], expected: list[int]
) -> None:
    # as for an unindexed field: None is matched only by field=None and field__isnull=True
    assert ids(people.User.objects.filter(**lookups)) == expected
