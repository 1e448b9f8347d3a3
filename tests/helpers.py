"""Helpers shared by the tests."""

from __future__ import annotations

import threading
from typing import Any

import sslsocket

LOCAL = "127.0.0.1"


def pair(mode: object = ("packet", 2), server_flags: str | None = None, client_flags: str = "",
         certs: Any = None, **client_kw: object) -> tuple[sslsocket.Socket, sslsocket.Socket]:
    """A connected (client, server) pair in this process, both controlled by the calling thread."""
    assert certs is not None
    me = sslsocket.self()
    listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), mode)
    try:
        accepted: list[object] = []

        def acceptor() -> None:
            try:
                accepted.append(sslsocket.accept(
                    listen, server_flags or f"-cert {certs.server}", timeout=10, owner=me
                ))
            except Exception as exc:  # handed to the test below
                accepted.append(exc)

        thread = threading.Thread(target=acceptor, name="test-acceptor")
        thread.start()
        client = sslsocket.client("STREAM", "AF_INET", (LOCAL, listen.port), mode, client_flags, **client_kw)
        thread.join(10)
    finally:
        sslsocket.close(listen)
    server = accepted[0]
    if isinstance(server, Exception):
        client.close()
        raise server
    assert isinstance(server, sslsocket.Socket)
    return client, server


def expect(sock: sslsocket.Socket, timeout: float = 5) -> Any:
    """The next message from ``sock`` in the calling process's mailbox, without its sender."""
    sender, body = sslsocket.receive(lambda m: m[0] is sock, timeout=timeout)
    return body
