"""``ptransient backup`` and ``restore`` of 100,000 small keys of mixed capabilities.

Side by side, in one run, interleaved over rounds (medians reported):

* **ptransient**: the command itself (``main([...])`` in this process, progress off);
* **naive loop**: one command per key and per round trip, as a script would do it with
  redis-py: ``SCAN``, then ``DUMP`` and ``PTTL`` for each key (backup), ``RESTORE`` for
  each line (restore);
* **redis-cli --rdb**: the server's own snapshot streamed to a file (the physical
  reference of a backup); for a restore, a server started on that RDB file until it
  answers ``PING``. The server runs with ``repl-diskless-sync-delay 0``: with Redis 7's
  default of 5 s, ``--rdb`` waits five seconds before it starts.

Goals (issue 15): at least 20x the naive loop, within 3x of ``redis-cli --rdb``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import redis
from _runner import redis_url

from pyramid_transient.scripts.ptransient import main as ptransient
from pyramid_transient.testing import RedisServer

KEYS = int(os.environ.get("BENCH_CLI_KEYS", "100000"))
ROUNDS = int(os.environ.get("BENCH_CLI_ROUNDS", "3"))
PREFIX = "bench"


def fill(client: redis.Redis, n: int) -> None:
    """``n`` small keys: sessions, cache values, store sections, model objects, safes."""
    client.flushdb()
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        kind = i % 5
        if kind == 0:
            pipe.set(f"{PREFIX}:session:s{i}", b"t1." + os.urandom(32) + b'{"m":{"u":1}}', ex=3600)
        elif kind == 1:
            pipe.set(f"{PREFIX}:cache:pages:v:{i}", b'{"ct":1,"v":2}|{"html":"<p>x</p>"}', ex=3600)
        elif kind == 2:
            pipe.hset(f"{PREFIX}:store:{{s{i}}}:data", mapping={"a.": "1", "b.": '"x"'})
        elif kind == 3:
            pipe.hset(f"{PREFIX}:model:{{Item}}:obj:{i}", mapping={"id": str(i), "k": '"a"'})
        else:
            pipe.hset(f"{PREFIX}:safe:{{m{i}}}", mapping={"n": "1"})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def naive_backup(client: redis.Redis, path: str) -> int:
    count = 0
    with open(path, "w") as out:
        for key in client.scan_iter(match=f"{PREFIX}:*", count=1000):
            payload = client.dump(key)
            ttl = client.pttl(key)
            if payload is None:
                continue
            line = {"key": base64.b64encode(key).decode(), "ttl": max(int(ttl), 0),
                    "dump": base64.b64encode(payload).decode()}  # fmt: skip
            out.write(json.dumps(line) + "\n")
            count += 1
    return count


def naive_restore(client: redis.Redis, path: str) -> int:
    count = 0
    with open(path) as lines:
        for line in lines:
            entry = json.loads(line)
            client.restore(base64.b64decode(entry["key"]), entry["ttl"],
                           base64.b64decode(entry["dump"]), replace=True)  # fmt: skip
            count += 1
    return count


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run() -> str:
    tmp = tempfile.mkdtemp(prefix="bench-cli-")
    try:
        with redis_url() as url:
            client = redis.Redis.from_url(url)
            client.config_set("repl-diskless-sync-delay", 0)
            port = client.connection_pool.connection_kwargs["port"]
            fill(client, KEYS)
            total = int(client.dbsize())
            ini = os.path.join(tmp, "bench.ini")
            with open(ini, "w") as f:
                f.write(
                    "[app:main]\nuse = egg:pyramid-transient#demo\n"
                    f"transient.url = {url}\ntransient.key_prefix = {PREFIX}\n"
                    "transient.db.default = 0\n"
                )
            ours_file = os.path.join(tmp, "ours.jsonl")
            naive_file = os.path.join(tmp, "naive.jsonl")
            rdb_file = os.path.join(tmp, "dump.rdb")
            caps = [x for c in ("sessions", "cache", "store", "models", "safe")
                    for x in ("--capability", c)]  # fmt: skip

            def ours_backup() -> None:
                out = io.StringIO()
                assert ptransient([ini, "-q", "backup", *caps, ours_file], out=out) == 0, out
                assert f"backed up {total} keys" in out.getvalue(), out.getvalue()

            def ours_restore() -> None:
                out = io.StringIO()
                assert ptransient([ini, "-q", "restore", ours_file], out=out) == 0
                assert f"restored {total} keys" in out.getvalue(), out.getvalue()

            def cli_rdb() -> None:
                subprocess.run(
                    ["redis-cli", "-p", str(port), "--rdb", rdb_file],
                    check=True, capture_output=True,
                )  # fmt: skip

            def rdb_load() -> None:
                directory = os.path.join(tmp, "load")
                os.makedirs(directory, exist_ok=True)
                shutil.copy(rdb_file, os.path.join(directory, "dump.rdb"))
                server = RedisServer(directory=directory, args=["--dbfilename", "dump.rdb"])
                server.start(timeout=60)
                try:
                    loaded = redis.Redis(port=server.port).dbsize()
                    assert loaded == total, loaded
                finally:
                    server.stop()

            times: dict[str, list[float]] = {}
            for _ in range(ROUNDS):
                for name, fn, flush in (
                    ("backup: ptransient", ours_backup, False),
                    ("backup: naive loop", lambda: naive_backup(client, naive_file), False),
                    ("backup: redis-cli --rdb", cli_rdb, False),
                    ("restore: ptransient", ours_restore, True),
                    ("restore: naive loop", lambda: naive_restore(client, naive_file), True),
                    ("restore: server loading the RDB", rdb_load, False),
                ):
                    if flush:
                        client.flushdb()
                    times.setdefault(name, []).append(timed(fn))
                    if flush and client.dbsize() != total:
                        raise RuntimeError(f"{name} left {client.dbsize()} keys, not {total}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return table(times, total)


def table(times: dict[str, list[float]], total: int) -> str:
    rate = {name: total / statistics.median(t) for name, t in times.items()}
    lines = [
        f"### ptransient backup and restore, {total:,} keys, median of {ROUNDS} rounds",
        "",
        "| case | keys/s | median s | ptransient vs this |",
        "|---|---:|---:|---:|",
    ]
    for name, keys_per_s in rate.items():
        side = name.split(":")[0]
        ours = rate[f"{side}: ptransient"]
        lines.append(
            f"| {name} | {keys_per_s:,.0f} | {statistics.median(times[name]):.2f} | "
            f"{ours / keys_per_s:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    if shutil.which("redis-cli") is None:
        print("redis-cli is not on PATH: the physical reference cannot run", file=sys.stderr)
        return
    print(run(), flush=True)


if __name__ == "__main__":
    main()
