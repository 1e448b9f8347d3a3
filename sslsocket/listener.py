"""``listen`` and the abortable ``accept``.

Theory of operation
-------------------

A listen socket gets one library thread, started by the first ``accept``. While any process waits in ``accept``
it takes TCP connections, each for the SSLFlags of the oldest acceptor then waiting. A connection's life here has
three stages, each bounded, so that no client, however silent, slow or numerous, keeps a good one waiting:

1. **Quiet**: taken, nothing received yet. It waits in the listener's own poll, with no thread and no TLS state:
   a port scanner, or a thousand connections that say nothing, cost a descriptor each. Its first bytes move it on;
   its handshake deadline (``-timeout``, counted from the TCP accept) or newer connections pushing past
   ``MAX_QUIET`` (the oldest first) end it. One that leaves before a word is closed without a report.
2. **Handshaking**: a mediator runs its TLS handshake, against the same deadline. At most ``MAX_HANDSHAKES`` at
   once; past that, connections that have spoken wait their turn in order (``MAX_QUEUED``; then the kernel's
   backlog), so that a burst of honest clients is served, not reset. While some wait, a handshake silent for
   ``HANDSHAKE_STALL``, or in its slot for ``HANDSHAKE_TURN``, makes way: slow clients shut out nobody.
3. **Ready**: handshaken, waiting for an acceptor with the same flags (the oldest that asked gets it). While
   ``MAX_READY`` of them wait unclaimed, the listener takes no more, and the kernel's backlog holds new ones.

A failed handshake (or a deadline passed) is no established connection: the acceptor it was meant for logs it, a
WARNING on the ``sslsocket`` logger naming the peer and the cause, and goes on waiting, as the manual's "suspends
the caller until a connection has been established" says. An acceptor that passed ``handshake_errors="raise"``
raises it instead, as a ``HandshakeError``.

An acceptor waits on its own process's condition, so ``exit(pid, reason)`` wakes it: it withdraws, and a
connection that reached it in that instant goes back to the front of the queue. The listen socket is untouched and
stays usable. Closing the listen socket wakes every acceptor with ``ListenClosed`` (a ``Closed``), ``stop()`` with
``Stopped`` (a ``ListenClosed``); a spawned acceptor that does not catch it ends quietly.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any

from OpenSSL import SSL

from . import process
from .budget import Budget
from .complaints import Complaints
from .context import load_context
from .errors import (
    NO_RESOURCES,
    AcceptError,
    BadArgument,
    ConnectionBroken,
    HandshakeError,
    closed_error,
    errno_name,
)
from .flags import Settings, parse_flags
from .framing import Mode
from .process import Pid
from .quiet import Quiet, QuietRoom, Turns
from .registry import ListenSocket, Registry
from .sockets import Socket
from .system import HAS_POLL, SELECT_LIMIT, Waker, close_tcp

#: Connections that have sent nothing yet, per listen socket. Each costs a descriptor and a little kernel memory,
#: no thread; past this many the oldest is dropped for the new one, so that a flood of silent connections ages
#: itself out instead of shutting the door. Where there is no ``poll`` (Windows), ``select`` bounds it lower.
MAX_QUIET = 4096 if HAS_POLL else SELECT_LIMIT - 64
#: TLS handshakes under way at once, per listen socket, each with its mediator's thread. Past this, connections
#: that have spoken wait for a slot, in the order they came.
MAX_HANDSHAKES = 128
#: Connections that have spoken and wait for a handshake slot, per listen socket; past this the listener takes no
#: more, and the kernel's backlog holds new connections. Each costs a descriptor and its ClientHello in the kernel.
MAX_QUEUED = 4096
#: While some wait for a slot, a handshake silent this long makes way. An honest client answers each flight within a
#: round trip and its own CPU time: in a burst of 2,000 clients at once on a 2-core machine, well under a second.
HANDSHAKE_STALL = 2.0
#: ... and one in its slot this long, however it trickles (a client dripping its hello is never silent for long).
HANDSHAKE_TURN = 5.0
#: Connections handshaken and not yet taken by an acceptor, per listen socket. Past this the kernel's backlog holds
#: new connections until an acceptor catches up.
MAX_READY = 128

#: After the listen socket fails to take a connection (out of file descriptors...), wait this long before trying
#: again, rather than spinning.
ACCEPT_RETRY = 0.1

log = logging.getLogger("sslsocket")

#: What ``accept(..., handshake_errors=)`` takes.
HANDSHAKE_ERRORS = ("log", "raise")


Outcome = tuple[Socket | None, BaseException | None]


@dataclass(eq=False)
class _Waiter:
    pid: Pid
    flags: str
    context: SSL.Context
    settings: Settings
    raises: bool
    outcome: Outcome | None = None


class Listener:
    """What stands behind a ``ListenSocket``: the listening TCP socket, its acceptors and its connections on their
    way to an acceptor. ``_quiet`` (and the selector) belong to the listener thread alone; the rest is under
    ``_lock``, ``_turns`` included (the listener thread starts handshakes, their mediators end them)."""

    def __init__(self, sock: socket.socket, mode: Mode, registry: Registry, budget: Budget[Socket] | None) -> None:
        sock.setblocking(False)
        self.sock, self.mode, self._budget = sock, mode, budget
        self.handle = ListenSocket(sock.fileno(), sock.getsockname()[1])
        self._registry = registry
        self._lock = threading.Lock()
        self._waiters: list[_Waiter] = []
        self._ready: list[tuple[str, Socket]] = []
        self._turns: Turns[Socket] = Turns()  # the handshakes under way, and the connections waiting for a slot
        self._quiet = QuietRoom()
        self._waker = Waker()
        self._taking = False  # the listener thread polls the listen socket: a new acceptor need not wake it
        self._closed: str | None = None
        self._thread: threading.Thread | None = None
        self._selector: selectors.BaseSelector | None = None  # the listener thread's
        self._complaints = Complaints(f"accept on listen socket {self.handle}")

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def counts(self) -> dict[str, int]:
        """How many acceptors wait, and connections stand at each stage: for ``sslsocket.i()``."""
        with self._lock:
            return {
                "acceptors": len(self._waiters),
                "quiet": len(self._quiet),
                "queued": len(self._turns.queued),
                "handshaking": len(self._turns.running),
                "ready": len(self._ready),
            }

    def accept(
        self, flags: str, owner: Pid | Callable[[Any], object] | None, timeout: float | None, handshake_errors: str
    ) -> Socket:
        if handshake_errors not in HANDSHAKE_ERRORS:
            raise BadArgument(
                f"handshake_errors must be 'log' or 'raise', not {handshake_errors!r}",
                ("bad_argument", "handshake_errors", handshake_errors),
            )
        settings = parse_flags(flags)
        waiter = _Waiter(
            process.self(), flags, load_context(settings, server=True), settings, handshake_errors == "raise"
        )
        deadline = None if timeout is None else monotonic() + timeout
        sock, error = self._ready_for(waiter) or self._wait(waiter, deadline)
        if error is not None:
            raise error
        assert sock is not None
        sock.claim(owner if owner is not None else waiter.pid)
        return sock

    def _ready_for(self, waiter: _Waiter) -> Outcome | None:
        """A connection already handshaken for these flags; else ``waiter`` is enlisted, with the listener thread
        started or woken as needed, and None returned."""
        with self._lock:
            if self._closed:
                raise closed_error(self.handle, self._closed)
            for index, (key, sock) in enumerate(self._ready):
                if key == waiter.flags:
                    del self._ready[index]
                    return sock, None
            self._waiters.append(waiter)
            wake = not self._taking
            if self._thread is None:
                self._start_thread(waiter)
        if wake:
            self._waker.poke()
        return None

    def _start_thread(self, waiter: _Waiter) -> None:
        thread = threading.Thread(target=self._run, name=f"sslsocket-listen-{self.handle.port}", daemon=True)
        try:
            thread.start()
        except RuntimeError as exc:  # the system's limit on tasks: the next accept tries again
            self._waiters.remove(waiter)
            raise AcceptError(
                f"listen socket {self.handle} could not start its thread: {exc}", ("accept", "no_thread")
            ) from exc
        self._thread = thread

    def _wait(self, waiter: _Waiter, deadline: float | None) -> Outcome:
        """Wait for the outcome the listener gives ``waiter``. An acceptor that withdraws (``exit``, its timeout)
        leaves the queue; a connection that reached it in that instant goes to the front for the next one."""
        try:
            waiter.pid.wait_until(lambda: waiter.outcome is not None, deadline, f"accept on {self.handle}")
        except BaseException:
            with self._lock:
                if waiter.outcome is None:
                    self._waiters.remove(waiter)
                elif waiter.outcome[0] is not None:
                    self._ready.insert(0, (waiter.flags, waiter.outcome[0]))
            self._waker.poke()
            raise
        assert waiter.outcome is not None
        return waiter.outcome

    # ---- the listener thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._take_connections()
        except BaseException as exc:  # a bug, or the system refusing something: no acceptor may wait for ever
            log.exception("the thread of listen socket %s failed", self.handle)
            with self._lock:
                waiters, self._waiters = self._waiters, []
                self._thread = None  # the next accept starts another
            for waiter in waiters:
                waiter.outcome = (
                    None,
                    AcceptError(f"listen socket {self.handle} failed: {exc!r}", ("accept", "failed")),
                )
                waiter.pid.wake()

    def _take_connections(self) -> None:
        retry_at = 0.0
        selector = self._selector = selectors.DefaultSelector()  # its descriptor: a forked child closes its copy
        try:
            selector.register(self._waker.fileno(), selectors.EVENT_READ)
            for quiet in self._quiet:  # left by a thread of this listener's that failed
                selector.register(quiet.tcp, selectors.EVENT_READ, quiet)
            polled = False  # whether the listen socket is registered with the selector
            while True:
                with self._lock:
                    if self._closed:
                        return
                    taking = self._has_room()
                    self._taking = taking
                now = monotonic()
                self._expire(now, selector)
                times = [self._quiet.next_deadline(), self._start_queued(selector)]
                if taking and now < retry_at:
                    times.append(retry_at)
                    taking = False
                polled = self._poll_listen(selector, taking, polled)
                wait = min((t for t in times if t is not None), default=None)
                for key, _ in selector.select(None if wait is None else max(0.0, wait - monotonic())):
                    if key.data is None:
                        self._waker.drain()
                    elif key.data is self:
                        if not self._take_connection(selector):
                            retry_at = monotonic() + ACCEPT_RETRY
                    else:
                        self._first_bytes(key.data, selector)
        finally:
            selector.close()

    def _has_room(self) -> bool:
        """Under the lock: whether to take connections (an acceptor waits, and no stage after this one is full)."""
        return bool(self._waiters) and len(self._ready) < MAX_READY and len(self._turns.queued) < MAX_QUEUED

    def _poll_listen(self, selector: selectors.BaseSelector, taking: bool, polled: bool) -> bool:
        """Poll the listen socket, or not, as ``taking`` says; whether it now is."""
        if taking != polled:
            if taking:
                selector.register(self.sock, selectors.EVENT_READ, self)
            else:
                selector.unregister(self.sock)
        return taking

    def _take_connection(self, selector: selectors.BaseSelector) -> bool:
        """Take one connection, if an acceptor still waits and there is room; False if the listen socket
        failed."""
        with self._lock:
            if not self._has_room():
                return True  # the loop stops taking: the kernel's backlog holds the connection meanwhile
            # Handshaken with this acceptor's flags; should it leave meanwhile, kept for the next with the same.
            waiter = self._waiters[0]
        try:
            with self._registry.new_connection():
                tcp, address = self.sock.accept()
                self._registry.track(tcp)
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return True
        except OSError as exc:
            if exc.errno in NO_RESOURCES and self._quiet:  # the silent pay first
                self._drop_oldest(selector, "dropped: out of descriptors")
                return True
            self._give_first(f"could not take a connection: {exc.strerror}", errno_name(exc))
            return False
        tcp.setblocking(False)
        quiet = Quiet(
            tcp,
            f"{address[0]}:{address[1]}",
            waiter.flags,
            waiter.context,
            waiter.settings,
            monotonic() + waiter.settings.timeout,
        )
        if len(self._quiet) >= MAX_QUIET:
            self._drop_oldest(
                selector,
                f"dropped before it sent anything: {MAX_QUIET} newer connections were waiting for their first bytes",
            )
        self._quiet.add(quiet)
        selector.register(tcp, selectors.EVENT_READ, quiet)
        self._first_bytes(quiet, selector)  # a client's hello often comes with its connection
        return True

    def _first_bytes(self, quiet: Quiet, selector: selectors.BaseSelector) -> None:
        """A quiet connection may have sent its first bytes: if so, it is queued for its handshake (the loop starts
        it); if it left, it is closed without a report (a port scanner, a health check)."""
        try:
            data = quiet.tcp.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return  # not yet
        except OSError:
            data = b""  # reset before a word
        self._forget(quiet, selector)
        if not data:
            log.debug("listen socket %s: %s left before it sent anything", self.handle, quiet.peer)
            close_tcp(quiet.tcp)
            return
        with self._lock:
            self._turns.queued.append(quiet)

    def _start_queued(self, selector: selectors.BaseSelector) -> float | None:
        """Start the handshakes of the connections that spoke, the oldest first, while a slot is free or made
        (``Turns.next``). When to look again for one to make way (None: at the next event)."""
        while True:
            now = monotonic()
            with self._lock:
                if self._closed:
                    return None
                late = self._turns.expired(now)
                quiet, victim, again = self._turns.next(now, MAX_HANDSHAKES, HANDSHAKE_STALL, HANDSHAKE_TURN)
                waiting = len(self._turns.queued)
            for expired in late:
                close_tcp(expired.tcp)
                error = f"did not finish its TLS handshake within {expired.settings.timeout:g} s: it waited its turn"
                self._handshake_done(expired.flags, None, HandshakeError(f"client {expired.peer} {error}", "timeout"))
            if quiet is None:
                return again
            if victim is not None:
                why = f"its handshake made way ({now - victim.heard:.1f} s since a word) while {waiting + 1} waited"
                victim.abort(ConnectionBroken(why, "dropped"), tell_owner=False)
            if not self._start_handshake(quiet, selector):
                return now + ACCEPT_RETRY  # no thread or descriptor: the next in line tries again in a moment

    def _expire(self, now: float, selector: selectors.BaseSelector) -> None:
        """End the quiet connections whose handshake deadline has passed."""
        for quiet in self._quiet.expired(now):
            why = f"did not finish its TLS handshake within {quiet.settings.timeout:g} s: it sent nothing"
            self._drop(quiet, selector, why, "timeout")

    def _drop_oldest(self, selector: selectors.BaseSelector, why: str) -> None:
        self._drop(self._quiet.oldest(), selector, why)

    def _drop(self, quiet: Quiet, selector: selectors.BaseSelector, why: str, reason: str = "dropped") -> None:
        self._forget(quiet, selector)
        close_tcp(quiet.tcp)
        self._handshake_done(quiet.flags, None, HandshakeError(f"client {quiet.peer} {why}", reason))

    def _forget(self, quiet: Quiet, selector: selectors.BaseSelector) -> None:
        self._quiet.remove(quiet)
        selector.unregister(quiet.tcp)

    def _start_handshake(self, quiet: Quiet, selector: selectors.BaseSelector) -> bool:
        """Give a connection that has spoken its mediator, which runs the handshake (stage 2). False if no thread
        or descriptor could be had for it."""
        try:
            sock = self._mediator_for(quiet, selector)
        except OSError as exc:
            close_tcp(quiet.tcp)
            if exc.errno in NO_RESOURCES:
                self._give_first(f"took a connection but could not serve it: {exc.strerror}", errno_name(exc))
                return False
            return True  # the client was already gone (getpeername failed)
        except BaseException:
            close_tcp(quiet.tcp)
            raise
        with self._lock:
            self._turns.started(sock, monotonic())
        self._registry.add(sock)
        try:
            sock.start()
        except RuntimeError as exc:  # no thread to be had: the system's limit on tasks
            with self._lock:
                self._turns.ended(sock)
            self._give_first(f"took a connection but could not start its thread: {exc}", "no_thread")
            return False
        return True

    def _mediator_for(self, quiet: Quiet, selector: selectors.BaseSelector) -> Socket:
        """A mediator for ``quiet``'s connection, under the listen socket's budget. Out of descriptors (its waker
        needs one), the silent pay first: the oldest of them is dropped, and the mediator made again."""
        flags = quiet.flags
        while True:
            try:
                sock = Socket(
                    quiet.tcp,
                    quiet.context,
                    quiet.settings,
                    self.mode,
                    server=True,
                    on_handshake=lambda s, exc: self._handshake_done(flags, s, exc),
                    forget=self._registry.forget,
                    deadline=quiet.deadline,
                )
                sock.budget = self._budget  # before any deliver: the acceptor has not got it yet
                return sock
            except OSError as exc:
                if exc.errno not in NO_RESOURCES or not self._quiet:
                    raise
                self._drop_oldest(selector, "dropped: out of descriptors")

    def _give_first(self, what: str, reason: str) -> None:
        """The oldest acceptor gets an ``AcceptError``: the listen socket failed to take or serve a connection."""
        error = AcceptError(f"listen socket {self.handle} {what}", ("accept", reason))
        with self._lock:
            if not self._waiters:
                return
            waiter = self._waiters.pop(0)
            waiter.outcome = (None, error)
        waiter.pid.wake()

    def _handshake_done(self, flags: str, sock: Socket | None, error: BaseException | None) -> None:
        """A handshake ended, either way (in its mediator's thread), or a quiet connection did (in the listener's):
        the outcome goes to the oldest acceptor with these flags, or waits for one; a failure is logged, unless
        that acceptor asked to have it raised."""
        with self._lock:
            freed = self._turns.ended(sock)
            closed = self._closed
            pid = None if closed else self._hand_over(flags, sock, error)
        if freed:
            self._waker.poke()  # a slot for the next in line
        if closed:
            if error is None and sock is not None:
                sock.abort(ConnectionBroken("the listen socket was closed", "closed"), tell_owner=False)
        elif error is not None and pid is None:
            self._complaints.say(error)
        if pid is not None:
            pid.wake()

    def _hand_over(self, flags: str, sock: Socket | None, error: BaseException | None) -> Pid | None:
        """Under the lock: give the outcome to the oldest acceptor with these flags (a failure only to one that
        asked to have it raised), or keep the connection ready for one. The acceptor to wake, if any."""
        waiter = next((w for w in self._waiters if w.flags == flags), None)
        if waiter is not None and (error is None or waiter.raises):
            self._waiters.remove(waiter)
            waiter.outcome = (None, error) if error is not None else (sock, None)
            return waiter.pid
        if error is None:
            assert sock is not None
            self._ready.append((flags, sock))
        return None

    def forked(self) -> None:
        """In a child after ``fork()`` (see ``Registry.forked``, which drops the child's copies of every
        connection): no listener thread, no acceptor, no connection of the parent's; a waker of the child's own,
        since the parent's would wake the parent's listener."""
        self._lock = threading.Lock()
        self._thread = None
        self._taking = False
        self._waiters = []
        self._ready = []
        for quiet in [*self._quiet, *self._turns.queued]:
            quiet.tcp.close()  # the child's copy (no fork comes now): the parent's stays open
        self._quiet.clear()
        self._turns = Turns()
        self._waker.close_copy()
        self._waker, self._budget = Waker(), self._budget.renewed() if self._budget is not None else None
        if self._selector is not None:
            self._selector.close()  # the parent thread's epoll, which the child would otherwise keep

    def close(self, why: str = "closed") -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = why
            waiters, self._waiters = self._waiters, []
            ready, self._ready = self._ready, []
            handshaking = list(self._turns.running)
        for waiter in waiters:
            waiter.outcome = (None, closed_error(self.handle, why))
            waiter.pid.wake()
        for sock in handshaking + [sock for _, sock in ready]:
            sock.abort(ConnectionBroken(f"the listen socket was {why}", why), tell_owner=False)
        self._waker.poke()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        for quiet in [*self._quiet, *self._turns.queued]:  # the listener thread has ended: they are nobody's now
            close_tcp(quiet.tcp)
        self._quiet.clear()
        self._turns.queued.clear()
        self.sock.close()
        self._waker.close()
