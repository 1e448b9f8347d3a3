"""``sslsocket connect``: a TLS client for the shell. Standard input goes out as packets, the packets that arrive
are printed, until the input has ended and the server has said nothing for ``--wait`` seconds, or the server
closes."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography import x509

from . import process
from .cli_certs import Failure, status
from .client import client
from .framing import Mode
from .process import Pid
from .sockets import Socket


def connect(args: argparse.Namespace) -> int:
    """``sslsocket connect``, its ``--flags`` checked."""
    port: int | str = int(args.port) if args.port.isdigit() else args.port
    family = "AF_INET6" if ":" in args.host else "AF_INET"
    if args.verbose:
        status(f"connecting to {args.host}:{port} ...")
    sock = client("STREAM", family, (args.host, port), args.mode, args.flags)
    if args.verbose:
        describe(sock)
    me = process.self()
    reader = threading.Thread(target=read_input, args=(me, args.binary, args.mode), daemon=True, name="stdin")
    reader.start()
    return _converse(sock, show_hex if args.hex else show_text, args.wait)


def _converse(sock: Socket, show: Callable[[str | bytes], None], wait: float) -> int:
    """Standard input to the server, its packets to standard output, until the input has ended and the server
    has said nothing for ``wait`` seconds, or the server closes. Input sent and no reply at all is said: the usual
    cause is a mode other than the server's (a raw client's line read as a length by a ``{packet,2}`` server)."""
    quiet_since: float | None = None
    sent = replied = False
    while True:
        timeout = None if quiet_since is None else max(0.0, quiet_since + wait - time.monotonic())
        try:
            msg = process.receive(timeout=timeout)
        except TimeoutError:  # end of input, and no reply for --wait seconds: close in order
            if sent and not replied:
                status(
                    f"sslsocket connect: no reply from the server within {wait:g} s of the end of input (is"
                    f" the mode {sock.mode} the server's? a slow server needs a longer --wait)"
                )
            sock.close()
            return 0
        match msg:
            case ("stdin", None):
                quiet_since = time.monotonic()
            case ("stdin", data):
                sock.deliver(data)
                sent = True
            case (s, ("fromsocket", data)) if s is sock:
                replied = True
                show(data)
                if quiet_since is not None:
                    quiet_since = time.monotonic()
            case (s, ("socket_closed", "normal")) if s is sock:
                status("the server closed the connection")
                return 0
            case (s, ("socket_closed", error)) if s is sock:
                raise Failure(f"the connection broke: {error}")


def read_input(owner: Pid, binary: bool, mode: Mode) -> None:
    """Standard input, to the owner's mailbox: lines (without their newline, except in raw mode, a stream), or
    raw chunks with ``--binary``. ``None`` marks the end.

    It reads the descriptor itself (``os.read``), never ``sys.stdin``: this thread may still wait for input when
    the connection ends and the program exits, and a thread waiting inside ``sys.stdin``'s buffer holds its lock,
    which the interpreter's shutdown then cannot take (a fatal error, exit 134)."""
    keep_newline = mode.header == 0 and not mode.asn1
    rest = b""
    while chunk := os.read(sys.stdin.fileno(), 65536):
        if binary:
            owner.send(("stdin", chunk))
            continue
        lines, rest = split_lines(rest + chunk)
        for line in lines:
            owner.send(("stdin", line if keep_newline else line.rstrip(b"\r\n")))
    if rest and not binary:
        owner.send(("stdin", rest))
    owner.send(("stdin", None))


def split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    r"""The whole lines of ``data`` (each with its newline) and what follows the last newline.

    >>> split_lines(b"one\ntwo\r\nthr")
    ([b'one\n', b'two\r\n'], b'thr')
    """
    *whole, rest = data.split(b"\n")
    return [line + b"\n" for line in whole], rest


def show_text(data: str | bytes) -> None:
    raw = data.encode("latin-1") if isinstance(data, str) else data
    text = "".join(chr(b) if 32 <= b < 127 or b in (9, 10) else f"\\x{b:02x}" for b in raw)
    print(text if text.endswith("\n") else text + "\n", end="", flush=True)


def show_hex(data: str | bytes) -> None:
    raw = data.encode("latin-1") if isinstance(data, str) else data
    print(raw.hex(" ") if raw else "(empty)", flush=True)


def describe(sock: Socket) -> None:
    status(f"connected: {sock.protocol}, {sock.cipher}; verify: {sock.verify_result}")
    cert: Any = sock.peer_certificate
    if cert is None:
        status("the server sent no certificate")
        return
    status(f"  subject: {cert.subject.rfc4514_string()}")
    status(f"  issuer:  {cert.issuer.rfc4514_string()}")
    status(f"  valid:   {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}")
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        status(f"  names:   {', '.join(str(n.value) for n in names)}")
    except x509.ExtensionNotFound:
        pass
