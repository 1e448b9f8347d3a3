"""Fixtures: certificates made fresh for the run, and a guard that fails any test leaking a thread or a descriptor."""

from __future__ import annotations

import datetime
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import sslsocket
from sslsocket.certs import make_cert
from sslsocket.workers import Workers

LOCAL = "127.0.0.1"

#: The peers' own programs: run by other interpreters (sslyze's), never imported by pytest.
collect_ignore = ["peers", "windows_surface.py"]  # a runner, not a module of tests


@dataclass
class Certs:
    dir: Path
    ca: Path  # the CA that signed server, client and expired
    server: Path  # cert + key in one file, for localhost and 127.0.0.1
    server_cert: Path  # the same certificate, without its key
    server_key: Path  # ... and its key alone
    client: Path
    expired: Path
    not_yet_valid: Path
    self_signed: Path
    wrong_host: Path  # signed by the CA, but names only other.example
    other_ca: Path  # a CA nobody here trusts
    by_other_ca: Path  # signed by other_ca, for localhost
    protected_key: Path  # server_key encrypted with PASSWORD
    password: str = "s3cret phrase"


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    ca = make_cert("sslsocket test CA", ca=True)
    other = make_cert("nobody's CA", ca=True)
    names = ("localhost", LOCAL)
    server = make_cert("localhost", issuer=ca, names=names)
    paths = {
        "ca": ca,
        "client": make_cert("test client", issuer=ca),
        "expired": make_cert(
            "localhost",
            issuer=ca,
            names=names,
            days=1,
            not_before=datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10),
        ),
        "not_yet_valid": make_cert(
            "localhost",
            issuer=ca,
            names=names,
            not_before=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=10),
        ),
        "self_signed": make_cert("localhost", names=names),
        "wrong_host": make_cert("other.example", issuer=ca),
        "other_ca": other,
        "by_other_ca": make_cert("localhost", issuer=other, names=names),
    }
    for name, identity in paths.items():
        identity.write(str(d / f"{name}.pem"))
    server.write(str(d / "server.pem"))
    server.write(str(d / "server_cert.pem"), str(d / "server_key.pem"))
    result = Certs(
        dir=d,
        server=d / "server.pem",
        server_cert=d / "server_cert.pem",
        server_key=d / "server_key.pem",
        protected_key=d / "protected_key.pem",
        **{name: d / f"{name}.pem" for name in paths},  # type: ignore[arg-type]
    )
    (d / "protected_key.pem").write_bytes(server.key_pem(result.password.encode()))
    return result


def _library_threads() -> list[threading.Thread]:
    """Threads still at work for the library: a mediator thread waiting for its next connection holds nothing."""
    return [
        t
        for t in threading.enumerate()
        if t.name.startswith(("sslsocket-", "process-")) and t.name != Workers.IDLE_NAME
    ]


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_leaks() -> object:
    """Fail a test that leaves a library thread, a spawned process or a file descriptor behind."""
    before = _fds()
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (_library_threads() or _fds() - before):
        time.sleep(0.02)
    threads, fds = _library_threads(), _fds() - before
    details = {fd: _describe(fd) for fd in fds}
    while True:  # what this test left in the main thread's mailbox must not reach the next one
        try:
            sslsocket.receive(timeout=0)
        except sslsocket.Timeout:
            break
    if threads or details:
        sslsocket.stop()
        pytest.fail(f"the test leaked threads {threads} and descriptors {details}")


def _describe(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"
