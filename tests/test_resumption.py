"""Session resumption: a client connecting again to the same server with the same flags resumes its session by
default (``-reuse_sessions false`` turns it off); what a resumed connection reports, and what it may not weaken."""

from __future__ import annotations

import socket
import ssl
import threading
from typing import Any

import pytest
from OpenSSL import SSL

import sslsocket
from sslsocket.flags import parse_flags
from sslsocket.sessions import Sessions, sessions

from helpers import LOCAL, accepting, expect

CLIENT_FLAGS = "-verify 2 -CAfile {ca}"


@pytest.fixture(autouse=True)
def no_sessions_kept() -> None:
    """Each test starts with no session kept: a server of an earlier test, on a port used again, could be offered
    one (it would fail to resume, and the test would be right; but the tests here count the resumed)."""
    sessions.clear()


def connect_twice(
    certs: Any, client_flags: str, server_flags: str | None = None, host: str = "localhost"
) -> list[tuple[sslsocket.Socket, sslsocket.Socket]]:
    """Two connections, one after the other, from one client to one server (each closed after an echo)."""
    pairs = []
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2)) as listen:
        for _ in range(2):
            server = accepting(listen, server_flags or f"-cert {certs.server}")
            client = sslsocket.client("STREAM", "AF_INET", (host, listen.port), ("packet", 2), client_flags)
            accepted = server()
            assert isinstance(accepted, sslsocket.Socket), accepted
            client.deliver("hello")  # the answer carries the TLS 1.3 tickets, read before it
            assert expect(accepted) == ("fromsocket", "hello")
            accepted.deliver("welcome")
            assert expect(client) == ("fromsocket", "welcome")
            client.close()
            assert expect(accepted) == ("socket_closed", "normal")
            accepted.close()
            pairs.append((client, accepted))
    return pairs


def test_a_client_connecting_again_resumes_and_reports_what_the_full_handshake_did(certs: Any) -> None:
    (first, first_server), (again, again_server) = connect_twice(certs, CLIENT_FLAGS.format(ca=certs.ca))
    assert (first.resumed, first_server.resumed) == (False, False)
    assert (again.resumed, again_server.resumed) == (True, True)
    assert again.protocol == first.protocol == "TLSv1.3"
    assert again.peer_certificate == first.peer_certificate is not None
    assert again.verify_result == first.verify_result == "ok"


def test_reuse_sessions_false_makes_a_full_handshake_each_time(certs: Any) -> None:
    flags = CLIENT_FLAGS.format(ca=certs.ca) + " -reuse_sessions false"
    (first, _), (again, again_server) = connect_twice(certs, flags)
    assert (first.resumed, again.resumed, again_server.resumed) == (False, False, False)
    assert again.verify_result == "ok"


def test_a_resumed_connection_keeps_the_errors_its_session_forgave(certs: Any) -> None:
    """-verify 1 forgives an unknown issuer: the resumed connection says so too, not ``ok``."""
    (first, _), (again, _) = connect_twice(certs, "-verify 1", f"-cert {certs.self_signed}")
    assert again.resumed
    assert first.verify_result.startswith("accepted despite: ")
    assert again.verify_result == first.verify_result


def test_a_server_that_checked_its_client_reports_the_same_when_the_client_resumes(certs: Any) -> None:
    server_flags = f"-cert {certs.server} -verify 2 -CAfile {certs.ca}"
    client_flags = f"-cert {certs.client} " + CLIENT_FLAGS.format(ca=certs.ca)
    (_, first), (_, again) = connect_twice(certs, client_flags, server_flags)
    assert again.resumed
    assert again.peer_certificate == first.peer_certificate is not None
    assert again.verify_result == first.verify_result == "ok"


def test_verify_2_is_not_weakened_by_a_session_kept_for_another_server_on_that_port(
    certs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session kept for the good server on a port; then another server, whose certificate names another host,
    listens on that port: the client offers its session, the new server cannot resume it, and the full handshake
    refuses the certificate. A client with another -CAfile offers nothing at all."""
    flags = CLIENT_FLAGS.format(ca=certs.ca)
    offered: list[object] = []
    set_session = SSL.Connection.set_session
    monkeypatch.setattr(SSL.Connection, "set_session", lambda conn, s: offered.append(s) or set_session(conn, s))
    listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2))
    port = listen.port
    server = accepting(listen, f"-cert {certs.server}")
    client = sslsocket.client("STREAM", "AF_INET", ("localhost", port), ("packet", 2), flags)
    accepted = server()
    accepted.deliver("tickets first")
    assert expect(client) == ("fromsocket", "tickets first")
    client.close()
    assert expect(accepted) == ("socket_closed", "normal")
    accepted.close()
    sslsocket.close(listen)
    assert len(sessions) == 1 and not offered
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, port), ("packet", 2)) as impostor:
        refused = accepting(impostor, f"-cert {certs.wrong_host}", handshake_errors="raise")
        with pytest.raises(sslsocket.HandshakeError) as caught:
            sslsocket.client("STREAM", "AF_INET", ("localhost", port), ("packet", 2), flags)
        assert caught.value.reason == "hostname"
        assert isinstance(refused(), sslsocket.SSLSocketError)
        assert len(offered) == 1  # the kept session was offered, and weakened nothing
        other_ca = f"-verify 2 -CAfile {certs.other_ca}"
        refused = accepting(impostor, f"-cert {certs.wrong_host}", handshake_errors="raise")
        with pytest.raises(sslsocket.HandshakeError):
            sslsocket.client("STREAM", "AF_INET", ("localhost", port), ("packet", 2), other_ca)
        assert isinstance(refused(), sslsocket.SSLSocketError)
        assert len(offered) == 1  # other flags, another Context: nothing offered


def test_a_session_is_kept_per_host_as_given(certs: Any) -> None:
    """The same server by another name is another server: no session of the first is offered to it."""
    flags = "-verify 1"
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2)) as listen:
        resumed = []
        for host in ("localhost", LOCAL, LOCAL):
            server = accepting(listen, f"-cert {certs.server}")
            client = sslsocket.client("STREAM", "AF_INET", (host, listen.port), ("packet", 2), flags)
            accepted = server()
            accepted.deliver("tickets first")
            assert expect(client) == ("fromsocket", "tickets first")
            resumed.append(client.resumed)
            client.close()
            assert expect(accepted) == ("socket_closed", "normal")
            accepted.close()
    assert resumed[1:] == [False, True]


def test_a_client_resumes_with_a_python_ssl_server(certs: Any) -> None:
    """A server we did not write: Python's ssl, issuing TLS 1.3 tickets as OpenSSL does by default."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs.server)
    listener = socket.create_server((LOCAL, 0))
    reused: list[bool] = []

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"\0\5hello")
                reused.append(tls.session_reused)
                tls.recv(1)  # the client's close_notify

    thread = threading.Thread(target=serve)
    thread.start()
    flags = CLIENT_FLAGS.format(ca=certs.ca)
    seen = []
    for _ in range(2):
        client = sslsocket.client("STREAM", "AF_INET", ("localhost", listener.getsockname()[1]), ("packet", 2), flags)
        assert expect(client) == ("fromsocket", "hello")
        seen.append(client.resumed)
        client.close()
        assert client.wait_closed(10)
    thread.join(10)
    listener.close()
    assert seen == reused == [False, True]


def test_the_store_forgets_the_least_recently_used_first() -> None:
    store = Sessions(size=2)
    a, b, c = object(), object(), object()
    store.put("a", a)  # type: ignore[arg-type]
    store.put("b", b)  # type: ignore[arg-type]
    assert store.get("a") is a  # now the most recent
    store.put("c", c)  # type: ignore[arg-type]
    assert (store.get("a"), store.get("b"), store.get("c")) == (a, None, c)
    assert len(store) == 2


@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False)])
def test_reuse_sessions_flag(text: str, value: bool) -> None:
    assert parse_flags(f"-reuse_sessions {text}", env={}).reuse_sessions is value
    assert parse_flags("", env={}).reuse_sessions is True


def test_a_bad_reuse_sessions_value_names_the_flag() -> None:
    with pytest.raises(sslsocket.FlagError, match=r"-reuse_sessions yes: give true or false"):
        parse_flags("-reuse_sessions yes", env={})


def test_a_server_at_verify_1_resumes_nothing_so_that_what_it_forgave_is_reported_each_time(certs: Any) -> None:
    server_flags = f"-cert {certs.server} -verify 1 -CAfile {certs.ca}"
    client_flags = f"-cert {certs.self_signed} " + CLIENT_FLAGS.format(ca=certs.ca)
    (_, first), (_, again) = connect_twice(certs, client_flags, server_flags)
    assert (first.resumed, again.resumed) == (False, False)
    assert first.verify_result.startswith("accepted despite: ")
    assert again.verify_result == first.verify_result
