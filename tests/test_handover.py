"""Hand-overs are exact: once ``controlling_process`` has returned, the old owner gets nothing more, whoever calls
it (a callback owner from inside its own call included) and whatever was under way. Each test is a stress run
under a tiny switch interval, as the review that found these bugs ran them."""

from __future__ import annotations

import select
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import sslsocket

from helpers import pair, stdlib_peer, wait_for


@pytest.fixture(autouse=True)
def busy_switching() -> Iterator[None]:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


class HandOn:
    """A callback owner that hands its socket to ``new_owner`` at its first message, and keeps what it is given
    after that (which should be nothing)."""

    def __init__(self, new_owner: Any) -> None:
        self.new_owner = new_owner
        self.sock: sslsocket.Socket | None = None
        self.first: list[Any] = []
        self.late: list[Any] = []

    def __call__(self, msg: Any) -> None:
        if self.first:
            self.late.append(msg[1])
            return
        self.first.append(msg[1])
        assert self.sock is not None
        sslsocket.controlling_process(self.sock, self.new_owner)


class Collector:
    """A callback owner that keeps what it is given, and says when the socket has closed."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self.closed = threading.Event()

    def __call__(self, msg: Any) -> None:
        self.got.append(msg[1])
        if msg[1][0] == "socket_closed":
            self.closed.set()


def test_a_callback_that_hands_its_socket_on_gets_nothing_after(certs: Any) -> None:
    """Found by a review: a callback that called ``controlling_process`` on the first packet of a read batch still
    received the rest of that batch (25 runs in 30)."""
    for run in range(100):
        callback = HandOn(sslsocket.self())
        client, server = pair(certs=certs, owner=callback)
        callback.sock = client
        for n in range(30):  # a burst: several packets in one read
            server.deliver(f"{run} {n}")
        got = [sslsocket.receive(lambda m, c=client: m[0] is c, timeout=10)[1] for _ in range(29)]
        assert callback.first == [("fromsocket", f"{run} 0")]
        assert got == [("fromsocket", f"{run} {n}") for n in range(1, 30)]  # the rest, in order, to the new owner
        assert callback.late == []
        client.close()
        server.close()


def test_a_callback_may_hand_its_socket_on_while_it_is_being_given_the_messages_that_waited(certs: Any) -> None:
    """Found by a review: ``controlling_process`` called the new callback with the messages that waited, under a
    lock it could not take again: a callback that handed the socket on waited for ever, and its mediator too."""
    me = sslsocket.self()
    for run in range(50):
        second = Collector()
        callback = HandOn(second)
        client, server = pair(certs=certs)
        callback.sock = client
        for n in range(10):
            server.deliver(f"{run} {n}")
        last = ("fromsocket", f"{run} 9")
        sslsocket.receive(lambda m, c=client, last=last: m[0] is c and m[1] == last, timeout=10)
        # Nine wait in the mailbox, before the last one that was just received: they go to the callback first.
        waiting = [m[1] for m in list(me._mailbox) if m[0] is client]
        sslsocket.controlling_process(client, callback)
        assert callback.first == waiting[:1] and second.got == waiting[1:] and callback.late == []
        server.deliver("after")
        server.close()
        assert second.closed.wait(10)
        assert second.got == [*waiting[1:], ("fromsocket", "after"), ("socket_closed", "normal")]


class Relay:
    """A callback owner that delivers every packet it is given to another socket: half of a TLS proxy."""

    def __init__(self) -> None:
        self.to: sslsocket.Socket | None = None

    def __call__(self, msg: Any) -> None:
        if msg[1][0] == "fromsocket":
            assert self.to is not None
            self.to.deliver(msg[1][1])


def test_two_callbacks_relaying_to_each_other_never_block_their_mediators(certs: Any) -> None:
    """Found by a review: a callback's deliver waited for room in the other socket's inbox; with bursts both ways
    each relaying mediator waited in the other's inbox for ever (both inboxes at 1,024 messages, nothing written).
    Now the socket the callback reads from is held back instead, until there is room."""
    one, two = Relay(), Relay()
    left_relay, left = stdlib_peer(certs, ("packet", 2))  # each end a client on Python's ssl, sending at once
    right_relay, right = stdlib_peer(certs, ("packet", 2))
    sslsocket.controlling_process(left_relay, one)
    sslsocket.controlling_process(right_relay, two)
    one.to, two.to = right_relay, left_relay
    count = 20000
    start = threading.Barrier(2)
    heard: dict[str, list[bytes]] = {}

    def converse(tls: ssl.SSLSocket, name: str) -> None:
        """Send 20,000 small packets at once and read what comes back, in one thread: an SSL object is not for
        two threads at a time."""
        out = b"".join(len(p).to_bytes(2, "big") + p for p in (f"{name} {n}".encode() for n in range(count)))
        data, packets = b"", []
        tls.setblocking(False)
        start.wait()
        deadline = time.monotonic() + 60
        while len(packets) < count and time.monotonic() < deadline:
            select.select([tls], [tls] if out else [], [], 1)
            try:
                out = out[tls.send(out[:65536]) :] if out else out
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            try:
                data += tls.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            while len(data) >= 2 and len(data) >= 2 + int.from_bytes(data[:2], "big"):
                size = int.from_bytes(data[:2], "big")
                packets.append(data[2 : 2 + size])
                data = data[2 + size :]
        heard[name] = packets

    threads = [threading.Thread(target=converse, args=(tls, name)) for tls, name in ((left, "left"), (right, "right"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert heard.get("left") == [f"right {n}".encode() for n in range(count)]  # all of it, in order, both ways
    assert heard.get("right") == [f"left {n}".encode() for n in range(count)]
    for tls in (left, right):
        tls.close()
    for sock in (left_relay, right_relay):
        sock.close()


class HandOther:
    """A callback owner that, at its first packet, hands another socket on to ``new_owner``, once both such
    callbacks are under way."""

    def __init__(self, both: threading.Barrier, new_owner: sslsocket.Pid) -> None:
        self.both, self.new_owner = both, new_owner
        self.other: sslsocket.Socket | None = None
        self.done = threading.Event()

    def __call__(self, msg: Any) -> None:
        if msg[1][0] == "fromsocket" and not self.done.is_set():
            self.both.wait(10)  # both callbacks are running now
            assert self.other is not None
            sslsocket.controlling_process(self.other, self.new_owner)
            self.done.set()


def test_two_callbacks_may_hand_each_others_socket_on_at_once(certs: Any) -> None:
    """Found by a review: with a callback run under its socket's owner lock, two callbacks that each handed the
    other's socket on waited on each other's lock for ever. A hand-over from inside another socket's callback, while
    the socket's own callback runs, is left to that socket's mediator, which makes it as soon as the callback
    returns."""
    me = sslsocket.self()
    for run in range(20):
        both = threading.Barrier(2)
        a_client, a_server = pair(certs=certs)
        b_client, b_server = pair(certs=certs)
        on_a, on_b = HandOther(both, me), HandOther(both, me)
        on_a.other, on_b.other = b_client, a_client
        sslsocket.controlling_process(a_client, on_a)
        sslsocket.controlling_process(b_client, on_b)
        a_server.deliver("go")
        b_server.deliver("go")
        assert on_a.done.wait(10) and on_b.done.wait(10)
        a_server.deliver(f"{run} to me")
        b_server.deliver(f"{run} to me too")
        assert sslsocket.receive(lambda m, s=a_client: m[0] is s, timeout=10)[1] == ("fromsocket", f"{run} to me")
        assert sslsocket.receive(lambda m, s=b_client: m[0] is s, timeout=10)[1] == ("fromsocket", f"{run} to me too")
        assert a_client.owner is me and b_client.owner is me
        for sock in (a_client, a_server, b_client, b_server):
            sock.close()


def test_a_plain_thread_takes_a_socket_given_before_it_starts(certs: Any) -> None:
    """Found from the outside: a threaded server's first lines, ``Thread(target=handle, args=(sock,)).start()``,
    failed with NotOwner, and the client's first packet was lost. Given to the Thread first, it works."""
    client, server = pair(certs=certs)
    client.deliver("first")  # it may arrive before the thread starts: it waits for it

    def handle(sock: sslsocket.Socket) -> None:
        _, data = sslsocket.receive(lambda m: m[0] is sock, timeout=10)[1]
        sock.deliver(f"echo: {data}")

    thread = threading.Thread(target=handle, args=(server,))
    sslsocket.controlling_process(server, thread)
    assert server.owner is sslsocket.process.of_thread(thread)
    thread.start()
    assert sslsocket.receive(lambda m: m[0] is client, timeout=10)[1] == ("fromsocket", "echo: first")
    thread.join(10)
    assert sslsocket.receive(lambda m: m[0] is client, timeout=10)[1] == ("socket_closed", "normal")  # its end
    client.close()


def test_a_running_thread_stands_for_its_process(certs: Any) -> None:
    client, server = pair(certs=certs)
    ready, got = threading.Event(), []

    def worker() -> None:
        me = sslsocket.self()
        ready.set()
        try:
            got.append(sslsocket.receive(timeout=10)[1])
            sslsocket.receive(timeout=10)  # until exit() reaches it through its Thread
        except sslsocket.Exit as signal:
            got.append(("exit", signal.reason, me))

    thread = threading.Thread(target=worker)
    thread.start()
    assert ready.wait(10)
    sslsocket.controlling_process(server, thread)  # the same process as self() in it
    client.deliver("to a running thread")
    wait_for(lambda: got)
    sslsocket.exit(thread, "enough")
    thread.join(10)
    assert got[0] == ("fromsocket", "to a running thread")
    assert got[1][:2] == ("exit", "enough") and got[1][2] is server.owner
    assert sslsocket.receive(lambda m: m[0] is client, timeout=10)[1] == ("socket_closed", "normal")
    client.close()
