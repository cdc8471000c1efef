"""Lua scripts registered once per client, shared by the capabilities.

Each capability keeps its scripts as module constants, each with a comment listing its
KEYS and ARGV (as redis-py's ``lock.py`` does), and one :class:`ScriptSet` over them::

    SCRIPTS = ScriptSet(acquire=ACQUIRE, release=RELEASE)

    SCRIPTS.on(client)["acquire"](keys=[...], args=[...])

``on(client)`` registers the scripts on first use of a client (no round trip) and returns
the same :class:`LuaScript` objects afterwards. Clients are held weakly, so a closed app's
client is not kept alive by its scripts.

A call sends ``EVALSHA``; when the server answers ``NOSCRIPT`` (the script did not run: a
restart, a failover, ``SCRIPT FLUSH``) it sends the script itself with ``EVAL``, which runs
it and caches it on that server. On a Cluster, ``EVAL`` is routed by the script's keys like
any command, so only the node serving them is involved: redis-py's own fallback,
``SCRIPT LOAD``, goes to *every* primary, and fails on a healthy shard when any primary is
down. :func:`load` is the same rule for code that loads before a pipeline.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

__all__ = ["LuaScript", "ScriptSet", "load"]


def load(client: Any, script: Script, key: Any = None) -> None:
    """Load ``script`` where it runs: on the server of ``client``, or on a Cluster on the
    node that serves ``key`` only (one round trip; redis-py's ``script_load`` asks every
    primary of a Cluster)."""
    if isinstance(client, RedisCluster) and key is not None:
        cluster: Any = client  # redis-py's cluster API is untyped
        node = cluster.get_node_from_key(key)
        cluster.execute_command("SCRIPT LOAD", script.script, target_nodes=node)
        return
    client.script_load(script.script)


class LuaScript(Script):
    """redis-py's :class:`~redis.commands.core.Script`, whose ``NOSCRIPT`` fallback is
    ``EVAL`` on the node of its keys (see the module's docstring), not ``SCRIPT LOAD`` on
    every primary. Pipelines queue ``EVALSHA`` as redis-py's do."""

    def __init__(self, client: Any, source: str) -> None:
        super().__init__(client, source)

    def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any:
        if client is None:
            client = self.registered_client
        if isinstance(client, Pipeline | ClusterPipeline):
            return super().__call__(keys, args, client)  # a pipeline: queued, redis-py's way
        keys = list(keys or ())
        flat = (*keys, *(args or ()))
        try:
            return client.evalsha(self.sha, len(keys), *flat)
        except NoScriptError:
            # NOSCRIPT means the script did not run, so sending it whole cannot run it twice.
            return client.eval(self.script, len(keys), *flat)


class ScriptSet:
    """Named Lua sources, registered once per client."""

    def __init__(self, **sources: str) -> None:
        #: The Lua source of each script, by name.
        self.sources: Mapping[str, str] = dict(sources)
        self._by_client: weakref.WeakKeyDictionary[Any, dict[str, LuaScript]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def on(self, client: Any) -> Mapping[str, LuaScript]:
        """The scripts registered on ``client`` (a ``redis.Redis`` or ``RedisCluster``)."""
        found = self._by_client.get(client)
        if found is None:
            with self._lock:
                found = self._by_client.get(client)
                if found is None:
                    found = {}
                    for name, src in self.sources.items():
                        script = LuaScript(client, src)
                        # A Script keeps its client; a strong reference from the value of
                        # this weak map would keep the key (the client, its pool) alive.
                        # Every call passes client=, so a weak proxy is enough.
                        script.registered_client = cast(Any, weakref.proxy(client))
                        found[name] = script
                    self._by_client[client] = found
        return found
