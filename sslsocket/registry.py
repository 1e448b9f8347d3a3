"""The socket server's registry: every live listen socket and connection, so that ``stop()`` can end them all, and
a child after ``fork()`` can drop its copies; the manual's ``start`` and ``stop``; the library's one fork hook."""

from __future__ import annotations

import atexit
import socket
import threading
import weakref
from contextlib import AbstractContextManager
from time import monotonic
from typing import TYPE_CHECKING, NamedTuple

from . import process
from .context import close_logs
from .errors import BadArgument, Closed, ConnectionBroken, Timeout, closed_error
from .lifecycle import State
from .sessions import sessions
from .system import at_fork, no_fork
from .workers import handshakers, workers

if TYPE_CHECKING:
    from .listener import Listener
    from .sockets import Socket

#: Listen sockets remembered after they ended, with why (closed or stopped), so that an ``accept`` on one says so:
#: the latest ones, since a program may open and close listen sockets for ever.
REMEMBER_ENDED = 1024

#: How long ``stop()`` waits for the library's threads to end. Every one of them wakes at once on ``stop()``;
#: this bound only keeps a bug from hanging the caller.
STOP_TIMEOUT = 5.0


class ListenSocket(NamedTuple):
    """The manual's ``{Filedescriptor, Portnumber}``; pass it to ``accept``, close it to stop listening."""

    fd: int
    port: int

    def close(self) -> None:
        """Stop listening (``sslsocket.close(listen)``): every waiting ``accept`` raises ``Closed``."""
        registry.close_listener(self)

    def __enter__(self) -> ListenSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Registry:
    """Every live listen socket and connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[ListenSocket, Listener] = {}
        self._ended: dict[ListenSocket, str] = {}  # handle -> "closed" or "stopped", the latest REMEMBER_ENDED
        self._sockets: set[Socket] = set()
        #: Every connection's TCP socket from the moment it exists (``new_connection``), before any stage has it: a
        #: child after ``fork()`` closes its copies of them all, whatever stage the fork caught them in.
        self._tcp: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners[listener.handle] = listener
            self._ended.pop(listener.handle, None)  # the same descriptor and port, open again

    def listener(self, handle: object) -> Listener:
        with self._lock:
            listener = self._listeners.get(handle) if isinstance(handle, ListenSocket) else None
            why = self._ended.get(handle) if isinstance(handle, ListenSocket) else None
        if listener is None:
            if why is not None:
                raise closed_error(handle, why)
            raise Closed(f"{handle!r} is not an open listen socket", ("accept", "closed"))
        return listener

    def close_listener(self, handle: ListenSocket, why: str = "closed") -> None:
        with self._lock:
            listener = self._listeners.pop(handle, None)
            if listener is None:
                return
            self._ended[handle] = why
            while len(self._ended) > REMEMBER_ENDED:
                del self._ended[next(iter(self._ended))]
        listener.close(why)

    def snapshot(self) -> tuple[list[Listener], list[Socket]]:
        """The live listen sockets and connections, oldest first: for ``sslsocket.i()``."""
        with self._lock:
            return list(self._listeners.values()), sorted(self._sockets, key=lambda sock: sock.id)

    def new_connection(self) -> AbstractContextManager[bool]:
        """Around the making of a connection's TCP socket (``client``'s socket, the listener's accept) and its
        ``track``: no ``fork()`` comes between a descriptor's birth and its tracking (``no_fork``), or the parent
        would connect it later, and the child's copy with it."""
        return no_fork()

    def track(self, tcp: socket.socket) -> None:
        """A connection's TCP socket, not yet a ``Socket``'s: a forked child closes its copy (``forked``)."""
        self._tcp.add(tcp)

    def add(self, sock: Socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def forget(self, sock: Socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def forked(self) -> None:
        """In a child after ``fork()``: the parent's threads are not here. Its connections stay the parent's: the
        child closes its copies of their descriptors, sending nothing, so that they end when the parent ends them.
        Its listen sockets stay open, each to start a listener thread of its own at the child's first accept."""
        self._lock = threading.Lock()
        sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            sock.drop_copy()
        for listener in self._listeners.values():
            listener.forked()
        for tcp in list(self._tcp):  # those caught between stages: being connected, accepted, queued...
            tcp.close()  # this process's copy (a no-op for one closed already)
        self._tcp = weakref.WeakSet()

    def drain(self, timeout: float, why: str = "closed") -> tuple[int, int]:
        """Close every listen socket (for ``why``): the connections not yet accepted close with them, uncounted.
        Let every connection that has an owner go on until its owner closes it or ends, for ``timeout`` seconds at
        most; then cut those left, as ``stop()`` does. Returns how many of those ended by themselves and how many
        were cut."""
        with self._lock:
            handles = list(self._listeners)
            sockets = list(self._sockets)
        for handle in handles:
            self.close_listener(handle, why)
        me = process.self()
        # Not waited for: those not yet accepted (closed with their listen socket), and the caller's own, which it
        # cannot close meanwhile, nor a callback's own socket (a callback that drains).
        waited = [s for s in sockets if s.owner not in (None, me) and s.thread is not threading.current_thread()]
        if timeout > 0 and waited:
            _wait_for_ends(me, waited, monotonic() + timeout)
        left = [sock for sock in sockets if sock.state is not State.CLOSED]
        _cut(left, me)
        owned = sum(1 for sock in sockets if sock.owner is not None)
        cut = sum(1 for sock in left if sock.owner is not None)
        return owned - cut, cut

    def stop(self) -> None:
        self.drain(0, "stopped")
        handshakers.dismiss()
        workers.dismiss()
        close_logs()


def _cut(sockets: list[Socket], me: process.Pid) -> None:
    """Abort the sockets, as ``stop()`` does, and wait a while for each to end."""
    error = ConnectionBroken("the socket server was stopped", "stopped")
    for sock in sockets:
        sock.abort(error, wake=False)  # all marked before any acts: none takes its peer's abort for a close
    for sock in sockets:
        sock.wake()
    deadline = monotonic() + STOP_TIMEOUT
    for sock in sockets:  # (not the caller's own before its thread runs: a client's handshake in the caller's thread)
        _ended_by(sock, deadline, sock.owner is not me or sock.thread is not None)


def _wait_for_ends(me: process.Pid, sockets: list[Socket], deadline: float) -> None:
    """Wait, with the process's one wait, until every socket has ended or ``deadline`` has passed: ``exit`` (a
    second SIGTERM in ``serve``) cuts it short with ``Exit``, the sockets left as they are."""
    key = object()  # each socket's end wakes the caller
    for sock in sockets:
        sock.watchers.add(key, lambda reason: me.wake())
    try:
        me.wait_until(lambda: all(sock.state is State.CLOSED for sock in sockets), deadline, "drain")
    except Timeout:
        pass
    finally:
        for sock in sockets:
            sock.watchers.remove(key)


def _ended_by(sock: Socket, deadline: float, wait: bool) -> bool:
    """Wait until ``sock`` has ended or ``deadline`` has passed; whether it has ended. A socket is not waited for
    unless ``wait``, nor in its own thread (a callback that drains)."""
    if not wait or sock.thread is threading.current_thread():
        return sock.state is State.CLOSED
    return sock.wait_closed(min(max(0.0, deadline - monotonic()), threading.TIMEOUT_MAX))


registry = Registry()


def start() -> None:
    """Start the socket server. Nothing needs it: every call starts what it needs. Calling it again does nothing."""


def stop() -> None:
    """Stop the socket server: close every socket and listen socket, waking acceptors (``Closed``) and telling
    owners (``("socket_closed", error)`` with reason ``"stopped"``). No library thread is left. The next call starts
    it again. It is ``drain(0)``, then the end of the library's threads."""
    registry.stop()


def drain(timeout: float) -> tuple[int, int]:
    """A graceful stop: every listen socket stops accepting (its waiting acceptors get ``ListenClosed``); every open
    socket goes on until its owner closes it or ends; after ``timeout`` seconds what is left is closed as ``stop()``
    closes it. Returns ``(finished, cut)``: how many sockets ended by themselves, and how many were cut."""
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout >= 0:
        raise BadArgument(f"drain takes a number of seconds, 0 or more, not {timeout!r}", ("bad_argument", timeout))
    return registry.drain(float(timeout))


def _forked() -> None:
    """In a child after ``fork()`` only the forking thread is left: each part of the library resets what the
    parent's threads held, in this order (processes first: a socket dropped below tells its owner nothing)."""
    process.forked()
    handshakers.forked()
    workers.forked()
    registry.forked()
    sessions.forked()


atexit.register(stop)
at_fork(_forked)
