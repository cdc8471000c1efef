"""ScriptSet: Lua scripts registered once per client."""

from __future__ import annotations

import gc
import weakref

import redis

from pyramid_transient.lua import ScriptSet


def test_scriptset_holds_clients_weakly() -> None:
    # lua.py's docstring: "Clients are held weakly". The Script objects kept as the
    # WeakKeyDictionary's value hold registered_client strongly, so the key never dies.
    scripts = ScriptSet(one="return 1")
    client = redis.Redis(host="127.0.0.1", port=1)
    scripts.on(client)
    ref = weakref.ref(client)
    del client
    gc.collect()
    assert ref() is None


def test_scripts_run_on_the_client_given_at_call_time(transient_redis: redis.Redis) -> None:
    scripts = ScriptSet(echo="return ARGV[1]")
    script = scripts.on(transient_redis)["echo"]
    assert scripts.on(transient_redis)["echo"] is script
    assert script(keys=[], args=["x"], client=transient_redis) == b"x"
