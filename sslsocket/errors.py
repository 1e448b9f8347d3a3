"""Every error of the library: one base, ``SSLSocketError``, with a ``.reason`` in the manual's style.

Where a Python user would catch a builtin, the subclass derives from it too: a bad flag or mode is a
``ValueError``, a wait that expires is a ``TimeoutError``, a failed listen or connect is an ``OSError``.
"""

from __future__ import annotations

import errno
import socket
from typing import Any


class SSLSocketError(Exception):
    """The base of every sslsocket error. ``reason`` is a short term, as Erlang would give it."""

    def __init__(self, message: str, reason: Any = None) -> None:
        super().__init__(message)
        self.reason = reason if reason is not None else message


class ListenError(SSLSocketError, OSError):
    """``listen`` failed: the manual's ``exit({listen, syncerror})``."""


class ConnectError(SSLSocketError, OSError):
    """``client`` could not reach the peer (name lookup, TCP connect)."""


class HandshakeError(SSLSocketError):
    """The TLS handshake failed or did not finish in time; the message names the peer and the cause. ``reason``:
    ``"tls"``, ``"hostname"`` (the server's certificate does not bear the name, at ``-verify 2``),
    ``"refused_peer"`` (a server refused its client's certificate, or its lack of one), ``"timeout"``,
    ``"aborted"`` or ``"dropped"``."""


class FlagError(SSLSocketError, ValueError):
    """An SSLFlags string that cannot be used; the message names the flag or the file."""


class ModeError(SSLSocketError, ValueError):
    """A mode that is none of the manual's."""


class PacketTooLong(SSLSocketError, ValueError):
    """A packet too long for its mode's length header; nothing was sent."""


class BadMessage(SSLSocketError, ValueError):
    """A message to a socket that is none of ``(pid, ("deliver", data))`` and ``(pid, "close")``."""


class NotOwner(SSLSocketError):
    """Only the controlling process may talk to a socket or hand it on."""


class Closed(SSLSocketError):
    """The socket or listen socket is closed (by its owner, its peer, or ``stop()``)."""


class ListenClosed(Closed):
    """The listen socket of an ``accept`` was closed, whether the accept waited already or began after. A spawned
    process that does not catch it ends quietly, as one ended by ``exit``: closing the listen socket is how the
    manual stops listening, and its waiting acceptors end with it."""


class Stopped(ListenClosed):
    """``stop()`` closed the listen socket of an ``accept`` (waiting, or called after it)."""


class Timeout(SSLSocketError, TimeoutError):
    """A wait given a ``timeout`` ran out."""


class Exit(SSLSocketError):
    """Raised in a process blocked in ``accept`` or ``receive`` when another called ``exit(pid, reason)``."""


class ConnectionBroken(SSLSocketError, ConnectionError):
    """The ``error`` of a ``("socket_closed", error)`` message: why a connection ended other than normally.

    ``reason`` is a short tag: ``"truncated"``, ``"reset"``, ``"tls"``, ``"too_long"``, ``"bad_asn1"``,
    ``"stopped"``, ``"owner_died"``, ``"incomplete"``, ``"os"``, ``"idle"`` (``-idle_timeout``), ``"budget"``
    (``listen(..., max_buffered=)``).
    """

    def __repr__(self) -> str:
        return f"ConnectionBroken({self.reason!r}, {str(self)!r})"


class BadArgument(SSLSocketError, ValueError):
    """An argument of the right type with a value the call cannot take: a port out of range, a protocol other than
    ``"STREAM"``, an unknown family, a character above U+00FF in a str to deliver. ``reason`` is
    ``("bad_argument", what, value)``."""


class WrongType(SSLSocketError, TypeError):
    """An argument of a type the call cannot take: a payload that is no str, bytes-like or iolist, an owner that is
    neither a ``Pid`` nor a callable. ``reason`` is ``("wrong_type", what, type name)``."""


class AcceptError(SSLSocketError, OSError):
    """The listen socket could not take a connection (for example: out of file descriptors); it keeps listening."""


#: What the system says when it has no descriptor, memory or buffer left for one more connection.
NO_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)

FAMILIES = {"AF_INET": socket.AF_INET, "AF_INET6": socket.AF_INET6}


def errno_name(exc: OSError) -> str:
    """``"EMFILE"`` for an OSError of that errno: how the reasons of accept's and client's errors name it."""
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def check_protocol_family(protocol: object, family: object) -> int:
    """The address family of ``listen`` and ``client``'s ``'STREAM', 'AF_INET'`` (or ``'AF_INET6'``)."""
    if protocol != "STREAM":
        raise BadArgument(
            f"protocol must be 'STREAM' (the manual's only one), not {protocol!r}",
            ("bad_argument", "protocol", protocol),
        )
    if family not in FAMILIES:
        raise BadArgument(f"family must be 'AF_INET' or 'AF_INET6', not {family!r}", ("bad_argument", "family", family))
    return FAMILIES[family]


def closed_error(handle: object, why: str) -> Closed:
    """What ``accept`` raises on a listen socket that was closed (``why == "closed"``) or stopped, whether it had
    begun to wait or not: a ``ListenClosed`` (``Stopped`` after ``stop()``), so that a process it ends ends
    quietly."""
    if why == "stopped":
        return Stopped(f"listen socket {handle} was closed by stop()", ("accept", "stopped"))
    return ListenClosed(f"listen socket {handle} is closed", ("accept", why))
