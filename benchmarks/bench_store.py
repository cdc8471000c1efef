"""The nested-dict store against redicts, side by side in one run.

Cases: set and val of a 5-leaf and a 100-leaf subtree, with 0 and then 10,000 unrelated
keys in the database; lock acquire + release. A plain redis-py row (the whole subtree as
one JSON string under one key, no paths, no atomic subtree semantics) shows the floor.

Run: ``python benchmarks/bench_store.py`` (needs ``pip install redicts six``; benchmark
only). redicts talks to the server through its own singleton pool, configured here.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import urlsplit

import redis

sys.path.insert(0, os.path.dirname(__file__))

from _runner import compare, redis_url

from pyramid_transient.store import Lock, section

DB = 12
SECONDS = 0.3


def subtree(leaves: int) -> dict[str, Any]:
    """A nested dict with ``leaves`` leaves, two levels deep."""
    groups = max(1, leaves // 5)
    return {f"g{g}": {f"k{i}": i for i in range(5)} for g in range(groups)}


def fill_unrelated(client: redis.Redis, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for start in range(0, count, 1000):
        pipe.mset({f"unrelated:{i}": i for i in range(start, start + 1000)})
    pipe.execute()


def value_tables(client: redis.Redis, redicts: Any, label: str) -> list[str]:
    tables = []
    for leaves in (5, 100):
        value = subtree(leaves)
        ours = section(f"ours{leaves}", redis=client)
        theirs = redicts.section(f"theirs{leaves}")
        plain_key = f"plain:{leaves}"
        ours.set("doc", value)
        theirs.set("doc", value)
        client.set(plain_key, json.dumps(value))
        assert ours.get("doc").val() == value
        assert theirs.get("doc").val() == value
        tables.append(
            compare(
                f"set of a {leaves}-leaf subtree, {label}",
                {
                    "redicts": lambda t=theirs, v=value: t.set("doc", v),
                    "pyramid_transient": lambda o=ours, v=value: o.set("doc", v),
                    "plain redis-py SET of one JSON": lambda k=plain_key, v=value: client.set(
                        k, json.dumps(v)
                    ),
                },
                seconds=SECONDS,
            )
        )
        tables.append(
            compare(
                f"val of a {leaves}-leaf subtree, {label}",
                {
                    "redicts": lambda t=theirs: t.get("doc").val(),
                    "pyramid_transient": lambda o=ours: o.get("doc").val(),
                    "plain redis-py GET of one JSON": lambda k=plain_key: json.loads(
                        client.get(k) or b"null"
                    ),
                },
                seconds=SECONDS,
            )
        )
    return tables


def lock_table(client: redis.Redis, redicts: Any) -> str:
    theirs = redicts.Lock(redicts.Pool().get_connection(), "locks.a.b")
    ours = Lock(client, "locks.a.b")
    plain = client.lock("plain-lock")

    def cycle(lock: Any) -> None:
        lock.acquire()
        lock.release()

    return compare(
        "lock acquire + release (uncontended)",
        {
            "redicts": lambda: cycle(theirs),
            "pyramid_transient (tree lock)": lambda: cycle(ours),
            "redis-py Lock (no tree)": lambda: cycle(plain),
        },
        seconds=SECONDS,
    )


def main() -> None:
    try:
        import redicts
    except ImportError as exc:  # pragma: no cover
        print(f"redicts is not importable ({exc}): pip install redicts six")
        return
    with redis_url() as url:
        parts = urlsplit(url)
        redicts.Pool().reload({"host": parts.hostname, "port": parts.port, "database": DB})
        client = redis.Redis(host=parts.hostname or "127.0.0.1", port=parts.port or 6379, db=DB)
        client.flushdb()
        out = ["## pyramid_transient.store vs redicts", ""]
        out += value_tables(client, redicts, "0 unrelated keys")
        fill_unrelated(client, 10_000)
        out += value_tables(client, redicts, "10,000 unrelated keys")
        out.append(lock_table(client, redicts))
        client.flushdb()
        print("\n".join(out))


if __name__ == "__main__":
    main()
