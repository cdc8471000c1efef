"""RedisModel: optimistic writes, deferral to the transaction's commit, Pyramid and Cluster."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import sqlalchemy.exc
import transaction
from pyramid import testing
from redis.backoff import NoBackoff
from redis.retry import Retry

from pyramid_transient.connection import RedisManager, get_manager
from pyramid_transient.exceptions import ConflictError, ObjectNotFound
from pyramid_transient.models import RedisModel
from pyramid_transient.testing import free_port

LAYOUTS = ("hash", "key")


def build(layout: str) -> SimpleNamespace:
    class Account(RedisModel):
        __layout__ = layout
        __indexes__ = ("owner",)
        id: int
        owner: str
        balance: int = 0

    class Guarded(RedisModel):
        __layout__ = layout
        __optimistic__ = True
        id: int
        value: int = 0

    return SimpleNamespace(Account=Account, Guarded=Guarded)


MODELS = {layout: build(layout) for layout in LAYOUTS}


@pytest.fixture(params=LAYOUTS)
def m(request: Any, transient_manager: RedisManager) -> Iterator[SimpleNamespace]:
    RedisModel.objects.bind(transient_manager)
    yield MODELS[request.param]
    RedisModel.objects.unbind()


@pytest.fixture
def txn() -> Iterator[Any]:
    transaction.abort()
    yield transaction.begin()
    transaction.abort()


# ------------------------------------------------------------------ optimistic


def test_save_if_unmodified_succeeds_when_nobody_wrote(m: SimpleNamespace) -> None:
    m.Account(id=1, owner="ann").save()
    mine = m.Account.objects.get(1)
    mine.balance = 10
    mine.save(if_unmodified=True)
    assert m.Account.objects.get(1).balance == 10


def test_save_if_unmodified_conflicts_after_another_write(m: SimpleNamespace) -> None:
    m.Account(id=1, owner="ann").save()
    mine, theirs = m.Account.objects.get(1), m.Account.objects.get(1)
    theirs.balance = 5
    theirs.save()
    mine.balance = 10
    with pytest.raises(ConflictError, match=r"Account '1' was changed since it was read"):
        mine.save(if_unmodified=True)
    assert m.Account.objects.get(1).balance == 5


def test_save_if_unmodified_conflicts_after_a_delete(m: SimpleNamespace) -> None:
    m.Account(id=1, owner="ann").save()
    mine = m.Account.objects.get(1)
    m.Account.objects.get(1).delete()
    with pytest.raises(ConflictError):
        mine.save(if_unmodified=True)


def test_new_object_if_unmodified_conflicts_when_one_exists(m: SimpleNamespace) -> None:
    m.Account(id=1, owner="ann").save()
    with pytest.raises(ConflictError):
        m.Account(id=1, owner="bob").save(if_unmodified=True)
    assert m.Account.objects.get(1).owner == "ann"


def test_two_saves_in_a_row_by_the_same_holder_do_not_conflict(m: SimpleNamespace) -> None:
    mine = m.Account(id=1, owner="ann").save(if_unmodified=True)
    mine.balance = 1
    mine.save(if_unmodified=True)
    assert m.Account.objects.get(1).balance == 1


def test_delete_if_unmodified_conflicts_after_another_write(m: SimpleNamespace) -> None:
    m.Account(id=1, owner="ann").save()
    mine = m.Account.objects.get(1)
    m.Account(id=1, owner="bob").save()
    with pytest.raises(ConflictError):
        mine.delete(if_unmodified=True)
    assert m.Account.objects.get(1).owner == "bob"


def test_optimistic_class_checks_by_default(m: SimpleNamespace) -> None:
    m.Guarded(id=1).save()
    mine, theirs = m.Guarded.objects.get(1), m.Guarded.objects.get(1)
    theirs.save()
    with pytest.raises(ConflictError):
        mine.save()


def test_optimistic_class_may_skip_the_check(m: SimpleNamespace) -> None:
    m.Guarded(id=1).save()
    mine, theirs = m.Guarded.objects.get(1), m.Guarded.objects.get(1)
    theirs.save()
    mine.value = 3
    mine.save(if_unmodified=False)
    assert m.Guarded.objects.get(1).value == 3


def test_versions_are_not_reused_after_the_class_was_cleared(m: SimpleNamespace) -> None:
    m.Account(id=1, owner="ann").save()
    mine = m.Account.objects.get(1)
    m.Account.objects.delete_all()  # the class's keys, version counter included, are gone
    m.Account(id=1, owner="bob").save()  # someone else creates it anew
    mine.balance = 10
    with pytest.raises(ConflictError):
        mine.save(if_unmodified=True)
    assert m.Account.objects.get(1).owner == "bob"


def test_versions_are_not_reused_after_every_object_expired(m: SimpleNamespace) -> None:
    m.Account(id=1, owner="ann").save(expire=0.03)
    mine = m.Account.objects.get(1)
    time.sleep(0.06)  # every key of the class expires with its last object
    m.Account(id=1, owner="bob").save()
    with pytest.raises(ConflictError):
        mine.save(if_unmodified=True)


def test_filtered_objects_carry_their_version(m: SimpleNamespace) -> None:
    m.Account(id=1, owner="ann").save()
    (mine,) = m.Account.objects.filter(owner="ann")
    mine.balance = 2
    mine.save(if_unmodified=True)
    m.Account(id=1, owner="ann", balance=9).save()
    with pytest.raises(ConflictError):
        mine.save(if_unmodified=True)


# ------------------------------------------------------------------ transactions


def test_on_commit_save_waits_for_the_commit(m: SimpleNamespace, txn: Any) -> None:
    m.Account(id=1, owner="ann").save(on_commit=True)
    with pytest.raises(ObjectNotFound):
        m.Account.objects.get(1)
    transaction.commit()
    assert m.Account.objects.get(1).owner == "ann"


def test_on_commit_save_is_dropped_on_abort(m: SimpleNamespace, txn: Any) -> None:
    m.Account(id=1, owner="ann").save(on_commit=True)
    transaction.abort()
    transaction.begin()
    transaction.commit()
    with pytest.raises(ObjectNotFound):
        m.Account.objects.get(1)


def test_rolled_back_savepoint_drops_only_its_own_work(m: SimpleNamespace, txn: Any) -> None:
    m.Account(id=1, owner="ann").save(on_commit=True)
    savepoint = transaction.savepoint()
    m.Account(id=2, owner="bob").save(on_commit=True)
    savepoint.rollback()
    m.Account(id=3, owner="cid").save(on_commit=True)
    transaction.commit()
    assert sorted(a.id for a in m.Account.objects.all()) == [1, 3]


def test_on_commit_delete_waits_for_the_commit(m: SimpleNamespace, txn: Any) -> None:
    account = m.Account(id=1, owner="ann").save()
    account.delete(on_commit=True)
    assert m.Account.objects.get(1).owner == "ann"
    transaction.commit()
    with pytest.raises(ObjectNotFound):
        m.Account.objects.get(1)


def test_on_commit_writes_the_state_of_the_call(m: SimpleNamespace, txn: Any) -> None:
    account = m.Account(id=1, owner="ann")
    account.save(on_commit=True)
    account.owner = "changed later"
    transaction.commit()
    assert m.Account.objects.get(1).owner == "ann"


def test_failure_after_commit_is_logged_not_raised(
    m: SimpleNamespace, txn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    m.Account.objects.bind(dead)
    try:
        m.Account(id=1, owner="ann").save(on_commit=True)
        with caplog.at_level(logging.ERROR, logger="pyramid_transient.transactions"):
            transaction.commit()  # does not raise
    finally:
        m.Account.objects.unbind()
    assert "deferred save of Account '1' failed after the transaction committed" in caplog.text


def test_conflict_at_commit_is_logged_not_raised(
    m: SimpleNamespace, txn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    m.Account(id=1, owner="ann").save()
    mine = m.Account.objects.get(1)
    mine.save(if_unmodified=True, on_commit=True)
    m.Account(id=1, owner="bob").save()
    with caplog.at_level(logging.ERROR, logger="pyramid_transient.transactions"):
        transaction.commit()
    assert "ConflictError" in caplog.text
    assert m.Account.objects.get(1).owner == "bob"


# ------------------------------------------------------------------ Pyramid


def test_on_commit_joins_pyramid_tms_transaction_of_the_request(
    transient_settings: dict[str, Any],
) -> None:
    import webtest
    from pyramid.config import Configurator
    from pyramid.response import Response

    class Tracked(RedisModel):
        id: int

    own = transaction.TransactionManager()  # tm.manager_hook: not the thread's default one

    def view(request: Any) -> Response:
        Tracked(id=1).save(on_commit=True)
        return Response("saved")

    settings = {**transient_settings, "tm.manager_hook": lambda request: own}
    with Configurator(settings=settings) as config:
        config.include("pyramid_tm")
        config.include("pyramid_transient.models")
        config.add_route("save", "/save")
        config.add_view(view, route_name="save")
        app = config.make_wsgi_app()
    manager = get_manager(app.registry)
    try:
        webtest.TestApp(app).get("/save")
        Tracked.objects.bind(manager)
        assert Tracked.objects.get(1).id == 1
    finally:
        transaction.abort()
        Tracked.objects.delete_all()
        manager.close()


def test_unbound_model_uses_the_apps_models_database(transient_settings: dict[str, Any]) -> None:
    class Seen(RedisModel):
        id: int

    settings = {**transient_settings, "transient.db.models": "15"}
    config = testing.setUp(settings=settings)
    try:
        config.include("pyramid_transient.models")
        manager = get_manager(config.registry)
        manager.get("models").flushdb()
        Seen(id=1).save()
        prefix = manager.settings.key_prefix
        assert manager.get("models").exists(f"{prefix}:model:{{Seen}}:data") == 1
        assert Seen.objects.get(1).id == 1
        manager.get("models").flushdb()
        manager.close()
    finally:
        testing.tearDown()


# ------------------------------------------------------------------ Cluster


@pytest.mark.cluster
def test_models_work_on_a_cluster(transient_cluster_manager: RedisManager) -> None:
    class Spread(RedisModel):
        __indexes__ = ("n",)
        id: int
        n: int

    class SpreadKeys(RedisModel):
        __layout__ = "key"
        __indexes__ = ("n",)
        id: int
        n: int

    for model in (Spread, SpreadKeys):
        model.objects.bind(transient_cluster_manager)
        for i in range(20):
            model(id=i, n=i % 4).save()
        assert model.objects.get(3).n == 3
        assert sorted(o.id for o in model.objects.filter(n=1)) == [1, 5, 9, 13, 17]
        assert len(model.objects.filter(id__gte=10)) == 10  # unindexed: iterates the class
        assert model.objects.count() == 20
        assert model.objects.delete_filter(n=0) == 5
        assert model.objects.delete_all() == 15


# ------------------------------------------------------------------ with SQL


@pytest.fixture
def sql(database_url: str) -> Iterator[Any]:
    import sqlalchemy as sa
    from sqlalchemy.orm import DeclarativeBase, sessionmaker
    from zope.sqlalchemy import register

    class Base(DeclarativeBase):
        pass

    class Row(Base):
        __tablename__ = f"models_t_{uuid.uuid4().hex[:8]}"
        id = sa.Column(sa.Integer, primary_key=True)

    engine = sa.create_engine(database_url)
    Base.metadata.create_all(engine)
    session = sessionmaker(bind=engine)()
    register(session)
    transaction.abort()
    transaction.begin()
    try:
        yield SimpleNamespace(session=session, Row=Row)
    finally:
        transaction.abort()
        session.close()
        Base.metadata.drop_all(engine)
        engine.dispose()


def test_deferred_save_lands_with_the_sql_commit(m: SimpleNamespace, sql: Any) -> None:
    sql.session.add(sql.Row(id=1))
    m.Account(id=1, owner="ann").save(on_commit=True)
    transaction.commit()
    assert m.Account.objects.get(1).owner == "ann"


def test_deferred_save_is_dropped_when_the_sql_commit_fails(m: SimpleNamespace, sql: Any) -> None:
    sql.session.add(sql.Row(id=1))
    transaction.commit()
    sql.session.add(sql.Row(id=1))  # a duplicate key: flushed, and refused, at commit
    m.Account(id=1, owner="ann").save(on_commit=True)
    with pytest.raises(sqlalchemy.exc.IntegrityError):
        transaction.commit()
    transaction.abort()
    with pytest.raises(ObjectNotFound):
        m.Account.objects.get(1)


@pytest.mark.sentinel
def test_models_work_through_sentinel(transient_sentinel_manager: RedisManager) -> None:
    class Watched(RedisModel):
        __indexes__ = ("n",)
        id: int
        n: int

    Watched.objects.bind(transient_sentinel_manager)
    Watched(id=1, n=2).save()
    assert Watched.objects.get(1).n == 2
    assert [w.id for w in Watched.objects.filter(n=2)] == [1]


class RAcct(RedisModel):
    __storage_name__ = f"RAcct{uuid.uuid4().hex[:6]}"
    id: int
    x: int = 0
    y: int = 0


@pytest.fixture
def fresh_txn() -> Iterator[Any]:
    transaction.abort()
    yield transaction.begin()
    transaction.abort()


def test_deferred_if_unmodified_save_checks_the_version_it_was_built_from(
    transient_manager: RedisManager, fresh_txn: Any
) -> None:
    RAcct.objects.bind(transient_manager)
    try:
        RAcct(id=1).save()
        mine = RAcct.objects.get(1)
        mine.x = 1
        mine.save(on_commit=True, if_unmodified=True)  # snapshot x=1, y=0, built from v1
        theirs = RAcct.objects.get(1)
        theirs.y = 2
        theirs.save()  # v2, written after our call
        mine.refresh()  # we look again; our deferred snapshot is still the one of v1
        fresh_txn.commit()
        assert RAcct.objects.get(1).y == 2, "their write was overwritten by a snapshot of v1"
    finally:
        RAcct.objects.unbind()


def test_two_deferred_if_unmodified_saves_by_one_holder_both_land(
    transient_manager: RedisManager, fresh_txn: Any
) -> None:
    RAcct.objects.bind(transient_manager)
    try:
        RAcct(id=2).save()
        mine = RAcct.objects.get(2)
        mine.x = 1
        mine.save(on_commit=True, if_unmodified=True)
        mine.y = 5
        mine.save(on_commit=True, if_unmodified=True)  # built on top of the first one
        mine.delete(on_commit=True, if_unmodified=True)
        fresh_txn.commit()
        with pytest.raises(KeyError):
            RAcct.objects.get(2)
    finally:
        RAcct.objects.unbind()
