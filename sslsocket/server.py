"""The manual's calls on listen sockets and sockets: ``listen``, ``accept``, ``controlling_process``, ``peername``,
``resolve`` and ``close``. (``client`` has a module of its own; ``start`` and ``stop`` are the registry's.)"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from . import process
from .budget import Budget
from .errors import BadArgument, ConnectError, ListenError, NotOwner, WrongType, check_protocol_family
from .framing import MAX_PACKET_SIZE, parse_mode
from .inbox import INBOX_SIZE, INBOX_UNIT
from .listener import Listener
from .mediator import HIGH_WATER
from .owner import HAND_OVER
from .process import Pid
from .registry import ListenSocket, registry
from .sockets import Socket
from .system import reuse_address


def listen(
    protocol: str,
    family: str,
    address: int | tuple[str, int],
    mode: Any,
    *,
    backlog: int = 128,
    reuse_port: bool = False,
    max_packet: int = MAX_PACKET_SIZE,
    max_buffered: int | None = None,
) -> ListenSocket:
    """``listen('STREAM', 'AF_INET', Port, Mode)``: a ``ListenSocket(fd, port)``. Port 0 picks a free port.

    ``address`` is a port (listening on every interface, as the manual does) or, beyond the manual, ``(host, port)``
    to listen on one interface only. A port in use raises ``ListenError`` with ``.reason == ("listen", "syncerror")``.
    ``max_packet`` bounds one incoming packet on every socket accepted from it (64 MiB unless given; see Modes).
    ``max_buffered`` bounds, in bytes, what all of them may hold for peers that read nothing (some 1 MiB each):
    past it, the connection whose owner has waited longest for room is closed (reason ``"budget"``). None: no
    bound but each connection's own.
    """
    af = check_protocol_family(protocol, family)
    parsed = parse_mode(mode).bounded(max_packet)
    if max_buffered is not None and (type(max_buffered) is not int or max_buffered <= 0):
        raise BadArgument(
            f"max_buffered must be a number of bytes above 0, or None, not {max_buffered!r}",
            ("bad_argument", "max_buffered", max_buffered),
        )
    host, port = address if isinstance(address, tuple) and len(address) == 2 else (_ANY[af], address)
    if type(port) is not int or not 0 <= port <= 65535:
        raise BadArgument(
            f"the listen address must be a port number from 0 to 65535, not {port!r}", ("bad_argument", "port", port)
        )
    sock = socket.socket(af, socket.SOCK_STREAM)
    try:
        reuse_address(sock)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}", ("listen", "syncerror")) from exc
    budget: Budget[Socket] | None = Budget(max_buffered, HELD_BY_A_DEAF_PEER) if max_buffered else None
    listener = Listener(sock, parsed, registry, budget)
    registry.add_listener(listener)
    return listener.handle


_ANY: dict[int, str] = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}
#: What a connection whose peer reads nothing holds before its owner waits: its unwritten bytes and a full inbox.
HELD_BY_A_DEAF_PEER = HIGH_WATER + INBOX_SIZE * INBOX_UNIT


def accept(
    listen_socket: ListenSocket,
    ssl_flags: str,
    *,
    timeout: float | None = None,
    owner: Pid | Callable[[Any], object] | None = None,
    handshake_errors: str = "log",
) -> Socket:
    """``accept(ListenSocket, SSLFlags)``: wait for a connection and its TLS handshake; return its ``Socket``,
    controlled by the caller (or ``owner``). ``exit(pid, reason)`` aborts the wait with ``Exit``; closing the listen
    socket aborts it with ``Closed`` (``Stopped`` after ``stop()``); ``timeout`` raises ``Timeout``. Bad flags are
    refused before any wait.

    A connection whose handshake fails (a client that speaks no TLS, stays silent, or is refused at ``-verify``) is
    not established: it is logged (a WARNING on the ``sslsocket`` logger, naming the peer and the cause) and the
    wait goes on. With ``handshake_errors="raise"``, it raises ``HandshakeError`` instead."""
    return registry.listener(listen_socket).accept(ssl_flags, owner, timeout, handshake_errors)


def controlling_process(sock: Socket, pid: Pid | Callable[[Any], object] | threading.Thread) -> None:
    """Make ``pid`` (a ``Pid``, a ``threading.Thread``, started or not, or a callable) the socket's controlling
    process. Only the current controlling process may do this. No message is lost or reordered, those already
    waiting in its mailbox included."""
    owner = sock.owner
    if isinstance(owner, Pid) and process.self() is not owner:
        raise NotOwner(
            f"only the controlling process {owner!r} may hand {sock!r} on; {process.self()!r} is not it. {HAND_OVER}",
            ("not_owner", process.self()),
        )
    pid = process.as_pid(pid)
    if not (isinstance(pid, Pid) or callable(pid)):
        raise WrongType(
            f"a controlling process is a Pid, a threading.Thread or a callable, not {pid!r}",
            ("wrong_type", "pid", type(pid).__name__),
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
        registry.close_listener(sock)
    elif isinstance(sock, Socket):
        sock.close()
    else:
        raise WrongType(
            f"close takes a Socket or a ListenSocket, not {sock!r}", ("wrong_type", "sock", type(sock).__name__)
        )
