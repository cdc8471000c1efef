"""RedisModel against redis-schematics: save, get by pk, and a 1%-selective filter.

Both hold 10,000 objects ``(id, name, age, group)`` where ``group`` takes 100 values, so
``filter(group=7)`` matches 1%. redis-schematics (a benchmark-only dependency, ``pip install
redis-schematics``) has no indexes: its ``filter`` loads every object of the class (the hash
layout with ``HGETALL``, the simple layout with ``KEYS`` and ``MGET``) and tests them in
Python. Ours walks the ``group`` index. Each implementation has its own database.

Run: ``python benchmarks/bench_models.py`` (about a minute).
"""

from __future__ import annotations

import itertools
import random
import statistics
import time
from collections.abc import Callable

import redis
from _runner import compare, redis_url, round_trips_of

from pyramid_transient.models import RedisModel

N = 10_000
GROUPS = 100


class Person(RedisModel):
    __indexes__ = ("group",)
    id: int
    name: str
    age: int
    group: int


class PersonByKey(RedisModel):
    __layout__ = "key"
    __indexes__ = ("group",)
    id: int
    name: str
    age: int
    group: int


def schematics_classes(client: redis.Redis) -> tuple[type, type]:
    from redis_schematics import HashRedisModel, SimpleRedisModel
    from schematics import types

    class SchemHash(HashRedisModel):
        __redis_client__ = client
        __expire__ = 24 * 3600  # its set() calls EXPIRE with this; None is refused by redis-py
        name = types.StringType()
        age = types.IntType()
        group = types.IntType()

    class SchemSimple(SimpleRedisModel):
        __redis_client__ = client
        __expire__ = 24 * 3600
        name = types.StringType()
        age = types.IntType()
        group = types.IntType()

    return SchemHash, SchemSimple


def slow_table(title: str, cases: dict[str, Callable[[], object]], runs: int = 3) -> str:
    """Like ``compare`` for operations that take a large fraction of a second."""
    rates = {}
    for name, fn in cases.items():
        fn()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        rates[name] = 1 / statistics.median(times)
    base = next(iter(rates.values()))
    lines = [
        f"### {title}",
        "",
        "| case | ops/s | ratio to first | round trips/op |",
        "|---|---:|---:|---:|",
    ]
    for name, fn in cases.items():
        lines.append(
            f"| {name} | {rates[name]:,.1f} | {rates[name] / base:.2f} | {round_trips_of(fn):g} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    with redis_url() as url:
        schem_client = redis.Redis.from_url(url, db=1)
        simple_client = redis.Redis.from_url(url, db=2)
        hash_client = redis.Redis.from_url(url, db=3)
        key_client = redis.Redis.from_url(url, db=4)
        for client in (schem_client, simple_client, hash_client, key_client):
            client.flushdb()
        SchemHash, SchemSimple = schematics_classes(schem_client)
        SchemSimple.__redis_client__ = simple_client
        Person.objects.bind(hash_client)
        PersonByKey.objects.bind(key_client)

        def row(i: int) -> dict[str, object]:
            return {"name": f"person {i}", "age": 20 + i % 50, "group": i % GROUPS}

        for i in range(N):
            SchemHash({"pk": str(i), **row(i)}).set()
            SchemSimple({"pk": str(i), **row(i)}).set()
            Person(id=i, **row(i)).save()
            PersonByKey(id=i, **row(i)).save()

        counter = itertools.count()
        rng = random.Random(7)

        def next_id() -> int:
            return next(counter) % N

        print(f"{N:,} objects per implementation, redis-server at {url}\n")
        print(
            compare(
                "save (overwrite an existing object)",
                {
                    "redis-schematics hash": lambda: SchemHash(
                        {"pk": str(i := next_id()), **row(i)}
                    ).set(),
                    "redis-schematics simple": lambda: SchemSimple(
                        {"pk": str(i := next_id()), **row(i)}
                    ).set(),
                    "ours, hash layout": lambda: Person(id=(i := next_id()), **row(i)).save(),
                    "ours, key layout": lambda: PersonByKey(id=(i := next_id()), **row(i)).save(),
                },
            )
        )
        print(
            compare(
                "get by primary key",
                {
                    "redis-schematics hash": lambda: SchemHash.match_for_pk(str(rng.randrange(N))),
                    "redis-schematics simple": lambda: SchemSimple.match_for_pk(
                        str(rng.randrange(N))
                    ),
                    "ours, hash layout": lambda: Person.objects.get(rng.randrange(N)),
                    "ours, key layout": lambda: PersonByKey.objects.get(rng.randrange(N)),
                },
            )
        )
        assert len(SchemHash.filter(group=7)) == N // GROUPS
        assert len(Person.objects.filter(group=7)) == N // GROUPS
        assert len(PersonByKey.objects.filter(group=7)) == N // GROUPS
        print(
            slow_table(
                f"filter(group=7): {N // GROUPS} of {N:,} objects (1%)",
                {
                    "redis-schematics hash": lambda: SchemHash.filter(group=7),
                    "redis-schematics simple": lambda: SchemSimple.filter(group=7),
                    "ours, hash layout": lambda: Person.objects.filter(group=7),
                    "ours, key layout": lambda: PersonByKey.objects.filter(group=7),
                },
            )
        )
        for client in (schem_client, simple_client, hash_client, key_client):
            client.flushdb()


if __name__ == "__main__":
    main()
