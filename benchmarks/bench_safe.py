"""The module safe against a plain ``shelve`` file and bare redis-py HSET/HGET.

``shelve`` is what Pythomnic's ``pmnc_safe`` kept its data in: a local file, one process at
a time, no atomicity between processes. Its "set" is measured with and without ``sync()``
after each write (without it, nothing is on disk yet when the call returns). On this
Python, without gdbm or ndbm, shelve uses ``dbm.dumb``.

Bare redis-py stores the same value JSON-encoded in the same kind of hash; ours adds the
codec (typed values), key checks and the lazy binding. The read-modify-write table
compares an atomic block with redis-py's own WATCH/MULTI ``transaction()``.
"""

from __future__ import annotations

import json
import os
import shelve
import tempfile
from typing import Any

import redis
from _runner import compare, redis_url
from pyramid.config import Configurator
from pyramid.scripting import prepare

from pyramid_transient.connection import RedisManager
from pyramid_transient.safe import get_safe

VALUE: dict[str, Any] = {"user": 42, "tags": ["a", "b"], "ratio": 0.5, "name": "Zoë"}
TEN = {f"key{i}": {**VALUE, "user": i} for i in range(10)}
HASH = "bench:bare:{safe}"


def main() -> None:
    with (
        redis_url() as url,
        tempfile.TemporaryDirectory() as tmp,
        shelve.open(os.path.join(tmp, "safe")) as shelf,
    ):
        settings = {"transient.url": url, "transient.key_prefix": "bench"}
        manager = RedisManager.from_settings(settings)
        ours = get_safe("bench.explicit", manager)
        lazy = get_safe("bench.lazy")  # bound through the current registry at each use
        bare = redis.Redis.from_url(url)

        config = Configurator(settings=settings)
        config.include("pyramid_transient.safe")
        env = prepare(registry=config.registry)
        try:
            ours["key"] = VALUE
            lazy["key"] = VALUE
            bare.hset(HASH, "key", json.dumps(VALUE))
            shelf["key"] = VALUE
            shelf.sync()

            def shelf_set_sync() -> None:
                shelf["key"] = VALUE
                shelf.sync()

            def shelf_update() -> None:
                for k, v in TEN.items():
                    shelf[k] = v

            def shelf_update_sync() -> None:
                shelf_update()
                shelf.sync()

            def bare_rmw() -> None:
                def bump(pipe: Any) -> None:
                    n = int(pipe.hget(HASH, "n") or 0)
                    pipe.multi()
                    pipe.hset(HASH, "n", n + 1)

                bare.transaction(bump, HASH)

            def ours_rmw() -> None:
                for attempt in ours.atomic():
                    with attempt as s:
                        s["n"] = s.get("n", 0) + 1

            def shelf_rmw() -> None:
                shelf["n"] = shelf.get("n", 0) + 1
                shelf.sync()

            print(
                compare(
                    "get one key",
                    {
                        "shelve": lambda: shelf["key"],
                        "bare redis-py HGET + json": lambda: json.loads(bare.hget(HASH, "key")),
                        "safe[key]": lambda: ours["key"],
                        "safe[key], module-level (lazy)": lambda: lazy["key"],
                    },
                )
            )
            print(
                compare(
                    "set one key",
                    {
                        "shelve": lambda: shelf.__setitem__("key", VALUE),
                        "shelve + sync()": shelf_set_sync,
                        "bare redis-py json + HSET": lambda: bare.hset(
                            HASH, "key", json.dumps(VALUE)
                        ),
                        "safe[key] = value": lambda: ours.__setitem__("key", VALUE),
                    },
                )
            )
            print(
                compare(
                    "update of 10 keys",
                    {
                        "shelve": shelf_update,
                        "shelve + sync()": shelf_update_sync,
                        "bare redis-py json + HSET mapping": lambda: bare.hset(
                            HASH, mapping={k: json.dumps(v) for k, v in TEN.items()}
                        ),
                        "safe.update(ten)": lambda: ours.update(TEN),
                    },
                )
            )
            print(
                compare(
                    "read-modify-write of one key (increment)",
                    {
                        "shelve + sync() (one process only)": shelf_rmw,
                        "bare redis-py transaction() (WATCH/MULTI)": bare_rmw,
                        "safe.atomic()": ours_rmw,
                    },
                )
            )
        finally:
            env["closer"]()
            bare.delete(HASH)
            ours.clear()
            bare.close()
            manager.close()


if __name__ == "__main__":
    main()
