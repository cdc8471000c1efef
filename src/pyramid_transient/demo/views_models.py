"""Demo page: placeholder until its issue lands."""

from typing import Any


def includeme(config: Any) -> None:
    pass
