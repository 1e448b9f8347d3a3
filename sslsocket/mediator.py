"""The mediator: one thread per connection, the only code that touches its ``SSL.Connection``.

Theory of operation
-------------------

A ``Socket`` is what ``accept`` and ``client`` return: the manual's "process located between the user and the
actual socket". Its state is one ``Lifecycle`` (handshaking, open, closing, closed); its thread, taken from
``Workers``, runs three phases (a server's handshake in a thread of its own: ``Socket._move_on``):

1. **Handshake.** A non-blocking ``do_handshake`` loop, bounded by the ``-timeout`` deadline and woken by an abort
   (``stop()``, a closed listen socket, a stalled handshake making way for waiting ones). A server's outcome goes
   to the listener, which hands the socket to an acceptor; a client's loop runs in the thread of ``client``, which
   waits anyway (``handshake_here``). A server that refused its client's certificate lingers (``_linger``), so that
   the client hears the alert.

2. **Open.** One loop over ``poll`` on the TCP socket and a waker that any thread can poke (never a timer). Each
   turn it:

   - moves deliveries from the inbox (a ``queue.Queue`` bounded in bytes) into the outgoing buffer, while that
     buffer holds less than ``HIGH_WATER``; past it the inbox fills, and a sender blocks in ``send``;
   - writes the outgoing buffer, many packets coalesced into one ``SSL_write``; a write that must be retried is
     retried with the very same bytes once ``poll`` says the socket is ready for it;
   - reads TLS until it would block, or a record shorter than the largest (OpenSSL then holds nothing more, and
     ``poll`` tells whether the kernel does), through the mode's pure decoder, and hands the packets to the owner
     in one batch, as ``(sock, ("fromsocket", data))``;
   - sleeps in ``poll``: on the TCP socket for reading only while it reads (below), for writing only while a write
     waits, and on the waker.

   It reads only while the socket has an owner, while its share of that owner's mailbox is not full
   (``MAILBOX_SHARE``: past it, it *pauses*, until the owner has received half; the peer meanwhile is held back by
   TCP), and while no inbox its callback owner delivered to is full (its own included). Memory is so bounded per
   socket: the inbox (512 KiB, or one message larger), the
   outgoing buffer (``HIGH_WATER``, plus the last batch taken from the inbox), the mailbox share (1 MiB, plus the
   last batch read) and one packet being decoded (the mode's ``max_packet``).

   Whether the mediator sleeps with nothing to take is the inbox's state, under the inbox's lock (``Inbox.nap``):
   the first sender after a nap learns that it must poke the waker, and none before; no message waits unseen.

3. **End.** Other threads ask for the end (``Lifecycle.ask``); the loop looks at every turn.

   - *Closed by the owner* (its ``close``, its process's end, its callback failing): everything delivered before
     the close is written, then close_notify, then the TCP socket is shut; nothing more is sent to the owner. A close
     never waits for room in the inbox, and its clock (``CloseClock``) runs from the moment it is asked: a peer that
     takes nothing for ``CLOSE_TIMEOUT`` is given up on, even when the close sits behind a full inbox.
   - *Aborted*: at once, telling the owner the abort's error (unless the owner had closed).
   - *Broken by the peer*: the packets already whole are delivered, then one ``("socket_closed", "normal")`` for a
     close_notify at a packet boundary, or ``("socket_closed", error)`` for anything else.

   When the thread ends, the inbox is closed (a sender waiting for room is woken), the descriptors are released,
   the socket lets go of everything it held, and its monitors hear why it ended.

Every packet goes through the inbox, one ordered way, whoever sends it. A callback owner is called in the mediator's
thread, one message at a time under ``_owner_lock``; what it delivers, to this socket or another, never waits for
room (``Inbox.force``): past that inbox's bound, this socket reads nothing until it has room.

**The fast path.** While the mediator sleeps in ``poll`` with nothing to do, or has not begun (its turn free,
nothing in the inbox or the outgoing buffer), an owner's first packet, and each that answers one read since its
last such write (a request/response rhythm), is written by the mediator's code in the owner's thread
(``write_now``): an answer waits for no hand-off. A write that would block leaves its bytes in the outgoing buffer
for the mediator; a one-way stream goes through the inbox, coalesced.

Who owns what: the *turn* (``_turn``) owns the TLS connection, the decoder and the outgoing buffer; the mediator
thread holds it, except while it sleeps in ``poll``. ``_owner_lock`` makes ``controlling_process`` (move what waits
in the old owner's mailbox, then switch) one step that no outgoing message can cut into, a callback's included. The
owner is read without it where a stale one does no harm (``send``'s checks, ``_reading``), and set by ``claim``.
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

from OpenSSL import SSL

from .context import connection_logger, new_connection
from .errors import ConnectionBroken, HandshakeError
from .flags import Settings
from .framing import FramingError, Mode
from .inbox import Inbox
from .lifecycle import OWNER_ENDED, CloseClock, IdleClock, Lifecycle, State
from .mailbox import MESSAGE_COST, Delivery, Pid
from .outgoing import Outgoing
from .owner import Credit, Owner
from .sessions import Resumption
from .system import IN, Sleeper, Waits, close_tcp, unsent
from .tls import CertificateRequest, HandshakeFailure, PeerClosed, PeerReport, attempt, broken, read, write
from .watchers import Watchers

log = logging.getLogger("sslsocket")

#: Bytes read from TLS per call: a TLS record's most plaintext. A read of this size always empties the record it
#: reads, so OpenSSL never holds plaintext back, and ``poll`` on the TCP socket alone tells when there is more.
RECV_SIZE = 16 * 1024
#: Bytes read per turn of the loop before the inbox and the writes get their turn again: a few ms of decryption.
READ_TURN = 2 * 1024 * 1024
#: Bytes left unwritten before the mediator takes no more from its inbox: with the inbox's, what a deaf peer costs.
HIGH_WATER = 512 * 1024
#: How long, after its close_notify, a closing socket reads what the peer still sends: a close with unread data
#: would reset the connection, destroying what was just written.
LINGER = 1.0

_ids = itertools.count(1)


class _Calling(threading.local):
    """The socket whose owner is being called in this thread (``source``): what that callback delivers to other
    sockets never waits for room (``Socket._put``). None in the class: a thread that calls no owner reads None, not
    an ``AttributeError`` caught (0.06 against 0.39 µs, the path of every ``deliver``)."""

    source: Any = None  # a Socket (an inbox's Source)


calling = _Calling()


class Mediator:
    """What a ``Socket``'s mediator thread runs: handshake, loop, end (``sockets.Socket`` adds what others call)."""

    def __init__(
        self,
        tcp: socket.socket,
        context: SSL.Context,
        settings: Settings,
        mode: Mode,
        *,
        server: bool,
        on_handshake: Callable[[Any, BaseException | None], None],
        forget: Callable[[Any], None] = lambda sock: None,
        hostname: str | None = None,
        deadline: float | None = None,
    ) -> None:
        self.id = next(_ids)
        self.mode = mode
        self.server = server
        address = tcp.getpeername()
        self._peer = (address[1], address[0])
        tcp.setblocking(False)
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._tcp = tcp
        self._conn, self.expected_name = new_connection(context, tcp, settings, server, hostname)
        self._conn.set_app_data(self)  # for the verify callback, until _let_go
        self._resumption = None if server else Resumption.of_client(self._conn, settings, hostname, self._peer[0])
        self._settings = settings
        self._deadline = deadline  # when the handshake must be done; by default -timeout from the thread's start
        self.heard = monotonic()  # when the handshake last heard from its peer: the listener drops stalled ones
        self._on_handshake = on_handshake
        self._forget = forget
        self._log = connection_logger(settings.log) if settings.log else None
        self._life, self.watchers = Lifecycle(), Watchers()  # (its monitors: ``sslsocket.monitor(sock)``)
        self._idle = IdleClock(settings.idle_timeout) if settings.idle_timeout else None
        self._inbox = Inbox()
        self._out = Outgoing()
        self._decoder = mode.decoder()
        self._sleeper = Sleeper(tcp.fileno())
        self._credit = Credit(wake=self._sleeper.waker.poke)
        #: The owner received packets of this weight (its mailbox calls this): if reading was paused and the owner
        #: has caught up, the credit resumes it.
        self.consumed = self._credit.consumed
        self._owner_lock = threading.RLock()  # re-entered by a callback that hands its socket on
        self._handing: deque[Any] = deque()  # hand-overs left to the mediator thread (``Socket.change_owner``)
        self._owner: Owner | None = None
        #: The right to touch the TLS connection: the mediator thread holds it, except while it sleeps in ``poll``;
        #: an owner's ``send`` may take it then, and write its packet itself (``write_now``).
        self._turn = threading.Lock()
        self._answered = True  # nothing written by an owner since the last read, or ever: its next write may go direct
        self._fault: BaseException | None = None  # what a write by an owner met, for the mediator to act on
        self._report = PeerReport()
        self.verify_errors: list[tuple[int, int]] = []  # the certificate check's (depth, code), by the verify callback
        self._asked = None if server or settings.certs else CertificateRequest(self._conn)
        self.packets_in = self.bytes_in = 0  # for i(): the mediator's alone
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()  # start() and _move_on() both set _thread: the later move must win
        #: Held from birth to end: ``wait_closed`` waits by taking it, as ``Thread.join`` waits on a lock its thread
        #: lets go of as it ends (an ``Event``'s ``set`` would cost six calls of Python).
        self._living = threading.Lock()
        self._living.acquire()
        self._gone = False  # set before ``_living`` is let go of: a waiter whose turn at the lock is not yet knows

    @property
    def certificate_requested(self) -> bool:
        """A client without ``-cert``: whether its server asked for a certificate (False on any other)."""
        return bool(self._asked)

    # ---- to the owner ------------------------------------------------------------------------------------

    def wake(self) -> None:
        """Make the mediator look at its inbox and its lifecycle now."""
        self._sleeper.waker.poke()

    def owner_ended(self, pid: Pid) -> None:
        """The owner's process ended: close, unless the socket has been handed on."""
        if getattr(self._owner, "target", None) is pid:
            self._life.ask(OWNER_ENDED)
            self.wake()

    def _emit(self, msgs: list[Any]) -> None:
        """To the owner, under ``_owner_lock``; a callback, one message at a time while it is the owner."""
        with self._owner_lock:
            if self._handing:  # a hand-over left to this thread (while a callback ran): first
                self._hand_on()
            owner = self._owner
            if owner is None or not owner.calls_back:  # a mailbox: all at once
                self._post(owner, msgs)
                return
            outer, calling.source = calling.source, self
            try:
                for index, msg in enumerate(msgs):
                    if self._handing:
                        self._hand_on()
                    owner = self._owner
                    if owner is None or not owner.calls_back:
                        self._post(owner, msgs[index:])
                        return
                    if not self._post(owner, [msg]):
                        return
            finally:
                calling.source = outer

    def _post(self, owner: Owner | None, msgs: list[Any]) -> bool:
        if owner is not None and not owner.post(msgs, self._credit):
            self._life.ask(OWNER_ENDED)
            self.wake()
            return False
        return True

    # ---- the mediator thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        self._thread = threading.current_thread()  # already so, unless this thread began before start() returned
        moved = False
        with self._turn:
            try:  # (a client's handshake may be done already, in its caller's thread: handshake_here)
                if self._life.state is State.HANDSHAKING:
                    shaken = self._handshake_phase()
                    moved = shaken and self._move_on()
                    if not shaken or moved:
                        return  # failed, or the open connection goes on in another thread
                self._serve()
            except BaseException as exc:  # a bug in the mediator: the owner still hears of it
                log.exception("mediator of %r failed", self)
                self._finish(broken(exc))
            finally:
                if not moved:
                    self._end()

    def _move_on(self) -> bool:  # after a server's handshake: True once another thread has the open connection
        return False

    def _hand_on(self) -> None:
        """Make the hand-over left to the mediator thread, if any (``Socket.change_owner``)."""

    def _handshake_phase(self) -> bool:
        """The handshake, its outcome told to ``on_handshake``; False if it failed."""
        try:
            self._handshake()
        except BaseException as exc:
            self._life.move(State.CLOSING)
            self._on_handshake(self, exc)
            if isinstance(exc, HandshakeError) and exc.reason == "refused_peer":
                self._linger()
            return False
        self._life.move(State.OPEN)
        self._on_handshake(self, None)
        return True

    def _end(self) -> None:
        """The connection is over, or never ran: closed, descriptors released, ``wait_closed`` answered."""
        self._life.move(State.CLOSED)
        self._inbox.close()  # a sender waiting for room raises Closed instead of waiting for ever
        try:
            if self._owner is not None:
                self._owner.release(self)
            close_tcp(self._tcp)
        finally:
            self._sleeper.close()
            self._forget(self)
            self._let_go()
            self.watchers.end(self._life.reason)
            self._die()

    def _die(self) -> None:
        """Answer ``wait_closed``, once."""
        if not self._gone:
            self._gone = True
            self._living.release()

    def _let_go(self) -> None:
        """Hold nothing of the connection any more: its TLS connection's app data (for the callbacks) made a cycle
        that only the collector's rare full pass breaks, keeping an unfinished packet or unwritten output meanwhile."""
        self._conn.set_app_data(None)
        self._decoder = self.mode.decoder()
        self._out.clear()

    def _handshake(self) -> None:
        deadline = self._deadline or monotonic() + self._settings.timeout
        who = f"{'client' if self.server else 'server'} {self._peer[1]}:{self._peer[0]}"
        while True:
            ending = self._life.urgent
            if ending is not None:
                raise HandshakeError(f"handshake with {who} aborted: {ending.error}", "aborted")
            try:
                _, wait = attempt(self._conn.do_handshake)
            except SSL.Error as exc:
                failure = HandshakeFailure(
                    exc, self.server, self.verify_errors, self.expected_name, self._settings, self.certificate_requested
                )
                raise HandshakeError(f"handshake with {who} failed: {failure.cause}", failure.reason) from exc
            if not wait:
                break
            if monotonic() >= deadline:
                hint = "" if self.server else " (is a process accepting on that port, and does it speak TLS?)"
                raise HandshakeError(
                    f"{who} did not finish its TLS handshake within {self._settings.timeout:g} s{hint}", "timeout"
                )
            if self._sleeper.sleep(wait, deadline):
                self.heard = monotonic()
        if self._resumption is not None and self._resumption.handshake_done(self.verify_errors):
            self._resumption = None
        self._report = PeerReport.read(self._conn, self.server, self._settings.verify, self.verify_errors)
        if self._log:
            self._log.info("%r handshake done: %s", self, self._report.describe())

    def _serve(self) -> None:
        waits = Waits()
        clock: CloseClock | None = None
        while True:
            ending = self._life.ending
            if ending is not None and ending.urgent:
                self._finish(ending.error if ending.tell else None)
                return
            if ending is not None and clock is None:  # counted from the close, even behind a blocked write
                clock = CloseClock()
                self._life.move(State.CLOSING)
            if self._out.size < HIGH_WATER:  # deliveries from the inbox into the outgoing buffer, up to HIGH_WATER
                taken = self._inbox.take(HIGH_WATER - self._out.size)  # (and the inbox knows that we are awake)
                if taken:
                    self._out.put(taken)
            try:
                if clock is None:
                    self._open_turn(waits)
                elif self._closing_turn(waits, clock):
                    return
            except PeerClosed:
                self._peer_closed()
                return
            except (SSL.Error, OSError, FramingError) as exc:
                self._broke(exc, closing=clock is not None)
                return
            self._sleep(waits, clock)

    def _open_turn(self, waits: Waits) -> None:
        if self._handing:
            self._hand_on()
        if self._fault is not None:
            raise self._fault
        if self._idle is not None:
            self._idle.check(self.bytes_in + self._out.taken)
        if self._out.size and (not waits.write or waits.may(waits.write)):  # (no call when no write waited)
            waits.write = self._write()
        if self._owner is None:
            waits.read = 0  # the kernel holds the peer's data meanwhile
        elif waits.may(waits.read):
            waits.read = self._read()  # only when there may be something: no WantRead raised for nothing

    def _closing_turn(self, waits: Waits, clock: CloseClock) -> bool:
        """Write what was delivered before the close; True once the connection has ended, either way. A closing
        socket reads nothing more for its owner."""
        waits.read = 0
        unsent_before, backlog = unsent(self._tcp), self._out.size
        if waits.may(waits.write):
            waits.write = self._write()
        clock.progress(self._out.size < backlog, unsent_before, unsent(self._tcp))
        if not waits.write and self._inbox.empty():  # everything delivered is written first
            self._finish(None, orderly=True)
            return True
        if clock.expired():
            self._finish(None, orderly=False)
            return True
        return False

    def _sleep(self, waits: Waits, clock: CloseClock | None) -> None:
        events = waits.read | waits.write
        if clock is None and not waits.read and self._owner is not None and self._credit.reading():
            events |= IN
        # A sender wakes only a mediator that would take its message: past HIGH_WATER the write is blocked,
        # and poll wakes us when the socket takes more, without a poke for every message queued meanwhile.
        ending = self._life.ending
        if (ending is not None and ending.urgent) or not self._inbox.nap(taking=self._out.size < HIGH_WATER):
            waits.ready = 0
            return
        self._turn.release()  # an owner may write meanwhile (write_now)
        try:
            idle = self._idle.deadline if self._idle is not None else None
            waits.ready = self._sleeper.sleep(events, clock.deadline if clock is not None else idle)
        finally:
            self._turn.acquire()  # (the inbox knows it is awake at its next take)

    def _write(self) -> int:
        """Write what is buffered. 0 when all is written, else the poll event the write waits for."""
        out, conn = self._out, self._conn
        chunk = out.pending()
        while chunk is not None:
            sent, wait = write(conn, chunk)
            if wait:
                return wait
            chunk = out.sent(sent)
        return 0

    def _read(self) -> int:
        """Read and deliver until TLS would block, or a short record. Returns the poll event the read waits for:
        0 while the owner has its share of the mailbox unread, until ``consumed`` wakes us."""
        room = self._credit.room()
        if not room:
            return 0
        decoder = self._decoder
        packets: list[bytes] = []
        wait = taken = 0
        try:  # each packet counts its bytes and a message's cost: a flood of empty ones is bounded too
            while not wait and taken + len(packets) * MESSAGE_COST < min(READ_TURN, room):
                data, wait = read(self._conn, RECV_SIZE)
                if data is None:
                    break
                taken += len(data)
                try:
                    packets += decoder.feed(data)
                except FramingError as error:
                    packets += error.packets  # whole before the fault: delivered before the error
                    raise
                if len(data) < RECV_SIZE:  # OpenSSL read a whole record and holds nothing more: poll tells
                    break
        finally:
            if self._resumption is not None and self._resumption.after_read(bool(packets)):
                self._resumption = None
            self.bytes_in += taken
            if packets:
                self._answered = True
                self.packets_in += len(packets)
                self._emit([Delivery((self, ("fromsocket", p))) for p in self.mode.present(packets)])
        return wait or IN

    def _peer_closed(self) -> None:
        ending = self._life.urgent
        if ending is not None:  # stop() came first; the peer's close is its echo
            self._finish(ending.error if ending.tell else None)
            return
        error: Any = "normal"
        if self._decoder.buffered:
            error = ConnectionBroken(
                f"the peer closed the connection in the middle of a packet ({self._decoder.buffered} bytes of it"
                " arrived)",
                "incomplete",
            )
        self._finish(error, orderly=True, linger=False)

    def _broke(self, exc: BaseException, closing: bool) -> None:
        ending = self._life.urgent
        if ending is not None:  # stop() came first; the peer's end is its echo
            self._finish(ending.error if ending.tell else None)
        else:  # a closing socket's owner hears nothing more
            self._finish(None if closing else broken(exc, self.certificate_requested))

    def _finish(self, error: Any, *, orderly: bool = False, linger: bool = True) -> None:
        """The close protocol: tell the owner ``error`` unless it is None, send close_notify, and (after an orderly
        close of ours) linger. ``_end`` then releases everything."""
        self._life.move(State.CLOSING)
        if error is not None:
            self._life.told = error
            self._emit([(self, ("socket_closed", error))])
        if self._log:
            self._log.info("%r closed: %s", self, error or "orderly")
        try:
            self._conn.shutdown()  # close_notify, as far as the socket takes it without waiting
        except (SSL.Error, OSError):
            orderly = False
        if orderly and linger:
            self._linger()

    def _linger(self) -> None:
        """Half-close, then read and drop what the peer still sends, until it closes too or ``LINGER`` passes: a
        socket closed with unread data resets the connection, and a reset destroys what the peer has not read yet,
        our close_notify, or the alert that says why we refused its certificate (a TLS 1.3 client may send data
        before that alert reaches it)."""
        try:
            self._tcp.shutdown(socket.SHUT_WR)
            deadline = monotonic() + LINGER
            while monotonic() < deadline and self._life.urgent is None:
                if self._sleeper.sleep(IN, deadline) and not self._tcp.recv(RECV_SIZE):
                    break
        except OSError:
            pass
