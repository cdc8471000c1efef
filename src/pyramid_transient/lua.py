"""Lua scripts registered once per client, shared by the capabilities.

Each capability keeps its scripts as module constants, each with a comment listing its
KEYS and ARGV (as redis-py's ``lock.py`` does), and one :class:`ScriptSet` over them::

    SCRIPTS = ScriptSet(acquire=ACQUIRE, release=RELEASE)

    SCRIPTS.on(client)["acquire"](keys=[...], args=[...])

``on(client)`` registers the scripts on first use of a client (no round trip: redis-py
sends ``EVALSHA`` and loads the script only if the server answers ``NOSCRIPT``) and
returns the same :class:`redis.commands.core.Script` objects afterwards. Clients are held
weakly, so a closed app's client is not kept alive by its scripts.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

from redis.commands.core import Script

__all__ = ["ScriptSet"]


class ScriptSet:
    """Named Lua sources, registered once per client."""

    def __init__(self, **sources: str) -> None:
        #: The Lua source of each script, by name.
        self.sources: Mapping[str, str] = dict(sources)
        self._by_client: weakref.WeakKeyDictionary[Any, dict[str, Script]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def on(self, client: Any) -> Mapping[str, Script]:
        """The scripts registered on ``client`` (a ``redis.Redis`` or ``RedisCluster``)."""
        found = self._by_client.get(client)
        if found is None:
            with self._lock:
                found = self._by_client.get(client)
                if found is None:
                    found = {}
                    for name, src in self.sources.items():
                        script = client.register_script(src)
                        # A Script keeps its client; a strong reference from the value of
                        # this weak map would keep the key (the client, its pool) alive.
                        # Every call passes client=, so a weak proxy is enough.
                        script.registered_client = weakref.proxy(client)
                        found[name] = script
                    self._by_client[client] = found
        return found
