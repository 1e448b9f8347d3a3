"""``sslsocket.i()``: Erlang's ``i()`` (and ``inet:i()``) for the library, a window into the model.

One line per process (what it waits in, its mailbox), per listen socket (its acceptors, and its connections on
their way to one) and per connection (peer, mode, state, owner, counters, TLS). ``overview()`` gives the same as
data, for programs.

>>> import sslsocket
>>> table = sslsocket.overview()
>>> [process.name for process in table.processes if process.pid is sslsocket.self()]
['MainThread']
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields
from typing import IO, Any

from . import mailbox, supervision
from .process import Pid
from .registry import registry
from .sockets import Socket


@dataclass(frozen=True)
class ProcessInfo:
    pid: Pid
    name: str
    waiting: str  # what it waits in: "receive", "accept on ...", "client", or "-"
    mailbox: int  # messages waiting in its mailbox
    sockets: int  # sockets it controls
    links: list[Pid]  # the processes it is linked to
    monitors: int  # monitors watching it


@dataclass(frozen=True)
class ListenInfo:
    port: int
    fd: int
    mode: str
    acceptors: int  # processes waiting in accept
    quiet: int  # connections that have sent nothing yet
    queued: int  # spoke, waiting for a handshake of their own
    handshaking: int
    ready: int  # handshaken, waiting for an acceptor


@dataclass(frozen=True)
class SocketInfo:
    socket: Socket
    id: int
    peer: str
    mode: str
    state: str
    owner: str
    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    inbox: int  # messages waiting for the mediator
    monitors: int  # monitors watching it (in the data only: the table is wide enough)
    protocol: str
    cipher: str


@dataclass(frozen=True)
class Overview:
    processes: list[ProcessInfo]
    listeners: list[ListenInfo]
    sockets: list[SocketInfo]


def _pid(pid: Pid) -> str:
    return f"<0.{pid.id}.0>"


def _pids(pids: list[Pid]) -> str:
    return ",".join(map(_pid, pids)) or "-"


def _owner_name(owner: Any) -> str:
    if owner is None:
        return "-"
    if isinstance(owner, Pid):
        return _pid(owner)
    return f"callback {getattr(owner, '__qualname__', type(owner).__name__)}"


def overview() -> Overview:
    """What ``i()`` prints, as data: the live processes, listen sockets and connections, oldest first."""
    listeners, sockets = registry.snapshot()
    procs = [
        ProcessInfo(
            pid,
            pid.name,
            pid.waiting or "-",
            mailbox.mailbox_length(pid),
            mailbox.socket_count(pid),
            supervision.links(pid),
            supervision.monitors(pid),
        )
        for pid in mailbox.processes()
    ]
    listens = [ListenInfo(li.handle.port, li.handle.fd, str(li.mode), **li.counts()) for li in listeners]
    socks = [
        SocketInfo(
            sock,
            sock.id,
            f"{sock.peer[1]}:{sock.peer[0]}",
            str(sock.mode),
            sock.state.value,
            _owner_name(sock.owner),
            sock.packets_in,
            sock.bytes_in,
            sock.packets_out,
            sock.bytes_out,
            sock.inbox_depth,
            supervision.monitors(sock),
            sock.protocol or "-",
            sock.cipher or "-",
        )
        for sock in sockets
    ]
    return Overview(procs, listens, socks)


def format_overview(view: Overview) -> list[str]:
    """``view`` as the lines of three tables."""
    lines: list[str] = []
    tables: list[tuple[str, list[str], list[list[str]]]] = [
        (
            "Processes",
            ["pid", "name", "waiting in", "mailbox", "sockets", "links", "monitors"],
            [
                [_pid(p.pid), p.name, p.waiting, str(p.mailbox), str(p.sockets), _pids(p.links), str(p.monitors)]
                for p in view.processes
            ],
        ),
        (
            "Listen sockets",
            ["port", "fd", "mode", "acceptors", "quiet", "queued", "handshaking", "ready"],
            [[str(getattr(li, f.name)) for f in fields(li)] for li in view.listeners],
        ),
        (
            "Sockets",
            ["id", "peer", "mode", "state", "owner", "in", "bytes in", "out", "bytes out", "inbox", "TLS", "cipher"],
            [[str(getattr(s, f.name)) for f in fields(s)[1:] if f.name != "monitors"] for s in view.sockets],
        ),
    ]
    for title, header, rows in tables:
        lines.append(f"{title}: {len(rows)}")
        if not rows:
            continue
        widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
        for row in [header, *rows]:
            lines.append("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return lines


def i(file: IO[str] | None = None) -> None:
    """Print the processes, listen sockets and connections: Erlang's ``i()`` for sslsocket."""
    out = file or sys.stdout
    for line in format_overview(overview()):
        print(line, file=out)
