"""Build the Redis keys every capability writes.

Layout (DESIGN section 3): ``{key_prefix}:{namespace}:{capability}:{...}``, where the
prefix and the namespace are left out when empty. The namespace is the database name on a
Cluster (which has only db 0, so names become key namespaces) and empty elsewhere.

User text that enters a key goes through :func:`quote`, which percent-encodes the
characters that have a meaning in our keys: ``:`` (our separator), ``{`` and ``}`` (Cluster
hash tags), ``%`` itself and whitespace/control characters. Text that reaches a
``SCAN MATCH`` pattern goes through :func:`glob_escape` as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property, lru_cache

_QUOTE_RE = re.compile(r"[%:{}\x00-\x20\x7f]")
_GLOB_RE = re.compile(r"([*?\[\]\\])")


def quote(text: str) -> str:
    """Make ``text`` safe as one key part (reversible with :func:`unquote`)."""
    return _QUOTE_RE.sub(lambda m: f"%{ord(m.group()):02X}", text)


def unquote(text: str) -> str:
    """Reverse :func:`quote`."""
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


def glob_escape(text: str) -> str:
    """Escape ``text`` for a Redis glob pattern (``SCAN MATCH``), so it matches itself only."""
    return _GLOB_RE.sub(r"\\\1", text)


@lru_cache(maxsize=4096)
def _hash_tag(tag: str) -> str:
    # Tags are few (section, safe, model class names) and used on every call: quoted once.
    return "{" + quote(tag) + "}"


@dataclass(frozen=True)
class KeySpace:
    """The keys of one capability in one named database.

    >>> ks = KeySpace("myapp", "store")
    >>> ks.key("a", "b")
    'myapp:store:a:b'
    >>> ks.tagged("users", "x")
    'myapp:store:{users}:x'
    """

    prefix: str
    capability: str
    namespace: str = ""

    @cached_property
    def base(self) -> str:
        """Everything before the capability's own parts, capability included."""
        return ":".join(p for p in (self.prefix, self.namespace, self.capability) if p)

    def key(self, *parts: str) -> str:
        """A key from already-safe parts (quote user text with :func:`quote` first)."""
        return ":".join((self.base, *parts))

    def tagged(self, tag: str, *parts: str) -> str:
        """A key whose Cluster hash slot is chosen by ``tag`` (quoted here).

        Keys built with the same tag land on the same slot, so one command or Lua script
        may touch them together on a Cluster.
        """
        return ":".join((self.base, _hash_tag(tag), *parts))

    def pattern(self, *parts: str) -> str:
        """A ``SCAN MATCH`` pattern for every key below ``parts`` (escaped, then ``*``)."""
        return glob_escape(self.key(*parts)) + ":*"
