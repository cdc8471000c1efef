"""Placeholder: filled in by its issue."""

from typing import Any


def includeme(config: Any) -> None:
    from .connection import include_manager

    include_manager(config)
