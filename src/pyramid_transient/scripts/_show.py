"""How ``ptransient show`` reads each encoding the library writes, by capability."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from ..codec import decode
from ..exceptions import CodecError

_SEAL = b"t1."
_MAC = 32


def as_text(value: Any) -> str:
    """A decoded value as one line of JSON (``repr`` for what JSON cannot hold)."""
    try:
        return json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):  # dict keys JSON cannot hold, such as tuples
        return repr(value)


def codec_value(raw: bytes) -> str:
    """A value of our codec (store leaves, safes, models' objects), or what it is."""
    try:
        return as_text(decode(raw))
    except CodecError:
        return f"(not codec-encoded) {raw[:200]!r}"


def session(raw: bytes, verify: Any = None) -> str:
    """A session payload: ``t1.`` + HMAC-SHA256 over key and payload + the payload.

    ``verify(raw)`` (the app's session factory, when the ini has its secret) says whether
    the HMAC holds; pickled payloads are not unpickled (that would run code)."""
    if not raw.startswith(_SEAL) or len(raw) < len(_SEAL) + _MAC:
        return f"(not a sealed session payload) {raw[:200]!r}"
    payload = raw[len(_SEAL) + _MAC :]
    seal = "HMAC not checked (no redis.sessions.secret in the ini)"
    if verify is not None:
        seal = (
            "HMAC verified"
            if verify(raw)
            else "HMAC does NOT verify (tampered, or another secret)"
        )
    if payload.startswith(b"\x80"):
        return f"session ({seal}): pickled payload of {len(payload)} bytes (not unpickled)"
    try:
        data = decode(payload)
    except CodecError:
        return f"session ({seal}): undecodable payload {payload[:200]!r}"
    return f"session ({seal}): {as_text(data)}"


def region_value(raw: bytes) -> str:
    """A cache region value: dogpile's metadata JSON, ``|``, the codec-encoded value."""
    metadata, sep, payload = raw.partition(b"|")
    try:
        meta = json.loads(metadata) if sep else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        return f"(not a region value) {raw[:200]!r}"
    created = meta.get("ct")
    when = ""
    if isinstance(created, int | float):
        when = f", created {dt.datetime.fromtimestamp(created, dt.UTC).isoformat()}"
    return f"cache region value (dogpile v{meta.get('v')}{when}): {codec_value(payload)}"


def token(raw: bytes) -> str:
    """A cache token: random text that cache keys read; deleting it invalidates them."""
    return f"cache token {raw.decode('ascii', 'backslashreplace')} (derived data)"


def string_value(capability: str, rest: str, raw: bytes, verify: Any = None) -> str:
    """A string key's value by the capability that wrote it."""
    if capability == "session":
        return session(raw, verify)
    if capability == "token":
        return token(raw)
    if capability == "cache":
        parts = rest.split(":")
        if len(parts) > 1 and parts[1] == "l":
            return f"cache region lock {raw[:80]!r} (dogpile's mutex)"
        return region_value(raw)
    return codec_value(raw)


def field_value(capability: str, rest: str, raw: bytes) -> str:
    """A hash field's value (store data, safes, models' objects): our codec."""
    if capability == "store" and rest.endswith(":locks"):
        return f"lock record {raw[:200]!r}"
    return codec_value(raw)
