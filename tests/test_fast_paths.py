"""The fast paths: an owner's answer written in the owner's own thread while its mediator sleeps, and what each
must keep of the design's promises (order, close, controlling_process, stop, exit)."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from typing import Any

import pytest
from OpenSSL import SSL

import sslsocket
from sslsocket import mediator, tls

from helpers import LOCAL, accepting, expect, pair, wait_for

MiB = 1024 * 1024


def record_writes(sock: sslsocket.Socket, monkeypatch: pytest.MonkeyPatch) -> list[tuple[threading.Thread, str]]:
    """Every ``SSL_write`` of ``sock`` from now on: the thread that made it, and ``"done"`` or ``"wait"``. Each is
    recorded as it begins (the peer may read its bytes before the write returns), its outcome when it returns (the
    turn makes them one at a time)."""
    calls: list[tuple[threading.Thread, str]] = []

    def recorded(conn: SSL.Connection, data: Any) -> tuple[int, int]:
        if conn is not sock._conn:
            return tls.write(conn, data)
        calls.append((threading.current_thread(), "writing"))
        index = len(calls) - 1
        sent, wait = tls.write(conn, data)
        calls[index] = (threading.current_thread(), "wait" if wait else "done")
        return sent, wait

    monkeypatch.setattr(mediator, "write", recorded)
    return calls


def asleep(sock: sslsocket.Socket) -> None:
    """Wait until the mediator of ``sock`` sleeps in poll with nothing to do (so that an answer may go direct)."""
    wait_for(lambda: sock._inbox._napping and not sock._inbox.queue and not sock._turn.locked())


def test_a_first_packet_is_written_in_the_senders_thread(certs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing written yet: the owner's first packet needs no hand-off either (a client's request right after its
    handshake), the second, with nothing read between, goes through the inbox."""
    client, server = pair(certs=certs)
    writes = record_writes(server, monkeypatch)
    asleep(server)
    server.deliver("hello first")
    server.deliver("then a stream")
    assert [expect(client) for _ in "ab"] == [("fromsocket", "hello first"), ("fromsocket", "then a stream")]
    assert [thread for thread, _ in writes] == [threading.current_thread(), server.thread]
    client.close()
    server.close()


def test_an_answer_is_written_in_the_senders_thread_a_stream_in_the_mediators(
    certs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, server = pair(certs=certs)
    writes = record_writes(server, monkeypatch)
    client.deliver("ping")
    assert expect(server) == ("fromsocket", "ping")
    asleep(server)
    server.deliver("pong")  # an answer: the request/response rhythm
    assert expect(client) == ("fromsocket", "pong")
    assert writes == [(threading.current_thread(), "done")]
    for i in range(200):  # nothing read since: a one-way stream, coalesced by the mediator
        server.deliver(str(i))
    assert [expect(client)[1] for _ in range(200)] == [str(i) for i in range(200)]
    assert len(writes) > 1 and {thread for thread, _ in writes[1:]} == {server.thread}
    client.close()
    assert expect(server) == ("socket_closed", "normal")
    server.close()


def test_a_burst_after_a_request_keeps_its_order(certs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The burst's first packet may go direct, the rest through the inbox: the peer sees them in order."""
    client, server = pair(("packet", 4), certs=certs)
    writes = record_writes(server, monkeypatch)
    for round_ in range(50):
        client.deliver(f"request {round_}")
        assert expect(server) == ("fromsocket", f"request {round_}")
        asleep(server)
        for i in range(20):
            server.deliver(f"{round_}.{i}")
        assert [expect(client)[1] for _ in range(20)] == [f"{round_}.{i}" for i in range(20)]
    assert (threading.current_thread(), "done") in writes  # the fast path was taken
    client.close()
    assert expect(server) == ("socket_closed", "normal")
    server.close()


def test_senders_racing_on_a_callback_owned_socket_each_keep_their_order(
    certs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A callback-owned socket takes packets from any thread. Four senders, each waiting for the peer's answer to
    its last packet before the next (so that their writes go direct, and race each other and the mediator): each
    sender's packets arrive in its order, every one once."""
    listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 4))
    senders, count = 4, 150
    answered = [threading.Semaphore(0) for _ in range(senders)]

    def on_message(msg: Any) -> None:
        if msg[1][0] == "fromsocket":
            answered[int(msg[1][1].split(":")[0])].release()

    accepted: list[sslsocket.Socket] = []
    acceptor = threading.Thread(
        target=lambda: accepted.append(sslsocket.accept(listen, f"-cert {certs.server}", owner=on_message))
    )
    acceptor.start()
    client = sslsocket.client("STREAM", "AF_INET", (LOCAL, listen.port), ("packet", 4), "")
    acceptor.join(10)
    sslsocket.close(listen)
    (server,) = accepted
    writes = record_writes(server, monkeypatch)

    def sender(name: int) -> None:
        for i in range(count):
            server.deliver(f"{name}:{i}")
            assert answered[name].acquire(timeout=10)

    threads = [threading.Thread(target=sender, args=(n,), name=f"sender-{n}") for n in range(senders)]
    for thread in threads:
        thread.start()
    got: dict[str, list[int]] = {str(n): [] for n in range(senders)}
    for _ in range(senders * count):
        packet = expect(client, 20)[1]
        name, number = packet.split(":")
        got[name].append(int(number))
        client.deliver(packet)  # the answer its sender waits for
    for thread in threads:
        thread.join(10)
    assert got == {str(n): list(range(count)) for n in range(senders)}
    assert any(thread in threads for thread, _ in writes)  # senders wrote direct
    client.close()
    assert server.wait_closed(10)


def test_a_direct_write_that_blocks_hands_its_bytes_on_and_a_close_after_it_sends_everything_first(
    certs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that reads nothing for a while: the owner's direct write meets WantWrite, the mediator writes the
    rest (exactly once), and the owner's close, right after, waits for all of it."""
    listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 4))
    accepted = accepting(listen, f"-cert {certs.server}")
    tcp = socket.socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    tcp.connect((LOCAL, listen.port))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    peer = ctx.wrap_socket(tcp)
    server = accepted()
    sslsocket.close(listen)
    writes = record_writes(server, monkeypatch)
    peer.sendall(struct.pack(">I", 7) + b"request")
    assert expect(server) == ("fromsocket", "request")
    asleep(server)
    payload = bytes(range(256)) * (16 * MiB // 256)
    server.deliver(payload)  # more than the kernel holds: blocks in this thread's SSL_write
    server.close()
    mine = [outcome for thread, outcome in writes if thread is threading.current_thread()]
    assert mine[-1] == "wait"
    assert all(thread is threading.current_thread() for thread, _ in writes[: len(mine)])  # they came first
    received = bytearray()
    while chunk := peer.recv(1024 * 1024):  # b"" only after close_notify
        received += chunk
    assert bytes(received) == struct.pack(">I", len(payload)) + payload
    assert {thread for thread, _ in writes[len(mine) :]} == {server.thread}
    peer.close()
    assert server.wait_closed(10)


def test_an_exit_that_lands_as_the_client_handshake_ends_is_an_exit_and_the_socket_closes(
    certs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """exit() while client() is in its handshake, just as the handshake ends: client() raises Exit, as from any
    wait, and the socket is closed, never handed back half-aborted."""
    read = tls.PeerReport.read

    def exit_then_read(conn: SSL.Connection, server: bool, level: int, errors: list[tuple[int, int]]) -> Any:
        if not server:  # in the thread of client(): the handshake is done
            sslsocket.exit(sslsocket.self(), "late")
        return read(conn, server, level, errors)

    monkeypatch.setattr(tls.PeerReport, "read", staticmethod(exit_then_read))
    with sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("packet", 2)) as listen:
        server = accepting(listen, f"-cert {certs.server}")
        with pytest.raises(sslsocket.Exit) as caught:
            sslsocket.client("STREAM", "AF_INET", (LOCAL, listen.port), ("packet", 2), "")
        assert caught.value.reason == "late"
        accepted = server()
        assert expect(accepted)[0] == "socket_closed"
        accepted.close()


def _echo(parent: sslsocket.Pid) -> None:
    sock = sslsocket.receive(lambda m: isinstance(m, sslsocket.Socket), timeout=10)
    parent.send("ready")
    me = sslsocket.self()
    while True:
        _, body = sslsocket.receive(lambda m: m[0] is sock, timeout=20)
        if body[0] != "fromsocket":
            parent.send(("echo ended", body))
            return
        sock.send((me, ("deliver", body[1])))


def _echo_server(certs: Any) -> tuple[sslsocket.Socket, sslsocket.Socket]:
    """A client of this process, and its server, owned by a spawned process that echoes every packet."""
    client, server = pair(certs=certs)
    echo = sslsocket.spawn(_echo, sslsocket.self())
    sslsocket.controlling_process(server, echo)
    echo.send(server)
    assert sslsocket.receive(lambda m: m == "ready", timeout=10) == "ready"
    return client, server


def test_controlling_process_in_the_middle_of_a_ping_pong_loses_nothing(certs: Any) -> None:
    client, _server = _echo_server(certs)
    me = sslsocket.self()
    for i in range(100):
        client.deliver(f"ping {i}")
        assert expect(client) == ("fromsocket", f"ping {i}")
    client.deliver("in flight")  # its echo arrives while, or after, the socket changes hands

    def second(parent: sslsocket.Pid) -> None:
        got = [sslsocket.receive(lambda m: m[0] is client, timeout=10)[1]]
        for i in range(100, 200):
            client.deliver(f"ping {i}")
            got.append(sslsocket.receive(lambda m: m[0] is client, timeout=10)[1])
        parent.send(("second", got))
        client.close()

    pid = sslsocket.spawn(second, me)
    sslsocket.controlling_process(client, pid)
    _, got = sslsocket.receive(lambda m: m[0] == "second", timeout=30)
    assert got == [("fromsocket", "in flight")] + [("fromsocket", f"ping {i}") for i in range(100, 200)]
    assert sslsocket.receive(lambda m: m[0] == "echo ended", timeout=10) == ("echo ended", ("socket_closed", "normal"))
    assert not any(m[0] is client for m in list(me._mailbox))


def _pinger(parent: sslsocket.Pid, client: sslsocket.Socket) -> None:
    sslsocket.receive(lambda m: m == "go", timeout=10)  # once the socket is this process's
    parent.send("pinging")
    i = 0
    try:
        while True:
            client.deliver(f"ping {i}")
            body = sslsocket.receive(lambda m: m[0] is client, timeout=20)[1]
            if body[0] != "fromsocket":
                parent.send(("pinger heard", body[0]))
                return
            i += 1
    except sslsocket.Closed:
        parent.send(("pinger heard", "closed"))
    except sslsocket.Exit:
        parent.send(("pinger heard", "exit"))


def _ping_pong_in_another_process(certs: Any) -> tuple[sslsocket.Pid, sslsocket.Socket, sslsocket.Socket]:
    client, server = _echo_server(certs)
    me = sslsocket.self()
    pinger = sslsocket.spawn(_pinger, me, client)
    sslsocket.controlling_process(client, pinger)
    pinger.send("go")
    assert sslsocket.receive(lambda m: m == "pinging", timeout=10) == "pinging"
    wait_for(lambda: client.packets_in > 100)  # in full swing, writes going direct
    return pinger, client, server


def test_exit_in_the_middle_of_a_ping_pong_ends_the_pinger_and_closes_its_socket(certs: Any) -> None:
    pinger, client, _server = _ping_pong_in_another_process(certs)
    sslsocket.exit(pinger, "enough")
    assert sslsocket.receive(lambda m: m[0] == "pinger heard", timeout=10) == ("pinger heard", "exit")
    assert sslsocket.receive(lambda m: m[0] == "echo ended", timeout=10) == ("echo ended", ("socket_closed", "normal"))
    assert client.wait_closed(10)


def test_stop_in_the_middle_of_a_ping_pong_frees_everyone(certs: Any) -> None:
    _pinger_pid, client, server = _ping_pong_in_another_process(certs)
    sslsocket.stop()
    heard = sslsocket.receive(lambda m: m[0] == "pinger heard", timeout=10)
    assert heard in (("pinger heard", "socket_closed"), ("pinger heard", "closed"))
    assert sslsocket.receive(lambda m: m[0] == "echo ended", timeout=10)[0] == "echo ended"
    assert client.wait_closed(10) and server.wait_closed(10)
    sslsocket.start()
