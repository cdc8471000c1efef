"""The package's own surface: light to import, every advertised name importable."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pyramid_transient


@pytest.mark.parametrize("name", pyramid_transient.__all__)
def test_every_name_in_all_is_importable(name: str) -> None:
    assert getattr(pyramid_transient, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="nope"):
        pyramid_transient.nope  # noqa: B018


def test_importing_the_package_stays_light() -> None:
    code = (
        "import sys, pyramid_transient; "
        "print(sorted(m for m in ('pydantic', 'dogpile', 'sqlalchemy', 'fakeredis') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
