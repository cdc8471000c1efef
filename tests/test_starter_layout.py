"""The Pyramid starter layout: a sessionmaker built at run time, pyramid_tm's explicit
manager, hooks bound with register(); the warnings and startup checks it needs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import transaction
import webtest
import zope.sqlalchemy
from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.registry import Registry
from sqlalchemy import Integer, String, create_engine, event
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    scoped_session,
    sessionmaker,
)

from pyramid_transient import cache
from pyramid_transient.cache import CacheKeyGenerator, get_region
from pyramid_transient.connection import RedisManager, current_manager, set_default_manager
from pyramid_transient.exceptions import ConfigurationError, InvalidArgument
from pyramid_transient.invalidation import register, row_identity
from pyramid_transient.testing import test_settings
from pyramid_transient.transactions import after_commit

SUFFIX = uuid.uuid4().hex[:6]


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = f"starter_docs_{SUFFIX}"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(50))


#: Module-level objects for the dotted-name checks.
def get_session_factory(engine: Any = None) -> sessionmaker[Session]:
    return sessionmaker()


module_factory: sessionmaker[Session] = sessionmaker()
scoped = scoped_session(sessionmaker())
not_a_session = 42


@pytest.fixture
def engine(database_url: str) -> Iterator[Any]:
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(Doc.__table__.delete())
        conn.execute(Doc.__table__.insert(), [{"id": 1, "title": "first"}])
    yield engine
    Base.metadata.drop_all(engine)
    engine.dispose()


# ---------------------------------------------------------------------- the warning


def test_a_key_over_an_instance_of_an_unhooked_session_warns_once_per_factory(
    engine: Any, transient_manager: RedisManager, caplog: pytest.LogCaptureFixture
) -> None:
    unhooked = sessionmaker(engine)
    cache_key = CacheKeyGenerator(transient_manager)
    with caplog.at_level(logging.WARNING, logger="pyramid_transient.cache"):
        for _ in range(3):
            with unhooked() as session:
                cache_key("doc", session.get(Doc, 1))
    warnings = [r.getMessage() for r in caplog.records if "invalidation hooks" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "register(session_factory, config.registry)" in warnings[0]
    assert repr(engine) in warnings[0]  # names the factory by its engine


@pytest.mark.parametrize("how", ["sessionmaker", "scoped_session", "session"])
def test_a_hooked_session_does_not_warn(
    how: str, engine: Any, transient_manager: RedisManager, caplog: pytest.LogCaptureFixture
) -> None:
    factory = sessionmaker(engine)
    session: Any
    if how == "sessionmaker":
        listener = register(factory, transient_manager)
        session = factory()
    elif how == "scoped_session":
        session = scoped_session(factory)
        listener = register(session, transient_manager)
    else:
        session = factory()
        listener = register(session, transient_manager)
    cache_key = CacheKeyGenerator(transient_manager)
    with caplog.at_level(logging.WARNING, logger="pyramid_transient.cache"):
        cache_key("doc", session.get(Doc, 1))
    session.close()
    listener.remove()
    assert not [r for r in caplog.records if "invalidation hooks" in r.getMessage()]


# ---------------------------------------------------------------------- the setting


def _include_cache(settings: dict[str, Any]) -> None:
    config = Configurator(settings=settings)
    config.include("pyramid_transient.cache")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (f"{__name__}.get_session_factory", "names a function"),
        (f"{__name__}.not_a_session", "not a sessionmaker, a scoped_session"),
        (f"{__name__}.no_such_name", "cannot be imported"),
        ("no_such_module_at_all.DBSession", "cannot be imported"),
    ],
)
def test_the_session_setting_is_checked_at_startup_naming_key_value_and_kind(
    value: str, says: str
) -> None:
    settings = test_settings(
        "redis://127.0.0.1:1", **{"transient.cache.sqlalchemy_session": value}
    )
    with pytest.raises(ConfigurationError) as info:
        _include_cache(settings)
    text = str(info.value)
    assert text.startswith(f"transient.cache.sqlalchemy_session = {value!r}")
    assert says in text
    assert "sessionmaker" in text


@pytest.mark.parametrize("name", ["module_factory", "scoped"])
def test_the_session_setting_accepts_a_sessionmaker_or_scoped_session(name: str) -> None:
    settings = test_settings(
        "redis://127.0.0.1:1", **{"transient.cache.sqlalchemy_session": f"{__name__}.{name}"}
    )
    _include_cache(settings)


def test_register_refuses_a_function() -> None:
    with pytest.raises(InvalidArgument, match="pass the sessionmaker it returns"):
        register(get_session_factory)


# ---------------------------------------------------------------------- the safe order


@pytest.fixture
def starter(engine: Any, transient_settings: dict[str, Any]) -> Iterator[Any]:
    """A starter-layout app: sessionmaker built in includeme, explicit tm manager."""
    factory = sessionmaker(bind=engine)
    calls: list[Any] = []

    def models(config: Configurator) -> None:
        config.get_settings()["tm.manager_hook"] = "pyramid_tm.explicit_manager"
        config.include("pyramid_tm")
        listener = register(factory, config.registry)
        calls.append(listener)

        def dbsession(request: Any) -> Session:
            session = factory(info={"request": request})
            zope.sqlalchemy.register(session, transaction_manager=request.tm)
            return session

        config.add_request_method(dbsession, reify=True)

    def doc_page(request: Any) -> dict[str, str]:
        # The documented order: the key from the row's identity, before any SQL.
        doc_id = int(request.matchdict["id"])
        key = request.cache_key("doc", row_identity(Doc.__table__, doc_id))
        return get_region(request, "default").get_or_create(  # type: ignore[no-any-return]
            key, lambda: {"title": request.dbsession.get(Doc, doc_id).title}
        )

    def unsafe_page(request: Any) -> dict[str, str]:
        # The order the docs warn against: the instance loaded, then the key.
        doc = request.dbsession.get(Doc, int(request.matchdict["id"]))
        request.registry["between"]()
        key = request.cache_key("doc-unsafe", doc)
        return get_region(request, "default").get_or_create(  # type: ignore[no-any-return]
            key, lambda: {"title": doc.title}
        )

    def rename(request: Any) -> HTTPSeeOther:
        request.dbsession.get(Doc, 1).title = request.params["title"]
        return HTTPSeeOther("/")

    settings = {**transient_settings, "redis.sessions.secret": "s" * 32}
    with Configurator(settings=settings) as config:
        config.include(models)
        config.include("pyramid_transient")
        config.add_route("doc", "/doc/{id}")
        config.add_view(doc_page, route_name="doc", renderer="json")
        config.add_route("unsafe", "/unsafe/{id}")
        config.add_view(unsafe_page, route_name="unsafe", renderer="json")
        config.add_route("rename", "/rename")
        config.add_view(rename, route_name="rename")
    app = webtest.TestApp(config.make_wsgi_app())
    app.registry = config.registry  # type: ignore[attr-defined]
    app.factory = factory  # type: ignore[attr-defined]
    yield app
    for listener in calls:
        listener.remove()


def _commit_elsewhere(app: Any, title: str) -> None:
    app.get("/rename", {"title": title})


def test_the_documented_order_never_caches_a_stale_value(starter: Any) -> None:
    assert starter.get("/doc/1").json == {"title": "first"}
    # A commit lands between the key and the first SQL of the next request: the value it
    # builds is new, stored under the key taken before the commit, which nobody asks again.
    factory = starter.factory
    fired: list[bool] = []

    def once(state: Any) -> None:
        if not fired:
            fired.append(True)
            with factory() as other:
                other.get(Doc, 1).title = "second"
                other.commit()

    _commit_elsewhere(starter, "first again")  # moves the key: next request misses
    event.listen(factory, "do_orm_execute", once)
    try:
        assert starter.get("/doc/1").json == {"title": "second"}
    finally:
        event.remove(factory, "do_orm_execute", once)
    assert fired
    assert starter.get("/doc/1").json == {"title": "second"}  # and stays fresh


def test_the_unsafe_order_would_cache_a_stale_value(starter: Any) -> None:
    # The test above can fail: the same race in the other order leaves a stale page.
    def between() -> None:
        with starter.factory() as other:
            other.get(Doc, 1).title = "second"
            other.commit()

    starter.registry["between"] = between
    assert starter.get("/unsafe/1").json == {"title": "first"}
    starter.registry["between"] = lambda: None
    assert starter.get("/unsafe/1").json == {"title": "first"}  # stale, under the new key


# ---------------------------------------------------------------------- after_commit


def test_after_commit_checks_that_the_action_is_callable_at_the_call() -> None:
    with pytest.raises(InvalidArgument, match="needs a callable action"):
        after_commit("nothing", None)  # type: ignore[arg-type]


def test_after_commit_finds_request_tm_of_an_explicit_manager() -> None:
    tm = transaction.TransactionManager(explicit=True)
    tm.begin()
    ran: list[int] = []
    request = type("Request", (), {"tm": tm})()
    after_commit("count", lambda: ran.append(1), request=request)
    assert not transaction.manager.isDoomed() and ran == []
    tm.commit()
    assert ran == [1]


# ---------------------------------------------------------------------- the manager


def test_from_settings_refuses_a_registry() -> None:
    with pytest.raises(ConfigurationError, match=r"get_manager\(registry\)"):
        RedisManager.from_settings(Registry("x"))  # type: ignore[arg-type]


def test_url_for_on_memory_raises() -> None:
    manager = RedisManager.from_settings(
        {"transient.url": "memory://x", "transient.db.celery": "3"}
    )
    with pytest.raises(ConfigurationError, match="no other process"):
        manager.url_for("celery")


def test_without_a_running_app_the_error_says_bootstrap_or_pass_a_client() -> None:
    previous = set_default_manager(None)
    try:
        with pytest.raises(ConfigurationError, match="no application is running: bootstrap or"):
            current_manager()
    finally:
        set_default_manager(previous)


def test_a_default_manager_is_found_when_no_app_is_current(transient_manager: Any) -> None:
    previous = set_default_manager(transient_manager)
    try:
        assert current_manager() is transient_manager
    finally:
        set_default_manager(previous)


def test_cache_module_exposes_the_setting_check() -> None:
    assert callable(cache.resolve_session_setting)
