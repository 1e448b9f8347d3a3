#!/usr/bin/env python3
"""sslsocket against a baseline, side by side, in one process and one run.

The baseline is Python's own ``ssl`` module used directly: a blocking socket and a thread per side, and
hand-written 4-byte length framing, the code one would write without sslsocket. Both use TLS 1.3 and the same
ECDSA P-256 certificate, on 127.0.0.1. Each figure alternates the two implementations for several repetitions and
reports medians and the ratio sslsocket / baseline: the machines are shared and noisy, so only ratios measured
side by side mean anything.

    python benchmarks/run.py                # the full run
    python benchmarks/run.py --quick        # a short one (also what the test suite runs)
    python benchmarks/run.py --plot out.png # and draw throughput against packet size (needs matplotlib)
    python benchmarks/run.py --counts       # what each operation costs, counted (benchmarks/counts.py)

Large packets move with glibc's mood: it gives memory back and takes it again, one page fault per page. To see
them without that (see the README's performance section):

    MALLOC_TRIM_THRESHOLD_=268435456 MALLOC_MMAP_THRESHOLD_=33554432 python benchmarks/run.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import OpenSSL.SSL
from meter import Meter

import sslsocket
from sslsocket.certs import make_cert

LOCAL = "127.0.0.1"
#: The many-connections figure never opens more than this, whatever is asked: the machine allows about 32,000
#: tasks in all, shared with everything else on it, and each connection is a thread here.
MAX_CONNECTIONS = 5000

warnings.simplefilter("ignore", sslsocket.InsecureClientWarning)  # the benchmark's clients check nothing


@dataclass
class Figure:
    name: str
    unit: str
    target: str
    baseline: list[float] = field(default_factory=list)
    sslsocket: list[float] = field(default_factory=list)
    erlang: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.baseline or not self.sslsocket:
            return None
        return statistics.median(self.sslsocket) / statistics.median(self.baseline)


class Setup:
    """The certificate and the baseline's contexts, made once."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sslsocket-bench-")
        self.cert = os.path.join(self.dir, "server.pem")
        make_cert("localhost").write(self.cert)
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_ctx.load_cert_chain(self.cert)
        self.server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client_ctx.check_hostname = False
        self.client_ctx.verify_mode = ssl.CERT_NONE
        self.client_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.flags = f"-cert {self.cert}"
        self.client_flags = "-reuse_sessions false"  # full handshakes, as the baseline's
        self.erlang_cert = os.path.join(self.dir, "erlang_cert.pem")  # OTP wants the key in a file of its own
        self.erlang_key = os.path.join(self.dir, "erlang_key.pem")
        with open(self.cert, "rb") as both:
            pem = both.read()
        cert_end = pem.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")
        with open(self.erlang_cert, "wb") as cert, open(self.erlang_key, "wb") as key:
            cert.write(pem[:cert_end])
            key.write(pem[cert_end:])


# ---- the baseline: Python's ssl, a blocking socket and a thread per side, 4-byte framing by hand -------------


def recv_exactly(sock: ssl.SSLSocket, size: int) -> bytearray:
    """``size`` bytes, read straight into one buffer: ``recv(n)`` would allocate ``n`` bytes for each record it
    returns, which made the baseline's 1 MiB packets three times slower, and their speed depend on what the
    allocator had seen before (0.5 GB/s in the table, 1.4 GB/s in the sweep that followed larger packets)."""
    data = bytearray(size)
    with memoryview(data) as view:
        got = 0
        while got < size:
            n = sock.recv_into(view[got:])
            if not n:
                raise EOFError("the peer closed")
            got += n
    return data


def recv_packet(sock: ssl.SSLSocket) -> bytearray:
    (length,) = struct.unpack(">I", recv_exactly(sock, 4))
    return recv_exactly(sock, length)


class Chunks:
    """Packets sliced out of large reads (``recv(65536)``): for small packets, what a careful author writes, and
    faster than a ``recv_into`` per header and per packet. (Each read copies what is left of the last one, so it is
    for packets much smaller than a read; large ones go through ``recv_packet``.)"""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock
        self._buffer = b""
        self._at = 0

    def packet(self) -> bytes:
        while True:
            buffer, at = self._buffer, self._at
            if len(buffer) - at >= 4:
                (length,) = struct.unpack_from(">I", buffer, at)
                end = at + 4 + length
                if len(buffer) >= end:
                    self._at = end
                    return buffer[at + 4 : end]
            data = self._sock.recv(65536)
            if not data:
                raise EOFError("the peer closed")
            self._buffer, self._at = buffer[at:] + data, 0


def reader(tls: ssl.SSLSocket, size: int) -> Callable[[], bytes | bytearray]:
    """The strongest baseline reader for packets of ``size`` bytes: slices of large reads for small packets, one
    ``recv_into`` per packet for large ones."""
    return Chunks(tls).packet if size <= CHUNKED_UP_TO else lambda: recv_packet(tls)


#: The largest packet the baseline reads by slicing large reads: measured side by side, slicing was faster for 64 B
#: to 16 KiB packets (by 6% for ping-pong, 24% for 100 B, 23% for 16 KiB), and copying what is left of each read
#: makes it quadratic for packets larger than a read.
CHUNKED_UP_TO = 16384


def baseline_pair(setup: Setup, serve: Callable[[ssl.SSLSocket], None]) -> tuple[ssl.SSLSocket, threading.Thread]:
    listener = socket.create_server((LOCAL, 0))

    def server() -> None:
        conn, _ = listener.accept()
        listener.close()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with setup.server_ctx.wrap_socket(conn, server_side=True) as tls:
            serve(tls)

    thread = threading.Thread(target=server)
    thread.start()
    tcp = socket.create_connection(listener.getsockname())
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return setup.client_ctx.wrap_socket(tcp), thread


def baseline_pingpong(setup: Setup, count: int, size: int) -> float:
    def echo(tls: ssl.SSLSocket) -> None:
        packet_of = reader(tls, size)
        for _ in range(count):
            packet = packet_of()
            tls.sendall(struct.pack(">I", len(packet)) + packet)

    tls, thread = baseline_pair(setup, echo)
    message = struct.pack(">I", size) + b"p" * size
    packet_of = reader(tls, size)
    meter = Meter()
    for _ in range(count):
        tls.sendall(message)
        packet_of()
    elapsed = meter.stop(count)
    thread.join()
    tls.close()
    return count / elapsed


def baseline_stream(setup: Setup, count: int, size: int) -> float:
    done = threading.Event()

    def sink(tls: ssl.SSLSocket) -> None:
        packet_of = reader(tls, size)
        for _ in range(count):
            packet_of()
        done.set()

    tls, thread = baseline_pair(setup, sink)
    message = struct.pack(">I", size) + b"s" * size
    meter = Meter()
    for _ in range(count):
        tls.sendall(message)
    done.wait()
    elapsed = meter.stop(count)
    thread.join()
    tls.close()
    return count / elapsed


def baseline_handshakes(setup: Setup, count: int) -> float:
    listener = socket.create_server((LOCAL, 0))

    def server() -> None:
        for _ in range(count):
            conn, _ = listener.accept()
            with setup.server_ctx.wrap_socket(conn, server_side=True) as tls:
                packet = recv_packet(tls)
                tls.sendall(struct.pack(">I", len(packet)) + packet)

    thread = threading.Thread(target=server)
    thread.start()
    meter = Meter()
    for _ in range(count):
        with setup.client_ctx.wrap_socket(socket.create_connection(listener.getsockname())) as tls:
            tls.sendall(struct.pack(">I", 5) + b"hello")
            recv_packet(tls)
    elapsed = meter.stop(count)
    thread.join()
    listener.close()
    return count / elapsed


# ---- sslsocket: client and server both sslsocket, the server a spawned process ---------------------------------


def sslsocket_pair(
    setup: Setup, serve: Callable[[sslsocket.Socket], None], owner: Callable[[Any], object] | None = None
) -> sslsocket.Socket:
    listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("binary_packet", 4))

    def server() -> None:
        sock = sslsocket.accept(listen, setup.flags, owner=owner)
        sslsocket.close(listen)
        serve(sock)

    sslsocket.spawn(server)
    return sslsocket.client("STREAM", "AF_INET", (LOCAL, listen.port), ("binary_packet", 4), "")


def round_trips(sock: sslsocket.Socket, count: int, size: int) -> float:
    """Round trips per second: a packet of ``size`` bytes, wait for its echo, ``count`` times; then close."""
    me = sslsocket.self()
    message = b"p" * size
    meter = Meter()
    for _ in range(count):
        sock.send((me, ("deliver", message)))
        sslsocket.receive()
    elapsed = meter.stop(count)
    sock.close()
    return count / elapsed


def sslsocket_pingpong(setup: Setup, count: int, size: int) -> float:
    def echo(sock: sslsocket.Socket) -> None:
        me = sslsocket.self()
        for _ in range(count):
            _, (_, packet) = sslsocket.receive()
            sock.send((me, ("deliver", packet)))
        sslsocket.receive()  # the client's close

    return round_trips(sslsocket_pair(setup, echo), count, size)


def sslsocket_pingpong_callback(setup: Setup, count: int, size: int) -> float:
    """Ping-pong against an echo server whose owner is a callback: it answers in the mediator's own thread, so a
    round trip has no hand-off to a server process (four hand-offs in all instead of six)."""

    def echo(msg: tuple[sslsocket.Socket, Any]) -> None:
        sock, (kind, data) = msg
        if kind == "fromsocket":
            sock.deliver(data)

    return round_trips(sslsocket_pair(setup, lambda sock: None, owner=echo), count, size)


def sslsocket_stream(setup: Setup, count: int, size: int) -> float:
    me = sslsocket.self()

    def sink(sock: sslsocket.Socket) -> None:
        for _ in range(count):
            sslsocket.receive()
        me.send("all arrived")
        sslsocket.receive()

    sock = sslsocket_pair(setup, sink)
    message = b"s" * size
    meter = Meter()
    for _ in range(count):
        sock.send((me, ("deliver", message)))
    sslsocket.receive(lambda m: m == "all arrived")
    elapsed = meter.stop(count)
    sock.close()
    return count / elapsed


def sslsocket_handshakes(
    setup: Setup, count: int, client_flags: str | None = None, server_flags: str | None = None
) -> float:
    """Connect, echo, close, ``count`` times: full handshakes unless ``client_flags`` let the client resume."""
    flags = setup.client_flags if client_flags is None else client_flags
    listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("binary_packet", 4))

    def server() -> None:
        for _ in range(count):
            sock = sslsocket.accept(listen, server_flags or setup.flags)
            _, (_, packet) = sslsocket.receive(lambda m, s=sock: m[0] is s)
            sock.deliver(packet)
            sslsocket.receive(lambda m, s=sock: m[0] is s)  # its close
        sslsocket.close(listen)

    sslsocket.spawn(server)
    me = sslsocket.self()
    meter = Meter()
    for _ in range(count):
        sock = sslsocket.client("STREAM", "AF_INET", (LOCAL, listen.port), ("binary_packet", 4), flags)
        sock.send((me, ("deliver", b"hello")))
        sslsocket.receive(lambda m, s=sock: m[0] is s)
        sock.close()
    elapsed = meter.stop(count)
    return count / elapsed


def alternated(reps: int, *measures: Callable[[], float]) -> list[list[float]]:
    """Each measure ``reps`` times, taking turns, the order reversed every other round so that none always runs
    first on a warm or a cold machine; the results of each, in the order given."""
    results: list[list[float]] = [[] for _ in measures]
    turns = list(zip(results, measures, strict=True))
    for rep in range(reps):
        for into, measure in turns if rep % 2 == 0 else reversed(turns):
            into.append(measure())
    return results


# ---- handshakes with one key exchange on both sides -----------------------------------------------------------

#: An OpenSSL configuration that limits every TLS context, Python's ``ssl`` and pyOpenSSL's alike, to X25519.
X25519_CONF = """openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_section
[ssl_section]
system_default = system_default_section
[system_default_section]
Groups = X25519
"""

HANDSHAKES_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import run
setup = run.Setup()
# sslsocket sets its key exchange groups itself (X25519MLKEM768 first), over OPENSSL_CONF: -groups says X25519.
setup.flags += " -groups X25519"
setup.client_flags += " -groups X25519"
reps, count = int(sys.argv[2]), int(sys.argv[3])
results = run.alternated(
    reps, lambda: run.baseline_handshakes(setup, count), lambda: run.sslsocket_handshakes(setup, count)
)
run.sslsocket.stop()
print(json.dumps(results))
"""


def x25519_environment(setup: Setup) -> dict[str, str]:
    """The environment of a process whose TLS contexts all use X25519 alone: the key exchange of an OpenSSL
    older than 3.5 (Python's ``ssl`` may link one), where a newer one offers X25519MLKEM768 first."""
    path = os.path.join(setup.dir, "x25519.cnf")
    with open(path, "w") as conf:
        conf.write(X25519_CONF)
    return {**os.environ, "OPENSSL_CONF": path}


def x25519_handshakes(setup: Setup, reps: int, count: int) -> tuple[list[float], list[float]]:
    """The handshakes figure, both columns, in a child process where both sides use X25519 (a configuration is
    process-wide, so it cannot be switched within this one)."""
    child = subprocess.run(
        [sys.executable, "-c", HANDSHAKES_CHILD, str(Path(__file__).resolve().parent), str(reps), str(count)],
        env=x25519_environment(setup),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    base, ours = json.loads(child.stdout.splitlines()[-1])
    return base, ours


# ---- Erlang/OTP, the optional third column: ssl with {packet, 4}, server and client in one node ----------------

ESCRIPT = shutil.which("escript")


def erlang_rate(setup: Setup, kind: str, count: int, size: int) -> float:
    script = Path(__file__).with_name("erlang_bench.escript")
    result = subprocess.run(
        [ESCRIPT or "escript", str(script), kind, str(count), str(size), setup.erlang_cert, setup.erlang_key],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return float(result.stdout.split()[-1])


# ---- many connections, and several processes: separate processes, never threads, on the client side ------------

MANY_CLIENT = r"""
import asyncio, ssl, struct, sys
port, count, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
async def one(opening, echoed, all_echoed):
    async with opening:  # at most 200 handshakes under way at once, to stay within the listen backlog
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    writer.write(struct.pack(">I", 4) + b"ping")
    await reader.readexactly(8)
    echoed.append(1)
    if len(echoed) == count:
        all_echoed.set()
    await all_echoed.wait()  # every connection stays open until all have been served
    await asyncio.sleep(hold)
    writer.close()
async def main():
    opening, echoed, all_echoed = asyncio.Semaphore(200), [], asyncio.Event()
    await asyncio.gather(*(one(opening, echoed, all_echoed) for _ in range(count)))
    print("all echoed", len(echoed), flush=True)
asyncio.run(main())
"""


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def many_connections(setup: Setup, count: int) -> tuple[int, float]:
    """``count`` connections held open at once by one serving process (the manual's my_accept + run); returns
    how many were served and the resident memory per connection in KiB."""
    count = min(count, MAX_CONNECTIONS)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 3 * count + 100)), hard))
    listen = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), ("binary_packet", 4), backlog=1024)
    served: list[int] = []
    before = rss_kib()
    peak: list[int] = []

    def run(sockets: set[sslsocket.Socket]) -> None:
        while True:
            match sslsocket.receive():
                case (sock, ("fromsocket", data)):
                    sockets.add(sock)
                    sock.deliver(data)
                    served.append(1)
                    if len(served) == count:
                        peak.append(rss_kib())
                case (sock, ("socket_closed", _)):
                    sockets.discard(sock)
                    if not sockets and len(served) == count:
                        return
                case "stop":
                    return

    user = sslsocket.spawn(run, set())

    def my_accept() -> None:
        for _ in range(count):
            sock = sslsocket.accept(listen, setup.flags)
            sslsocket.controlling_process(sock, user)

    sslsocket.spawn(my_accept)
    client = subprocess.Popen(
        [sys.executable, "-c", MANY_CLIENT, str(listen.port), str(count), "1.0"], stdout=subprocess.PIPE, text=True
    )
    try:
        client.wait(600)
    finally:
        if client.poll() is None:
            client.kill()
        if client.stdout:
            client.stdout.close()
    deadline = time.monotonic() + 30
    while user.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    if user.alive:
        user.send("stop")
    sslsocket.close(listen)
    per_connection = (peak[0] - before) / count if peak else float("nan")
    return len(served), per_connection


WORKER = r"""
import sys, warnings
sys.path.insert(0, sys.argv[3])
import sslsocket
port, flags = int(sys.argv[1]), sys.argv[2]
listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", port), ("binary_packet", 4), reuse_port=True, backlog=512)
def connection(listen, father):
    sock = sslsocket.accept(listen, flags)
    father.send((sslsocket.self(), "ok"))
    _, (_, data) = sslsocket.receive(lambda m: m[0] is sock)
    sock.deliver(data)
    sslsocket.receive(lambda m: m[0] is sock)
print("ready", flush=True)
while True:
    pid = sslsocket.spawn(connection, listen, sslsocket.self())
    sslsocket.receive(lambda m: m[0] is pid)
"""

HANDSHAKE_CLIENTS = r"""
import socket, ssl, struct, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
for _ in range(count):
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as tls:
        tls.sendall(struct.pack(">I", 5) + b"hello")
        got = b""
        while len(got) < 9:
            got += tls.recv(9 - len(got))
"""


def busy_jiffies() -> tuple[int, int]:
    """The machine's busy and total CPU time so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        times = [int(t) for t in stat.readline().split()[1:]]
    return sum(times) - times[3] - times[4], sum(times)  # less idle and iowait


def processes_handshakes(setup: Setup, workers: int, count: int, clients: int = 4) -> tuple[float, float]:
    """Handshakes per second served by ``workers`` processes sharing one port with ``reuse_port``, against
    ``clients`` client processes on the same machine; and the share of the machine's CPUs busy meanwhile."""
    probe = socket.socket()
    probe.bind((LOCAL, 0))
    port = probe.getsockname()[1]
    probe.close()
    root = str(Path(__file__).resolve().parent.parent)
    servers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(port), setup.flags, root], stdout=subprocess.PIPE, text=True
        )
        for _ in range(workers)
    ]
    try:
        for server in servers:
            assert server.stdout is not None
            server.stdout.readline()
        start, busy_before = time.perf_counter(), busy_jiffies()
        runs = [
            subprocess.Popen([sys.executable, "-c", HANDSHAKE_CLIENTS, str(port), str(count // clients)])
            for _ in range(clients)
        ]
        for run in runs:
            run.wait(300)
        elapsed, busy_after = time.perf_counter() - start, busy_jiffies()
    finally:
        for server in servers:
            server.kill()
            server.wait()
            if server.stdout:
                server.stdout.close()
    busy = (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1])
    return (count // clients) * clients / elapsed, busy


# ---- what one thread hand-off costs on this machine: the unit of ping-pong's price ------------------------------


def handoff_us(count: int) -> float:
    """Microseconds for one thread to wake another that sleeps, and for that one to run: two threads bouncing a
    turn between them through two locks. A round trip through sslsocket is six of these, through the baseline two."""
    mine, theirs = threading.Lock(), threading.Lock()
    mine.acquire()
    theirs.acquire()

    def other() -> None:
        for _ in range(count):
            theirs.acquire()
            mine.release()

    thread = threading.Thread(target=other)
    thread.start()
    start = time.perf_counter()
    for _ in range(count):
        theirs.release()
        mine.acquire()
    elapsed = time.perf_counter() - start
    thread.join()
    return elapsed / count / 2 * 1e6


# ---- the run ----------------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    setup = Setup()
    quick = args.quick
    reps = 1 if quick else args.reps
    n = lambda full, short: short if quick else full  # noqa: E731
    erlang = ESCRIPT is not None and not args.no_erlang

    def otp(kind: str, count: int, size: int, scale: float = 1.0) -> Callable[[], float] | None:
        return (lambda: erlang_rate(setup, kind, count, size) * scale) if erlang else None

    pairs: list[tuple[Figure, Callable[[], float], Callable[[], float], Callable[[], float] | None]] = [
        (
            Figure("ping-pong", "round trips/s", ">= 0.8"),
            lambda: baseline_pingpong(setup, n(5000, 300), 64),
            lambda: sslsocket_pingpong(setup, n(5000, 300), 64),
            otp("pingpong", n(5000, 300), 64),
        ),
        (
            Figure("ping-pong, callback", "round trips/s", ">= 1.0", note="the echo server's owner is a callback"),
            lambda: baseline_pingpong(setup, n(5000, 300), 64),
            lambda: sslsocket_pingpong_callback(setup, n(5000, 300), 64),
            None,
        ),
        (
            Figure("stream small", "packets/s", ">= 1.5"),
            lambda: baseline_stream(setup, n(100000, 3000), 100),
            lambda: sslsocket_stream(setup, n(100000, 3000), 100),
            otp("stream", n(100000, 3000), 100),
        ),
        (
            Figure("stream 16 KiB", "packets/s", ">= 1.0"),
            lambda: baseline_stream(setup, n(20000, 300), 16384),
            lambda: sslsocket_stream(setup, n(20000, 300), 16384),
            otp("stream", n(20000, 300), 16384),
        ),
        (
            Figure("stream 1 MiB", "MB/s", ">= 0.9"),
            lambda: baseline_stream(setup, n(300, 10), 2**20) * 2**20 / 1e6,
            lambda: sslsocket_stream(setup, n(300, 10), 2**20) * 2**20 / 1e6,
            otp("stream", n(300, 10), 2**20, 2**20 / 1e6),
        ),
        (
            Figure("handshakes", "per s", "-"),
            lambda: baseline_handshakes(setup, n(300, 20)),
            lambda: sslsocket_handshakes(setup, n(300, 20)),
            None,
        ),
    ]
    figures = []
    for figure, base, ours, theirs in pairs:
        if theirs is None:
            figure.baseline, figure.sslsocket = alternated(reps, base, ours)
        else:
            figure.baseline, figure.sslsocket, figure.erlang = alternated(reps, base, ours, theirs)
        figures.append(figure)
        report_line(figure)
    same = Figure(
        "handshakes, X25519",
        "per s",
        ">= 0.8",
        note="both sides on X25519 (OPENSSL_CONF, and -groups X25519 for sslsocket), the key exchange of the"
        " baseline's OpenSSL here; the line above"
        " keeps sslsocket's default X25519MLKEM768",
    )
    same.baseline, same.sslsocket = x25519_handshakes(setup, reps, n(300, 20))
    figures.append(same)
    report_line(same)
    resumed = Figure(
        "handshakes, resumed",
        "per s",
        ">= 2.0",
        note="baseline column: sslsocket's full handshakes (-reuse_sessions false); sslsocket column: resumed",
    )
    resumed.baseline, resumed.sslsocket = alternated(
        reps, lambda: sslsocket_handshakes(setup, n(300, 20)), lambda: sslsocket_handshakes(setup, n(300, 20), "")
    )
    figures.append(resumed)
    report_line(resumed)
    count = n(args.connections, 100)
    served, per_connection = many_connections(setup, count)
    many = Figure(
        "many connections",
        "KiB resident / connection",
        "<= 64",
        sslsocket=[per_connection],
        note=f"{served} of {min(count, MAX_CONNECTIONS)} served",
    )
    figures.append(many)
    report_line(many)
    handshakes = n(600, 40)
    several = Figure("several processes", "handshakes/s, 2 workers vs 1", ">= 0.9 x the most")
    busy: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(reps):
        for workers, results in ((1, several.baseline), (2, several.sslsocket)):
            rate, share = processes_handshakes(setup, workers, handshakes)
            results.append(rate)
            busy[workers].append(share)
    one, two = statistics.median(busy[1]), statistics.median(busy[2])
    several.note = (
        f"baseline column: 1 sslsocket worker, sslsocket column: 2; CPUs busy {one:.0%} and {two:.0%}"
        f" (clients included): {1 / one:.2f} is the most 2 could gain here"
    )
    figures.append(several)
    report_line(several)
    handoff = Figure("thread hand-off", "us, one thread waking another", "-")
    handoff.sslsocket = [handoff_us(n(20000, 2000)) for _ in range(reps)]
    handoff.note = (
        "a ping-pong round trip costs sslsocket 4 of these (answers written in the owner's thread), the baseline 2"
    )
    figures.append(handoff)
    report_line(handoff)
    sweep: dict[str, Any] = {}
    if args.plot:
        sizes = [64, 1024, 16384, 262144] if quick else [64, 256, 1024, 4096, 16384, 65536, 262144, 1048576]
        for size in sizes:
            count = max(10, min(20000, (n(64, 4) * 2**20) // size))
            base_runs, our_runs = alternated(  # and the median: one run of a point says little here
                min(reps, 3),
                lambda c=count, s=size: baseline_stream(setup, c, s) * s / 1e6,
                lambda c=count, s=size: sslsocket_stream(setup, c, s) * s / 1e6,
            )
            sweep[str(size)] = {"baseline": statistics.median(base_runs), "sslsocket": statistics.median(our_runs)}
    sslsocket.stop()
    machine = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "openssl (ssl module)": ssl.OPENSSL_VERSION,
        "openssl (pyOpenSSL)": OpenSSL.SSL.OpenSSL_version(OpenSSL.SSL.OPENSSL_VERSION).decode(),
        "quick": quick,
        "repetitions": reps,
        "switch interval (s)": sys.getswitchinterval(),
    }
    return figures, {"machine": machine, "sweep_mb_per_s": sweep}


def report_line(figure: Figure) -> None:
    def median(values: list[float]) -> str:
        return f"{statistics.median(values):,.0f}" if values else "-"

    ratio = figure.ratio
    versus = ""
    if figure.erlang and figure.sslsocket:
        versus = f"{statistics.median(figure.sslsocket) / statistics.median(figure.erlang):.2f}"
    print(
        f"{figure.name:<20} {figure.unit:<30} {median(figure.baseline):>12} {median(figure.sslsocket):>12}"
        f" {'' if ratio is None else f'{ratio:.2f}':>6}  {figure.target:<7} {median(figure.erlang):>10} {versus:>6}"
        f"  {figure.note}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run, one repetition")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each figure (default 5)")
    parser.add_argument("--connections", type=int, default=MAX_CONNECTIONS, help="for the many-connections figure")
    parser.add_argument("--json", default=str(Path(__file__).with_name("results.json")), help="where to write")
    parser.add_argument("--plot", help="draw throughput against packet size to this PNG (needs matplotlib)")
    parser.add_argument("--no-erlang", action="store_true", help="leave out the Erlang/OTP column")
    parser.add_argument(
        "--counts",
        action="store_true",
        help="instead: context switches, CPU and Python calls per operation, beside the baseline and asyncio"
        " (benchmarks/counts.py)",
    )
    parser.add_argument(
        "--switch-interval", type=float, help="sys.setswitchinterval for the run, both columns (default 0.005 s)"
    )
    args = parser.parse_args()
    if args.counts:
        import counts

        return counts.main(["--reps", str(3 if args.reps == 5 else args.reps)])
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    print(
        f"{'figure':<20} {'unit':<30} {'baseline':>12} {'sslsocket':>12} {'ratio':>6}  {'target':<7}"
        f" {'erlang':>10} {'vs otp':>6}"
    )
    figures, extra = measure(args)
    result = {"figures": [asdict(f) | {"ratio": f.ratio} for f in figures], **extra}
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"results written to {args.json}")
    if args.plot:
        plot(extra["sweep_mb_per_s"], args.plot)
        print(f"plot written to {args.plot}")
    return 0


def plot(sweep: dict[str, dict[str, float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [int(s) for s in sweep]
    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("baseline", "sslsocket"):
        ax.plot(sizes, [sweep[str(s)][name] for s in sizes], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("packet size (bytes)")
    ax.set_ylabel("MB/s, one way")
    ax.set_title("Streaming throughput: sslsocket and Python's ssl with hand-written framing")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
