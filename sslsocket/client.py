"""The manual's ``client``: connect, handshake, and hand the caller its ``Socket``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

from . import process
from .context import load_context
from .errors import (
    NO_RESOURCES,
    BadArgument,
    ConnectError,
    ConnectionBroken,
    HandshakeError,
    check_protocol_family,
    errno_name,
)
from .flags import parse_flags
from .framing import MAX_PACKET_SIZE, parse_mode
from .process import Pid
from .registry import registry
from .sockets import Socket
from .system import close_tcp


def client(
    protocol: str,
    family: str,
    address: tuple[Any, int | str],
    mode: Any,
    ssl_flags: str,
    *,
    owner: Pid | Callable[[Any], object] | None = None,
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
    try:
        sock = Socket(
            tcp, context, settings, parsed, server=False, on_handshake=_told, forget=registry.forget, hostname=host
        )
    except OSError as exc:
        close_tcp(tcp)
        if exc.errno in NO_RESOURCES:
            raise ConnectError(
                f"no resources for the connection to {host}:{port}: {exc.strerror}", ("resources", errno_name(exc))
            ) from exc
        raise ConnectError(f"the connection to {host}:{port} was lost at once: {exc.strerror}", "closed") from exc
    sock.claim(owner if owner is not None else me)
    registry.add(sock)
    _handshake(sock, me)
    try:
        sock.start()
    except RuntimeError as exc:
        raise ConnectError(f"could not start a thread for the connection to {host}:{port}: {exc}", "no_thread") from exc
    return sock


def _told(sock: Socket, error: BaseException | None) -> None:
    """A client's handshake is over before its mediator thread starts: nothing to tell."""


def _handshake(sock: Socket, me: Pid) -> None:
    """The handshake, in the calling thread (``handshake_here``): bounded by ``-timeout``, and aborted by ``stop()``
    or by ``exit(pid, reason)``, which then raises ``Exit``, as from any wait. An abort that lands as the handshake
    ends is an abort all the same: the socket is closed, never returned."""
    lock = threading.Lock()
    waiting = [True]

    def interrupt() -> None:
        with lock:  # never once client() is past its wait: its socket is the caller's then
            if waiting[0]:
                sock.abort(
                    ConnectionBroken("the client call was aborted by an exit signal", "aborted"), tell_owner=False
                )

    try:
        with me.working("client", interrupt):
            sock.handshake_here()
            with lock:
                waiting[0] = False
        if sock.aborted:  # just as the handshake ended
            sock.end_unstarted()
            raise HandshakeError("the client call was aborted", "aborted")
    except HandshakeError as exc:
        if exc.reason == "aborted":
            me.check_exit()
        raise


def _host_port(address: object) -> tuple[str, int]:
    if not (isinstance(address, tuple) and len(address) == 2):
        raise BadArgument(f"a client address is (host, port), not {address!r}", ("bad_argument", "address", address))
    return _host(address[0]), _port(address[1])


def _host(host: object) -> str:
    """A name or an address; Erlang's address tuples too: ``(127, 0, 0, 1)``, eight ints for IPv6."""
    if isinstance(host, tuple) and all(type(part) is int for part in host):
        host = ".".join(map(str, host)) if len(host) == 4 else ":".join(f"{part:x}" for part in host)
    if not isinstance(host, str) or not host:
        raise BadArgument(
            f"a client host is a name or an IP address string, not {host!r}", ("bad_argument", "host", host)
        )
    return host


def _port(port: object) -> int:
    """A number, as an int or digits, or a service name (``"https"``)."""
    if isinstance(port, str) and not port.isdigit():
        try:
            return socket.getservbyname(port, "tcp")
        except OSError:
            raise ConnectError(f"unknown service name {port!r} (see /etc/services)", ("service", port)) from None
    if isinstance(port, str):
        port = int(port)
    if type(port) is not int or not 0 < port <= 65535:
        raise BadArgument(
            f"a client port is a number from 1 to 65535 or a service name, not {port!r}", ("bad_argument", "port", port)
        )
    return port


def _connect(host: str, port: int, family: int, timeout: float) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectError(f"cannot resolve host {host!r}: {exc.strerror}", ("resolve", host)) from exc
    last: OSError | None = None
    for af, kind, proto, _, addr in infos:
        try:
            with registry.new_connection():
                tcp = socket.socket(af, kind, proto)
                registry.track(tcp)
        except OSError as exc:
            raise ConnectError(
                f"no socket for the connection to {host}:{port}: {exc.strerror}", ("resources", errno_name(exc))
            ) from exc
        tcp.settimeout(timeout)
        try:
            tcp.connect(addr)
            return tcp
        except OSError as exc:
            close_tcp(tcp)
            last = exc
    assert last is not None
    raise ConnectError(
        f"cannot connect to {host}:{port}: {last.strerror or last}", ("connect", str(last.strerror or last))
    ) from last
