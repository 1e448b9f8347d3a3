"""The ``sslsocket`` command: a demo, a framed TLS server and client for the shell, and the manual's certificate
recipes. Exit status: 0 success (and after SIGTERM), 1 failure, 2 a usage error, 130 after Ctrl-C (SIGINT)."""

from __future__ import annotations

import argparse
import datetime
import logging
import signal
import sys
import warnings
from collections.abc import Callable
from contextlib import suppress
from time import monotonic

from . import __version__, process
from .cli_certs import Failure, run_csr, run_makecert, run_rehash, run_unprotect
from .cli_connect import connect
from .cli_signals import interrupt, on_signals, signals_as_exits
from .context import load_context
from .errors import Closed, Exit, FlagError, SSLSocketError
from .flags import parse_flags
from .framing import Mode, parse_mode
from .process import Pid
from .registry import ListenSocket, drain, stop
from .server import accept, close, listen, peername
from .sockets import Socket

EPILOG = "Modes in the manual's notation: raw, '{packet,2}', '{binary_packet,4}', asn1, onebyte, twobytes..."


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = lambda message, *_, **__: f"sslsocket {args.command}: warning: {message}\n"
    on_signals(interrupt)
    try:
        result: int = args.run(args)
        return result
    except (Failure, SSLSocketError, OSError) as exc:
        print(f"sslsocket {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        if exc.args == (signal.SIGTERM,):
            return 0  # asked to stop: a server's ordinary end
        print(f"sslsocket {args.command}: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a program that Ctrl-C ended
    finally:
        stop()


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The arguments, or a usage error (exit 2) that names the culprit: SSLFlags with spaces left unquoted leave
    words behind (``--flags -cert server.pem``), and the error says to quote them; ``--flag`` is no ``--flags``."""
    for word in argv:
        if word != "--flags" and len(word) > 2 and "--flags".startswith(word):
            parser.error(f"unrecognized argument: {word} (did you mean --flags?)")
    args, extra = parser.parse_known_args(_bind_flags(argv))
    if extra:
        hint = ""
        if getattr(args, "flags", None) and not extra[0].startswith("--"):
            hint = f" (SSLFlags with spaces go in quotes: --flags '{' '.join([args.flags, *extra])}')"
        parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    return args


def _bind_flags(argv: list[str]) -> list[str]:
    """``--flags -verify 2`` as ``--flags=-verify 2``: SSLFlags begin with a dash, which argparse would otherwise
    take for an option of its own (``-v``). ``-flags``, with OpenSSL's single dash, is taken for ``--flags``."""
    bound: list[str] = []
    words = iter(argv)
    for word in words:
        value = next(words, None) if word in ("--flags", "-flags") else None
        bound.append(word if value is None else f"--flags={value}")
    return bound


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations: --flag taken silently for --flags, or --max for --max-connections, hides a typo.
    parser = argparse.ArgumentParser(
        prog="sslsocket", description="Erlang's ssl_socket interface, in Python.", allow_abbrev=False
    )
    parser.add_argument("--version", action="version", version=f"sslsocket {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, run: Callable[[argparse.Namespace], int], help: str, epilog: str | None = None
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help, epilog=epilog, allow_abbrev=False)
        sub.set_defaults(run=run)
        return sub

    command("demo", run_demo, "play the manual's scenarios in one process, printing every message")

    serve = command("serve", run_serve, "a TLS server: a spawned process per connection, echoing or chatting", EPILOG)
    serve.add_argument("port", type=port_number, help="the port to listen on (0: any free one, printed)")
    serve.add_argument("--host", default="0.0.0.0", help="the address to listen on (default: every interface)")
    serve.add_argument("--mode", type=mode_argument, default=parse_mode(("packet", 2)), help="default {packet,2}")
    serve.add_argument("--flags", required=True, help="SSLFlags, for example '-cert server.pem'")
    serve.add_argument("--chat", action="store_true", help="send every packet to all the other connections")
    serve.add_argument(
        "--max-connections",
        type=positive_int,
        default=1000,
        help="at most this many connections at once (each costs two threads); at the limit a new client is let in"
        " by closing the connection idle longest; default 1000",
    )
    serve.add_argument(
        "--max-packet",
        type=positive_int,
        default=MAX_PACKET,
        help="the largest packet a client may send, in bytes (a larger one ends its connection; each connection may"
        f" hold one such packet, and a copy of it on its way back); default {MAX_PACKET:,}",
    )
    serve.add_argument(
        "--max-buffered",
        type=positive_int,
        default=MAX_BUFFERED,
        help="MiB that all connections may hold for clients that send and never read (some 1 MiB each): past it"
        f" the one held up longest is closed; default {MAX_BUFFERED}",
    )
    serve.add_argument(
        "--drain",
        type=seconds_argument,
        default=DRAIN,
        help="on SIGTERM, stop accepting and give open connections this many seconds to finish before they are"
        f" closed (0, or a second SIGTERM or Ctrl-C: close them at once); default {DRAIN:g}",
    )
    serve.add_argument(
        "--idle-timeout",
        type=seconds_argument,
        default=IDLE_TIMEOUT,
        help=f"close a connection with no traffic either way for this long (0: never); default {IDLE_TIMEOUT:g}",
    )

    connect = command("connect", run_connect, "a TLS client: standard input out as packets, packets in printed", EPILOG)
    connect.add_argument("host")
    connect.add_argument("port", help="a port number or a service name")
    connect.add_argument("--mode", type=mode_argument, default=parse_mode(("packet", 2)), help="default {packet,2}")
    connect.add_argument("--flags", default="", help="SSLFlags, for example '-verify 2 -CAfile ca.pem'")
    connect.add_argument("--binary", action="store_true", help="send standard input in raw chunks, not lines")
    connect.add_argument("--hex", action="store_true", help="print packets in hexadecimal")
    connect.add_argument(
        "--wait", type=float, default=1.0, help="after end of input, wait this many seconds for replies (default 1)"
    )
    connect.add_argument("-v", "--verbose", action="store_true", help="print the peer's certificate and the TLS")

    makecert = command(
        "makecert",
        run_makecert,
        "a certificate and its key in one file: self-signed, signed by a CA of yours (--issuer), or a CA (--ca)",
    )
    makecert.add_argument("out", help="the PEM file to write (certificate and key; with --ca the certificate alone)")
    makecert.add_argument("--cn", help="the common name; default: the first --name, or localhost")
    makecert.add_argument(
        "--name",
        action="append",
        default=[],
        help="a host name or IP address the certificate names (repeat for more); default: the common name",
    )
    makecert.add_argument(
        "--ca", action="store_true", help="make a CA: its certificate in OUT, its key beside it (ca.pem: ca.key)"
    )
    makecert.add_argument("--force", action="store_true", help="overwrite files that exist (a CA's key among them)")
    makecert.add_argument(
        "--issuer", metavar="CA.pem", help="sign with this CA (made by --ca; its key is read from CA.key beside it)"
    )
    makecert.add_argument("--days", type=positive_int, default=365, help="validity in days; default 365")
    makecert.add_argument("--key", choices=("ec", "rsa"), default="ec", help="key type; default ec (P-256)")
    makecert.add_argument("--hash-link", action="store_true", help="also make the <hash>.0 link beside it")

    rehash = command("rehash", run_rehash, "make the <hash>.N links of a CA directory, for SSL_CERT_DIR")
    rehash.add_argument("directory")

    csr = command("csr", run_csr, "a certificate signing request and its new key, to send to a CA")
    csr.add_argument("--out", required=True, help="the request's PEM file")
    csr.add_argument("--keyout", required=True, help="the new key's PEM file")
    csr.add_argument("--cn", default="localhost", help="the common name; default localhost")
    csr.add_argument("--key", choices=("ec", "rsa"), default="ec", help="key type; default ec (P-256)")
    csr.add_argument("--pass", dest="password", help="protect the key: pass:TEXT, env:VAR or file:PATH")

    unprotect = command("unprotect", run_unprotect, "remove a key's pass phrase (asked for without echo)")
    unprotect.add_argument("input")
    unprotect.add_argument("output")
    unprotect.add_argument("--pass", dest="password", help="the pass phrase as pass:TEXT, env:VAR or file:PATH")
    return parser


# ---- argument types: bad values become usage errors (exit 2) naming them ----------------------------------------


def mode_argument(text: str) -> Mode:
    try:
        return parse_mode(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a mode: give raw, asn1, onebyte, twobytes, fourbytes, '{{packet,N}}' or"
            " '{binary_packet,N}', with N one of 0, 1, 2, 4"
        ) from None


def port_number(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return int(text)


def seconds_argument(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 to 86400)")
    return seconds


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


# ---- demo --------------------------------------------------------------------------------------------------------


def run_demo(args: argparse.Namespace) -> int:
    from .demo import run

    run()
    return 0


# ---- serve: the manual's top/loop/connection -------------------------------------------------------------------


def usable_flags(command: str, flags: str, *, server: bool) -> bool:
    """Check ``--flags`` before any network: a bad one is a usage error, said once (not once per connection). A
    client's context is made here, and so here a client at ``-verify 0`` warns that it checks nothing."""
    try:
        load_context(parse_flags(flags), server=server)
    except FlagError as exc:
        print(f"sslsocket {command}: --flags: {exc}", file=sys.stderr)
        return False
    return True


#: serve's ``--max-packet`` by default: an echo server's packets are small, and each connection may hold one whole
#: packet being read and its echo being written; the library's own bound (64 MiB) is the protocol's, not a server's.
MAX_PACKET = 1024 * 1024

#: serve's ``--max-buffered`` by default, in MiB: 256 clients that read nothing, of the 1,000 connections at most.
MAX_BUFFERED = 256

#: serve's ``--idle-timeout`` by default: the library has none, as the manual has none; a server that runs for
#: long needs one, or connections that say nothing any more fill it up.
IDLE_TIMEOUT = 300.0


#: serve's listen backlog: a burst of clients at once waits in the kernel while the listener takes them in, not
#: dropped (a dropped SYN is tried again after 1, 3, 7... seconds). The system caps it: on Linux at
#: ``net.core.somaxconn``, 4,096 since Linux 5.4 and 128 before.
BACKLOG = 4096
#: serve's ``--drain`` by default: how long, after SIGTERM, open connections have to finish.
DRAIN = 10.0
#: After the drain, how long serve waits, at most, for the connections' processes to log how each ended.
LAST_WORDS = 2.0


def run_serve(args: argparse.Namespace) -> int:
    if args.idle_timeout and "-idle_timeout" not in args.flags:
        args.flags = f"{args.flags} -idle_timeout {args.idle_timeout:g}"
    if not usable_flags("serve", args.flags, server=True):
        return 2
    # The library's WARNINGs (a client whose handshake failed...) in the same shape as serve's own lines.
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    family = "AF_INET6" if ":" in args.host else "AF_INET"
    budget = args.max_buffered * 1024 * 1024
    handle = listen(
        "STREAM",
        family,
        (args.host, args.port),
        args.mode,
        backlog=BACKLOG,
        max_packet=args.max_packet,
        max_buffered=budget,
    )
    log(f"listening on {args.host}:{handle.port}, mode {args.mode}, {'chat' if args.chat else 'echo'}")
    room = process.spawn(chat_room) if args.chat else None
    live: dict[Pid, Socket] = {}
    try:
        with signals_as_exits(process.self()):
            try:
                loop(handle, args.flags, room, args.max_connections, live)
            except Exit as exc:
                if exc.reason != "SIGTERM":
                    raise KeyboardInterrupt(signal.SIGINT) from None  # Ctrl-C: stop at once, as main says
                drained(args.drain, live)
    finally:
        close(handle)
    return 0


def drained(seconds: float, live: dict[Pid, Socket]) -> None:
    """SIGTERM: no new connections, and the open ones have ``seconds`` to end by themselves (``sslsocket.drain``);
    then their processes, ``live``, have a moment to write their last line. An exit signal (a second SIGTERM, or
    Ctrl-C: ``signals_as_exits``) cuts them at once, as an operator who sends it asks."""
    started = monotonic()
    try:
        finished, cut = drain(seconds)
    except Exit as exc:  # the drain began with a SIGTERM: this one is the second
        again = "SIGTERM again" if exc.reason == "SIGTERM" else exc.reason
        log(f"{again} after {monotonic() - started:.1f} s: the connections still open are cut now")
        return
    took = monotonic() - started
    deadline = monotonic() + LAST_WORDS
    with suppress(Exit):  # (a second SIGTERM as the drain ended: no waiting either)
        while live and monotonic() < deadline:  # every socket has ended and told its process, which logs how
            _ended(live, timeout=deadline - monotonic())
    log(f"SIGTERM: drained in {took:.1f} s; connections that ended by themselves: {finished}, cut: {cut}")


def log(text: str) -> None:
    """One line of serve's log, in one write: the connections' processes log from threads of their own, and a
    ``print`` writes its newline apart, so that two lines could run into one."""
    sys.stdout.write(f"{datetime.datetime.now():%H:%M:%S} {text}\n")
    sys.stdout.flush()


#: How long serve waits, at most, before it tries again to start a process that the system refused (its limit on
#: tasks): sooner if a connection ends meanwhile and gives its threads back.
SPAWN_RETRY = 0.5
#: At the connection limit, serve goes on accepting while a connection has been idle at least this long, and a
#: new client is let in by closing the connection idle longest; while none is, it looks again this often (or as
#: soon as a connection ends).
MAKE_WAY_IDLE = 1.0


def loop(
    handle: ListenSocket,
    flags: str,
    room: Pid | None,
    max_connections: int = 1000,
    live: dict[Pid, Socket] | None = None,
) -> None:
    """loop(Listen) -> Pid = spawn(connection, [Listen, self()]), receive {Pid, ok} -> loop(Listen) end.

    As a loop (Python has no tail calls), with two bounds the manual's has not: at most ``max_connections`` at once
    (each costs two threads; at the limit a new client is let in if a connection idles, which makes way for it,
    else the next acceptor waits for one to end), and a process that the system refuses to start is tried again,
    not the end of the server. ``live``, if given, is where it keeps each connection's process and socket."""
    me = process.self()
    live = {} if live is None else live  # each connection's process, and its socket
    while True:
        _ended(live, timeout=0)
        if len(live) >= max_connections and _longest_idle(live) < MAKE_WAY_IDLE:
            _ended(live, timeout=MAKE_WAY_IDLE)
            continue
        try:
            pid = process.spawn(connection, handle, me, flags, room)
        except RuntimeError as exc:  # the system's limit on tasks: wait for a connection to end, or a moment
            log(f"refused: no thread for one more connection ({exc}); {len(live)} open")
            _ended(live, timeout=SPAWN_RETRY)
            continue
        match process.receive(process.sent_by(pid)):
            case (_, ("ok", sock)):
                live[pid] = sock  # before the next wait, where an exit signal may come
                _ended(live, timeout=0)  # those that ended while the acceptor waited left room
                if len(live) > max_connections and _longest_idle(live) >= MAKE_WAY_IDLE:
                    _make_way(live)  # (one that spoke again meanwhile is busy: the new one makes it one over)
            case (_, ("failed", Closed())):
                return  # the listen socket was closed (or stop()): no more connections
            case (_, ("failed", error)):
                log(f"refused: {error}")  # the system refused a connection (out of descriptors...): the next one


def _longest_idle(live: dict[Pid, Socket]) -> float:
    """How long the connection idle longest has been (a connection without ``-idle_timeout`` counts as busy)."""
    return max((sock.idle or 0.0 for sock in live.values()), default=0.0)


def _make_way(live: dict[Pid, Socket]) -> None:
    """At the limit, as a new client comes in: end the process of the connection idle longest, as the silent stage
    drops its oldest."""
    pid, sock = max(live.items(), key=lambda item: item[1].idle or 0.0)
    process.exit(pid, f"idle {sock.idle or 0.0:.1f} s, it made way for a new client")
    del live[pid]  # its ("ended", pid) comes later, and is taken then


def _ended(live: dict[Pid, Socket], timeout: float | None) -> None:
    """Take the ``("ended", pid)`` messages of connections that have ended, forgetting them: those waiting, or,
    with a timeout, the first one within it (None: however long it takes)."""
    while True:
        try:
            _, pid = process.receive(lambda m: type(m) is tuple and m[:1] == ("ended",), timeout=timeout)
        except TimeoutError:
            return
        live.pop(pid, None)
        timeout = 0


def connection(handle: ListenSocket, father: Pid, flags: str, room: Pid | None) -> None:
    try:
        sock = accept(handle, flags)
    except SSLSocketError as exc:
        father.send((process.self(), ("failed", exc)))
        return
    father.send((process.self(), ("ok", sock)))
    who = "{1}:{0}".format(*peername(sock))
    log(f"connected {who} ({sock.protocol}, {sock.cipher})")
    try:
        converse(sock, who, room)
    except Exit as signal:  # the loop made way for a new client at the limit
        log(f"closed {who}: {signal.reason}")
        sock.close()
    finally:
        if room is not None:
            room.send(("leave", process.self()))
        father.send(("ended", process.self()))


def converse(sock: Socket, who: str, room: Pid | None) -> None:
    """Echo every packet (or, in a chat, say it to the room, and pass on what the others say) until the client
    leaves."""
    if room is not None:
        room.send(("join", process.self()))
    while True:
        match process.receive():
            case (s, ("fromsocket", data)) if s is sock:
                if room is None:
                    sock.deliver(data)
                else:
                    room.send(("say", process.self(), data))
            case ("broadcast", data):
                sock.deliver(data)
            case (s, ("socket_closed", reason)) if s is sock:
                log(f"closed {who}: {reason}")
                return


def chat_room() -> None:
    """One process holds the members; each packet said goes to every other member's connection process."""
    members: set[Pid] = set()
    while True:
        match process.receive():
            case ("join", pid):
                members.add(pid)
            case ("leave", pid):
                members.discard(pid)
            case ("say", speaker, data):
                for member in members - {speaker}:
                    member.send(("broadcast", data))


# ---- connect -------------------------------------------------------------------------------------------------


def run_connect(args: argparse.Namespace) -> int:
    if not usable_flags("connect", args.flags, server=False):
        return 2
    return connect(args)
