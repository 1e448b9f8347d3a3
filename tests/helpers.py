"""Helpers shared by the tests."""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import sslsocket

LOCAL = "127.0.0.1"


def accepting(
    listen: sslsocket.ListenSocket, flags: str, handshake_errors: str = "raise", **kw: Any
) -> Callable[[], Any]:
    """Accept on ``listen`` in a helper thread, for the calling process; the returned function waits for the
    outcome: the accepted Socket, or the SSLSocketError that accept raised (a failed handshake too, unless
    ``handshake_errors="log"``)."""
    me = sslsocket.self()
    result: list[Any] = []

    def acceptor() -> None:
        try:
            result.append(
                sslsocket.accept(listen, flags, timeout=10, owner=me, handshake_errors=handshake_errors, **kw)
            )
        except sslsocket.SSLSocketError as exc:
            result.append(exc)

    thread = threading.Thread(target=acceptor, name="test-acceptor")
    thread.start()

    def outcome() -> Any:
        thread.join(15)
        return result[0]

    return outcome


def waiting_acceptor(listen: sslsocket.ListenSocket, flags: str, ends: type[BaseException]) -> sslsocket.Pid:
    """A process waiting in ``accept``; when the wait ends with ``ends`` (Closed, Exit...), it sends the caller
    ``("accept ended", reason)``."""
    parent = sslsocket.self()

    def acceptor() -> None:
        try:
            sslsocket.accept(listen, flags)
        except ends as exc:
            parent.send(("accept ended", getattr(exc, "reason", None)))

    return sslsocket.spawn(acceptor)


def pair(
    mode: object = ("packet", 2),
    server_flags: str | None = None,
    client_flags: str = "",
    certs: Any = None,
    host: str = LOCAL,
    family: str = "AF_INET",
    client_mode: object = None,
    **client_kw: Any,
) -> tuple[sslsocket.Socket, sslsocket.Socket]:
    """A connected (client, server) pair in this process, both controlled by the calling process."""
    listen = sslsocket.listen("STREAM", family, (host, 0), mode)
    try:
        server = accepting(listen, server_flags or f"-cert {certs.server}")
        try:
            client = sslsocket.client(
                "STREAM", family, (host, listen.port), client_mode or mode, client_flags, **client_kw
            )
        finally:
            accepted = server()
    finally:
        sslsocket.close(listen)
    if isinstance(accepted, Exception):
        client.close()
        raise accepted
    return client, accepted


def expect(sock: sslsocket.Socket, timeout: float = 5) -> Any:
    """The next message from ``sock`` in the calling process's mailbox, without its sender."""
    _sender, body = sslsocket.receive(lambda m: m[0] is sock, timeout=timeout)
    return body


def stdlib_peer(certs: Any, mode: Any = ("packet", 2)) -> tuple[sslsocket.Socket, ssl.SSLSocket]:
    """An sslsocket server and, connected to it, a client of Python's own ssl module."""
    listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), mode)
    server = accepting(listen, f"-cert {certs.server}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = ctx.wrap_socket(socket.create_connection((LOCAL, listen.port)))
    accepted = server()
    sslsocket.close(listen)
    return accepted, raw


def thread_cpu_seconds(thread: threading.Thread) -> float:
    """The CPU time (user and system) a running thread has used so far, from Linux's /proc."""
    with open(f"/proc/self/task/{thread.native_id}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(predicate: Callable[[], object], timeout: float = 10) -> None:
    """Wait until ``predicate()`` is true; fail the test if it is not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
