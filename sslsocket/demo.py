"""``python -m sslsocket demo``: the manual's scenarios, played in one process with a throwaway certificate, and
every message printed in the manual's notation."""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import process
from .certs import make_cert
from .client import client
from .errors import Exit
from .flags import InsecureClientWarning
from .overview import format_overview, overview
from .process import Pid
from .registry import ListenSocket, stop
from .server import accept, close, controlling_process, listen, peername
from .sockets import Socket

_ATOMS = {
    "fromsocket",
    "socket_closed",
    "normal",
    "deliver",
    "close",
    "ok",
    "abort",
    "accept_aborted",
    "user_got",
    "packet",
    "binary_packet",
    "raw",
    "asn1",
    "onebyte",
    "twobytes",
    "fourbytes",
    "new_connection",
    "old_socket",
}


class Names:
    """Gives each pid and socket a short name for the trace, as an Erlang shell would show ``<0.84.0>``."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}

    def name(self, obj: object, label: str) -> None:
        self.names[id(obj)] = label

    def term(self, value: Any) -> str:
        """``value`` in Erlang notation: tuples as ``{...}``, strings as ``"..."``, binaries as ``<<...>>``."""
        if id(value) in self.names:
            return self.names[id(value)]
        if isinstance(value, tuple):
            return "{" + ", ".join(self.term(item) for item in value) + "}"
        if isinstance(value, str):
            if value in _ATOMS:
                return value
            if value.isprintable():
                return '"' + value.replace('"', '\\"') + '"'
            return "[" + ",".join(str(ord(c)) for c in value) + "]"
        if isinstance(value, bytes):
            if value.isascii() and value.decode().isprintable():
                return f'<<"{value.decode()}">>'
            return "<<" + ",".join(map(str, value)) + ">>"
        if isinstance(value, Pid):
            return f"<0.{value.id}.0>"
        if isinstance(value, Socket):
            return f"<socket {value.id}>"
        return repr(value)


def run(out: Callable[[str], None] = print) -> None:
    names = Names()
    me = process.self()
    names.name(me, "Shell")

    def show(text: str) -> None:
        out(text)

    def received(msg: Any) -> Any:
        show(f"    received {names.term(msg)}")
        return msg

    with tempfile.TemporaryDirectory() as tmp:
        cert = Path(tmp) / "ssl_server.pem"
        make_cert("localhost").write(str(cert))
        show(f"A throwaway certificate: {cert.name} (cert and key in one file, as the manual's test.pem)")
        flags = f"-cert {cert}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureClientWarning)  # the demo's client checks nothing (-verify 0)
            _spawn_per_connection(names, show, received, flags)
            _modes(names, show, received, flags)
            _controlling_process(names, show, received, flags)
            _aborted_accept(names, show, flags)
    stop()
    show("\nDone: every socket closed, the socket server stopped.")


def _listen(names: Names, show: Callable[[str], None], mode: Any) -> ListenSocket:
    handle = listen("STREAM", "AF_INET", ("127.0.0.1", 0), mode)
    show(f"ListenSocket = ssl_socket:listen('STREAM', 'AF_INET', {handle.port}, {names.term(mode)}).")
    show(f"    -> {{{handle.fd}, {handle.port}}}")
    return handle


def _spawn_per_connection(
    names: Names, show: Callable[[str], None], received: Callable[[Any], Any], flags: str
) -> None:
    show("\n== The manual's server: a process per connection (top/loop/connection) ==")
    me = process.self()
    handle = _listen(names, show, ("packet", 2))

    def connection(listen_socket: ListenSocket, father: Pid) -> None:
        sock = accept(listen_socket, flags)
        names.name(sock, "Socket")
        father.send((process.self(), "ok"))
        sock.send((process.self(), ("deliver", "Hello there")))
        _, body = process.receive(process.sent_by(sock), timeout=10)[1]
        sock.deliver(f"You said: {body}")
        process.receive(lambda m: m[0] is sock and m[1][0] == "socket_closed", timeout=10)

    pid = process.spawn(connection, handle, me)
    names.name(pid, "Pid")
    show("Pid = spawn(mymod, connection, [ListenSocket, self()]).")
    sock = client("STREAM", "AF_INET", ("localhost", handle.port), ("packet", 2), "")
    names.name(sock, "Client")
    show(f"Client = ssl_socket:client('STREAM', 'AF_INET', {{localhost, {handle.port}}}, {{packet, 2}}, \"\").")
    received(process.receive(lambda m: m[0] is pid, timeout=10))
    received(process.receive(process.sent_by(sock), timeout=10))
    show(f"ssl_socket:peername(Client) -> {names.term(tuple(peername(sock)))}")
    show('Client ! {self(), {deliver, "Good day"}}.')
    sock.send((me, ("deliver", "Good day")))
    received(process.receive(process.sent_by(sock), timeout=10))
    show("i().  % what the socket server holds now: every process, listen socket and connection")
    for line in format_overview(overview()):
        show("    " + line)
    show("Client ! {self(), close}.")
    sock.send((me, "close"))
    _wait_ended(pid)
    close(handle)


def _modes(names: Names, show: Callable[[str], None], received: Callable[[Any], Any], flags: str) -> None:
    show("\n== deliver and fromsocket in each mode (an echo server) ==")
    for mode, data in [
        ("raw", "bytes, as they come"),
        (("packet", 1), "onebyte"),
        (("packet", 4), "x" * 20),
        (("binary_packet", 2), b"\x00\x01binary"),
        ("asn1", bytes.fromhex("0c0548656c6c6f")),  # a BER UTF8String "Hello"
    ]:
        handle = _listen(names, show, mode)

        def echo(listen_socket: ListenSocket) -> None:
            sock = accept(listen_socket, flags)
            while True:
                _, body = process.receive(process.sent_by(sock), timeout=10)
                if body[0] != "fromsocket":
                    return
                sock.deliver(body[1])

        echoer = process.spawn(echo, handle)
        sock = client("STREAM", "AF_INET", ("localhost", handle.port), mode, "")
        names.name(sock, "Socket")
        show(f"Socket ! {names.term((process.self(), ('deliver', data)))}.".replace("Shell", "self()"))
        sock.deliver(data)
        received(process.receive(process.sent_by(sock), timeout=10))
        sock.close()
        _wait_ended(echoer)
        close(handle)


def _controlling_process(names: Names, show: Callable[[str], None], received: Callable[[Any], Any], flags: str) -> None:
    show("\n== controlling_process: one process handles several sockets (my_accept/run) ==")
    me = process.self()
    handle = _listen(names, show, ("packet", 2))

    def user(parent: Pid) -> None:
        sockets: list[Any] = []
        while len(sockets) < 2:
            sender, (_, data) = process.receive(timeout=10)
            fresh = sender not in sockets
            if fresh:
                sockets.append(sender)
            parent.send(("user_got", data, "new_connection" if fresh else "old_socket"))
            sender.deliver(f"handled {data}")
        process.receive(lambda m: m == "done", timeout=10)

    user_pid = process.spawn(user, me)
    names.name(user_pid, "User")

    def my_accept(listen_socket: ListenSocket, owner: Pid, count: int) -> None:
        for _ in range(count):
            sock = accept(listen_socket, flags)
            controlling_process(sock, owner)

    acceptor = process.spawn(my_accept, handle, user_pid, 2)
    clients = []
    for n in range(2):
        sock = client("STREAM", "AF_INET", ("localhost", handle.port), ("packet", 2), "")
        names.name(sock, f"Client{n + 1}")
        show(f'Client{n + 1} ! {{self(), {{deliver, "request {n + 1}"}}}}.')
        sock.deliver(f"request {n + 1}")
        clients.append(sock)
        received(process.receive(lambda m: m[0] == "user_got", timeout=10))
        received(process.receive(process.sent_by(sock), timeout=10))
    user_pid.send("done")
    _wait_ended(user_pid)  # the User process ended: its sockets closed, and the clients hear of it
    for sock in clients:
        received(process.receive(process.sent_by(sock), timeout=10))
    _wait_ended(acceptor)
    close(handle)


def _aborted_accept(names: Names, show: Callable[[str], None], flags: str) -> None:
    show("\n== An aborted accept: exit(Pid, abort), and the listen socket is still intact ==")
    me = process.self()
    handle = _listen(names, show, ("packet", 2))

    def connection(listen_socket: ListenSocket, father: Pid) -> None:
        try:
            accept(listen_socket, flags)
        except Exit as exc:
            father.send((process.self(), ("accept_aborted", exc.reason)))

    pid = process.spawn(connection, handle, me)
    names.name(pid, "Pid")
    time.sleep(0.1)
    show("exit(Pid, abort).")
    process.exit(pid, "abort")
    msg = process.receive(lambda m: m[0] is pid, timeout=10)
    show(f"    received {names.term(msg)}")
    sock_holder: list[Socket] = []

    def again(listen_socket: ListenSocket) -> None:
        sock_holder.append(accept(listen_socket, flags))
        process.receive(lambda m: m[0] is sock_holder[0] and m[1][0] == "socket_closed", timeout=10)

    pid = process.spawn(again, handle)
    sock = client("STREAM", "AF_INET", ("localhost", handle.port), ("packet", 2), "")
    show("A new accept on the same ListenSocket works: connected.")
    sock.close()
    _wait_ended(pid)
    close(handle)


def _wait_ended(pid: Pid, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while pid.alive and time.monotonic() < deadline:
        time.sleep(0.01)
