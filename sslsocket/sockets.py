"""``Socket``: what ``accept`` and ``client`` return, as other threads see it. Its messages go to the mediator
(``mediator.Mediator``, which this class extends) through the inbox; its owner gets the mediator's."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from cryptography import x509
from OpenSSL import SSL

from . import process
from .budget import Budget
from .errors import BadMessage, Closed, ConnectionBroken
from .framing import to_bytes
from .inbox import CLOSE, FULL, WAKE, Deliver, Envelope, Inbox
from .lifecycle import CLOSED_BY_OWNER, OWNER_ENDED, Ending, State
from .mailbox import NO_CONNECTION
from .mediator import Mediator, calling
from .owner import CALLER, Owner, owner_of
from .process import Pid
from .workers import handshakers, workers


class Socket(Mediator):
    """One TLS connection and its mediator thread: send it the manual's messages, receive its replies."""

    # Set by the mediator; what a reader may look at.
    #: The name a client at ``-verify 2`` requires its server's certificate to bear; None otherwise.
    expected_name: str | None
    #: Packets delivered to the owner.
    packets_in: int
    #: The bytes read for them, framing headers included.
    bytes_in: int
    #: In a forked child: this copy of the parent's connection was dropped (``drop_copy``).
    _dropped = False
    #: The listen socket's budget for peers that read nothing (``listen(..., max_buffered=)``), or None.
    budget: Budget[Socket] | None = None

    # ---- seen from other threads -------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<Socket #{self.id} {self._peer[1]}:{self._peer[0]} {self.mode} {self._life.state.value}>"

    def __enter__(self) -> Socket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def peer(self) -> tuple[int, str]:
        """``(port, address)`` of the peer, in the manual's order."""
        return self._peer

    @property
    def state(self) -> State:
        """Where the connection is: handshaking, open, closing or closed; closing from the moment ``close()``
        returns."""
        return self._life.seen

    @property
    def packets_out(self) -> int:
        """Packets taken from the owner to be written."""
        return self._out.packets

    @property
    def bytes_out(self) -> int:
        """Their bytes, framing headers included."""
        return self._out.taken

    @property
    def idle(self) -> float | None:
        """Seconds since a byte last went either way, on a socket with an ``-idle_timeout`` (None without one)."""
        return self._idle.idle_for(self.bytes_in + self.bytes_out) if self._idle is not None else None

    @property
    def owner(self) -> Pid | Callable[[Any], object] | None:
        """The controlling process (a ``Pid``), the callback that gets the messages, or None before ``accept``
        hands the socket over."""
        owner = self._owner
        return owner.target if owner is not None else None

    @property
    def inbox_depth(self) -> int:
        """How many messages wait in the inbox for the mediator to take them."""
        return len(self._inbox)

    @property
    def thread(self) -> threading.Thread | None:
        """The mediator thread (named ``sslsocket-N-host:port`` while it serves this connection); None before
        ``start``."""
        return self._thread

    @property
    def peer_certificate(self) -> x509.Certificate | None:
        """The peer's certificate after the handshake (a ``cryptography`` object), or None."""
        return self._report.peer_certificate

    @property
    def verify_result(self) -> str:
        """What the certificate check found: ``"ok"``, ``"not checked"``, ``"no certificate"``, or the forgiven
        errors."""
        return self._report.verify_result

    @property
    def protocol(self) -> str | None:
        """The TLS version after the handshake (``"TLSv1.3"``), or None before."""
        return self._report.protocol

    @property
    def cipher(self) -> str | None:
        """The cipher suite after the handshake, or None before."""
        return self._report.cipher

    @property
    def group(self) -> str | None:
        """The key exchange group after the handshake (``"X25519MLKEM768"``, ``"x25519"``...), or None."""
        return self._report.group

    @property
    def servername(self) -> str | None:
        """On a server: the host name the client asked for (SNI), or None."""
        return self._report.servername

    @property
    def resumed(self) -> bool:
        """Whether the handshake resumed an earlier session (a client's, unless ``-reuse_sessions false``)."""
        return self._report.resumed

    def start(self) -> None:
        """Give the connection its mediator thread: the library does this; it runs the handshake, then the
        connection. When no thread can be started (``RuntimeError``, the system's limit on tasks), the connection
        is closed, its descriptors released, and the error raised."""
        pool = handshakers if self._life.state is State.HANDSHAKING else workers
        try:
            thread = pool.run(self._run, f"sslsocket-{self.id}-{self._peer[1]}:{self._peer[0]}")
        except RuntimeError:
            self.end_unstarted()
            raise
        with self._thread_lock:
            if self._thread is None:  # the mediator sets it too, first thing, and again as it moves on
                self._thread = thread

    def _move_on(self) -> bool:
        """After a server's handshake (in a thread of ``handshakers``), go on in a thread that has run none
        (``workers``): a handshake leaves some 35 KiB behind in its thread for the thread's life (OpenSSL's
        per-thread random generators, glibc's per-thread cache of freed blocks), which the open connection would
        keep. False, and this thread goes on, when no thread can be started."""
        try:
            thread = workers.run(self._run, self._thread.name if self._thread else f"sslsocket-{self.id}")
        except BaseException as exc:  # this thread goes on, or (after any other error) ends it
            if isinstance(exc, RuntimeError):
                return False
            raise
        with self._thread_lock:
            self._thread = thread
        return True

    def handshake_here(self) -> None:
        """A client's handshake, in the thread of ``client`` (which waits anyway), with no hand-off to the mediator
        thread, which starts for the open connection. Raises what the handshake raised, the connection closed."""
        with self._turn:
            try:
                self._handshake()
            except BaseException:
                self._life.move(State.CLOSING)
                self._end()
                raise
            self._life.move(State.OPEN)

    @property
    def aborted(self) -> bool:
        """Whether an abort was asked (``stop()``, an exit signal during ``client``...)."""
        return self._life.urgent is not None

    def end_unstarted(self) -> None:
        """Close a socket whose mediator thread never started (a client aborted as its handshake ended)."""
        self._end()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the mediator has ended: the connection is closed and its descriptors are released. False if
        ``timeout`` passed first."""
        if self._gone:
            return True
        if not self._living.acquire(timeout=-1 if timeout is None else min(max(timeout, 0), threading.TIMEOUT_MAX)):
            return self._gone  # (another waiter may hold the lock for a moment after the end)
        self._living.release()
        return True

    def send(self, msg: Any) -> None:
        """``Socket ! Msg``: ``(pid, ("deliver", data))`` or ``(pid, "close")``, from the controlling process."""
        if not (type(msg) is tuple and len(msg) == 2):
            raise BadMessage(f"a socket takes (pid, ('deliver', data)) or (pid, 'close'), not {msg!r}")
        sender, body = msg
        if body == "close":
            self._close(sender)
        elif type(body) is tuple and len(body) == 2 and body[0] == "deliver":
            self._deliver(sender, body[1])
        else:
            raise BadMessage(f"a socket takes ('deliver', data) or 'close', not {body!r}", ("bad_message", body))

    def deliver(self, data: Any) -> None:
        """The same as ``sock.send((self(), ("deliver", data)))``."""
        self._deliver(CALLER, data)

    def close(self) -> None:
        """The same as ``sock.send((self(), "close"))``; closing a closed socket does nothing."""
        if self._life.state is not State.CLOSED:
            self._close(CALLER)

    def _deliver(self, sender: object, data: Any) -> None:
        owner = self._owner
        if owner is not None:
            owner.check(sender, self)
        if self._life.closed_by_owner:
            why = "is the parent's (this process is a fork)" if self._dropped else "was closed by its owner"
            raise Closed(
                f"socket #{self.id} to {self._peer[1]}:{self._peer[0]} {why}: nothing more can be delivered", "closed"
            )
        payload = data if type(data) is bytes else to_bytes(data)
        self._put(Deliver(self.mode.header_for(len(payload)), payload))

    def _close(self, sender: object) -> None:
        owner = self._owner
        if owner is not None:
            owner.check(sender, self)
        if self._life.ask(CLOSED_BY_OWNER) and not self._put(CLOSE):
            self.wake()  # even a mediator blocked on a full write, which took nothing more, starts its close clock now

    def drop_copy(self) -> None:
        """In a child after ``fork()``: close this process's copies of the connection's descriptors, sending
        nothing; the connection, and its mediator thread, are the parent's. Here a ``deliver`` raises ``Closed``,
        and nothing waits for room."""
        self._dropped = self._life.closed_by_owner = True
        self._inbox = Inbox()  # the parent's may be locked for ever here, by a thread of the parent's
        self._inbox.close()
        self._owner_lock = threading.RLock()
        self.watchers.renew()
        self._life.move(State.CLOSED)
        self._tcp.close()
        self._sleeper.waker.close_copy()
        self._let_go()
        self._die()
        self.watchers.end(NO_CONNECTION)  # (its monitors here; the parent's hear of its end there)

    def abort(self, error: ConnectionBroken, tell_owner: bool = True, wake: bool = True) -> None:
        """End the connection at once (``stop()``, a closed listen socket): the owner hears ``error``. With
        ``wake=False`` the socket is only marked, so that ``stop()`` can mark every socket before any of them
        acts, and none mistakes its peer's abort for that peer's own close."""
        self._life.ask(Ending("aborted", error, urgent=True, tell=tell_owner))
        if wake:
            self.wake()

    def hold(self) -> None:
        """Run by another socket's thread (``Inbox.force``): read nothing from the peer while a full inbox holds
        what this socket's callback delivered to it."""
        self._credit.hold()

    def let_go(self) -> None:
        """Run by that socket's thread: its inbox has room again."""
        self._credit.let_go()

    def _put(self, item: Envelope) -> bool:
        """Hand ``item`` to the mediator, through its inbox, the one way (an owner's direct write is a way through
        it, taken only while nothing waits in the inbox). A callback, of this socket or another, never waits: past the
        inbox's bound its own socket reads nothing more until there is room. Once the connection has ended (the
        peer's close, ``stop()``), now or while this waited for room, ``item`` is dropped, as Erlang's ``!`` to an
        ended process: the owner has, or will have, the ``socket_closed`` message that says so. True if this woke
        the mediator."""
        if type(item) is Deliver and self._answered and not self._inbox.queue and self.write_now(item):
            return False  # (hints, read again under the turn: a flood behind a busy mediator skips the call)
        source = calling.source
        if source is not None:
            outcome = self._inbox.force(item, source)
        elif (outcome := self._inbox.offer(item, None)) == FULL:
            outcome = self._wait_for_room(item)
        if outcome != WAKE:
            return False
        self.wake()
        return True

    def _wait_for_room(self, item: Envelope) -> int:
        """``Inbox.offer`` for the owner, which waits for room, within the listen socket's budget."""
        budget = self.budget
        if budget is None or self.aborted:  # (an aborted one, the budget's victim, is no longer counted)
            return self._inbox.offer(item, process.self)
        self._over_budget(budget.waits(self), budget)
        try:
            return self._inbox.offer(item, process.self)
        finally:
            budget.done(self)

    def _over_budget(self, victim: Socket | None, budget: Budget[Socket]) -> None:
        if victim is not None:
            why = (
                f"its peer read nothing while {budget.slots} other connections' peers did not either: the listen"
                f" socket's budget of {budget.limit:,} bytes for them is spent, and this one waited longest"
            )
            victim.abort(ConnectionBroken(why, "budget"))

    def write_now(self, item: Deliver) -> bool:
        """The fast path of an owner's ``send``, run in the owner's thread: write ``item`` at once, as the mediator
        would, while the mediator sleeps with nothing to do (or has not begun), so that an answer costs no hand-off
        to its thread. Only for a first packet, or in a request/response rhythm (something was read since the last
        such write): the packets of a one-way stream go through the inbox and are coalesced into large writes.
        False when the mediator must take it. A write that would block leaves its bytes in the outgoing buffer,
        which the mediator then writes, exactly once; an error is the mediator's to act on."""
        if not self._turn.acquire(blocking=False):
            return False
        try:  # the mediator is in poll, or not yet begun: nothing it holds changes until it has the turn again
            life = self._life
            idle = not (self._inbox.queue or self._out.size)  # nothing waits to go before this packet
            if not (idle and self._answered and life.state is State.OPEN and life.ending is None):
                return False
            self._answered = False
            self._out.put((item,))
            try:
                if not self._write():
                    return True
            except (SSL.Error, OSError) as exc:
                self._fault = exc
        finally:
            self._turn.release()
        self.wake()
        return True

    def claim(self, owner: Pid | Callable[[Any], object]) -> None:
        """Give the socket its owner (``accept``, ``client``): from now on it reads and sends to the owner."""
        self._set_owner(owner_of(owner))
        if self._thread is not None:  # (a client's is claimed before its thread starts: it reads from its start)
            self.wake()  # a mediator without an owner sleeps without reading

    def _set_owner(self, owner: Owner) -> None:
        if not owner.adopt(self):
            self._life.ask(OWNER_ENDED)
        self._owner = owner

    def change_owner(self, new: Pid | Callable[[Any], object]) -> None:
        """``controlling_process``: move what waits in the old owner's mailbox, then switch, in one step. It waits
        for a callback of this socket under way, except from inside another socket's callback: then, if one is
        under way, the switch is left to this socket's mediator, which makes it as soon as that callback returns
        and before any other message (two callbacks handing each other's socket on would wait for ever)."""
        source = calling.source
        if source is None or source is self:
            self._owner_lock.acquire()
        elif not self._owner_lock.acquire(blocking=False):
            self._handing.append(new)  # taken in order, none lost, by the mediator thread (``_hand_on``)
            self.wake()
            return
        try:
            self._switch(new)
        finally:
            self._owner_lock.release()
        self.wake()

    def _switch(self, new: Pid | Callable[[Any], object]) -> None:
        old = self._owner
        waiting = old.take_back(self) if old is not None else []
        if old is not None:
            old.release(self)
        self._credit.given_back(waiting)  # charged again below, to the new owner
        self._set_owner(owner_of(new))
        self._emit(waiting)

    def _hand_on(self) -> None:
        with self._owner_lock:
            while self._handing:
                self._switch(self._handing.popleft())
