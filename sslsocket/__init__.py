"""sslsocket: Erlang's classic ``ssl_socket`` interface for Python, on pyOpenSSL.

A process per connection: ``accept`` and ``client`` return a ``Socket``, a mediator thread that alone talks TLS
and sends what arrives to its controlling process's mailbox, as the manual's messages.

>>> import os, tempfile, warnings, sslsocket
>>> from sslsocket.certs import make_cert
>>> cert = os.path.join(tempfile.mkdtemp(), "ssl_server.pem")
>>> make_cert("localhost").write(cert)
>>> listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2))
>>> def connection(listen, father):
...     socket = sslsocket.accept(listen, f"-cert {cert}")
...     father.send((sslsocket.self(), "ok"))
...     socket.send((sslsocket.self(), ("deliver", "Hello there")))
...     sslsocket.receive()  # until the client closes
>>> pid = sslsocket.spawn(connection, listen, sslsocket.self())
>>> with warnings.catch_warnings():
...     warnings.simplefilter("ignore")  # this client checks nothing (-verify 0)
...     sock = sslsocket.client("STREAM", "AF_INET", ("localhost", listen.port), ("packet", 2), "")
>>> sslsocket.receive(timeout=5) == (pid, "ok")
True
>>> sender, message = sslsocket.receive(timeout=5)
>>> sender is sock, message
(True, ('fromsocket', 'Hello there'))
>>> sock.send((sslsocket.self(), "close"))
>>> sslsocket.close(listen)
>>> sslsocket.stop()
"""

from importlib import metadata as _metadata

from .client import client
from .errors import (
    AcceptError,
    BadArgument,
    BadMessage,
    Closed,
    ConnectError,
    ConnectionBroken,
    Exit,
    FlagError,
    HandshakeError,
    ListenClosed,
    ListenError,
    ModeError,
    NotOwner,
    PacketTooLong,
    SSLSocketError,
    Stopped,
    Timeout,
    WrongType,
)
from .flags import InsecureClientWarning
from .overview import i, overview
from .process import Pid, exit, receive, self, spawn
from .registry import ListenSocket, drain, start, stop
from .server import Peer, accept, close, controlling_process, listen, peername, resolve
from .sockets import Socket
from .supervision import Ref, demonitor, link, monitor, process_flag, spawn_link, spawn_monitor, unlink

try:
    __version__ = _metadata.version("sslsocket")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AcceptError",
    "BadArgument",
    "BadMessage",
    "Closed",
    "ConnectError",
    "ConnectionBroken",
    "Exit",
    "FlagError",
    "HandshakeError",
    "InsecureClientWarning",
    "ListenClosed",
    "ListenError",
    "ListenSocket",
    "ModeError",
    "NotOwner",
    "PacketTooLong",
    "Peer",
    "Pid",
    "Ref",
    "SSLSocketError",
    "Socket",
    "Stopped",
    "Timeout",
    "WrongType",
    "accept",
    "client",
    "close",
    "controlling_process",
    "demonitor",
    "drain",
    "exit",
    "i",
    "link",
    "listen",
    "monitor",
    "overview",
    "peername",
    "process_flag",
    "receive",
    "resolve",
    "self",
    "spawn",
    "spawn_link",
    "spawn_monitor",
    "start",
    "stop",
    "unlink",
]
