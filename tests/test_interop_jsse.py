"""Against Java's own TLS stack (JSSE, ``tests/peers/JssePeer.java``), in both directions, with ``{packet, 4}``:
TLS 1.2 and 1.3, mutual TLS, orderly closes either way, and a peer that is killed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from interop import Peer, jsse_peer, sslsocket_echo_server

import sslsocket

from helpers import LOCAL, expect

PROTOCOLS = ["TLSv1.2", "TLSv1.3"]


@contextmanager
def jsse_server(certs: Any, protocol: str, *options: str) -> Iterator[tuple[Peer, int]]:
    peer = jsse_peer("server", protocol, str(certs.server), str(certs.ca), *options)
    try:
        yield peer, int(peer.expect("port ").split()[1])
    finally:
        peer.stop()


def connect(port: int, flags: str) -> sslsocket.Socket:
    return sslsocket.client("STREAM", "AF_INET", (LOCAL, port), ("packet", 4), flags)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_sslsocket_client_to_a_jsse_server_closing_first(certs: Any, protocol: str) -> None:
    with jsse_server(certs, protocol) as (java, port):
        sock = connect(port, f"-verify 2 -CAfile {certs.ca}")
        assert sock.protocol == protocol
        for text in ("hello", "x" * 70000, ""):
            sock.deliver(text)
            assert expect(sock, 20) == ("fromsocket", text)
        sock.close()
        assert java.expect("closed by peer") and java.expect("done")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_jsse_servers_orderly_close_is_normal(certs: Any, protocol: str) -> None:
    """Found from the outside: JSSE closes with user_canceled, then close_notify; OpenSSL 4 reads that as an
    unexpected EOF, and the close was reported as truncated."""
    with jsse_server(certs, protocol, "close-first") as (java, port):
        sock = connect(port, f"-verify 2 -CAfile {certs.ca}")
        sock.deliver("last words")
        assert expect(sock, 20) == ("fromsocket", "last words")
        assert expect(sock, 20) == ("socket_closed", "normal")
        java.expect("done")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_jsse_client_to_the_manuals_server(certs: Any, protocol: str) -> None:
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 4)) as listen:
        sslsocket_echo_server(listen, f"-cert {certs.server}")
        java = jsse_peer("client", protocol, str(listen.port), str(certs.ca), stdin="one\ntwo\nthree\n")
        try:
            output = java.rest(60)
        finally:
            java.stop()
        assert output[0].startswith(f"handshake {protocol}")
        assert output[1:] == ["got 3 one", "got 3 two", "got 5 three", "done"]
        assert sslsocket.receive(timeout=10) == ("echo ended", "normal")  # Java's close, whatever alert came first


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mutual_tls_with_a_jsse_server(certs: Any, protocol: str) -> None:
    with jsse_server(certs, protocol, "need-client-auth") as (java, port):
        sock = connect(port, f"-verify 2 -CAfile {certs.ca} -cert {certs.client}")
        sock.deliver("with a certificate")
        assert expect(sock, 20) == ("fromsocket", "with a certificate")
        sock.close()
        java.expect("closed by peer")
    with jsse_server(certs, protocol, "need-client-auth") as (java, port):
        # Without one: refused in the handshake in TLS 1.2, with whichever alert the JDK of the day chooses
        # (bad_certificate, handshake_failure); in 1.3 the client's handshake ends first, and the refusal is its
        # first record. Either way the client says that the server asked for a certificate, and what to do.
        if protocol == "TLSv1.2":
            with pytest.raises(sslsocket.HandshakeError) as caught:
                connect(port, f"-verify 2 -CAfile {certs.ca}")
            error: Exception = caught.value
        else:
            sock = connect(port, f"-verify 2 -CAfile {certs.ca}")
            kind, error = expect(sock, 20)
            assert kind == "socket_closed" and error.reason == "tls"
        assert "the server asked for a certificate from this client, which gave none: give -cert" in str(error)
        java.expect("error ")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mutual_tls_with_a_jsse_client(certs: Any, protocol: str) -> None:
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 4)) as listen:
        sslsocket_echo_server(listen, f"-cert {certs.server} -verify 2 -CAfile {certs.ca}")
        java = jsse_peer("client", protocol, str(listen.port), str(certs.ca), str(certs.client), stdin="mutual\n")
        try:
            assert java.rest(60)[1:] == ["got 6 mutual", "done"]
        finally:
            java.stop()
        assert sslsocket.receive(timeout=10) == ("echo ended", "normal")


def test_a_killed_jsse_peer_is_an_error_not_a_close(certs: Any) -> None:
    with jsse_server(certs, "TLSv1.3") as (java, port):
        sock = connect(port, f"-verify 2 -CAfile {certs.ca}")
        sock.deliver("before")
        assert expect(sock, 20) == ("fromsocket", "before")
        java.proc.kill()
        kind, error = expect(sock, 20)
        assert kind == "socket_closed" and isinstance(error, sslsocket.ConnectionBroken)
        assert error.reason in ("truncated", "reset")
