"""Against OpenSSL's own command line: raw mode, cipher choices and verify levels, both directions."""

from __future__ import annotations

from typing import Any

import pytest
from interop import openssl_client, openssl_server, sslsocket_echo_server

import sslsocket
from sslsocket.sessions import sessions

from helpers import LOCAL, expect


def test_raw_mode_with_s_server(certs: Any) -> None:
    with openssl_server(certs, "-rev") as (_, port):  # -rev: sends each line back reversed
        sock = sslsocket.client("STREAM", "AF_INET", (LOCAL, port), "raw", f"-verify 2 -CAfile {certs.ca}")
        sock.deliver("hello sslsocket\n")
        got = ""
        while "olleh" not in got:
            kind, data = expect(sock, 20)
            assert kind == "fromsocket"
            got += data
        assert "tekcoslss olleh" in got
        sock.close()


@pytest.mark.parametrize(
    ("server_options", "client_flags", "agreed"),
    [
        (
            ["-ciphersuites", "TLS_AES_128_GCM_SHA256"],
            "-ciphersuites TLS_AES_128_GCM_SHA256",
            ("TLSv1.3", "TLS_AES_128_GCM_SHA256"),
        ),
        (
            ["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"],
            "-ciphersuites TLS_CHACHA20_POLY1305_SHA256",
            ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"),
        ),
        (["-ciphersuites", "TLS_AES_128_GCM_SHA256"], "-ciphersuites TLS_CHACHA20_POLY1305_SHA256", None),
        (
            ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
            "-cipher ECDHE-ECDSA-AES256-GCM-SHA384",
            ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"),
        ),
        (
            ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
            "-cipher ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256",
            ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256"),
        ),
        (["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"], "-cipher ECDHE-ECDSA-AES256-GCM-SHA384", None),
    ],
    ids=["1.3 same", "1.3 one in common", "1.3 none in common", "1.2 same", "1.2 one in common", "1.2 none in common"],
)
def test_cipher_choices_against_s_server(
    certs: Any, server_options: list[str], client_flags: str, agreed: tuple[str, str] | None
) -> None:
    with openssl_server(certs, *server_options) as (_, port):
        flags = f"-verify 2 -CAfile {certs.ca} {client_flags}"
        if agreed is None:
            with pytest.raises(sslsocket.HandshakeError, match=r"refused the handshake|no cipher"):
                sslsocket.client("STREAM", "AF_INET", (LOCAL, port), "raw", flags)
            return
        sock = sslsocket.client("STREAM", "AF_INET", (LOCAL, port), "raw", flags)
        assert (sock.protocol, sock.cipher) == agreed
        sock.close()


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_client_certificate_required_by_s_server(certs: Any, version: str) -> None:
    required = ("-Verify", "2", "-CAfile", str(certs.ca), "-verify_return_error", version)
    with openssl_server(certs, *required) as (_, port):
        sock = sslsocket.client(
            "STREAM", "AF_INET", (LOCAL, port), "raw", f"-verify 2 -CAfile {certs.ca} -cert {certs.client}"
        )
        assert sock.protocol == ("TLSv1.2" if version == "-tls1_2" else "TLSv1.3")
        sock.close()
    with openssl_server(certs, *required) as (_, port):
        # Without one, the client is told what the server asked and what to do, whichever alert refused it: in
        # TLS 1.2 its handshake fails; in 1.3 it ends first, and the refusal is the first record read.
        if version == "-tls1_2":
            with pytest.raises(sslsocket.HandshakeError) as caught:
                sslsocket.client("STREAM", "AF_INET", (LOCAL, port), "raw", f"-verify 2 -CAfile {certs.ca}")
            error: Exception = caught.value
        else:
            sock = sslsocket.client("STREAM", "AF_INET", (LOCAL, port), "raw", f"-verify 2 -CAfile {certs.ca}")
            kind, error = expect(sock, 20)
            assert kind == "socket_closed" and error.reason == "tls"
        assert "the server asked for a certificate from this client, which gave none: give -cert" in str(error)


def test_a_self_signed_s_server_is_refused_at_verify_2_and_accepted_at_1(certs: Any) -> None:
    with (
        openssl_server(certs, cert=certs.self_signed) as (_, port),
        pytest.raises(sslsocket.HandshakeError, match="self signed"),
    ):
        sslsocket.client("STREAM", "AF_INET", (LOCAL, port), "raw", f"-verify 2 -CAfile {certs.ca}")
    with openssl_server(certs, cert=certs.self_signed) as (_, port):
        sock = sslsocket.client("STREAM", "AF_INET", (LOCAL, port), "raw", f"-verify 1 -CAfile {certs.ca}")
        assert "self signed" in sock.verify_result
        sock.close()


def test_s_client_to_an_sslsocket_raw_server(certs: Any) -> None:
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), "raw") as listen:
        sslsocket_echo_server(listen, f"-cert {certs.server}")
        client = openssl_client(
            listen.port,
            "-quiet",
            "-no_ign_eof",
            "-verify_return_error",
            "-CAfile",
            str(certs.ca),
            "-verify_hostname",
            "localhost",
            "-servername",
            "localhost",
        )
        try:
            client.write("through s_client\n")
            client.expect("through s_client")
            client.close_stdin()  # s_client sends its close_notify and ends
            client.rest(20)
        finally:
            client.stop()
        assert sslsocket.receive(timeout=10) == ("echo ended", "normal")


def test_s_client_with_tls_1_1_is_refused(certs: Any) -> None:
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), "raw") as listen:
        sslsocket_echo_server(listen, f"-cert {certs.server}")
        client = openssl_client(listen.port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
        try:
            client.close_stdin()
            output = client.rest(20)
        finally:
            client.stop()
        assert client.proc.returncode != 0, output
        kind, error = sslsocket.receive(timeout=10)
        assert kind == "echo failed" and "TLS 1.2 is the oldest accepted" in str(error)


@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_a_client_resumes_its_session_with_s_server(certs: Any, version: str) -> None:
    sessions.clear()  # nothing kept for a server of an earlier test on this port
    with openssl_server(certs, "-rev", version) as (_, port):
        resumed = []
        for _ in range(3):
            sock = sslsocket.client("STREAM", "AF_INET", ("localhost", port), "raw", f"-verify 2 -CAfile {certs.ca}")
            sock.deliver("hello\n")
            assert expect(sock, 20) == ("fromsocket", "olleh\n")  # the TLS 1.3 tickets came before it
            resumed.append(sock.resumed)
            assert sock.verify_result == "ok" and sock.peer_certificate is not None
            sock.close()
            assert sock.wait_closed(10)
    assert resumed == [False, True, True]


def test_s_client_reconnecting_resumes_with_an_sslsocket_server(certs: Any) -> None:
    """TLS 1.2: s_client -reconnect connects again before it reads a TLS 1.3 ticket, so it could not resume there."""
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), "raw") as listen:
        me = sslsocket.self()

        def acceptor() -> None:
            for _ in range(6):  # -reconnect: the first connection and five more
                sock = sslsocket.accept(listen, f"-cert {certs.server}", timeout=30)
                me.send(("resumed", sock.resumed))
                sock.close()

        sslsocket.spawn(acceptor)
        client = openssl_client(listen.port, "-reconnect", "-tls1_2")
        try:
            client.close_stdin()
            lines = client.rest(30)
        finally:
            client.stop()
        said = [line.split(",")[0] for line in lines if line.startswith(("New,", "Reused,"))]
        assert said == ["New"] + ["Reused"] * 5
        assert [sslsocket.receive(lambda m: m[0] == "resumed", timeout=10)[1] for _ in range(6)] == [False] + [True] * 5
