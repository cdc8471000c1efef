"""Plumbing shared by the Cluster and Sentinel groups: admin commands and waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last!r})" if last is not None else ""
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(0.05)


def _admin(port: int) -> redis.Redis:
    # Fixture plumbing only: short timeouts, decoded replies, no retries.
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=2.0,
        socket_connect_timeout=1.0,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def ask(port: int, *args: Any) -> Any:
    client = _admin(port)
    try:
        return client.execute_command(*args)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def info_fields(text: Any) -> dict[str, str]:
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    fields: dict[str, str] = {}
    for line in str(text).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def pairs(flat: Any) -> dict[str, str]:
    if isinstance(flat, dict):
        return {str(k): str(v) for k, v in flat.items()}
    items = list(flat)
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}
