"""The mediator: one thread per connection, the only code that touches its ``SSL.Connection``.

Theory of operation
-------------------

A ``Socket`` is what ``accept`` and ``client`` return: the manual's "process located between the user and the
actual socket". Its thread runs three phases:

1. **Handshake.** A non-blocking ``do_handshake`` loop, bounded by the ``-timeout`` deadline and woken by
   ``abort`` (``stop()``, a closed listen socket). The outcome goes to ``on_handshake`` (a waiting ``client``
   call, or the listener that hands the socket to an acceptor).

2. **Serve.** One loop over ``poll`` on the TCP socket and a waker that any thread can poke (never a timer):

   - the inbox (a bounded ``queue.Queue``) is drained into the outgoing buffer while that buffer is below
     ``HIGH_WATER``; past it the inbox fills and senders block in ``send``: backpressure, not growth;
   - the outgoing buffer is written, many packets coalesced into one ``SSL_write``; a write that must be retried
     is retried with the very same bytes, as OpenSSL requires, once ``poll`` says the socket is ready for it;
   - TLS is read until it would block, or until a record shorter than the largest (OpenSSL then holds nothing
     more, and ``poll`` tells whether the kernel does); the bytes go through the mode's pure decoder, and the
     packets go to the owner in one batch, as ``(sock, ("fromsocket", data))``;
   - it sleeps in ``poll`` on what it waits for: readable always (while it has an owner), writable only while a
     write is blocked.

   Senders put their message first, then poke the waker only if the mediator said it was going to sleep; the
   mediator says so first, then looks at the inbox once more. Either way no message waits unseen.

3. **End.** *Closed by you* (the owner's ``close``, or the owner process ending): everything already delivered
   is written, then close_notify, then the TCP socket is shut and closed; nothing more is sent to the owner. A
   close never waits for room in the inbox, and counts from the moment it is made: a peer that takes nothing for
   ``CLOSE_TIMEOUT`` is given up on even when the close sits behind a full inbox.
   *Broken by the peer*: the packets already whole are delivered, then one ``("socket_closed", "normal")`` for a
   close_notify at a packet boundary, or ``("socket_closed", error)`` for anything else.
   Either way, when the thread ends the inbox is closed: a ``deliver`` still waiting for room raises ``Closed``.

A callback owner is called in the mediator's thread; what it delivers from there goes straight to the outgoing
buffer (the inbox would make the thread wait on itself once full), and the socket reads nothing more while that
buffer is past ``HIGH_WATER``.

The thread itself comes from ``Workers``: when a connection ends, its thread waits a while to serve the next one.

Who owns what: the mediator thread owns the TLS connection, the decoder and the outgoing buffer. ``_owner_lock``
guards the owner, so ``controlling_process`` can move the messages already waiting in the old owner's mailbox and
switch the owner in one step that no outgoing message can cut into.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import itertools
import logging
import os
import queue
import select
import socket
import sys
import termios
import threading
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

from cryptography import x509
from OpenSSL import SSL

from . import process
from .errors import BadMessage, Closed, ConnectionBroken, HandshakeError, NotOwner
from .flags import (
    NAME_MISMATCH,
    UNKNOWN_ISSUER_ERRORS,
    Settings,
    connection_logger,
    is_ip,
    require_name,
    verify_error_text,
)
from .framing import FramingError, Mode, to_bytes
from .process import Delivery, Pid

log = logging.getLogger("sslsocket")

Owner = Pid | Callable[[Any], object]

#: Bytes read from TLS per call: a TLS record's most plaintext. A read of this size always empties the record it
#: reads, so OpenSSL never holds plaintext back, and ``poll`` on the TCP socket alone tells when there is more.
RECV_SIZE = 16 * 1024
#: Bytes handed to one ``SSL_write``: sixteen full records. Each call into OpenSSL gives up the GIL and takes it back,
#: which costs a thread hand-off when another thread wants it, so the calls are few and large.
WRITE_CHUNK = 256 * 1024
#: Bytes read per turn of the loop before the inbox and the writes get their turn again (a few milliseconds of
#: decryption): the owner gets its packets in large batches, and is woken less often.
READ_TURN = 2 * 1024 * 1024
#: Outgoing bytes buffered before the mediator stops taking deliveries from its inbox. With the inbox's 4 MiB, a
#: socket whose peer reads nothing holds at most some 8 MiB before ``send`` blocks.
HIGH_WATER = 4 * 1024 * 1024
#: What the inbox holds before ``send`` blocks its caller, in units of ``INBOX_UNIT`` bytes of payload, each
#: message counting one unit at least: 1,024 small messages, or 4 MiB of large ones.
INBOX_SIZE = 1024
INBOX_UNIT = 4096
#: Bytes of packets a socket may have waiting unread in its owner's mailbox before it stops reading from the
#: network: a peer faster than the owner is then held back by TCP instead of filling memory. No larger, because
#: packets made in this thread and freed in the owner's make glibc give memory back and take it again (a page
#: fault per page) once some megabytes come and go: at 4 MiB a 1 MiB stream took 40 to 200 faults per MB and ran
#: up to a third slower; at 1 MiB it takes 2, and small or 16 KiB packets go as fast.
MAILBOX_SHARE = 1024 * 1024
#: How long an orderly close may wait for a peer that takes none of its bytes before it gives up on that peer. A
#: peer that reads, however slowly, gets everything that was delivered before the close.
CLOSE_TIMEOUT = 10.0
#: How long, after its close_notify, a closing socket reads what the peer still sends, so that closing with
#: unread data does not reset the connection and destroy what was just written.
LINGER = 1.0

_ids = itertools.count(1)
_HUP = select.POLLHUP | select.POLLERR


class State(enum.Enum):
    HANDSHAKING = "handshaking"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Waker:
    """A file descriptor that any thread can make readable to wake the mediator's ``poll``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # so that no poke can write to a descriptor number already reused
        self._closed = False
        if hasattr(os, "eventfd"):
            self._read_fd = self._write_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - not Linux
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)

    def fileno(self) -> int:
        return self._read_fd

    def poke(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._write_fd, b"\1\0\0\0\0\0\0\0")
            except BlockingIOError:
                pass  # already readable: nobody sleeps unwoken

    def drain(self) -> None:
        try:
            os.read(self._read_fd, 4096)
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        with self._lock:
            self._close_fds()

    def close_copy(self) -> None:
        """``close`` in a child after ``fork()``, where no other thread can hold the lock, and it may be held
        for ever by a thread of the parent's."""
        self._lock = threading.Lock()
        self._close_fds()

    def _close_fds(self) -> None:
        if self._closed:  # a child forked between a mediator's teardown and its leaving the registry
            return
        self._closed = True
        os.close(self._read_fd)
        if self._write_fd != self._read_fd:
            os.close(self._write_fd)


class Inbox(queue.Queue[tuple[Any, ...]]):
    """A ``queue.Queue`` whose size is weighed in bytes, not messages: ``("deliver", header, payload)`` weighs
    one unit per ``INBOX_UNIT`` bytes of payload (one at least), anything else one. ``put`` blocks while the inbox
    holds ``maxsize`` units or more, so a sender of large packets is held back as soon as one of small ones; a
    single message larger than the whole inbox still enters an empty one.

    The mediator, its only reader, takes what waits with ``take``: under one lock, not a ``get`` per message. A
    close never waits for room (it weighs one unit, and comes once). When the connection has ended, ``close``
    empties the inbox and wakes every sender still waiting for room: ``offer`` then refuses."""

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self._weight = 0
        self._closed = False

    def offer(self, item: tuple[Any, ...], sender: Pid | None = None) -> bool:
        """Put ``item``, waiting while the inbox is full (a delivery only); False once the inbox is closed. A
        ``sender`` process waiting here is woken by its exit signal, and raises ``Exit``: nothing was put."""
        with self.not_full:
            if self._must_wait(item):
                if sender is not None:
                    sender.waiting_on(self.not_full)
                try:
                    while self._must_wait(item):
                        if sender is not None:
                            sender.check_exit()
                        self.not_full.wait()
                finally:
                    if sender is not None:
                        sender.waiting_on(None)
            if self._closed:
                return False
            self._put(item)
            return True

    def _must_wait(self, item: tuple[Any, ...]) -> bool:
        return not self._closed and self._weight >= self.maxsize and item[0] == "deliver"

    def close(self) -> None:
        """The connection has ended: drop what waits, and let no sender wait any longer."""
        with self.mutex:
            self._closed = True
            self.queue.clear()
            self._weight = 0
            self.not_full.notify_all()

    def _qsize(self) -> int:
        return self._weight  # 0 exactly when empty: every message weighs one unit at least

    def _put(self, item: tuple[Any, ...]) -> None:
        self.queue.append(item)
        self._weight += _weight_of(item)

    def _get(self) -> tuple[Any, ...]:
        item: tuple[Any, ...] = self.queue.popleft()
        self._weight -= _weight_of(item)
        return item

    def empty(self) -> bool:
        """Whether nothing waits: without the lock, as good as ``Queue.empty`` (a sender may put right after)."""
        return not self.queue

    def take(self, room: int) -> list[tuple[Any, ...]]:
        """Remove the oldest messages, in order, while their bytes fit ``room`` (the first at least), up to the
        first that is not a delivery; wake the senders that wait for space."""
        taken: list[tuple[Any, ...]] = []
        with self.mutex:
            waiting, weight = self.queue, self._weight
            while waiting and room > 0:
                item = self._get()
                taken.append(item)
                if item[0] != "deliver":
                    break
                room -= len(item[1]) + len(item[2])
            if taken and weight >= self.maxsize:  # senders wait only while it is full
                self.not_full.notify_all()
        return taken


def _weight_of(item: tuple[Any, ...]) -> int:
    return 1 + len(item[2]) // INBOX_UNIT if item[0] == "deliver" else 1


class _PeerClosed(Exception):
    """The peer sent close_notify."""


def _broken(exc: BaseException) -> ConnectionBroken:
    """The ``error`` of ``("socket_closed", error)`` for an exception from the TLS connection."""
    if isinstance(exc, ConnectionBroken):
        return exc
    if isinstance(exc, SSL.SysCallError):
        code, text = exc.args if len(exc.args) == 2 else (-1, str(exc))
        if code == -1 or code == 0:
            error = ConnectionBroken(
                "the peer closed its TCP connection without a TLS close_notify (truncated)", "truncated"
            )
        else:
            error = ConnectionBroken(f"the connection failed: {text}", "reset" if code == errno.ECONNRESET else "os")
    elif isinstance(exc, SSL.Error):
        text = _ssl_error_text(exc)
        if "unexpected eof" in text:
            error = ConnectionBroken(
                "the peer closed its TCP connection without a TLS close_notify (truncated)", "truncated"
            )
        else:
            error = ConnectionBroken(f"TLS error: {text}", "tls")
    elif isinstance(exc, OSError):
        error = ConnectionBroken(f"the connection failed: {exc.strerror or exc}", "os")
    else:
        error = ConnectionBroken(f"the mediator failed: {exc!r}", "internal")
        error.__cause__ = exc  # a bug: its traceback says where (it is logged too)
        return error
    # The cause without its traceback: those frames are the mediator's, and would keep the socket alive as long as
    # its owner keeps the error.
    error.__cause__ = exc.with_traceback(None)
    return error


# OpenSSL's reasons for a failed handshake, in words that say what to do about them.
_HANDSHAKE_REASONS = {
    "unsupported protocol": "the peer offers only TLS versions this side refuses (TLS 1.2 is the oldest accepted)",
    "protocol version": "the peer refuses every TLS version this side offers (TLS 1.2 and 1.3)",
    "no shared cipher": "no cipher in common with the peer (see -cipher and -ciphersuites)",
    "handshake failure": "the peer refused the handshake (no cipher or TLS version in common?)",
    "wrong version number": "the peer is not speaking TLS",
    "http request": "the peer is speaking plain HTTP, not TLS",
    "packet length too long": "the peer is not speaking TLS",
    "record layer failure": "the peer is not speaking TLS",
    "certificate required": "the peer requires a certificate from this side: give -cert",
    "unknown ca": "the peer does not trust the issuer of this side's certificate",
    "bad certificate": "the peer refused this side's certificate",
    "certificate expired": "the peer says this side's certificate has expired",
}


def _ssl_error_text(exc: SSL.Error) -> str:
    parts = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(item, tuple) and len(item) == 3:
            parts.append(str(item[2]))
    return "; ".join(parts) or str(exc) or type(exc).__name__


class Socket:
    """One TLS connection and its mediator thread: send it the manual's messages, receive its replies."""

    # What a reader may look at, set by the mediator (the handshake's outcome, the counters).
    #: The peer's certificate after the handshake (a ``cryptography`` object), or None.
    peer_certificate: x509.Certificate | None
    #: What the certificate check found: ``"ok"``, ``"not checked"``, ``"no certificate"``, or the forgiven error.
    verify_result: str
    #: The TLS version after the handshake (``"TLSv1.3"``), or None before.
    protocol: str | None
    #: The cipher suite after the handshake, or None before.
    cipher: str | None
    #: The key exchange group after the handshake (``"X25519MLKEM768"``, ``"x25519"``...), or None.
    group: str | None
    #: On a server: the host name the client asked for (SNI), or None.
    servername: str | None
    #: The name a client at ``-verify 2`` requires its server's certificate to bear; None otherwise.
    expected_name: str | None
    #: Packets delivered to the owner.
    packets_in: int
    #: The bytes read for them, framing headers included.
    bytes_in: int
    #: Packets taken from the owner to be written.
    packets_out: int
    #: Their bytes, framing headers included.
    bytes_out: int

    def __init__(
        self,
        tcp: socket.socket,
        context: SSL.Context,
        *,
        server: bool,
        mode: Mode,
        settings: Settings,
        on_handshake: Callable[[Socket, BaseException | None], None],
        owner: Owner | None = None,
        hostname: str | None = None,
        forget: Callable[[Socket], None] = lambda sock: None,
        deadline: float | None = None,
    ) -> None:
        self.id = next(_ids)
        self.mode = mode
        self.server = server
        peer = tcp.getpeername()
        self._peer = (peer[1], peer[0])
        self._tcp = tcp
        tcp.setblocking(False)
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._conn = SSL.Connection(context, tcp)
        self._conn.set_app_data(self)
        if server:
            self._conn.set_accept_state()
        else:
            self._conn.set_connect_state()
            if hostname and not is_ip(hostname):
                self._conn.set_tlsext_host_name(hostname.encode("idna"))
        self._settings = settings
        self._deadline = deadline  # when the handshake must be done; by default -timeout from the thread's start
        self.expected_name = (settings.servername or hostname) if not server and settings.verify == 2 else None
        if self.expected_name:
            require_name(self._conn, self.expected_name)
        self._log = connection_logger(settings.log) if settings.log else None
        self._decoder = mode.decoder()
        self._on_handshake = on_handshake
        self._forget = forget
        self._inbox = Inbox(INBOX_SIZE)
        self._own: list[tuple[Any, ...]] = []  # what a callback owner sent from the mediator's own thread
        self._waker = Waker()
        self._waker_fd = self._waker.fileno()
        self._poller = select.poll()
        self._poller.register(self._waker_fd, select.POLLIN)
        self._poll_mask = 0
        self._sleeping = False
        self._abort_error: ConnectionBroken | None = None
        self._abort_tells_owner = True
        self._close_sent = False
        self._owner_gone = False
        self._owner_lock = threading.Lock()
        self._owner: Owner | None = None
        self._unread = 0  # weight of this socket's packets waiting in its owner's mailbox
        self._unread_lock = threading.Lock()
        self._paused = False  # reading stopped until the owner catches up
        self._state = State.HANDSHAKING
        self._out: deque[bytes | memoryview] = deque()
        self._out_size = 0
        self._pending: memoryview | None = None
        # Counters for sslsocket.i(), written by the mediator thread alone.
        self.packets_in = self.bytes_in = self.packets_out = self.bytes_out = 0
        self.verify_errors: list[tuple[int, int]] = []
        self.peer_certificate = None
        self.verify_result = "not checked"
        self.protocol = self.cipher = self.group = self.servername = None
        if owner is not None:
            self._set_owner(owner)
        self._name = f"sslsocket-{self.id}-{peer[0]}:{peer[1]}"
        self._thread: threading.Thread | None = None
        self._ident = 0  # the mediator thread's, once it runs
        self._ended = threading.Event()

    # ---- seen from other threads -------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"<Socket #{self.id} {self._peer[1]}:{self._peer[0]} {self.mode} {self._state.value}>"

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
        """Where the connection is: handshaking, open, closing or closed."""
        return self._state

    @property
    def owner(self) -> Owner | None:
        """The controlling process (a ``Pid``), the callback that gets the messages, or None before ``accept``
        hands the socket over."""
        return self._owner

    @property
    def inbox_depth(self) -> int:
        """How many messages wait in the inbox for the mediator to take them."""
        return len(self._inbox.queue)

    @property
    def thread(self) -> threading.Thread | None:
        """The mediator thread (named ``sslsocket-N-host:port`` while it serves this connection); None before
        ``start``."""
        return self._thread

    def start(self) -> None:
        """Give the connection its mediator thread: the library does this; it runs the handshake, then the
        connection. When no thread can be started (``RuntimeError``, the system's limit on tasks), the connection
        is closed, its descriptors released, and the error raised."""
        try:
            self._thread = workers.run(self._run, self._name)
        except RuntimeError:
            self._end()
            raise

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the mediator has ended: the connection is closed and its descriptors are released. False if
        ``timeout`` passed first."""
        return self._ended.wait(timeout)

    def send(self, msg: Any) -> None:
        """``Socket ! Msg``: ``(pid, ("deliver", data))`` or ``(pid, "close")``, from the controlling process."""
        if not (type(msg) is tuple and len(msg) == 2):
            raise BadMessage(f"a socket takes (pid, ('deliver', data)) or (pid, 'close'), not {msg!r}")
        sender, body = msg
        owner = self._owner
        if isinstance(owner, Pid) and (sender is not owner or process.self() is not owner):
            me = process.self()
            who = f"{me!r}" if sender is me else f"{me!r}, sending as {sender!r},"
            raise NotOwner(
                f"only the controlling process {owner!r} may send to {self!r}; {who} is not it",
                ("not_owner", sender),
            )
        if body == "close":
            if not self._close_sent and self._state is not State.CLOSED:
                self._close_sent = True
                self._put(("close",))
                self._waker.poke()  # even a mediator blocked on a full write starts its close timer now
        elif type(body) is tuple and len(body) == 2 and body[0] == "deliver":
            if self._close_sent:
                raise Closed(
                    f"socket #{self.id} to {self._peer[1]}:{self._peer[0]} was closed by its owner: nothing more can"
                    " be delivered",
                    "closed",
                )
            payload = to_bytes(body[1])
            self._put(("deliver", self.mode.header_for(len(payload)), payload))
        else:
            raise BadMessage(f"a socket takes ('deliver', data) or 'close', not {body!r}", ("bad_message", body))

    def deliver(self, data: Any) -> None:
        """The same as ``sock.send((self(), ("deliver", data)))``."""
        self.send((process.self() if isinstance(self._owner, Pid) else None, ("deliver", data)))

    def close(self) -> None:
        """The same as ``sock.send((self(), "close"))``; closing a closed socket does nothing."""
        if self._state is State.CLOSED:
            return
        self.send((process.self() if isinstance(self._owner, Pid) else None, "close"))

    def drop_copy(self) -> None:
        """In a child after ``fork()``: close this process's copies of the connection's descriptors, sending
        nothing; the connection, and its mediator thread, are the parent's."""
        self._state = State.CLOSED
        self._tcp.close()
        self._waker.close_copy()
        self._let_go()
        self._ended.set()

    def abort(self, error: ConnectionBroken, tell_owner: bool = True, wake: bool = True) -> None:
        """End the connection at once (``stop()``, a closed listen socket): the owner hears ``error``. With
        ``wake=False`` the socket is only marked, so that ``stop()`` can mark every socket before any of them
        acts, and none mistakes its peer's abort for that peer's own close."""
        if self._abort_error is None:
            self._abort_error = error
            self._abort_tells_owner = tell_owner
        if wake:
            self._waker.poke()

    def wake(self) -> None:
        """Make the mediator look at its inbox and its abort flag now."""
        self._waker.poke()

    def _put(self, item: tuple[Any, ...]) -> None:
        """Hand ``item`` to the mediator. Once the connection has ended (the peer's close, ``stop()``), now or
        while this waited for room, it is dropped, as Erlang's ``!`` to an ended process: the owner has, or will
        have, the ``socket_closed`` message that says so."""
        if threading.get_ident() == self._ident:  # a callback owner, answering in the mediator's thread
            self._own.append(item)  # never the inbox: the thread would wait on itself once the inbox is full
        elif self._inbox.offer(item, self._owner if isinstance(self._owner, Pid) else None) and self._sleeping:
            self._waker.poke()

    def _set_owner(self, owner: Owner) -> None:
        if isinstance(owner, Pid) and not owner.adopt(self):
            self._owner_gone = True
        self._owner = owner

    def claim(self, owner: Owner) -> None:
        """Give an accepted socket its owner: from now on it reads and sends to the owner."""
        self._set_owner(owner)
        self._waker.poke()

    def change_owner(self, new: Owner) -> None:
        """``controlling_process``: move what waits in the old owner's mailbox, then switch, in one step."""
        with self._owner_lock:
            old = self._owner
            if isinstance(old, Pid):
                waiting = old.take_from(self)
                old.release(self)
                self.consumed(sum(m.weight for m in waiting if type(m) is Delivery))  # counted again when moved
            else:
                waiting = []
            self._set_owner(new)
            if waiting:
                self._emit_locked(waiting)
        self._waker.poke()

    def consumed(self, weight: int) -> None:
        """The owner received packets of this weight: if reading was stopped and the owner has caught up, resume."""
        with self._unread_lock:
            self._unread -= weight
            resume = self._paused and self._unread <= MAILBOX_SHARE // 2
            if resume:
                self._paused = False
        if resume:
            self._waker.poke()

    def _owner_ended(self, pid: Pid) -> None:
        if self._owner is pid:
            self._owner_gone = True
            self._waker.poke()

    # ---- to the owner ------------------------------------------------------------------------------------

    def _emit(self, msgs: list[Any]) -> None:
        with self._owner_lock:
            owner = self._owner
            if isinstance(owner, Pid):
                self._emit_locked(msgs)
                return
        if owner is not None:
            self._call_owner(owner, msgs)

    def _emit_locked(self, msgs: list[Any]) -> None:
        owner = self._owner
        if isinstance(owner, Pid):
            weight = sum(m.weight for m in msgs if type(m) is Delivery)
            if weight:
                with self._unread_lock:
                    self._unread += weight
            if not owner.post_many(msgs):
                self._owner_gone = True
        elif owner is not None:
            self._call_owner(owner, msgs)

    def _call_owner(self, owner: Callable[[Any], object], msgs: list[Any]) -> None:
        """A callback owner that raises is an owner that died: logged, and the socket closes."""
        for msg in msgs:
            try:
                owner(msg)
            except Exception:
                log.exception("the owner callback of %r failed on %r; closing the socket", self, msg)
                self._owner_gone = True
                self._waker.poke()
                return

    # ---- the mediator thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        self._thread = threading.current_thread()  # already so, unless this thread began before start() returned
        self._ident = threading.get_ident()
        try:
            try:
                self._handshake()
            except BaseException as exc:
                self._state = State.CLOSED
                self._on_handshake(self, exc)
                if isinstance(exc, HandshakeError) and exc.reason == "refused_peer":
                    self._linger()
                return
            self._state = State.OPEN
            self._on_handshake(self, None)
            self._serve()
        except BaseException as exc:  # a bug in the mediator: the owner still hears of it
            log.exception("mediator of %r failed", self)
            self._finish(_broken(exc))
        finally:
            self._end()

    def _end(self) -> None:
        """The connection is over, or never ran: closed, descriptors released, ``wait_closed`` answered."""
        self._state = State.CLOSED
        self._inbox.close()  # a sender waiting for room raises Closed instead of waiting for ever
        try:
            self._teardown()
        finally:
            self._let_go()
            self._ended.set()

    def _let_go(self) -> None:
        """Hold nothing of the connection any more: its TLS connection pointed back at this socket (app data, for
        the verify callback), a cycle that only the garbage collector's rare full pass would break, and meanwhile
        an unfinished packet of up to 64 MiB, or unwritten output, stayed in memory with it."""
        self._conn.set_app_data(None)
        self._decoder = self.mode.decoder()
        self._out.clear()
        self._out_size = 0
        self._pending = None
        self._own = []

    def _poll_once(self, events: int, deadline: float | None) -> int:
        """Sleep until the TCP socket has one of ``events``, the waker is poked, or the deadline. Returns what
        the TCP socket is ready for (0 when it was not what woke us)."""
        if events != self._poll_mask:  # one poller for the connection's life; told only of changes
            if not events:
                self._poller.unregister(self._tcp)
            elif not self._poll_mask:
                self._poller.register(self._tcp, events)
            else:
                self._poller.modify(self._tcp, events)
            self._poll_mask = events
        timeout = None if deadline is None else max(0.0, deadline - monotonic()) * 1000
        ready = 0
        for fd, revents in self._poller.poll(timeout):
            if fd == self._waker_fd:
                self._waker.drain()
            else:
                ready = revents
        return ready

    def _handshake(self) -> None:
        conn = self._conn
        deadline = self._deadline or monotonic() + self._settings.timeout
        who = f"{'client' if self.server else 'server'} {self._peer[1]}:{self._peer[0]}"
        while True:
            if self._abort_error is not None:
                raise HandshakeError(f"handshake with {who} aborted: {self._abort_error}", "aborted")
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                events = select.POLLIN
            except SSL.WantWriteError:
                events = select.POLLOUT
            except SSL.Error as exc:
                raise HandshakeError(
                    f"handshake with {who} failed: {self._handshake_cause(exc)}", self._why(exc)
                ) from exc
            if monotonic() >= deadline:
                hint = "" if self.server else " (is a process accepting on that port, and does it speak TLS?)"
                raise HandshakeError(
                    f"{who} did not finish its TLS handshake within {self._settings.timeout:g} s{hint}", "timeout"
                )
            self._poll_once(events, deadline)
        self._after_handshake()

    def _why(self, exc: SSL.Error) -> str:
        """The reason of a failed handshake: ``"hostname"``, ``"refused_peer"`` (a server refusing its client's
        certificate, or its lack of one), or ``"tls"``."""
        if self.verify_errors and self.verify_errors[-1][1] in NAME_MISMATCH:
            return "hostname"
        if self.server and (self.verify_errors or "did not return a certificate" in _ssl_error_text(exc)):
            return "refused_peer"
        return "tls"

    def _handshake_cause(self, exc: SSL.Error) -> str:
        if self.verify_errors:
            depth, code = self.verify_errors[-1]
            if code in NAME_MISMATCH:
                return f"its certificate does not name {self.expected_name!r} (-verify 2)"
            hint = ""
            if code in UNKNOWN_ISSUER_ERRORS:
                trusted = self._settings.cafile or self._settings.capath or "the system's store"
                hint = f"; its issuer is not among the CAs of {trusted}: give the CA that signed it with -CAfile FILE"
            return f"the peer's certificate was refused: {verify_error_text(code)} (at depth {depth}){hint}"
        if isinstance(exc, SSL.SysCallError):
            return "the peer closed the connection (is it speaking TLS? does it accept our certificate?)"
        text = _ssl_error_text(exc)
        for reason, meaning in _HANDSHAKE_REASONS.items():
            if reason in text:
                return f"{meaning} ({text})"
        return text

    def _after_handshake(self) -> None:
        conn = self._conn
        self.protocol = conn.get_protocol_version_name()
        self.cipher = conn.get_cipher_name()
        self.group = conn.get_group_name()
        self.peer_certificate = conn.get_peer_certificate(as_cryptography=True)
        if self.server:
            name = conn.get_servername()
            self.servername = name.decode("idna") if name else None
        level = self._settings.verify
        if level == 0:
            self.verify_result = "not checked"
        elif self.peer_certificate is None:
            self.verify_result = "no certificate"
        elif self.verify_errors:
            seen = dict.fromkeys(verify_error_text(code) for _, code in self.verify_errors)
            self.verify_result = f"accepted despite: {', '.join(seen)}"
        else:
            self.verify_result = "ok"
        if self._log:
            self._log.info(
                "%r handshake done: %s %s, peer %s, verify %s",
                self,
                self.protocol,
                self.cipher,
                self.peer_certificate.subject.rfc4514_string() if self.peer_certificate else "without certificate",
                self.verify_result,
            )

    def _serve(self) -> None:
        closing_since: float | None = None
        read_wait = 0  # what the last read waited for: 0 (try now), POLLIN or POLLOUT
        write_wait = 0  # the same for the last write: retried only once poll says the socket is ready for it
        ready = 0  # what the TCP socket was ready for when poll last woke us
        last_unsent = 0  # what the kernel held to send after the last write
        while True:
            if self._abort_error is not None:
                self._finish_aborted()
                return
            self._take_inbox()
            # The close counts from the owner's close, even while it waits in the inbox behind a blocked write.
            if (self._close_sent or self._owner_gone) and closing_since is None:
                closing_since = monotonic()
                self._state = State.CLOSING
            try:
                # A closing socket progresses while the peer takes bytes: the kernel holds fewer than after the
                # last write (only the peer's acknowledgements lower it meanwhile), or a write finished.
                # CLOSE_TIMEOUT bounds a close without progress.
                unsent = _unsent(self._tcp) if closing_since is not None else 0
                backlog = self._out_size
                if not write_wait or ready & (write_wait | _HUP):
                    write_wait = self._write()
                if closing_since is not None:
                    if self._out_size < backlog or unsent < last_unsent:
                        closing_since = monotonic()
                    last_unsent = _unsent(self._tcp)
                    if not write_wait and self._inbox.empty():  # everything delivered is written first
                        self._finish(None, orderly=True)
                        return
                    if monotonic() - closing_since > CLOSE_TIMEOUT:
                        self._finish(None, orderly=False)
                        return
                    read_wait = 0  # a closing socket reads nothing more for its owner
                elif not self._reading():
                    read_wait = 0  # the kernel holds the peer's data meanwhile
                elif not read_wait or ready & (read_wait | _HUP):
                    read_wait = self._read()  # only when there may be something: no WantRead raised for nothing
            except _PeerClosed:
                self._peer_closed()
                return
            except (SSL.Error, OSError, FramingError) as exc:
                if self._abort_error is not None:  # stop() came first; the peer's end is its echo
                    self._finish_aborted()
                else:
                    self._finish(_broken(exc) if closing_since is None else None, orderly=False)
                return
            events = read_wait | write_wait
            if closing_since is None and not read_wait and not self._paused and self._reading():
                events |= select.POLLIN
            # A sender pokes only a mediator that would take its message: past HIGH_WATER the write is blocked,
            # and poll wakes us when the socket takes more, without a poke for every message queued meanwhile.
            taking = self._out_size < HIGH_WATER
            self._sleeping = taking
            if self._own or (taking and not self._inbox.empty()) or self._abort_error is not None:
                self._sleeping = False
                ready = 0
                continue
            deadline = closing_since + CLOSE_TIMEOUT if closing_since is not None else None
            ready = self._poll_once(events, deadline)
            self._sleeping = False

    def _reading(self) -> bool:
        """Whether to read from the peer now: not before an acceptor claims the socket, and not while a callback
        owner's answers (sent from this thread, past any inbox) wait unwritten beyond ``HIGH_WATER``: a peer
        that sends without reading is then held back by TCP."""
        owner = self._owner
        return owner is not None and (isinstance(owner, Pid) or self._out_size < HIGH_WATER)

    def _take_inbox(self) -> None:
        """Move deliveries into the outgoing buffer: all that a callback owner sent from this thread, then the
        inbox's up to ``HIGH_WATER``. (A close, taken too, is already known by ``_close_sent``.)"""
        own, self._own = self._own, []
        self._buffer(own)
        if self._out_size < HIGH_WATER and not self._inbox.empty():
            self._buffer(self._inbox.take(HIGH_WATER - self._out_size))

    def _buffer(self, items: list[tuple[Any, ...]]) -> None:
        """Append deliveries to the outgoing buffer, up to a close: nothing is sent after it."""
        out = self._out
        for item in items:
            if item[0] != "deliver":
                return
            self.packets_out += 1
            self.bytes_out += len(item[1]) + len(item[2])
            for part in item[1:]:  # the length header, then the payload: joined only when written
                if part:
                    out.append(part)
                    self._out_size += len(part)

    def _write(self) -> int:
        """Write what is buffered. 0 when all is written, else the poll event the write waits for."""
        conn, out = self._conn, self._out
        while self._pending is not None or out:
            if self._pending is None:
                self._pending = memoryview(self._next_chunk())
            try:
                sent = conn.send(self._pending)
            except SSL.WantWriteError:
                return select.POLLOUT
            except SSL.WantReadError:
                return select.POLLIN
            self._out_size -= sent
            self._pending = self._pending[sent:] if sent < len(self._pending) else None
        return 0

    def _next_chunk(self) -> bytes | memoryview:
        """The next bytes for one ``SSL_write``: a part as large as a chunk goes as it is; smaller parts (a header,
        small packets) are joined, topped up from the front of the next part, so that the records stay full."""
        out = self._out
        if len(out[0]) >= WRITE_CHUNK or len(out) == 1:
            return out.popleft()
        if self._out_size <= WRITE_CHUNK:  # all of it, in one (a header and its small packet, most often)
            chunk = b"".join(out)
            out.clear()
            return chunk
        parts, size = [], 0
        while out and size < WRITE_CHUNK:
            part = out[0]
            room = WRITE_CHUNK - size
            if len(part) <= room:
                parts.append(out.popleft())
                size += len(part)
            else:
                view = memoryview(part)
                parts.append(view[:room])
                out[0] = view[room:]
                size = WRITE_CHUNK
        return b"".join(parts)

    def _read(self) -> int:
        """Read and deliver until TLS would block, or a short record. Returns the poll event the read waits for:
        0 while the owner has its share of the mailbox unread, until ``consumed`` wakes us."""
        with self._unread_lock:
            if self._unread >= MAILBOX_SHARE:
                self._paused = True
                return 0
        room = MAILBOX_SHARE - self._unread
        conn, decoder, present = self._conn, self._decoder, self.mode.present
        packets: list[bytes] = []
        wait = select.POLLIN
        taken = 0
        try:
            while taken < READ_TURN and taken < room:
                try:
                    data = conn.recv(RECV_SIZE)
                except SSL.WantReadError:
                    break
                except SSL.WantWriteError:
                    wait = select.POLLOUT
                    break
                except SSL.ZeroReturnError:
                    raise _PeerClosed() from None
                except SSL.SysCallError:
                    # OpenSSL 4 reports a close_notify that follows a warning alert (Java's user_canceled) as an
                    # unexpected EOF, though it has read the close_notify: an orderly close all the same. (A fatal
                    # alert sets RECEIVED_SHUTDOWN too, but raises SSL.Error, naming the alert.)
                    if conn.get_shutdown() & SSL.RECEIVED_SHUTDOWN:
                        raise _PeerClosed() from None
                    raise
                taken += len(data)
                try:
                    packets += decoder.feed(data)
                except FramingError as error:
                    packets += error.packets  # whole before the fault: delivered before the error
                    raise
                if len(data) < RECV_SIZE:
                    # Less than a full record: OpenSSL read the whole record and holds nothing more, so poll on
                    # the TCP socket tells if there is more; no read that would only raise WantReadError.
                    break
        finally:
            self.bytes_in += taken
            if packets:
                self.packets_in += len(packets)
                self._emit([Delivery((self, ("fromsocket", present(p)))) for p in packets])
        return wait

    def _peer_closed(self) -> None:
        if self._abort_error is not None:  # stop() came first; the peer's close is its echo
            self._finish_aborted()
            return
        if self._decoder.buffered:
            error: Any = ConnectionBroken(
                f"the peer closed the connection in the middle of a packet ({self._decoder.buffered} bytes of it"
                " arrived)",
                "incomplete",
            )
        else:
            error = "normal"
        self._emit([(self, ("socket_closed", error))])
        self._finish(None, orderly=True, linger=False)

    def _finish_aborted(self) -> None:
        """End after ``abort``: the owner hears the abort's error, unless the abort said not to tell it, or the
        owner had closed the socket itself (nothing is sent to it after its close)."""
        tell = self._abort_tells_owner and not self._close_sent
        self._finish(self._abort_error if tell else None, orderly=False)

    def _finish(self, error: ConnectionBroken | None, *, orderly: bool = False, linger: bool = True) -> None:
        """End the connection; tell the owner ``error`` unless it is None."""
        self._state = State.CLOSING
        if error is not None:
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
            while monotonic() < deadline and self._abort_error is None:
                if self._poll_once(select.POLLIN, deadline) and not self._tcp.recv(RECV_SIZE):
                    break
        except OSError:
            pass

    def _teardown(self) -> None:
        owner = self._owner
        if isinstance(owner, Pid):
            owner.release(self)
        try:
            self._tcp.close()
        finally:
            self._waker.close()
            self._forget(self)


class Workers:
    """The threads that mediators run in. A thread whose connection has ended waits a while for the next one,
    because here starting a thread costs some 100 µs and several GIL hand-offs, waking a waiting one a single
    hand-off: a server taking connection after connection (or a client making them) reuses a few threads. A
    connection still has one thread of its own from its handshake to its end; only the thread's next life is new."""

    #: How many threads wait for a next connection, at most; the others end with their connection.
    KEEP = 32
    #: How long a waiting thread waits before it ends.
    IDLE = 5.0
    #: The name of a thread while it waits.
    IDLE_NAME = "sslsocket-idle"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[tuple[queue.SimpleQueue[Callable[[], None] | None], threading.Thread]] = []  # LIFO
        self._generation = 0  # dismiss() ends the threads of earlier generations, waiting or still busy
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """In a child process, the waiting threads are gone: a pre-forking server's workers start their own."""
        self._lock = threading.Lock()
        self._idle = []

    def run(self, job: Callable[[], None], name: str) -> threading.Thread:
        """Run ``job`` in a waiting thread, or a new one, named ``name``; return that thread."""
        with self._lock:
            idle = self._idle.pop() if self._idle else None
            generation = self._generation
        if idle is not None:
            jobs, thread = idle
            thread.name = name
            jobs.put(job)
            return thread
        fresh: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        fresh.put(job)
        thread = threading.Thread(target=self._work, args=(fresh, generation), name=name, daemon=True)
        thread.start()
        return thread

    def _work(self, jobs: queue.SimpleQueue[Callable[[], None] | None], generation: int) -> None:
        job = jobs.get()
        while job is not None:
            job()
            job = None  # waiting for the next, this thread keeps nothing of the connection it served alive
            process.end_thread_process()  # a callback owner that asked for self() in this thread ended with it
            job = self._next(jobs, generation)

    def _next(self, jobs: queue.SimpleQueue[Callable[[], None] | None], generation: int) -> Callable[[], None] | None:
        """Wait, as an idle thread, for the next job; None to end the thread."""
        me = threading.current_thread()
        with self._lock:
            if generation != self._generation or len(self._idle) >= self.KEEP:
                return None
            me.name = self.IDLE_NAME
            self._idle.append((jobs, me))
        try:
            return jobs.get(timeout=self.IDLE)
        except queue.Empty:
            with self._lock:
                if (jobs, me) in self._idle:  # nobody took this thread meanwhile
                    self._idle.remove((jobs, me))
                    return None
            return jobs.get()  # taken just now: its job is on the way

    def dismiss(self) -> None:
        """End every waiting thread, and let none that is busy now wait afterwards (``stop()``)."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        for jobs, _ in idle:
            jobs.put(None)
        for _, thread in idle:
            thread.join()


workers = Workers()


def _unsent(tcp: socket.socket) -> int:
    """The bytes a TCP socket holds that its peer has not yet acknowledged (Linux's SIOCOUTQ), 0 where the
    system cannot say."""
    try:
        return int.from_bytes(fcntl.ioctl(tcp.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"), sys.byteorder)
    except (OSError, AttributeError):
        return 0
