"""The mediator's parts, each on its own: no TLS, no network (but the waker's own descriptors), no sleeping. A clock
that the test moves stands in for time; a condition's own notification, or a fake sender's, for "it is waiting"."""

from __future__ import annotations

import os
import queue
import selectors
import socket
from typing import Any

import pytest
from OpenSSL import SSL

from sslsocket import process, system
from sslsocket.budget import Budget
from sslsocket.errors import ConnectionBroken, NotOwner
from sslsocket.inbox import CLOSE, INBOX_SIZE, INBOX_UNIT, Deliver, Inbox
from sslsocket.lifecycle import CLOSED_BY_OWNER, OWNER_ENDED, CloseClock, Ending, IdleClock, Lifecycle, State
from sslsocket.mailbox import MESSAGE_COST, Delivery, Pid
from sslsocket.outgoing import Outgoing
from sslsocket.owner import CallbackOwner, Credit, ProcessOwner, owner_of
from sslsocket.quiet import Quiet, QuietRoom, Turns
from sslsocket.system import IN
from sslsocket.tls import PeerClosed, attempt, read, write

from helpers import wait_for

# ---- the inbox ---------------------------------------------------------------------------------------------------


def test_the_inbox_is_weighed_in_bytes() -> None:
    small = Inbox()
    for _ in range(INBOX_SIZE - 1):
        small.put_nowait(Deliver(b"", b"x"))
    assert not small.full()
    small.put_nowait(CLOSE)
    assert small.full()  # 1,024 small messages
    large = Inbox()
    large.put_nowait(Deliver(b"", b"x" * (INBOX_SIZE * INBOX_UNIT)))
    assert large.full() and large.qsize() > INBOX_SIZE  # one message of 4 MiB
    with pytest.raises(queue.Full):
        large.put_nowait(Deliver(b"", b""))
    assert isinstance(large.get_nowait(), Deliver) and large.empty()
    huge = Inbox()
    huge.put_nowait(Deliver(b"", b"x" * (64 << 20)))  # larger than the whole inbox: enters an empty one
    assert huge.get_nowait() and huge.empty() and huge.qsize() == 0


def test_the_mediator_takes_the_inbox_in_order_up_to_its_room_and_a_close() -> None:
    inbox = Inbox()
    sent = [Deliver(b"\0\0\0\3", b"%03d" % n) for n in range(5)]
    for item in sent:
        inbox.put_nowait(item)
    inbox.put_nowait(CLOSE)
    after = Deliver(b"", b"after")
    inbox.put_nowait(after)
    assert inbox.take(0) == []
    assert inbox.take(1) == [sent[0]]  # the first even past the room
    assert inbox.take(14) == sent[1:3]
    assert inbox.take(1 << 20) == [*sent[3:], CLOSE]  # up to the close, not past it
    assert inbox.take(1 << 20) == [after] and inbox.empty() and inbox.qsize() == 0 and len(inbox) == 0


def _blocked_offer(inbox: Inbox, item: Deliver) -> tuple[Pid, list[bool]]:
    """Offer ``item`` in a process; return once that process waits for room, with its outcome to come."""
    outcome: list[bool] = []
    pid = process.spawn(lambda: outcome.append(inbox.offer(item, process.self)))
    wait_for(lambda: pid.waiting == "deliver")
    return pid, outcome


def test_taking_from_a_full_inbox_wakes_its_blocked_sender() -> None:
    inbox = Inbox()
    assert inbox.offer(Deliver(b"", b"x" * (INBOX_SIZE * INBOX_UNIT)), process.self) and inbox.full()
    late = Deliver(b"", b"y")
    pid, outcome = _blocked_offer(inbox, late)
    assert len(inbox) == 1  # it waits: nothing was put
    assert len(inbox.take(1)) == 1
    wait_for(lambda: not pid.alive)
    assert outcome == [True] and inbox.take(1 << 20) == [late]


def test_a_closed_inbox_refuses_and_wakes_its_waiting_sender() -> None:
    inbox = Inbox()
    assert inbox.offer(Deliver(b"", b"x" * (INBOX_SIZE * INBOX_UNIT)), process.self) and inbox.full()
    assert inbox.offer(CLOSE, process.self)  # a close never waits for room
    pid, outcome = _blocked_offer(inbox, Deliver(b"", b"y"))
    inbox.close()
    wait_for(lambda: not pid.alive)
    assert outcome == [False] and inbox.empty() and inbox.qsize() == 0
    assert not inbox.offer(CLOSE, process.self)


# ---- the outgoing buffer -----------------------------------------------------------------------------------------


def _drain(out: Outgoing, take: int | None = None) -> list[bytes]:
    """The writes a socket taking ``take`` bytes per write (all, by default) would see."""
    writes = []
    while (chunk := out.pending()) is not None:
        writes.append(bytes(chunk))
        out.sent(len(chunk) if take is None else min(take, len(chunk)))
    return writes


def test_small_packets_are_joined_into_one_write_headers_and_all() -> None:
    out = Outgoing(chunk=64)
    for n in range(3):
        out.put([Deliver(b"\0\2", b"p%d" % n)])
    assert out.size == 12
    assert _drain(out) == [b"\0\2p0\0\2p1\0\2p2"] and out.size == 0


def test_writes_are_chunk_sized_and_topped_up_from_the_next_part() -> None:
    out = Outgoing(chunk=8)
    out.put([Deliver(b"HH", b"0123456789")])  # 12 bytes: a chunk of 8, then the rest with the next packet
    out.put([Deliver(b"hh", b"ab")])
    assert _drain(out) == [b"HH012345", b"6789hhab"]
    big = b"x" * 20
    out.put([Deliver(b"", big)])  # a part as large as a chunk goes as it is, in one write
    assert _drain(out) == [big]


def test_a_part_larger_than_one_ssl_write_takes_goes_in_pieces_that_each_fit() -> None:
    out = Outgoing(chunk=8, largest=16)
    out.put([Deliver(b"HHHH", b"x" * 40)])  # the header topped up to a chunk, then the rest in writes of 16 at most
    assert [bytes(w) for w in _drain(out)] == [b"HHHHxxxx", b"x" * 16, b"x" * 16, b"x" * 4]
    out.put([Deliver(b"", b"y" * 16)])  # as large as a write: one piece
    assert [bytes(w) for w in _drain(out)] == [b"y" * 16]


def test_a_write_that_must_be_retried_sees_the_very_same_bytes() -> None:
    out = Outgoing(chunk=8)
    out.put([Deliver(b"", b"abcdefgh")])
    first = out.pending()
    assert first is not None and out.pending() is first  # nothing sent: the same view, as OpenSSL requires
    out.sent(3)
    assert bytes(out.pending() or b"") == b"defgh" and out.size == 5
    out.put([Deliver(b"", b"ij")])  # new bytes wait behind the pending write
    assert _drain(out) == [b"defgh", b"ij"]


def test_nothing_is_taken_after_the_close() -> None:
    out = Outgoing()
    out.put([Deliver(b"", b"before")])
    out.put([Deliver(b"\0\0", b""), CLOSE, Deliver(b"", b"after")])  # an empty packet counts, nothing after CLOSE
    out.put([Deliver(b"", b"later")])
    assert _drain(out) == [b"before\0\0"] and (out.packets, out.taken, out.size) == (2, 8, 0)


# ---- the lifecycle -----------------------------------------------------------------------------------------------


def test_the_state_moves_only_along_the_arrows() -> None:
    life = Lifecycle()
    assert life.state is State.HANDSHAKING
    life.move(State.OPEN)
    with pytest.raises(AssertionError):
        life.move(State.HANDSHAKING)
    life.move(State.CLOSING)
    life.move(State.CLOSING)  # staying is no move
    life.move(State.CLOSED)
    with pytest.raises(AssertionError):
        life.move(State.OPEN)


def test_an_open_connection_is_seen_closing_from_the_moment_its_end_is_asked() -> None:
    """Found from the outside: ``sock.state`` right after ``close()`` read OPEN in one run, CLOSING in another."""
    for ending in (CLOSED_BY_OWNER, OWNER_ENDED, Ending("aborted", urgent=True)):
        life = Lifecycle()
        life.ask(ending)
        assert life.seen is State.HANDSHAKING  # a handshake asked to end is still a handshake, until it ends
        life.move(State.OPEN)
        assert life.seen is State.CLOSING and life.state is State.OPEN  # the mediator has not moved it yet
        life.move(State.CLOSED)
        assert life.seen is State.CLOSED
    life = Lifecycle()
    life.move(State.OPEN)
    assert life.seen is State.OPEN


def test_the_first_ending_asked_wins_and_an_abort_hurries_a_close_without_telling_the_owner() -> None:
    stopped = ConnectionBroken("the socket server was stopped", "stopped")
    life = Lifecycle()
    assert life.ask(CLOSED_BY_OWNER) and life.closed_by_owner and life.urgent is None
    assert not life.ask(CLOSED_BY_OWNER) and not life.ask(OWNER_ENDED)
    assert life.ask(Ending("aborted", stopped, urgent=True, tell=True))
    assert life.urgent is not None and life.urgent.cause == "closed" and not life.urgent.tell
    assert life.closed_by_owner  # a deliver after the owner's close still raises Closed
    aborted = Lifecycle()
    assert aborted.ask(Ending("aborted", stopped, urgent=True, tell=True))
    assert aborted.ask(CLOSED_BY_OWNER)  # before the mediator acted on the abort: the owner closed, hears nothing
    assert aborted.ending == Ending("aborted", stopped, urgent=True, tell=False) and aborted.closed_by_owner
    gone = Lifecycle()
    assert gone.ask(OWNER_ENDED) and not gone.closed_by_owner
    assert gone.ask(Ending("aborted", stopped, urgent=True, tell=True))  # told: only its own close silences it
    assert gone.urgent == Ending("owner_ended", stopped, urgent=True, tell=True)
    sealed = Lifecycle()
    assert sealed.ask(OWNER_ENDED)
    assert sealed.ask(CLOSED_BY_OWNER) and sealed.closed_by_owner  # a close still seals what is sent after it
    assert sealed.ending == OWNER_ENDED
    ended = Lifecycle()
    ended.move(State.CLOSED)
    assert not ended.ask(CLOSED_BY_OWNER) and ended.ending is None


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_idle_clock_ends_a_connection_only_after_its_timeout_without_a_byte() -> None:
    clock = _Clock()
    idle = IdleClock(5.0, clock)
    clock.now = 150.0  # a long handshake: the clock starts at the first open turn
    assert idle.deadline == 155.0 and idle.idle_for(0) == 0.0
    idle.check(0)
    clock.now = 154.9
    idle.check(0)  # nothing yet, not for long enough
    assert idle.idle_for(0) == pytest.approx(4.9) and idle.idle_for(10) == 0.0  # bytes since the last turn: busy
    idle.check(10)  # traffic: the clock starts again
    assert idle.deadline == 159.9 and idle.idle_for(10) == 0.0
    clock.now = 159.0
    idle.check(10)
    assert idle.idle_for(10) == pytest.approx(4.1)
    clock.now = 159.9
    with pytest.raises(ConnectionBroken) as caught:
        idle.check(10)
    assert caught.value.reason == "idle" and "no traffic either way for 5 s (-idle_timeout)" in str(caught.value)


def test_the_close_clock_runs_from_the_close_and_restarts_at_each_progress() -> None:
    clock = _Clock()
    close = CloseClock(10.0, clock)
    assert close.deadline == 110.0 and not close.expired()
    clock.now = 109.0
    close.progress(False, unsent_before=5000, unsent_after=5000)  # nothing written, the kernel holds as much
    assert close.deadline == 110.0
    close.progress(False, unsent_before=4000, unsent_after=4000)  # the peer acknowledged 1,000 bytes
    assert close.deadline == 119.0
    clock.now = 115.0
    close.progress(True, unsent_before=4000, unsent_after=9000)  # a write finished
    assert close.deadline == 125.0
    clock.now = 125.0
    close.progress(False, unsent_before=9000, unsent_after=9000)
    assert close.expired()


# ---- the owner and its mailbox credit ----------------------------------------------------------------------------


class _Sock:
    def __init__(self) -> None:
        self.consumed_weight = 0

    def consumed(self, weight: int) -> None:
        self.consumed_weight += weight

    def owner_ended(self, pid: Pid) -> None:
        pass


def test_a_mailbox_share_pauses_the_socket_until_half_of_it_is_received() -> None:
    credit = Credit(share=1000)
    sock = _Sock()
    packets = [Delivery((sock, ("fromsocket", b"x" * 436))) for _ in range(2)]  # 500 each, with MESSAGE_COST
    assert packets[0].weight == 436 + MESSAGE_COST == 500
    assert credit.room() == 1000
    credit.charge([*packets, (sock, ("socket_closed", "normal"))])  # only deliveries count
    assert credit.room() == 0 and credit.paused
    assert not credit.consumed(499) and credit.paused  # 501 unread: more than half
    assert credit.consumed(1) and not credit.paused  # 500: half, resume
    assert credit.room() == 500


def test_a_process_owner_takes_messages_in_its_mailbox_and_only_it_may_send() -> None:
    pid = Pid("owner")
    owner = owner_of(pid)
    assert isinstance(owner, ProcessOwner) and owner.target is pid and not owner.calls_back
    sock, credit = _Sock(), Credit()
    assert owner.adopt(sock)
    packet = Delivery((sock, ("fromsocket", b"hi")))
    assert owner.post([packet], credit) and credit.room() == credit._share - packet.weight
    assert owner.take_back(sock) == [packet]
    with pytest.raises(NotOwner, match="only the controlling process"):
        owner.check(pid, sock)  # this thread is not that process
    pid._ended("normal")
    assert not owner.post([packet], credit) and not owner.adopt(sock)


def test_a_callback_owner_is_called_in_order_and_one_that_raises_has_ended(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Any] = []

    def callback(msg: Any) -> None:
        if msg[1] == "boom":
            raise ValueError("a bug in the callback")
        seen.append(msg)

    owner = owner_of(callback)
    assert isinstance(owner, CallbackOwner) and owner.calls_back
    sock, credit = _Sock(), Credit()
    owner.check(None, sock)  # anyone may talk to a callback's socket
    assert owner.post([(sock, 1), (sock, 2)], credit) and seen == [(sock, 1), (sock, 2)]
    assert credit.room() == credit._share  # a callback's packets wait in no mailbox
    assert not owner.post([(sock, "boom"), (sock, 3)], credit) and seen == [(sock, 1), (sock, 2)]
    assert "the owner callback" in caplog.text and owner.take_back(sock) == []


# ---- the TLS dance -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raised", "wait"), [(SSL.WantReadError, system.IN), (SSL.WantWriteError, system.OUT)])
def test_attempt_turns_a_want_into_what_to_wait_for(raised: type[Exception], wait: int) -> None:
    def call(*args: Any) -> Any:
        raise raised()

    assert attempt(call) == (None, wait)
    assert attempt(lambda *args: args, 1, 2) == ((1, 2), 0)
    with pytest.raises(SSL.ZeroReturnError):
        attempt(lambda: (_ for _ in ()).throw(SSL.ZeroReturnError()))


# ---- the listener's quiet room -----------------------------------------------------------------------------------


def _quiet(deadline: float) -> Quiet:
    return Quiet(None, "peer", "", None, None, deadline)  # type: ignore[arg-type]


def test_the_quiet_room_gives_the_oldest_and_the_expired_in_deadline_order() -> None:
    room = QuietRoom()
    first, second, third = _quiet(30.0), _quiet(10.0), _quiet(20.0)
    for quiet in (first, second, third):
        room.add(quiet)
    assert room.oldest() is first and len(room) == 3 and room.next_deadline() == 10.0
    room.remove(third)  # it spoke: gone on to its handshake
    assert list(room.expired(25.0)) == [second]  # the entry of the one gone on is skipped
    room.remove(second)
    assert room.next_deadline() == 30.0 and list(room) == [first]
    room.remove(first)
    assert room.next_deadline() is None and list(room.expired(99.0)) == []


def test_the_quiet_room_sweeps_its_heap_of_connections_long_gone() -> None:
    room = QuietRoom()
    keep = _quiet(1e9)
    room.add(keep)
    for n in range(1000):
        gone = _quiet(float(n))
        room.add(gone)
        room.remove(gone)
    assert len(room._deadlines) <= 2 * len(room) + 64 + 1


class _Handshake:
    def __init__(self, heard: float) -> None:
        self.heard = heard


def test_turns_queue_what_progresses_and_make_way_with_what_stalls() -> None:
    turns = Turns()
    assert turns.next(100.0, 2, 5.0, 50.0) == (None, None, None)  # nobody waits
    slow, fast = _Handshake(90.0), _Handshake(99.0)
    turns.started(slow, 90.0)
    first, second, third = _quiet(130.0), _quiet(131.0), _quiet(132.0)
    turns.queued.extend([first, second, third])
    assert turns.next(100.0, 2, 5.0, 50.0) == (first, None, None)  # a free slot: the oldest in line starts
    turns.started(fast, 99.0)
    assert turns.next(94.0, 2, 5.0, 50.0) == (None, None, 95.0)  # all slots busy, none stalled yet: look again at 95
    assert turns.next(96.0, 2, 5.0, 50.0) == (second, slow, None)  # the one silent longest makes way
    assert list(turns.running) == [fast]
    assert turns.ended(fast) and not turns.ended(fast) and not turns.ended(None)  # freed once; a queue waits
    assert turns.next(96.0, 2, 5.0, 50.0) == (third, None, None)
    last = _Handshake(96.0)
    turns.started(last, 96.0)
    assert not turns.ended(last)  # nobody waits for the slot it frees


def test_turns_make_a_dripping_handshake_make_way_and_let_the_late_go() -> None:
    turns = Turns()
    drip_a, drip_b = _Handshake(100.0), _Handshake(100.0)
    turns.started(drip_a, 100.0)
    turns.started(drip_b, 101.0)
    honest, late = _quiet(200.0), _quiet(103.0)
    turns.queued.extend([late, honest])
    assert turns.expired(104.0) == [late] and list(turns.queued) == [honest]  # its deadline passed while it waited
    drip_a.heard = drip_b.heard = 104.5  # a byte now and then: never silent for long
    assert turns.next(104.6, 2, 2.0, 5.0) == (None, None, 105.0)  # drip_a's turn ends at 105
    assert turns.next(105.0, 2, 2.0, 5.0) == (honest, drip_a, None)  # the one in its slot longest makes way


# ---- the platform: the paths Windows takes, on this machine (with the selectors' events, as there) ---------------


def test_without_eventfd_the_waker_is_a_socket_pair_that_select_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "eventfd", raising=False)
    waker = system.Waker()
    poller = system._SelectorPoller()
    try:
        poller.register(waker.fileno(), selectors.EVENT_READ)
        assert poller.poll(0) == []
        waker.poke()
        waker.poke()  # pokes pile up harmlessly
        assert [fd for fd, _ in poller.poll(0)] == [waker.fileno()]
        waker.drain()
        assert poller.poll(0) == []
    finally:
        poller.close()
        waker.close()
    waker.poke()  # a poke after the close does nothing


def test_the_selector_poller_reports_a_socket_ready_to_write_and_to_read() -> None:
    left, right = socket.socketpair()
    poller = system._SelectorPoller()
    try:
        poller.register(left.fileno(), selectors.EVENT_WRITE)
        assert poller.poll(0) == [(left.fileno(), selectors.EVENT_WRITE)]
        poller.modify(left.fileno(), selectors.EVENT_READ)
        assert poller.poll(0) == []
        right.send(b"x")
        assert poller.poll(1) == [(left.fileno(), selectors.EVENT_READ)]
        poller.unregister(left.fileno())
        assert poller.poll(0) == []
    finally:
        poller.close()
        left.close()
        right.close()


def _tls_pair(certs: Any) -> tuple[SSL.Connection, SSL.Connection, list[socket.socket]]:
    """Two pyOpenSSL connections over a socket pair, handshaken, non-blocking; and the pair, to close."""
    server_ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    server_ctx.use_certificate_chain_file(str(certs.server))
    server_ctx.use_privatekey_file(str(certs.server))
    left, right = socket.socketpair()
    for end in (left, right):
        end.setblocking(False)
    server, client = SSL.Connection(server_ctx, left), SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), right)
    server.set_accept_state()
    client.set_connect_state()
    done = set()
    while len(done) < 2:
        for conn in (server, client):
            if conn not in done and attempt(conn.do_handshake)[1] == 0:
                done.add(conn)
    return server, client, [left, right]


def test_read_and_write_without_pyopenssls_extra_call_keep_its_outcomes(certs: Any) -> None:
    """tls.read and tls.write ask SSL_get_error only when a call failed: each outcome is still pyOpenSSL's."""
    server, client, ends = _tls_pair(certs)
    assert read(server, 16384) == (None, IN)  # nothing sent yet (the client's read below takes the tickets)
    assert write(client, b"hello") == (5, 0)
    assert write(client, memoryview(b"..world")[2:]) == (5, 0)
    assert read(server, 16384) == (b"hello", 0)
    assert read(server, 3) == (b"wor", 0) and read(server, 16384) == (b"ld", 0)
    assert read(client, 16384) == (None, IN)
    client.shutdown()
    with pytest.raises(PeerClosed):
        read(server, 16384)
    for end in ends:
        end.close()


# ---- a listen socket's budget for peers that read nothing ------------------------------------------------------


def test_the_budget_makes_the_connection_held_up_longest_go() -> None:
    budget: Budget[str] = Budget(limit=3 * 1024, per_socket=1024)
    assert budget.slots == 3
    assert budget.waits("a") is None and budget.waits("b") is None and budget.waits("c") is None
    budget.done("b")  # there was room for b after all
    assert budget.waits("d") is None and len(budget) == 3
    assert budget.waits("e") == "a"  # one too many: the one held up longest goes
    assert budget.waits("e") is None  # the same one again counts once
    assert budget.waits("f") == "c"
    assert Budget(limit=10, per_socket=1024).slots == 1  # a budget below one connection still lets one wait


def test_a_forked_child_gets_the_budget_empty_with_a_lock_of_its_own() -> None:
    budget: Budget[str] = Budget(limit=2048, per_socket=1024)
    budget._lock.acquire()  # as a thread of the parent may hold it at the fork
    budget._waiting["the parent's"] = None
    child = budget.renewed()
    assert child.waits("mine") is None and len(child) == 1 and (child.limit, child.slots) == (2048, 2)


# ---- pyOpenSSL's private bindings ----------------------------------------------------------------------------------


def test_the_private_bindings_of_pyopenssl_are_all_there_and_used_in_tls_only() -> None:
    """Every use of pyOpenSSL's private bindings is in sslsocket/tls.py, and each is there: an upgrade of pyOpenSSL
    that takes one away fails here, by name, not in the middle of a handshake."""
    from pathlib import Path

    from OpenSSL import SSL, _util
    from OpenSSL.SSL import _lib  # type: ignore[attr-defined]

    from sslsocket import tls

    missing = [name for name in tls.BINDINGS if not hasattr(_lib, name)]
    assert not missing, f"pyOpenSSL's bindings lack {missing}: tls.py must find another way"
    assert hasattr(_util, "no_zero_allocator") and hasattr(SSL.Connection, "_raise_ssl_error")
    ctx = SSL.Context(SSL.TLS_METHOD)
    assert hasattr(ctx, "_context") and hasattr(SSL.Connection(ctx, None), "_ssl")
    package = Path(tls.__file__).parent
    elsewhere = [
        path.name
        for path in package.glob("*.py")
        if path.name != "tls.py" and any(word in path.read_text() for word in ("_lib.", "_ffi.", "OpenSSL._util"))
    ]
    assert elsewhere == []
