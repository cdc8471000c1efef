"""The demo's SQL side: one table of items, a session per request joined to pyramid_tm.

``session_factory`` is module-level so that ``transient.cache.sqlalchemy_session =
pyramid_transient.demo.models.session_factory`` can name it; :func:`includeme` binds it
to the engine of ``sqlalchemy.url`` and creates the tables (an in-memory SQLite database
gets a single shared connection, so every request sees the same data).
"""

from __future__ import annotations

from typing import Any

import zope.sqlalchemy
from sqlalchemy import Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool


class Base(DeclarativeBase):
    pass


class Item(Base):
    """A row the demo caches pages of."""

    __tablename__ = "demo_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    price: Mapped[int] = mapped_column(Integer, default=0)


#: Bound to the app's engine by :func:`includeme`.
session_factory: sessionmaker[Session] = sessionmaker()

SEED = (("Teapot", 25), ("Kettle", 40), ("Mug", 8))


def make_engine(url: str) -> Any:
    if url in ("sqlite://", "sqlite:///:memory:"):
        return create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    return create_engine(url)


def _dbsession(request: Any) -> Session:
    session = session_factory()
    zope.sqlalchemy.register(session, transaction_manager=request.tm)
    return session


def includeme(config: Any) -> None:
    """Bind the session factory, create and seed the table, add ``request.dbsession``."""
    engine = make_engine(config.get_settings().get("sqlalchemy.url", "sqlite://"))
    session_factory.configure(bind=engine)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        if session.query(Item).count() == 0:
            session.add_all(Item(name=name, price=price) for name, price in SEED)
            session.commit()
    config.add_request_method(_dbsession, "dbsession", reify=True)
