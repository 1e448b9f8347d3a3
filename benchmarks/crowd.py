#!/usr/bin/env python3
"""``sslsocket serve`` against crowds, honest and hostile, beside a thread-per-connection server on Python's ``ssl``.

Each scenario starts both servers in processes of their own (an echo of ``{packet, 2}`` packets, TLS 1.3, the same
certificate), drives them from this process on 127.0.0.1 and reports what the server did, as a person outside would
see it:

- ``burst N``: N honest clients connect at the same moment, each sends one packet and waits for its echo. How many
  were served, how many failed and how, and how long the median and the slowest one waited.
- ``idle N``: N clients handshake and then say nothing; then one good client: how long its echo took.
- ``slow N``: N clients send 65,000-byte packets and never read the echo: what the server's memory grew by once
  they are all held back.
- ``empty``: one client sends empty packets for some seconds (and reads the echoes): the server's CPU time per
  packet, and per byte beside the same bytes sent as one packet each 1,000.

    python benchmarks/crowd.py                     # every scenario, with the issue's numbers
    python benchmarks/crowd.py burst --clients 500 # one of them

The clients run a thread each, in this process (a burst's in ``BURST_PROCESSES`` processes): the client side shares
the machine's two cores with the server, as it did when the figures in the README were taken. Linux only (it reads
/proc).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import selectors
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sslsocket.certs import make_cert

LOCAL = "127.0.0.1"
#: A burst's clients come from this many processes, each with its share of them in threads; all are ready within
#: this many seconds, or the burst fails.
BURST_PROCESSES = 8
BURST_READY = 120.0

#: The baseline: what one would write without sslsocket, a thread per connection on Python's ``ssl``.
BASELINE = r"""
import socket, ssl, sys, threading
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1])
listener = socket.create_server(("127.0.0.1", 0), backlog=128)
print("listening on 127.0.0.1:%d," % listener.getsockname()[1], flush=True)

def exactly(tls, size):
    data = b""
    while len(data) < size:
        chunk = tls.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data

def serve(tcp):
    try:
        with context.wrap_socket(tcp, server_side=True) as tls:
            while True:
                header = exactly(tls, 2)
                tls.sendall(header + exactly(tls, int.from_bytes(header, "big")))
    except (OSError, EOFError):
        pass

while True:
    tcp, _ = listener.accept()
    threading.Thread(target=serve, args=(tcp,), daemon=True).start()
"""


@contextmanager
def server(kind: str, cert: str, *extra: str) -> Iterator[tuple[int, int]]:
    """A server in a process of its own: ``(its pid, its port)``."""
    if kind == "sslsocket":
        args = [sys.executable, "-m", "sslsocket", "serve", "0", "--host", LOCAL, "--flags", f"-cert {cert}", *extra]
    else:
        args = [sys.executable, "-c", BASELINE, cert]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.split(f"{LOCAL}:")[1].split(",")[0])
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # its log, never blocking it
        yield proc.pid, port
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(2, "big") + payload


def exactly(tls: ssl.SSLSocket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = tls.recv(size - len(data))
        if not chunk:
            raise EOFError("closed")
        data += chunk
    return data


def echo_once(port: int, payload: bytes, timeout: float = 60, context: ssl.SSLContext | None = None) -> None:
    context = context or client_context()
    with socket.create_connection((LOCAL, port), timeout=timeout) as tcp, context.wrap_socket(tcp) as tls:
        tls.sendall(frame(payload))
        header = exactly(tls, 2)
        if exactly(tls, int.from_bytes(header, "big")) != payload:
            raise ValueError("a wrong echo")


def in_threads(count: int, work: Callable[[int], Any], ready: Callable[[], object] = lambda: None) -> list[Any]:
    """``work(n)`` for each n in threads started together, once ``ready()`` returns; each result, or the exception
    it raised."""
    results: list[Any] = [None] * count
    start = threading.Barrier(count + 1, action=ready)

    def run(n: int) -> None:
        start.wait()
        try:
            results[n] = work(n)
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    start.wait()
    for thread in threads:
        thread.join()
    return results


def burst(kind: str, cert: str, clients: int, processes: int = BURST_PROCESSES) -> dict[str, Any]:
    """``clients`` at once, from ``processes`` client processes: 2,000 threads in one process take turns at one GIL,
    and a client's answer then waits seconds for its thread's turn, as no client of a real burst waits."""
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(processes + 1)
    outcomes = spawn.Queue()
    with server(kind, cert) as (_, port):
        parts = [
            spawn.Process(target=_burst_part, args=(port, range(n, clients, processes), barrier, outcomes), daemon=True)
            for n in range(processes)
        ]
        for part in parts:
            part.start()
        barrier.wait(BURST_READY)  # every client thread of every process is ready (a part that failed breaks it)
        results = [result for _ in parts for result in outcomes.get(timeout=BURST_READY + 120)]
        for part in parts:
            part.join()
    times = sorted(r for r in results if isinstance(r, float))
    failures = Counter(r for r in results if not isinstance(r, float))
    return {
        "served": len(times),
        "failed": dict(failures),
        "median s": round(statistics.median(times), 2) if times else None,
        "slowest s": round(times[-1], 2) if times else None,
    }


def _burst_part(port: int, numbers: range, barrier: Any, outcomes: Any) -> None:
    """One client process of a burst: a thread a client, all let go together with the other processes'. The clients
    share one context, made before: each loads the system's CA certificates, some 20 ms of CPU under the GIL, and
    2,000 of them made in the clients' threads spread the burst over half a minute."""
    context = client_context()

    def one(n: int) -> float:
        began = time.monotonic()
        echo_once(port, f"client {n}".encode(), context=context)
        return time.monotonic() - began

    results = in_threads(len(numbers), lambda i: one(numbers[i]), lambda: barrier.wait(BURST_READY))
    outcomes.put([r if isinstance(r, float) else type(r).__name__ for r in results])  # (an exception's name)


def idle(kind: str, cert: str, clients: int) -> dict[str, Any]:
    context = client_context()
    with server(kind, cert) as (_, port):
        held: list[ssl.SSLSocket] = []

        def connect(n: int) -> None:
            tcp = socket.create_connection((LOCAL, port), timeout=60)
            held.append(context.wrap_socket(tcp))

        failed = sum(1 for r in in_threads(clients, connect) if r is not None)
        time.sleep(2)  # the idle clients' silence, which the limit's choice of whom to close looks at
        began = time.monotonic()
        try:
            echo_once(port, b"a good client", timeout=30)
            good: Any = round(time.monotonic() - began, 2)
        except Exception as exc:
            good = f"{type(exc).__name__} after {time.monotonic() - began:.1f} s"
        for tls in held:
            tls.close()
    return {"idle connected": clients - failed, "good client s": good}


def slow(kind: str, cert: str, clients: int, settle: float = 10.0) -> dict[str, Any]:
    context = client_context()
    packet = frame(b"x" * 65000)
    stop = threading.Event()
    with server(kind, cert) as (pid, port):
        before = rss_mib(pid)

        def flood(n: int) -> int:
            sent = 0
            with socket.create_connection((LOCAL, port), timeout=60) as tcp, context.wrap_socket(tcp) as tls:
                tls.settimeout(1)
                while not stop.is_set():
                    try:
                        tls.sendall(packet)
                        sent += 1
                    except TimeoutError:
                        continue  # held back: the server reads no more
                    except OSError:
                        break
            return sent

        runner = threading.Thread(target=in_threads, args=(clients, flood), daemon=True)
        runner.start()
        peak = before
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            peak = max(peak, rss_mib(pid))
            time.sleep(0.2)
        stop.set()
        runner.join(30)
    return {"rss before MiB": round(before, 1), "added MiB": round(peak - before, 1)}


def empty(kind: str, cert: str, seconds: float = 5.0, batch: int = 1000) -> dict[str, Any]:
    """Empty packets for ``seconds``, ``batch`` per write; then the same bytes as one packet per batch."""
    return {
        "empty": echoed(kind, cert, frame(b"") * batch, seconds),
        "one packet": echoed(kind, cert, frame(b"\0" * (2 * batch - 2)), seconds),
    }


def echoed(kind: str, cert: str, unit: bytes, seconds: float) -> dict[str, Any]:
    """Send ``unit`` again and again for ``seconds`` while reading the echo; the server's CPU for it all. One thread
    does both, non-blocking: a TLS connection must not be read and written by two threads at once (a reader thread
    beside ``sendall`` made Python's own client fail now and then with ``SSLEOFError``)."""
    context = client_context()
    with server(kind, cert) as (pid, port), socket.create_connection((LOCAL, port)) as tcp:
        tls = context.wrap_socket(tcp)
        tls.setblocking(False)
        cpu_before = cpu_seconds(pid)
        sent = got = 0
        pending = memoryview(b"")
        deadline = time.monotonic() + seconds
        with selectors.DefaultSelector() as selector:
            selector.register(tls, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while got < sent or time.monotonic() < deadline:
                assert time.monotonic() < deadline + 30, "the echo did not come back"
                if not pending and time.monotonic() < deadline:
                    pending = memoryview(unit)
                writing = selectors.EVENT_WRITE if pending else 0
                selector.modify(tls, selectors.EVENT_READ | writing)
                for _, events in selector.select(1.0):
                    if events & selectors.EVENT_READ or tls.pending():
                        got += _take(tls)
                    if pending and events & selectors.EVENT_WRITE:
                        written = _give(tls, pending)
                        pending, sent = pending[written:], sent + written
        cpu = cpu_seconds(pid) - cpu_before
        tls.close()
    return {"MB": round(sent / 1e6, 1), "server CPU s": round(cpu, 2), "CPU µs per KB": round(cpu / sent * 1e9, 1)}


def _take(tls: ssl.SSLSocket) -> int:
    """Read what has come, without waiting: how many bytes."""
    taken = 0
    try:
        while chunk := tls.recv(65536):
            taken += len(chunk)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        pass
    return taken


def _give(tls: ssl.SSLSocket, data: memoryview) -> int:
    """Write what the connection takes now: how many bytes (a write that waits is retried with the same ones)."""
    try:
        return tls.send(data)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="*", default=["burst", "idle", "slow", "empty"])
    parser.add_argument("--clients", type=int, help="the crowd's size (default: 2,000, 1,000, 20)")
    parser.add_argument("--only", choices=("sslsocket", "baseline"), help="one server only")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the empty packets flow (default 5)")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers inherit it
    sizes = {"burst": 2000, "idle": 1000, "slow": 20}
    kinds = [args.only] if args.only else ["sslsocket", "baseline"]
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cert = os.path.join(tmp, "server.pem")
        make_cert("localhost", names=("localhost", LOCAL)).write(cert)
        for scenario in args.scenario:
            for kind in kinds:
                if scenario == "empty":
                    outcome = empty(kind, cert, args.seconds)
                else:
                    runner = {"burst": burst, "idle": idle, "slow": slow}[scenario]
                    outcome = runner(kind, cert, args.clients or sizes[scenario])
                report[f"{scenario} {kind}"] = outcome
                print(f"{scenario:6} {kind:10} {json.dumps(outcome, ensure_ascii=False)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
