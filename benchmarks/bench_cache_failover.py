"""What closing the failover hole costs (issue 17, item 1): a replica wait on invalidations
against a failover epoch mixed into every key.

A failover can lose a commit's token ``DEL`` that the master acknowledged and the replica
never received. Two ways to close it:

* ``transient.cache.wait_replicas = 1`` (built): the invalidation's ``DEL`` is followed by
  a ``SET`` of a short-lived ack key and ``WAIT 1`` in its one round trip; reads are
  unchanged. Measured here on a commit updating rows (SQLite in memory, so the Redis side
  shows), against a master with one live replica on loopback.
* a failover epoch (not built): the master's replication id mixed into every key, so a
  promotion changes every key. Checked on every read, it costs every ``cache_key``: the
  prototype below is the token script with ``INFO replication`` read in it (one round
  trip still). Cached per client instead, it costs nothing per read but is not safe: a
  pooled connection to a dead master is replaced silently inside redis-py's
  ``get_connection``, so no error tells the client to read the epoch again.

Run: ``python benchmarks/run.py cache_failover`` (starts its own master and replica).
"""

from __future__ import annotations

import time

import redis
from _runner import compare
from bench_cache import sqlite_rows, update_rows
from sqlalchemy.orm import sessionmaker

from pyramid_transient.connection import RedisManager
from pyramid_transient.invalidation import TOKENS_SCRIPT, identities_of, register, token_store
from pyramid_transient.testing import RedisServer

#: The token read of tokens.lua for any N, with the epoch (the master's replication id)
#: read in the same call and mixed into the digest.
EPOCH_SCRIPT = """
local info = redis.call('INFO', 'replication')
local epoch = string.match(info, 'master_replid:(%w+)')
local tokens = {epoch}
for i = 1, #KEYS do
  local token = redis.call('GET', KEYS[i])
  if not token then
    token = ARGV[2] .. i
    redis.call('SET', KEYS[i], token, 'NX', 'EX', ARGV[1])
  end
  tokens[#tokens + 1] = token
end
return redis.sha1hex(table.concat(tokens, ','))
"""


def _replica_up(master: RedisServer, replica: RedisServer) -> None:
    m, r = redis.Redis(port=master.port), redis.Redis(port=replica.port)
    deadline = time.monotonic() + 10
    while r.info("replication").get("master_link_status") != "up":
        if time.monotonic() > deadline:
            raise RuntimeError("the replica did not connect")
        time.sleep(0.05)
    m.close()
    r.close()


def main() -> None:
    master = RedisServer(args=["--repl-diskless-sync-delay", "0"])
    with master, RedisServer(args=["--replicaof", "127.0.0.1", str(master.port)]) as replica:
        _replica_up(master, replica)
        settings = {
            "transient.url": master.url,
            "transient.key_prefix": "bench",
            "transient.db.cache": "2",
        }
        plain = RedisManager.from_settings(settings)
        waiting = RedisManager.from_settings({**settings, "transient.cache.wait_replicas": "1"})
        client = plain.get("cache")
        client.flushdb()
        store = token_store(plain)
        epoch = client.register_script(EPOCH_SCRIPT)

        engine, rows = sqlite_rows(100)

        print("## Reads: the token read of a cache key, today and with an epoch in it\n")
        print("Client and wire: ops/s of the raw calls (redis-py, no translation).\n")
        tokens_script = client.register_script(TOKENS_SCRIPT)
        reads = {}
        for n in (1, 10):
            keys = [store.key(i) for row in rows[:n] for i in identities_of(row)]
            if n == 1:
                today = lambda k=keys[0]: client.execute_command(  # noqa: E731
                    "SET", k, "new-1", "NX", "GET", "EX", store.ttl
                )
            else:
                today = lambda k=keys: tokens_script(  # noqa: E731
                    keys=k, args=[0, store.ttl, "new-", "digest"]
                )
            with_epoch = lambda k=keys: epoch(keys=k, args=[store.ttl, "new-"])  # noqa: E731
            reads[n] = (today, with_epoch)
            print(
                compare(
                    f"token read over {n} instance(s) ({len(keys)} tokens)",
                    {"today (SET NX GET / script)": today, "with an epoch read in it": with_epoch},
                )
            )
        tokens = [store.key(i) for row in rows[:3] for i in identities_of(row)]
        wait_client = waiting.get("cache")
        wait_store = token_store(waiting)

        def refill() -> None:
            client.mset(dict.fromkeys(tokens, "t"))

        def plain_del() -> None:
            refill()
            client.execute_command("DEL", *tokens)

        def waited_del() -> None:
            refill()
            wait_store._resend()(wait_client, tokens)

        print(
            compare(
                "an invalidation of 6 tokens (after an MSET that restores them), one replica",
                {"DEL": plain_del, "DEL SET WAIT": waited_del},
            )
        )
        print("Server time per call of each case (INFO commandstats, microseconds):\n")
        for label, fn in (
            ("read of 1 token today", reads[1][0]),
            ("read of 1 token with an epoch", reads[1][1]),
            ("read of 10 tokens today", reads[10][0]),
            ("read of 10 tokens with an epoch", reads[10][1]),
            ("invalidation, DEL", plain_del),
            ("invalidation, DEL SET WAIT", waited_del),
        ):
            client.config_resetstat()
            for _ in range(2000):
                fn()
            stats = client.info("commandstats")
            calls = {
                k.removeprefix("cmdstat_"): v["usec_per_call"]
                for k, v in stats.items()
                if k.removeprefix("cmdstat_") in ("set", "evalsha", "del", "wait")
            }
            print(f"- {label}: " + ", ".join(f"{k.upper()} {v:.2f}" for k, v in calls.items()))
        print()

        print("## Commits: the invalidation, without and with transient.cache.wait_replicas\n")
        without = sessionmaker(engine)
        register(without, plain)
        with_wait = sessionmaker(engine)
        register(with_wait, waiting)
        counter = iter(range(10**9))
        for n in (1, 10):
            print(
                compare(
                    f"commit updating {n} row(s), one live replica",
                    {
                        "wait_replicas = 0 (DEL)": lambda n=n: update_rows(
                            without, n, next(counter)
                        ),
                        "wait_replicas = 1 (DEL SET WAIT)": lambda n=n: update_rows(
                            with_wait, n, next(counter)
                        ),
                    },
                )
            )
        plain.close()
        waiting.close()


if __name__ == "__main__":
    main()
