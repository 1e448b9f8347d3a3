"""Hostile and broken clients against the manual's own server: silent, slow, lying, flooding, or not speaking TLS.

Each test was, first, a failure found from the outside (a newcomer's run, TLS scanners, foreign peers): the manual's
server died on one non-TLS client, and 128 silent connections locked it out for 30 s.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sslsocket
from sslsocket import listener
from sslsocket.complaints import LOG_BURST, LOG_WINDOW, Complaints

from helpers import LOCAL, accepting, expect, wait_for


class ManualServer:
    """The manual's top/loop/connection, as the tutorial teaches it (a loop, not a recursion): a spawned process
    waits in ``accept`` for each connection, tells its father ``ok``, and echoes what arrives."""

    def __init__(self, flags: str) -> None:
        self.listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2))
        self.flags = flags
        self.top = sslsocket.spawn(self.loop)

    def loop(self) -> None:
        while True:
            pid = sslsocket.spawn(self.connection, sslsocket.self())
            sslsocket.receive(sslsocket.process.sent_by(pid))  # {Pid, ok}

    def connection(self, father: sslsocket.Pid) -> None:
        try:
            sock = sslsocket.accept(self.listen, self.flags)  # the manual's accept: waits for an established one
        except sslsocket.Closed:
            return  # the test is over
        father.send((sslsocket.self(), "ok"))
        while True:
            match sslsocket.receive():
                case (s, ("fromsocket", data)) if s is sock:
                    sock.deliver(data)
                case (s, ("socket_closed", _)) if s is sock:
                    return

    def echo(self, client_flags: str = "") -> str:
        """A good client: connect, send, read the echo, close."""
        with sslsocket.client("STREAM", "AF_INET", (LOCAL, self.listen.port), ("packet", 2), client_flags) as sock:
            sock.deliver("good client")
            kind, data = expect(sock, 10)
            assert kind == "fromsocket"
            return str(data)

    def end(self) -> None:
        sslsocket.exit(self.top, "test over")
        sslsocket.close(self.listen)


@pytest.fixture
def manual_server(certs: Any) -> Iterator[ManualServer]:
    server = ManualServer(f"-cert {certs.server}")
    yield server
    server.end()


def send_garbage(port: int, data: bytes) -> None:
    with socket.create_connection((LOCAL, port)) as bad:
        bad.sendall(data)
        bad.settimeout(10)
        try:
            while bad.recv(4096):  # until the server gives up on it
                pass
        except OSError:
            pass


def tls11_client(port: int) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python's own word on TLS 1.1, which is the point
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with socket.create_connection((LOCAL, port)) as raw, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw)


BAD_CLIENTS = {
    "plain TCP garbage": lambda port: send_garbage(port, b"hello, is this TLS?\n" * 3),
    "an HTTP request": lambda port: send_garbage(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    "random bytes": lambda port: send_garbage(port, bytes(random.Random(14).randrange(256) for _ in range(700))),
    "a TLS 1.1 client": tls11_client,
}


@pytest.mark.parametrize("bad", BAD_CLIENTS.values(), ids=BAD_CLIENTS.keys())
def test_the_manuals_server_survives_a_bad_client(
    manual_server: ManualServer, bad: Any, caplog: pytest.LogCaptureFixture
) -> None:
    assert manual_server.echo() == "good client"
    with caplog.at_level(logging.WARNING, logger="sslsocket"):
        bad(manual_server.listen.port)
        assert manual_server.echo() == "good client"  # served by the same acceptor, which went on waiting
        assert manual_server.echo() == "good client"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("handshake with client 127.0.0.1:" in w and "still accepting" in w for w in warnings), warnings


def test_the_manuals_server_survives_a_client_refused_at_verify_2(certs: Any, caplog: pytest.LogCaptureFixture) -> None:
    server = ManualServer(f"-cert {certs.server} -verify 2 -CAfile {certs.ca}")
    try:
        with caplog.at_level(logging.WARNING, logger="sslsocket"):
            refused = sslsocket.client("STREAM", "AF_INET", (LOCAL, server.listen.port), ("packet", 2), "")
            kind, error = expect(refused, 10)  # TLS 1.3: the refusal comes after the client's handshake
            assert kind == "socket_closed" and "certificate required" in str(error)
            assert server.echo(f"-cert {certs.client}") == "good client"
        assert any("certificate" in r.getMessage() for r in caplog.records)
    finally:
        server.end()


def test_handshake_errors_raise_makes_accept_raise_as_before(certs: Any) -> None:
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2)) as listen:
        threading.Thread(target=send_garbage, args=(listen.port, b"GET / HTTP/1.0\r\n\r\n")).start()
        with pytest.raises(sslsocket.HandshakeError, match="plain HTTP"):
            sslsocket.accept(listen, f"-cert {certs.server}", timeout=10, handshake_errors="raise")
        with pytest.raises(sslsocket.BadArgument, match="'loud'"):
            sslsocket.accept(listen, f"-cert {certs.server}", handshake_errors="loud")


def library_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sslsocket-") and t.name != "sslsocket-idle"]


def test_a_thousand_silent_connections_cost_no_thread_and_delay_nobody(manual_server: ManualServer) -> None:
    port = manual_server.listen.port
    silent = [socket.create_connection((LOCAL, port)) for _ in range(1000)]
    try:
        assert manual_server.echo() == "good client"  # behind a thousand silent ones
        # Every one of them was taken: a good client connecting now comes after all of them.
        assert manual_server.echo() == "good client"
        assert len(library_threads()) <= 3, library_threads()  # the listener, the mediators of good clients
    finally:
        for s in silent:
            s.close()


def test_silent_connections_are_cut_at_their_handshake_deadline(certs: Any) -> None:
    server = ManualServer(f"-cert {certs.server} -timeout 1")
    try:
        silent = [socket.create_connection((LOCAL, server.listen.port)) for _ in range(20)]
        assert server.echo() == "good client"
        for s in silent:
            s.settimeout(10)
            assert s.recv(1) == b""  # the server closed it: its deadline passed
            s.close()
    finally:
        server.end()


def test_a_hello_trickled_byte_by_byte_is_still_cut_at_the_deadline(certs: Any) -> None:
    hello = bytes.fromhex("160301")  # a ClientHello's record header, sent slower than any real client
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2)) as listen:
        trickler = socket.create_connection((LOCAL, listen.port))
        stop = threading.Event()

        def trickle() -> None:
            for byte in hello:
                trickler.send(bytes([byte]))
                if stop.wait(0.4):  # the client's own pace, not a synchronisation
                    return

        thread = threading.Thread(target=trickle)
        thread.start()
        start = time.monotonic()
        with pytest.raises(sslsocket.HandshakeError, match="within 1 s"):
            sslsocket.accept(listen, f"-cert {certs.server} -timeout 1", timeout=10, handshake_errors="raise")
        assert time.monotonic() - start < 5
        stop.set()
        thread.join()
        trickler.close()


def test_past_max_quiet_the_oldest_silent_connection_goes_first(
    manual_server: ManualServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener, "MAX_QUIET", 5)
    port = manual_server.listen.port
    silent = [socket.create_connection((LOCAL, port)) for _ in range(8)]
    assert manual_server.echo() == "good client"
    for s in silent[:3]:  # pushed out by newer ones
        s.settimeout(10)
        assert s.recv(1) == b""
    for s in silent:
        s.close()


def test_past_max_handshakes_a_stalled_handshake_makes_way_for_a_waiting_one(
    manual_server: ManualServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(listener, "MAX_HANDSHAKES", 3)
    monkeypatch.setattr(listener, "HANDSHAKE_STALL", 0.5)
    port = manual_server.listen.port
    with caplog.at_level(logging.WARNING, logger="sslsocket"):
        slow = []
        for _ in range(3):  # each sends a first byte, then nothing: a mediator waits in its handshake
            s = socket.create_connection((LOCAL, port))
            s.sendall(b"\x16")
            slow.append(s)
        registry_listener = sslsocket.registry.registry.listener(manual_server.listen)
        wait_for(lambda: registry_listener.counts()["handshaking"] == 3)
        assert manual_server.echo() == "good client"  # it waited its turn; the stalled one made way
        closed = 0
        for s in slow:
            s.settimeout(0.2)
            try:
                closed += s.recv(1) == b""
            except TimeoutError:
                pass
        assert closed == 1  # one slot was needed: one stalled handshake was aborted, not all
    assert any("its handshake made way (" in r.getMessage() for r in caplog.records)
    for s in slow:
        s.close()


def test_past_max_handshakes_clients_that_drip_their_hello_make_way_too(
    manual_server: ManualServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a review: a client that sends its ClientHello a byte every 0.3 s is never silent for long, and three
    of them held the three slots until their -timeout (30 s here) while an honest client waited behind them. A
    handshake now holds its slot at most HANDSHAKE_TURN while others wait."""
    monkeypatch.setattr(listener, "MAX_HANDSHAKES", 3)
    monkeypatch.setattr(listener, "HANDSHAKE_STALL", 0.5)
    monkeypatch.setattr(listener, "HANDSHAKE_TURN", 1.0)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    with pytest.raises(ssl.SSLWantReadError):
        context.wrap_bio(incoming, outgoing).do_handshake()
    hello = outgoing.read()  # a real ClientHello, to drip
    stop = threading.Event()

    def drip() -> None:
        with socket.create_connection((LOCAL, manual_server.listen.port)) as tcp:
            for byte in hello:
                if stop.wait(0.3):  # the pace of the drip, under HANDSHAKE_STALL
                    return
                try:
                    tcp.send(bytes([byte]))
                except OSError:
                    return  # the server made this one make way

    drippers = [threading.Thread(target=drip) for _ in range(3)]
    for thread in drippers:
        thread.start()
    registry_listener = sslsocket.registry.registry.listener(manual_server.listen)
    wait_for(lambda: registry_listener.counts()["handshaking"] == 3)
    try:
        assert manual_server.echo("-timeout 20") == "good client"  # not after the drippers' 30 s
    finally:
        stop.set()
        for thread in drippers:
            thread.join()


def test_a_burst_of_honest_clients_past_max_handshakes_is_served_not_reset(
    manual_server: ManualServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found from the outside: 2,000 clients at once to ``sslsocket serve``, 1,744 reset: past 128 handshakes
    the oldest was aborted, and in a burst of fast, honest clients that was the attack. Here 60 clients on Python's
    ``ssl`` with room for 4 handshakes at once: every one served, none aborted (``benchmarks/burst.py`` runs the
    2,000)."""
    monkeypatch.setattr(listener, "MAX_HANDSHAKES", 4)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    port = manual_server.listen.port
    results: list[object] = []

    def honest(n: int) -> None:
        try:
            with socket.create_connection((LOCAL, port), timeout=60) as tcp, context.wrap_socket(tcp) as tls:
                payload = f"client {n}".encode()
                tls.sendall(len(payload).to_bytes(2, "big") + payload)
                data = b""
                while len(data) < 2 + len(payload):
                    data += tls.recv(100) or b"!"
                results.append(data[2:].decode())
        except OSError as exc:
            results.append(exc)

    clients = [threading.Thread(target=honest, args=(n,)) for n in range(60)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(90)
    assert sorted(map(str, results)) == sorted(f"client {n}" for n in range(60))


SERVER_WITH_FEW_DESCRIPTORS = """
import resource, sys
sys.path.insert(0, sys.argv[2])
from test_attackers import ManualServer
import sslsocket
server = ManualServer("-cert " + sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
print(server.listen.port, flush=True)
sys.stdin.read()  # until the test is done
"""


def test_out_of_descriptors_the_oldest_silent_connection_goes_first(certs: Any) -> None:
    """A server allowed 64 descriptors, and 100 silent connections: the silent ones fill its table, and a good
    client is still served, at the oldest silent one's expense."""
    tests = str(Path(__file__).resolve().parent)
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_WITH_FEW_DESCRIPTORS, str(certs.server), tests],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    silent: list[socket.socket] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        silent = [socket.create_connection((LOCAL, port)) for _ in range(100)]
        with sslsocket.client("STREAM", "AF_INET", (LOCAL, port), ("packet", 2), "") as sock:
            sock.deliver("served")
            assert expect(sock, 20) == ("fromsocket", "served")
        silent[0].settimeout(10)
        assert silent[0].recv(1) == b""  # the oldest was dropped to make room
    finally:
        for s in silent:
            s.close()
        server.communicate("", timeout=30)


def test_a_connection_that_ended_is_freed_at_once_with_what_it_held(certs: Any) -> None:
    """Found from the outside: a finished Socket and its TLS connection pointed at each other, so only the garbage
    collector's rare full pass freed them, and with them an unfinished packet: ten clients that each sent 62 MiB
    of a 63 MiB packet and left kept gigabytes. With the collector off, the socket must go as soon as nothing of
    the program holds it."""
    import gc
    import weakref

    from helpers import stdlib_peer

    gc.collect()
    gc.disable()
    try:
        server, tls = stdlib_peer(certs, ("binary_packet", 4))
        gone = weakref.ref(server)
        tls.sendall((8 * 1024 * 1024).to_bytes(4, "big") + b"x" * (4 * 1024 * 1024))  # half a packet
        wait_for(lambda: gone().bytes_in >= 4 * 1024 * 1024)  # type: ignore[union-attr]
        tls.close()  # gone in the middle of the packet
        kind, error = expect(server)  # the owner keeps the error: that must not keep the socket
        assert kind == "socket_closed" and isinstance(error, sslsocket.ConnectionBroken)
        assert server.wait_closed(10)
        del server
        wait_for(lambda: gone() is None)  # the mediator's thread lets go of it as soon as it has ended
    finally:
        gc.enable()


def test_failed_handshakes_are_logged_ten_per_ten_seconds_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found from the outside: one WARNING line per failed handshake, so a flood of bad clients grows the log
    without bound."""
    now = [0.0]
    complaints = Complaints("accept on X", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="sslsocket"):
        for n in range(15):
            complaints.say(sslsocket.HandshakeError(f"bad client {n}"))
        now[0] = LOG_WINDOW + 1
        complaints.say(sslsocket.HandshakeError("bad client 15"))
    said = [r.getMessage() for r in caplog.records]
    assert said[:LOG_BURST] == [f"accept on X: bad client {n}; still accepting" for n in range(10)]
    assert said[10:] == [
        "accept on X: 5 more failed handshakes not shown (at most 10 per 10 s)",
        "accept on X: bad client 15; still accepting",
    ]


def test_a_client_that_leaves_before_a_word_is_not_reported(
    manual_server: ManualServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="sslsocket"):
        for _ in range(5):  # a port scanner, a load balancer's health check
            socket.create_connection((LOCAL, manual_server.listen.port)).close()
        assert manual_server.echo() == "good client"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ---- stop() and a closed listen socket: one reason, whenever the accept began -------------------------------


@pytest.mark.parametrize(
    ("end", "reason", "error"), [("stop", "stopped", sslsocket.Stopped), ("close", "closed", sslsocket.ListenClosed)]
)
def test_an_ended_listen_socket_gives_one_reason_whether_accept_waited_or_not(
    certs: Any, end: str, reason: str, error: Any
) -> None:
    listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2))
    me = sslsocket.self()

    def acceptor() -> None:
        try:
            sslsocket.accept(listen, f"-cert {certs.server}")
        except sslsocket.Closed as exc:
            me.send(("waited", exc))

    sslsocket.spawn(acceptor)
    if end == "stop":
        sslsocket.stop()
    else:
        sslsocket.close(listen)
    _, waited = sslsocket.receive(lambda m: m[0] == "waited", timeout=5)
    with pytest.raises(sslsocket.Closed) as late:
        sslsocket.accept(listen, f"-cert {certs.server}")
    for exc in (waited, late.value):
        assert exc.reason == ("accept", reason) and type(exc) is error


@pytest.mark.parametrize("end", ["stop", "close"])
def test_a_process_whose_accept_is_ended_ends_quietly(certs: Any, end: str) -> None:
    """Found from the outside: every waiting acceptor printed an unhandled-exception traceback at ``stop()``. The
    run fails on any such traceback (pytest's unhandled-thread-exception warning is an error here)."""
    listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2))
    pids = [sslsocket.spawn(sslsocket.accept, listen, f"-cert {certs.server}") for _ in range(3)]
    registry_listener = sslsocket.registry.registry.listener(listen)
    wait_for(lambda: len(registry_listener._waiters) == 3)
    if end == "stop":
        sslsocket.stop()
    else:
        sslsocket.close(listen)
    wait_for(lambda: not any(pid.alive for pid in pids))


def test_past_the_budget_the_connection_whose_peer_read_nothing_longest_is_closed(certs: Any) -> None:
    """Found from the outside: 20 clients that send and never read cost an echo server 9.6 MiB each, with no bound
    on their number but the connection limit. With ``max_buffered`` a listen socket's connections hold at most
    that for peers that read nothing: here room for one, and the second to fill up closes the first."""
    from sslsocket.server import HELD_BY_A_DEAF_PEER

    me = sslsocket.self()
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE

    def flood(sock: sslsocket.Socket, name: str) -> None:
        sslsocket.receive(lambda m: m == "yours", timeout=10)
        for _ in range(400):  # 25 MiB to a peer that reads nothing: past the budget, dropped
            sock.deliver(b"x" * 65536)
        kind, error = sslsocket.receive(lambda m: m[0] is sock, timeout=30)[1]
        me.send(("flooded", name, kind, getattr(error, "reason", error)))

    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 4), max_buffered=HELD_BY_A_DEAF_PEER) as listen:
        deaf = []
        for name in ("first", "second"):
            accepted = accepting(listen, f"-cert {certs.server}")
            deaf.append(context.wrap_socket(socket.create_connection((LOCAL, listen.port))))
            sock = accepted()
            pid = sslsocket.spawn(flood, sock, name)
            sslsocket.controlling_process(sock, pid)
            pid.send("yours")
            if name == "first":  # held up, its owner waiting for room, before the second comes
                wait_for(lambda sock=sock: sock.inbox_depth > 0 and sock._inbox.full())
        assert sslsocket.receive(lambda m: m[0] == "flooded", timeout=30) == (
            "flooded",
            "first",
            "socket_closed",
            "budget",
        )
        for tls in deaf:
            tls.close()  # the second one's end: its peer is gone
        assert sslsocket.receive(lambda m: m[0] == "flooded", timeout=30)[1] == "second"
