"""Peers that nobody here wrote, started and stopped by the tests: Erlang/OTP escripts, OpenSSL's commands and a
Java program on the JDK's own TLS stack (JSSE).

A missing program fails the test with what to install; it never skips, so a green run has always talked to the
real peers.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import sslsocket

LOCAL = "127.0.0.1"

PEERS = Path(__file__).resolve().parent / "peers"
PACKAGES = {
    "escript": "erlang-nox",
    "openssl": "openssl",
    "java": "openjdk-17-jdk-headless",
    "javac": "openjdk-17-jdk-headless",
    "tshark": "tshark",
}


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed: install the Debian package {PACKAGES[program]} (scripts/test does)")
    return path


class Peer:
    """A peer program: its output read line by line in a helper thread, killed by pid when done."""

    def __init__(self, args: list[str], stdin: str | None = None) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, name=f"peer-reader-{self.proc.pid}", daemon=True)
        self._reader.start()
        if stdin is not None:
            self.write(stdin)
            self.close_stdin()

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float = 20) -> str:
        """The next output line that starts with ``prefix``; fails the test with all output if none comes."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"{self.args[:2]} printed no {prefix!r} within {timeout} s; output: {self.seen}")
            if line is None:
                pytest.fail(f"{self.args[:2]} ended without printing {prefix!r}; output: {self.seen}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def rest(self, timeout: float = 20) -> list[str]:
        """Every line until the program ends."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.args[:2]} did not end within {timeout} s; output so far: {self.seen}")
        self._reader.join(5)
        while not self.lines.empty():
            line = self.lines.get_nowait()
            if line is not None:
                self.seen.append(line)
        return self.seen

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


@contextmanager
def started(args: list[str], stdin: str | None = None) -> Iterator[Peer]:
    peer = Peer(args, stdin)
    try:
        yield peer
    finally:
        peer.stop()


@contextmanager
def otp_echo_server(certs: Any, packet: str, verify: bool = False) -> Iterator[tuple[Peer, int]]:
    """An Erlang/OTP ``ssl:listen`` echo server with ``{packet, Packet}``; yields it and its port."""
    args = [need("escript"), str(PEERS / "echo_server.escript"), packet, str(certs.server_cert), str(certs.server_key)]
    if verify:
        args += ["verify", str(certs.ca)]
    with started(args) as peer:
        port = int(peer.expect("port ").split()[1])
        yield peer, port


@contextmanager
def openssl_server(certs: Any, *options: str, cert: Any = None) -> Iterator[tuple[Peer, int]]:
    """``openssl s_server`` on 127.0.0.1 with ``options``; yields it and its port."""
    cert = cert or certs.server_cert
    key = certs.server_key if cert == certs.server_cert else cert
    args = [need("openssl"), "s_server", "-accept", f"{LOCAL}:0", "-cert", str(cert), "-key", str(key), *options]
    with started(args) as peer:
        port = int(peer.expect("ACCEPT ").rsplit(":", 1)[1])
        yield peer, port


def openssl_client(port: int, *options: str) -> Peer:
    """``openssl s_client`` to 127.0.0.1:port; its standard input stays open for ``write``."""
    return Peer([need("openssl"), "s_client", "-connect", f"{LOCAL}:{port}", *options])


def otp_client(port: int, packet: str, packets: list[bytes], *options: str) -> Peer:
    """An Erlang/OTP ``ssl:connect`` client that sends ``packets`` and reports a digest of each reply."""
    stdin = "".join("p" + p.hex() + "\n" for p in packets)
    return Peer([need("escript"), str(PEERS / "client.escript"), str(port), packet, *options], stdin)


def sslyze_python() -> str:
    """The Python of sslyze's own virtual environment (``SSLSOCKET_SSLYZE``, which scripts/test sets)."""
    path = os.environ.get("SSLSOCKET_SSLYZE") or str(PEERS.parent.parent / ".venv-sslyze" / "bin" / "python")
    if not os.path.exists(path):
        pytest.fail(
            f"sslyze is not installed at {path}: scripts/test installs it (python3 -m venv .venv-sslyze &&"
            " .venv-sslyze/bin/pip install 'sslyze>=6.3,<7')"
        )
    return path


_jsse_classes: list[str] = []


def jsse_peer(*args: str, stdin: str | None = None) -> Peer:
    """``tests/peers/JssePeer.java`` (compiled once per run) with ``args``: see that file."""
    if not _jsse_classes:
        out = tempfile.mkdtemp(prefix="jsse-peer-")
        subprocess.run([need("javac"), "-d", out, str(PEERS / "JssePeer.java")], check=True, timeout=120)
        _jsse_classes.append(out)
    return Peer([need("java"), "-cp", _jsse_classes[0], "JssePeer", *args], stdin)


def digest(data: bytes) -> str:
    """What client.escript prints for a reply."""
    return f"got {len(data)} {hashlib.sha256(data).hexdigest().upper()}"


def sslsocket_echo_server(
    listen: sslsocket.ListenSocket, flags: str, connections: int = 1, handshake_errors: str = "raise"
) -> sslsocket.Pid:
    """The manual's server shape: a spawned process per connection, each echoing every packet back. Each tells
    the caller how its connection ended: ``("echo ended", reason)``, or ``("echo failed", error)`` (a failed
    handshake too, unless ``handshake_errors="log"``)."""
    parent = sslsocket.self()

    def connection() -> None:
        try:
            sock = sslsocket.accept(listen, flags, timeout=30, handshake_errors=handshake_errors)
        except sslsocket.SSLSocketError as exc:
            parent.send(("echo failed", exc))
            return
        while True:
            match sslsocket.receive(timeout=30):
                case (s, ("fromsocket", data)) if s is sock:
                    sock.deliver(data)
                case (s, ("socket_closed", reason)) if s is sock:
                    parent.send(("echo ended", reason))
                    return

    def acceptors() -> None:
        for _ in range(connections):
            sslsocket.spawn(connection)

    return sslsocket.spawn(acceptors)
