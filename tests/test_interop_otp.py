"""Wire-exact with Erlang/OTP's ssl: {packet, N}, raw and asn1, both directions, mutual TLS, closes.

The peers are the escripts in tests/peers/, run by Debian's erlang-nox: small enough to read as a statement of
the wire format.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from interop import digest, otp_client, otp_echo_server, sslsocket_echo_server

import sslsocket

from helpers import LOCAL, expect

MiB = 1024 * 1024

# Per header size: the edge sizes a packet can have, and a burst.
SIZES = {
    "1": [0, 1, 100, 255],
    "2": [0, 1, 1000, 65535],
    "4": [0, 1, 70000, MiB],
}


def payload(size: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 256 for i in range(size)) if size < 4096 else os.urandom(size)


@pytest.mark.parametrize("header", ["1", "2", "4"])
@pytest.mark.parametrize("binary", [True, False], ids=["binary_packet", "packet"])
def test_sslsocket_client_to_otp_server(certs: Any, header: str, binary: bool) -> None:
    mode = ("binary_packet" if binary else "packet", int(header))
    packets = [payload(size, n) for n, size in enumerate(SIZES[header])] + [payload(30, n) for n in range(200)]
    with otp_echo_server(certs, header) as (_, port):
        sock = sslsocket.client("STREAM", "AF_INET", (LOCAL, port), mode, f"-verify 2 -CAfile {certs.ca}")
        for packet in packets:
            sock.deliver(packet)
        for packet in packets:
            assert expect(sock, 20) == ("fromsocket", packet if binary else packet.decode("latin-1"))
        sock.close()


@pytest.mark.parametrize("header", ["1", "2", "4"])
def test_otp_client_to_sslsocket_server(certs: Any, header: str) -> None:
    packets = [payload(size, n) for n, size in enumerate(SIZES[header])] + [payload(30, n) for n in range(200)]
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("binary_packet", int(header))) as listen:
        sslsocket_echo_server(listen, f"-cert {certs.server}")
        client = otp_client(listen.port, header, packets, "cacert", str(certs.ca))
        try:
            lines = client.rest(60)
        finally:
            client.stop()
        assert lines == [digest(p) for p in packets] + ["done"]
        assert sslsocket.receive(timeout=10) == ("echo ended", "normal")  # OTP's ssl:close is a close_notify


def test_raw_mode_both_directions(certs: Any) -> None:
    data = [b"raw ", b"bytes, ", payload(50000)]
    with otp_echo_server(certs, "0") as (_, port):
        sock = sslsocket.client(
            "STREAM", "AF_INET", (LOCAL, port), ("binary_packet", 0), f"-verify 2 -CAfile {certs.ca}"
        )
        for chunk in data:
            sock.deliver(chunk)
        got = b""
        while len(got) < sum(map(len, data)):
            kind, chunk = expect(sock, 20)
            assert kind == "fromsocket"
            got += chunk
        assert got == b"".join(data)
        sock.close()
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), "raw") as listen:
        sslsocket_echo_server(listen, f"-cert {certs.server}")
        client = otp_client(listen.port, "0", data)
        try:
            assert client.rest(30) == [digest(b"".join(data)), "done"]
        finally:
            client.stop()
        assert sslsocket.receive(timeout=10) == ("echo ended", "normal")


def ber(tag: bytes, content: bytes) -> bytes:
    n = len(content)
    length = (
        bytes([n])
        if n < 128
        else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big")
    )
    return tag + length + content


ASN1_VALUES = [
    ber(b"\x02", b"\x01"),  # INTEGER 1: short length
    ber(b"\x04", b"x" * 200),  # long form, one length byte
    ber(b"\x04", b"y" * 70000),  # long form, three length bytes
    ber(b"\x30", ber(b"\x02", b"\x05") + ber(b"\x0c", "héllo".encode())),  # a SEQUENCE
    ber(b"\x5f\x8f\x7f", b"high tag"),  # a high tag number (application class, tag 2047)
    ber(b"\x05", b""),  # NULL: zero length
]


def test_asn1_sslsocket_client_to_otp_server(certs: Any) -> None:
    with otp_echo_server(certs, "asn1") as (_, port):
        sock = sslsocket.client("STREAM", "AF_INET", (LOCAL, port), "asn1", f"-verify 2 -CAfile {certs.ca}")
        sock.deliver(b"".join(ASN1_VALUES))  # several values in one write: OTP splits them, and so do we
        for value in ASN1_VALUES:
            assert expect(sock, 20) == ("fromsocket", value.decode("latin-1"))
        sock.close()


def test_asn1_otp_client_to_sslsocket_server(certs: Any) -> None:
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), "asn1") as listen:
        sslsocket_echo_server(listen, f"-cert {certs.server}")
        client = otp_client(listen.port, "asn1", ASN1_VALUES)
        try:
            assert client.rest(30) == [digest(v) for v in ASN1_VALUES] + ["done"]
        finally:
            client.stop()
        assert sslsocket.receive(timeout=10) == ("echo ended", "normal")


def test_mutual_tls_with_an_otp_server(certs: Any) -> None:
    with otp_echo_server(certs, "2", verify=True) as (server, port):
        sock = sslsocket.client(
            "STREAM", "AF_INET", (LOCAL, port), ("packet", 2), f"-verify 2 -CAfile {certs.ca} -cert {certs.client}"
        )
        sock.deliver("with a certificate")
        assert expect(sock, 20) == ("fromsocket", "with a certificate")
        sock.close()
        # Without a certificate: OTP refuses. In TLS 1.3 the client's handshake ends before the server has checked
        # the client, so the refusal may come as the handshake error or as the first message.
        try:
            sock = sslsocket.client("STREAM", "AF_INET", (LOCAL, port), ("packet", 2), f"-verify 2 -CAfile {certs.ca}")
        except sslsocket.HandshakeError as exc:
            assert "certificate" in str(exc)
        else:
            kind, error = expect(sock, 20)
            assert kind == "socket_closed" and isinstance(error, sslsocket.ConnectionBroken)
            assert "certificate required" in str(error)
        server.expect("handshake_error")  # OTP logged the refused handshake


def test_mutual_tls_with_an_otp_client(certs: Any) -> None:
    flags = f"-cert {certs.server} -verify 2 -CAfile {certs.ca}"
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2)) as listen:
        sslsocket_echo_server(listen, flags)
        client = otp_client(
            listen.port, "2", [b"mutual"], "cert", str(certs.client), str(certs.client), "cacert", str(certs.ca)
        )
        try:
            assert client.rest(30) == [digest(b"mutual"), "done"]
        finally:
            client.stop()
        assert sslsocket.receive(timeout=10) == ("echo ended", "normal")
        sslsocket_echo_server(listen, flags)
        client = otp_client(listen.port, "2", [b"no certificate"], "cacert", str(certs.ca))
        try:
            output = client.rest(30)
        finally:
            client.stop()
        assert "done" not in output
        kind, error = sslsocket.receive(timeout=10)
        assert kind == "echo failed" and isinstance(error, sslsocket.HandshakeError)
        assert "certificate" in str(error)


def test_an_orderly_close_from_otp_is_normal(certs: Any) -> None:
    with otp_echo_server(certs, "2") as (server, port):
        sock = sslsocket.client("STREAM", "AF_INET", (LOCAL, port), ("packet", 2), f"-verify 2 -CAfile {certs.ca}")
        sock.deliver("before")
        sock.deliver("close")  # the echo server's cue to ssl:close
        assert expect(sock, 20) == ("fromsocket", "before")
        assert expect(sock, 20) == ("socket_closed", "normal")
        server.expect("closed_by_me")


def test_an_otp_peer_killed_mid_stream_is_an_error(certs: Any) -> None:
    with otp_echo_server(certs, "4") as (server, port):
        sock = sslsocket.client("STREAM", "AF_INET", (LOCAL, port), ("packet", 4), f"-verify 2 -CAfile {certs.ca}")
        sock.deliver("alive")
        assert expect(sock, 20) == ("fromsocket", "alive")
        os.kill(server.proc.pid, signal.SIGKILL)
        kind, error = expect(sock, 20)
        assert kind == "socket_closed" and isinstance(error, sslsocket.ConnectionBroken)
        assert error.reason in ("truncated", "reset")
