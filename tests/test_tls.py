"""rediss:// with the transient.ssl.* settings, against a real TLS redis-server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pyramid_transient import RedisManager
from pyramid_transient.testing import RedisServer, find_server, free_port, in_ci


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        if in_ci():
            pytest.fail("CI=true but openssl is missing: the TLS tests need it")
        pytest.skip("openssl is not on PATH: cannot make certificates for the TLS tests")
    path = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=transient-test-ca", cwd=path)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=127.0.0.1", cwd=path)  # fmt: skip
    (path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf",
             cwd=path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def tls_port(certs: Path) -> Iterator[int]:
    binary = find_server()
    if not binary.tls:
        reason = f"the TLS tests need a server built with TLS, not {binary.describe()}"
        if in_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    port = free_port()
    server = RedisServer(
        args=[
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(certs / "server.crt"),
            "--tls-key-file",
            str(certs / "server.key"),
            "--tls-ca-cert-file",
            str(certs / "ca.crt"),
            "--tls-auth-clients",
            "no",
        ]
    )
    # The plain port is off, so wait for readiness over TLS ourselves.
    server.wait_ready = lambda timeout=10.0: _wait_tls(port, certs, timeout)  # type: ignore[method-assign]
    with server:
        yield port


def _wait_tls(port: int, certs: Path, timeout: float) -> None:
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            client = redis.Redis(
                host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(certs / "ca.crt")
            )
            client.ping()
            client.close()
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_rediss_with_the_ca_reads_and_writes(certs: Path, tls_port: int) -> None:
    manager = RedisManager.from_settings(
        {
            "transient.url": f"rediss://127.0.0.1:{tls_port}",
            "transient.ssl.ca_certs": str(certs / "ca.crt"),
            "transient.db.celery": "3",
        }
    )
    try:
        manager.get("celery").set("k", "v")
        assert manager.get("celery").get("k") == b"v"
        assert manager.url_for("celery") == f"rediss://127.0.0.1:{tls_port}/3"
    finally:
        manager.close()


def test_rediss_without_the_ca_refuses_the_server(tls_port: int) -> None:
    manager = RedisManager.from_settings({"transient.url": f"rediss://127.0.0.1:{tls_port}"})
    try:
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            manager.get().ping()
    finally:
        manager.close()


def test_cert_reqs_none_skips_verification(tls_port: int) -> None:
    manager = RedisManager.from_settings(
        {
            "transient.url": f"rediss://127.0.0.1:{tls_port}",
            "transient.ssl.cert_reqs": "none",
            "transient.ssl.check_hostname": "false",
        }
    )
    try:
        assert manager.get().ping() is True
    finally:
        manager.close()
