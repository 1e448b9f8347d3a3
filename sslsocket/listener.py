"""``listen`` and the abortable ``accept``.

Theory of operation: a listen socket gets one library thread, started by the first ``accept``. While any process
waits in ``accept`` it takes TCP connections and starts a mediator for each, which runs the TLS handshake on its
own: a client that never finishes its handshake ties up only its own mediator, until ``-timeout``, never the
listener or a good client behind it. A finished handshake (or a failed one) is an *outcome*; the listener hands
it to the oldest acceptor that asked with the same SSLFlags, or keeps it for the next one.

An acceptor waits on its own process's condition, so ``exit(pid, reason)`` wakes it: it withdraws, and an outcome
that reached it in that instant goes back to the front of the queue. The listen socket is untouched and stays
usable. Closing the listen socket (or ``stop()``) wakes every acceptor with ``Closed``.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import threading
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING, NamedTuple

from OpenSSL import SSL

from . import process
from .errors import AcceptError, BadArgument, Closed, ConnectionBroken, ListenError
from .flags import Settings, load_context, parse_flags
from .framing import Mode, parse_mode
from .mediator import Owner, Socket, Waker
from .process import Pid

if TYPE_CHECKING:
    from .server import Registry

#: Connections in their handshake, or handshaken and not yet taken by an acceptor, per listen socket. Past this
#: the kernel's backlog holds new connections.
MAX_PENDING = 128

#: After the listen socket fails to take a connection (out of file descriptors...), wait this long before trying
#: again, rather than spinning.
ACCEPT_RETRY = 0.1

log = logging.getLogger("sslsocket")

#: What the system says when it has no descriptor, memory or buffer left for one more connection.
NO_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)


def errno_name(exc: OSError) -> str:
    """``"EMFILE"`` for an OSError of that errno: how the reasons of accept's and client's errors name it."""
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


FAMILIES = {"AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}


class ListenSocket(NamedTuple):
    """The manual's ``{Filedescriptor, Portnumber}``; pass it to ``accept``, close it to stop listening."""

    fd: int
    port: int

    def close(self) -> None:
        """Stop listening (``sslsocket.close(listen)``): every waiting ``accept`` raises ``Closed``."""
        from .server import close

        close(self)

    def __enter__(self) -> ListenSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


Outcome = tuple[Socket | None, BaseException | None]


@dataclass(eq=False)
class _Waiter:
    pid: Pid
    flags: str
    context: SSL.Context
    settings: Settings
    outcome: Outcome | None = None


def check_protocol_family(protocol: object, family: object) -> int:
    if protocol != "STREAM":
        raise BadArgument(
            f"protocol must be 'STREAM' (the manual's only one), not {protocol!r}",
            ("bad_argument", "protocol", protocol),
        )
    if family not in FAMILIES:
        raise BadArgument(f"family must be 'AF_INET' or 'AF_INET6', not {family!r}", ("bad_argument", "family", family))
    return FAMILIES[family]


class Listener:
    """What stands behind a ``ListenSocket``: the listening TCP socket, its acceptors and its pending handshakes."""

    def __init__(self, sock: socket.socket, mode: Mode, registry: Registry) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.mode = mode
        self.handle = ListenSocket(sock.fileno(), sock.getsockname()[1])
        self._registry = registry
        self._lock = threading.Lock()
        self._waiters: list[_Waiter] = []
        self._ready: list[tuple[str, Outcome]] = []
        self._handshaking: set[Socket] = set()
        self._waker = Waker()
        self._taking = False  # the listener thread polls the listen socket: a new acceptor need not wake it
        self._closed: str | None = None
        self._thread: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def accept(self, flags: str, owner: Owner | None, timeout: float | None) -> Socket:
        settings = parse_flags(flags)
        context = load_context(settings, server=True)
        me = process.self()
        deadline = None if timeout is None else monotonic() + timeout
        with self._lock:
            if self._closed:
                raise Closed(f"listen socket {self.handle} is closed ({self._closed})", ("accept", "closed"))
            outcome = self._take_ready(flags)
            wake = False
            if outcome is None:
                waiter = _Waiter(me, flags, context, settings)
                self._waiters.append(waiter)
                wake = not self._taking
                if self._thread is None:
                    thread = threading.Thread(
                        target=self._run, name=f"sslsocket-listen-{self.handle.port}", daemon=True
                    )
                    try:
                        thread.start()
                    except RuntimeError as exc:  # the system's limit on tasks: the next accept tries again
                        self._waiters.remove(waiter)
                        raise AcceptError(
                            f"listen socket {self.handle} could not start its thread: {exc}", ("accept", "no_thread")
                        ) from exc
                    self._thread = thread
        if outcome is None:
            if wake:
                self._waker.poke()
            try:
                me.wait_until(lambda: waiter.outcome is not None, deadline, f"accept on {self.handle}")
            except BaseException:
                with self._lock:
                    if waiter.outcome is None:
                        self._waiters.remove(waiter)
                    else:  # it came just now: keep it for the next acceptor
                        self._ready.insert(0, (flags, waiter.outcome))
                self._waker.poke()
                raise
            outcome = waiter.outcome
            assert outcome is not None
        sock, error = outcome
        if error is not None:
            raise error
        assert sock is not None
        sock.claim(owner if owner is not None else me)
        return sock

    def _take_ready(self, flags: str) -> Outcome | None:
        for index, (key, outcome) in enumerate(self._ready):
            if key == flags:
                del self._ready[index]
                return outcome
        return None

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
        poller = select.poll()
        poller.register(self._waker.fileno(), select.POLLIN)
        polled = False  # whether the listen socket is registered with the poller
        while True:
            with self._lock:
                if self._closed:
                    return
                taking = bool(self._waiters) and self._has_room()
                self._taking = taking
            wait_ms = None
            if taking and monotonic() < retry_at:
                wait_ms = ACCEPT_RETRY * 1000
                taking = False
            if taking != polled:
                if taking:
                    poller.register(self.sock.fileno(), select.POLLIN)
                else:
                    poller.unregister(self.sock.fileno())
                polled = taking
            for fd, _ in poller.poll(wait_ms):
                if fd == self._waker.fileno():
                    self._waker.drain()
                else:
                    if not self._take_connection():
                        retry_at = monotonic() + ACCEPT_RETRY

    def _has_room(self) -> bool:
        """Whether one more connection may be taken (under the lock)."""
        return len(self._handshaking) + len(self._ready) < MAX_PENDING

    def _take_connection(self) -> bool:
        """Take one connection, if an acceptor still waits and there is room; False if the listen socket
        failed."""
        with self._lock:
            if not (self._waiters and self._has_room()):
                return True  # the loop stops taking: the kernel's backlog holds the connection meanwhile
            # Handshaken with this acceptor's flags; should it leave meanwhile, kept for the next with the same.
            waiter = self._waiters[0]
        try:
            tcp, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return True
        except OSError as exc:
            self._give_first(
                AcceptError(
                    f"listen socket {self.handle} could not take a connection: {exc.strerror}",
                    ("accept", errno_name(exc)),
                )
            )
            return False
        if self._closed:
            tcp.close()
            return True
        flags = waiter.flags
        try:
            sock = Socket(
                tcp,
                waiter.context,
                server=True,
                mode=self.mode,
                settings=waiter.settings,
                on_handshake=lambda s, exc: self._handshake_done(flags, s, exc),
                forget=self._registry.forget,
            )
        except OSError as exc:
            tcp.close()
            if exc.errno in NO_RESOURCES:
                self._give_first(
                    AcceptError(
                        f"listen socket {self.handle} took a connection but could not serve it: {exc.strerror}",
                        ("accept", errno_name(exc)),
                    )
                )
                return False
            return True  # the client was already gone (getpeername failed)
        except BaseException:
            tcp.close()
            raise
        with self._lock:
            self._handshaking.add(sock)
        self._registry.add(sock)
        try:
            sock.start()
        except RuntimeError as exc:  # no thread to be had: the system's limit on tasks
            with self._lock:
                self._handshaking.discard(sock)
            self._give_first(
                AcceptError(
                    f"listen socket {self.handle} took a connection but could not start its thread: {exc}",
                    ("accept", "no_thread"),
                )
            )
            return False
        return True

    def _give_first(self, error: BaseException) -> None:
        with self._lock:
            if not self._waiters:
                return
            waiter = self._waiters.pop(0)
            waiter.outcome = (None, error)
        waiter.pid.wake()

    def _handshake_done(self, flags: str, sock: Socket, error: BaseException | None) -> None:
        """Called in the mediator's thread when its handshake ends, either way."""
        outcome: Outcome = (None, error) if error is not None else (sock, None)
        pid = None
        with self._lock:
            self._handshaking.discard(sock)
            closed = self._closed
            if not closed:
                for waiter in self._waiters:
                    if waiter.flags == flags:
                        self._waiters.remove(waiter)
                        waiter.outcome = outcome
                        pid = waiter.pid
                        break
                else:
                    self._ready.append((flags, outcome))
            # A listener that stopped taking for want of room takes again. One that takes with no acceptor left
            # stops when the next connection comes, without a wake now: a server that accepts in a loop is
            # back before that.
            wake = not self._taking and bool(self._waiters)
        if closed and error is None:
            sock.abort(ConnectionBroken("the listen socket was closed", "closed"), tell_owner=False)
        if pid is not None:
            pid.wake()
        if wake:
            self._waker.poke()

    def forked(self) -> None:
        """In a child after ``fork()`` (see ``Registry.forked``, which drops the child's copies of every
        connection): no listener thread, no acceptor, no connection of the parent's; a waker of the child's own,
        since the parent's would wake the parent's listener."""
        self._lock = threading.Lock()
        self._thread = None
        self._taking = False
        self._waiters = []
        self._handshaking, self._ready = set(), []
        self._waker.close_copy()
        self._waker = Waker()

    def close(self, why: str = "closed") -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = why
            waiters, self._waiters = self._waiters, []
            ready, self._ready = self._ready, []
            handshaking = list(self._handshaking)
        for waiter in waiters:
            waiter.outcome = (
                None,
                Closed(f"listen socket {self.handle} was closed while accepting ({why})", ("accept", why)),
            )
            waiter.pid.wake()
        for sock in handshaking:
            sock.abort(ConnectionBroken(f"the listen socket was {why}", why), tell_owner=False)
        for _, (unclaimed, _error) in ready:
            if unclaimed is not None:
                unclaimed.abort(ConnectionBroken(f"the listen socket was {why}", why), tell_owner=False)
        self._waker.poke()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.sock.close()
        self._waker.close()


def make_listener(
    protocol: object,
    family: object,
    address: object,
    mode: object,
    registry: Registry,
    backlog: int,
    reuse_port: bool,
    max_packet: int,
) -> Listener:
    af = check_protocol_family(protocol, family)
    parsed = parse_mode(mode).bounded(max_packet)
    if isinstance(address, tuple) and len(address) == 2:
        host, port = address
    else:
        host, port = ("::" if af == socket.AF_INET6 else "0.0.0.0"), address
    if type(port) is not int or not 0 <= port <= 65535:
        raise BadArgument(
            f"the listen address must be a port number from 0 to 65535, not {port!r}", ("bad_argument", "port", port)
        )
    sock = socket.socket(af, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}", ("listen", "syncerror")) from exc
    return Listener(sock, parsed, registry)
