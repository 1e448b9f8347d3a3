"""The socket server: the registry of every listen socket and connection, behind ``start`` and ``stop``, and the
manual's remaining calls (``listen``, ``accept``, ``client``, ``controlling_process``, ``peername``, ``resolve``,
``close``)."""

from __future__ import annotations

import atexit
import os
import socket
import threading
from time import monotonic
from typing import Any, NamedTuple

from . import process
from .errors import BadArgument, Closed, ConnectError, ConnectionBroken, Exit, NotOwner, WrongType
from .flags import close_logs, load_context, parse_flags
from .framing import MAX_PACKET_SIZE, parse_mode
from .listener import (
    NO_RESOURCES,
    Listener,
    ListenSocket,
    check_protocol_family,
    closed_error,
    errno_name,
    make_listener,
)
from .mediator import Owner, Socket, workers
from .process import Pid

#: Listen sockets remembered after they ended, with why (closed or stopped), so that an ``accept`` on one says so:
#: the latest ones, since a program may open and close listen sockets for ever.
REMEMBER_ENDED = 1024

#: How long ``stop()`` waits for the library's threads to end. Every one of them wakes at once on ``stop()``;
#: this bound only keeps a bug from hanging the caller.
STOP_TIMEOUT = 5.0


class Registry:
    """Every live listen socket and connection, so that ``stop()`` can close them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[ListenSocket, Listener] = {}
        self._ended: dict[ListenSocket, str] = {}  # handle -> "closed" or "stopped", the latest REMEMBER_ENDED
        self._sockets: set[Socket] = set()

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

    def pop_listener(self, handle: ListenSocket, why: str = "closed") -> Listener | None:
        with self._lock:
            listener = self._listeners.pop(handle, None)
            if listener is not None:
                self._ended[handle] = why
                while len(self._ended) > REMEMBER_ENDED:
                    del self._ended[next(iter(self._ended))]
            return listener

    def snapshot(self) -> tuple[list[Listener], list[Socket]]:
        """The live listen sockets and connections, oldest first: for ``sslsocket.i()``."""
        with self._lock:
            return list(self._listeners.values()), sorted(self._sockets, key=lambda sock: sock.id)

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

    def stop(self) -> None:
        with self._lock:
            handles = list(self._listeners)
            sockets = list(self._sockets)
        for handle in handles:
            listener = self.pop_listener(handle, "stopped")
            if listener is not None:
                listener.close("stopped")
        error = ConnectionBroken("the socket server was stopped", "stopped")
        for sock in sockets:
            sock.abort(error, wake=False)
        for sock in sockets:
            sock.wake()
        deadline = monotonic() + STOP_TIMEOUT
        for sock in sockets:
            if sock.thread is not None and sock.thread is not threading.current_thread():
                sock.wait_closed(max(0.0, deadline - monotonic()))
        workers.dismiss()
        close_logs()


_registry = Registry()


def start() -> None:
    """Start the socket server. Nothing needs it: every call starts what it needs. Calling it again does nothing."""


def stop() -> None:
    """Stop the socket server: close every socket and listen socket, waking acceptors (``Closed``) and telling
    owners (``("socket_closed", error)`` with reason ``"stopped"``). No library thread is left. The next call starts
    it again."""
    _registry.stop()


atexit.register(stop)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_registry.forked)


def listen(
    protocol: str,
    family: str,
    address: int | tuple[str, int],
    mode: Any,
    *,
    backlog: int = 128,
    reuse_port: bool = False,
    max_packet: int = MAX_PACKET_SIZE,
) -> ListenSocket:
    """``listen('STREAM', 'AF_INET', Port, Mode)``: a ``ListenSocket(fd, port)``. Port 0 picks a free port.

    ``address`` is a port (listening on every interface, as the manual does) or, beyond the manual, ``(host, port)``
    to listen on one interface only. A port in use raises ``ListenError`` with ``.reason == ("listen", "syncerror")``.
    ``max_packet`` bounds one incoming packet on every socket accepted from it (64 MiB unless given; see Modes).
    """
    listener = make_listener(protocol, family, address, mode, _registry, backlog, reuse_port, max_packet)
    _registry.add_listener(listener)
    return listener.handle


def accept(
    listen_socket: ListenSocket,
    ssl_flags: str,
    *,
    timeout: float | None = None,
    owner: Owner | None = None,
    handshake_errors: str = "log",
) -> Socket:
    """``accept(ListenSocket, SSLFlags)``: wait for a connection and its TLS handshake; return its ``Socket``,
    controlled by the caller (or ``owner``). ``exit(pid, reason)`` aborts the wait with ``Exit``; closing the listen
    socket aborts it with ``Closed`` (``Stopped`` after ``stop()``); ``timeout`` raises ``Timeout``. Bad flags are
    refused before any wait.

    A connection whose handshake fails (a client that speaks no TLS, stays silent, or is refused at ``-verify``) is
    not established: it is logged (a WARNING on the ``sslsocket`` logger, naming the peer and the cause) and the
    wait goes on. With ``handshake_errors="raise"``, it raises ``HandshakeError`` instead."""
    return _registry.listener(listen_socket).accept(ssl_flags, owner, timeout, handshake_errors)


def client(
    protocol: str,
    family: str,
    address: tuple[Any, int | str],
    mode: Any,
    ssl_flags: str,
    *,
    owner: Owner | None = None,
    max_packet: int = MAX_PACKET_SIZE,
) -> Socket:
    """``client('STREAM', 'AF_INET', {Host, Port}, Mode, SSLFlags)``: connect, handshake, and return the
    ``Socket``, controlled by the caller (or ``owner``). ``Host`` is a name or an IP address; ``Port`` a number
    or, beyond the manual, a service name such as ``"https"``. The wait for the handshake is bounded by ``-timeout``
    and, like ``accept``, aborted by ``exit(pid, reason)``. ``max_packet`` bounds one incoming packet, as for
    ``listen``."""
    af = check_protocol_family(protocol, family)
    parsed = parse_mode(mode).bounded(max_packet)
    settings = parse_flags(ssl_flags)
    context = load_context(settings, server=False)
    host, port = _host_port(address)
    tcp = _connect(host, port, af, settings.timeout)
    me = process.self()
    outcome: list[BaseException | None] = []

    def handshake_done(sock: Socket, error: BaseException | None) -> None:
        outcome.append(error)
        me.wake()

    try:
        sock = Socket(
            tcp,
            context,
            server=False,
            mode=parsed,
            settings=settings,
            on_handshake=handshake_done,
            owner=owner if owner is not None else me,
            hostname=host,
            forget=_registry.forget,
        )
    except OSError as exc:
        tcp.close()
        if exc.errno in NO_RESOURCES:
            raise ConnectError(
                f"no resources for the connection to {host}:{port}: {exc.strerror}", ("resources", errno_name(exc))
            ) from exc
        raise ConnectError(f"the connection to {host}:{port} was lost at once: {exc.strerror}", "closed") from exc
    _registry.add(sock)
    try:
        sock.start()
    except RuntimeError as exc:
        raise ConnectError(f"could not start a thread for the connection to {host}:{port}: {exc}", "no_thread") from exc
    try:  # the mediator always reports, at the latest when -timeout runs out; exit(pid, reason) ends it sooner
        me.wait_until(lambda: bool(outcome), None, "client")
    except Exit:
        sock.abort(ConnectionBroken("the client call was aborted by an exit signal", "aborted"), tell_owner=False)
        raise
    if outcome[0] is not None:
        raise outcome[0]
    return sock


def _host_port(address: object) -> tuple[str, int]:
    if not (isinstance(address, tuple) and len(address) == 2):
        raise BadArgument(f"a client address is (host, port), not {address!r}", ("bad_argument", "address", address))
    host, port = address
    if isinstance(host, tuple) and all(type(part) is int for part in host):
        host = ".".join(map(str, host)) if len(host) == 4 else ":".join(f"{part:x}" for part in host)
    if not isinstance(host, str) or not host:
        raise BadArgument(
            f"a client host is a name or an IP address string, not {host!r}", ("bad_argument", "host", host)
        )
    if isinstance(port, str) and not port.isdigit():
        try:
            return host, socket.getservbyname(port, "tcp")
        except OSError:
            raise ConnectError(f"unknown service name {port!r} (see /etc/services)", ("service", port)) from None
    if isinstance(port, str):
        port = int(port)
    if type(port) is not int or not 0 < port <= 65535:
        raise BadArgument(
            f"a client port is a number from 1 to 65535 or a service name, not {port!r}", ("bad_argument", "port", port)
        )
    return host, port


def _connect(host: str, port: int, family: int, timeout: float) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectError(f"cannot resolve host {host!r}: {exc.strerror}", ("resolve", host)) from exc
    last: OSError | None = None
    for af, kind, proto, _, addr in infos:
        try:
            tcp = socket.socket(af, kind, proto)
        except OSError as exc:
            raise ConnectError(
                f"no socket for the connection to {host}:{port}: {exc.strerror}", ("resources", errno_name(exc))
            ) from exc
        tcp.settimeout(timeout)
        try:
            tcp.connect(addr)
            return tcp
        except OSError as exc:
            tcp.close()
            last = exc
    assert last is not None
    raise ConnectError(
        f"cannot connect to {host}:{port}: {last.strerror or last}", ("connect", str(last.strerror or last))
    ) from last


def controlling_process(sock: Socket, pid: Owner) -> None:
    """Make ``pid`` (a ``Pid``, or a callable) the socket's controlling process. Only the current controlling
    process may do this. No message is lost or reordered, those already waiting in its mailbox included."""
    owner = sock.owner
    if isinstance(owner, Pid) and process.self() is not owner:
        raise NotOwner(f"only the controlling process {owner!r} may hand {sock!r} on", ("not_owner", process.self()))
    if not (isinstance(pid, Pid) or callable(pid)):
        raise WrongType(
            f"a controlling process is a Pid or a callable, not {pid!r}", ("wrong_type", "pid", type(pid).__name__)
        )
    sock.change_owner(pid)


class Peer(NamedTuple):
    """The manual's ``{Portnumber, IPAddress}``."""

    port: int
    address: str


def peername(sock: Socket) -> Peer:
    """The peer of ``sock`` as ``Peer(port, address)``."""
    return Peer(*sock.peer)


def resolve(ip_address: str | None = None) -> str:
    """The official name of this host, or of the host at ``ip_address``."""
    if ip_address is None:
        return socket.getfqdn()
    try:
        return socket.gethostbyaddr(ip_address)[0]
    except OSError as exc:
        raise ConnectError(f"no name for {ip_address!r}: {exc.strerror or exc}", ("resolve", ip_address)) from exc


def close(sock: Socket | ListenSocket) -> None:
    """Close a socket (as ``(self(), "close")`` does) or a listen socket (stop listening, wake its acceptors)."""
    if isinstance(sock, ListenSocket):
        listener = _registry.pop_listener(sock)
        if listener is not None:
            listener.close()
    elif isinstance(sock, Socket):
        sock.close()
    else:
        raise WrongType(
            f"close takes a Socket or a ListenSocket, not {sock!r}", ("wrong_type", "sock", type(sock).__name__)
        )
