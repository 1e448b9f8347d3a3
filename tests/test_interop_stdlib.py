"""Against Python's own ssl module with hand-written framing: a third implementation of the same wire format."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from typing import Any

from interop import sslsocket_echo_server

import sslsocket

from helpers import LOCAL, accepting, expect


def stdlib_client(port: int, certs: Any) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    return ctx.wrap_socket(socket.create_connection((LOCAL, port), timeout=20), server_hostname="localhost")


def recv_exactly(sock: ssl.SSLSocket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the peer closed early"
        data += chunk
    return data


def test_packet_2_with_a_stdlib_client(certs: Any) -> None:
    packets = [b"", b"a", b"x" * 65535] + [bytes([n]) * n for n in range(100)]
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("binary_packet", 2)) as listen:
        sslsocket_echo_server(listen, f"-cert {certs.server}")
        tls = stdlib_client(listen.port, certs)
        tls.sendall(b"".join(struct.pack(">H", len(p)) + p for p in packets))
        for packet in packets:
            (length,) = struct.unpack(">H", recv_exactly(tls, 2))
            assert recv_exactly(tls, length) == packet
        tls.unwrap()  # close_notify
        tls.close()
        assert sslsocket.receive(timeout=10) == ("echo ended", "normal")


def test_packet_4_with_a_stdlib_server(certs: Any) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(certs.server))
    plain = socket.create_server((LOCAL, 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = plain.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            for _ in range(3):
                (length,) = struct.unpack(">I", recv_exactly(tls, 4))
                packet = recv_exactly(tls, length)
                received.append(packet)
                tls.sendall(struct.pack(">I", len(packet)) + packet[::-1])
            tls.unwrap()

    thread = threading.Thread(target=serve)
    thread.start()
    sock = sslsocket.client(
        "STREAM", "AF_INET", (LOCAL, plain.getsockname()[1]), ("packet", 4), f"-verify 2 -CAfile {certs.ca}"
    )
    for packet in ("one", "two" * 1000, ""):
        sock.deliver(packet)
    assert [expect(sock, 20) for _ in range(3)] == [("fromsocket", p[::-1]) for p in ("one", "two" * 1000, "")]
    assert expect(sock, 20) == ("socket_closed", "normal")
    thread.join(10)
    plain.close()
    assert received == [b"one", b"two" * 1000, b""]


def test_asn1_indefinite_length_arrives_whole_however_it_is_split(certs: Any) -> None:
    inner = b"\x30\x80" + b"\x04\x03abc" + b"\x30\x80" + b"\x02\x01\x07" + b"\x00\x00" + b"\x00\x00"
    value = b"\xa1\x80" + inner + b"\x04\x82\x01\x00" + b"z" * 256 + b"\x00\x00"
    definite = b"\x02\x01\x2a"
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), "asn1") as listen:
        accepted = accepting(listen, f"-cert {certs.server}")
        tls = stdlib_client(listen.port, certs)
        server = accepted()
    for i in range(len(value)):  # one TLS record per byte
        tls.sendall(value[i : i + 1])
        if i % 50 == 0:
            time.sleep(0.001)
    tls.sendall(definite + value + definite)  # and several values in one record
    for expected in (value, definite, value, definite):
        assert expect(server, 20) == ("fromsocket", expected.decode("latin-1"))
    tls.unwrap()
    tls.close()
    assert expect(server, 20) == ("socket_closed", "normal")
    server.close()


def test_many_small_records_in_one_tcp_segment_all_arrive(certs: Any) -> None:
    """The mediator stops reading after a record shorter than the largest and lets poll tell whether the kernel
    holds more: records that arrive together, some packets split across them, must all be read."""
    packets = [bytes([n % 251]) * (n % 40) for n in range(300)]
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("binary_packet", 4)) as listen:
        sslsocket_echo_server(listen, f"-cert {certs.server}")
        tls = stdlib_client(listen.port, certs)
        tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)  # every record below goes out together
        for n, packet in enumerate(packets):
            framed = struct.pack(">I", len(packet)) + packet
            cut = n % 3  # a third of the packets cross a record boundary
            for part in (framed[:cut], framed[cut:]) if cut else (framed,):
                tls.sendall(part)  # each write its own TLS record
        tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        for packet in packets:
            (length,) = struct.unpack(">I", recv_exactly(tls, 4))
            assert recv_exactly(tls, length) == packet
        tls.unwrap()
        tls.close()
        assert sslsocket.receive(timeout=10) == ("echo ended", "normal")
