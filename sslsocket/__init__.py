"""sslsocket: Erlang's classic ``ssl_socket`` interface for Python, on pyOpenSSL.

A process per connection: ``accept`` and ``client`` return a ``Socket``, a mediator thread that alone talks TLS
and sends what arrives to its controlling process's mailbox, as the manual's messages.
"""

from .errors import (
    AcceptError,
    BadMessage,
    Closed,
    ConnectError,
    ConnectionBroken,
    Exit,
    FlagError,
    HandshakeError,
    ListenError,
    ModeError,
    NotOwner,
    PacketTooLong,
    SSLSocketError,
    Timeout,
)
from .flags import InsecureClientWarning
from .listener import ListenSocket
from .mediator import Socket
from .process import Pid, exit, receive, self, spawn
from .server import (
    Peer,
    accept,
    client,
    close,
    controlling_process,
    listen,
    peername,
    resolve,
    start,
    stop,
)

__all__ = [
    "AcceptError",
    "BadMessage",
    "Closed",
    "ConnectError",
    "ConnectionBroken",
    "Exit",
    "FlagError",
    "HandshakeError",
    "InsecureClientWarning",
    "ListenError",
    "ListenSocket",
    "ModeError",
    "NotOwner",
    "PacketTooLong",
    "Peer",
    "Pid",
    "SSLSocketError",
    "Socket",
    "Timeout",
    "accept",
    "client",
    "close",
    "controlling_process",
    "exit",
    "listen",
    "peername",
    "receive",
    "resolve",
    "self",
    "spawn",
    "start",
    "stop",
]
