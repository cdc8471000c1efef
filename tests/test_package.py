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


@pytest.mark.parametrize(
    ("old", "new"), [("NotFound", "ObjectNotFound"), ("LockError", "TreeLockError")]
)
def test_renamed_exceptions_keep_their_old_names_for_one_release_with_a_warning(
    old: str, new: str
) -> None:
    import pyramid_transient
    from pyramid_transient import exceptions

    for module in (pyramid_transient, exceptions):
        with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated: use {new}"):
            value = getattr(module, old)
        assert value is getattr(exceptions, new)
    # the new names read clearly beside Pyramid's and redis-py's
    import pyramid.exceptions
    import redis.exceptions

    assert not hasattr(pyramid.exceptions, new) and not hasattr(redis.exceptions, new)


def test_no_module_imports_a_peer_of_the_benchmarks_extra() -> None:
    # The peers are installed only with the benchmarks extra: an import of one in src/
    # works in a developer's venv that has it and fails for every user (and in CI).
    import pathlib
    import re

    peers = ("pyramid_session_redis", "redicts", "redis_schematics", "redis_om", "walrus",
             "pottery", "redis_lock")  # fmt: skip
    pattern = re.compile(rf"^\s*(?:from|import)\s+({'|'.join(peers)})\b", re.M)
    root = pathlib.Path(pyramid_transient.__file__).parent
    found = [
        f"{path.relative_to(root)}: {match.group(0).strip()}"
        for path in root.rglob("*.py")
        for match in pattern.finditer(path.read_text())
    ]
    assert found == []
