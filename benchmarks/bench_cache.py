"""Cache keys over N instances: our one-round-trip read against one GET per instance.

alkey (the Python 2 add-on this capability replaces) reads each instance's token with its
own GET, so a key over N instances costs N round trips. Ours reads (and creates) every
token of a key in one round trip: one ``SET NX GET EX`` for a single token, one Lua script
call for several. Also shown: an MGET of the same tokens (one round trip, but no token
creation, so not a complete alternative), a pipeline of one ``SET NX GET EX`` per token
(the same semantics and round trip as the script, the alternative the script is measured
against), one script call for every N (what a single token cost before it became a plain
SET), and the cost of our hooks on a commit that updates 1, 10 or 100 rows (SQLite in
memory, so the SQL side is cheap and the Redis round trip shows).
"""

from __future__ import annotations

import secrets
from typing import Any

import redis
from _runner import compare, redis_url
from sqlalchemy import Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from pyramid_transient.cache import CacheKeyGenerator
from pyramid_transient.connection import RedisManager
from pyramid_transient.invalidation import TOKENS_SCRIPT, register, token_store


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "bench_rows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


def sqlite_rows(n: int) -> tuple[Any, list[Row]]:
    """An in-memory SQLite engine holding rows 0 .. n-1, and those rows (detached)."""
    engine = create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Row(id=i, name="x") for i in range(n))
        session.commit()
    with Session(engine, expire_on_commit=False) as session:
        rows = session.query(Row).order_by(Row.id).all()
    return engine, rows


def alkey_style(client: redis.Redis, keys: list[str], ttl: int) -> list[bytes]:
    """One GET per instance; a missing token is created (SET NX) and read back."""
    tokens = []
    for key in keys:
        token = client.get(key)
        if token is None:
            client.set(key, "new", nx=True, ex=ttl)
            token = client.get(key)
        tokens.append(token)
    return tokens  # type: ignore[return-value]


def pipelined(client: redis.Redis, keys: list[str], ttl: int) -> list[bytes]:
    """One SET NX GET EX per token in one non-transactional pipeline (Redis >= 7.0)."""
    base = secrets.token_hex(12) + "-"
    pipe = client.pipeline(transaction=False)
    for i, key in enumerate(keys):
        pipe.set(key, f"{base}{i}", nx=True, get=True, ex=ttl)
    return [
        f"{base}{i}".encode() if token is None else token for i, token in enumerate(pipe.execute())
    ]


def main() -> None:
    with redis_url() as url:
        manager = RedisManager.from_settings(
            {"transient.url": url, "transient.key_prefix": "bench", "transient.db.cache": "2"}
        )
        manager.get("cache").flushdb()
        client = manager.get("cache")
        store = token_store(manager)
        generator = CacheKeyGenerator(manager)
        script = client.register_script(TOKENS_SCRIPT)

        engine, rows = sqlite_rows(100)

        print("## Cache keys over N instances (tokens exist; first creation is the same 1 RT)\n")
        for n in (1, 10, 100):
            instances = rows[:n]
            ids = [i for row in instances for i in generator_ids(row)]
            keys = [store.key(i) for i in ids]
            print(
                compare(
                    f"cache key over {n} instance(s)",
                    {
                        "alkey: GET per instance": lambda k=keys: alkey_style(
                            client, k, store.ttl
                        ),
                        "MGET (no creation)": lambda k=keys: client.mget(k),
                        "pipeline: SET NX GET per token": lambda k=keys: pipelined(
                            client, k, store.ttl
                        ),
                        "script call, any N": lambda k=keys: script(
                            keys=k, args=[0, store.ttl, secrets.token_hex(12) + "-"]
                        ),
                        "ours: tokens()": lambda i=ids: store.tokens(i),
                        "ours: cache_key(*instances)": lambda x=instances: generator("page", *x),
                    },
                )
            )

        print("## Invalidation cost per commit (SQLite in memory)\n")
        plain = sessionmaker(engine)
        hooked = sessionmaker(engine)
        register(hooked, manager)
        counter = iter(range(10**9))
        for n in (1, 10, 100):
            print(
                compare(
                    f"commit updating {n} row(s)",
                    {
                        "no hooks": lambda f=plain, n=n: update_rows(f, n, next(counter)),
                        "with hooks (1 DEL)": lambda f=hooked, n=n: update_rows(
                            f, n, next(counter)
                        ),
                    },
                )
            )
        manager.close()


def generator_ids(row: Any) -> list[Any]:
    from pyramid_transient.invalidation import identities_of

    return list(identities_of(row))


def update_rows(factory: Any, n: int, value: int) -> None:
    with factory() as session:
        for row in session.query(Row).filter(Row.id < n):
            row.name = str(value)
        session.commit()


if __name__ == "__main__":
    main()
