#!/usr/bin/env python3
"""What each operation costs, counted: voluntary context switches, CPU and Python calls per operation, for
sslsocket, the baseline (Python's ``ssl``, a thread per side) and asyncio streams over ``ssl`` (one event loop
holding both ends), in one process. These hold still where rates move five-fold within an hour: a lever is judged
by them; the rates are printed for information.

    python benchmarks/run.py --counts       # (or python benchmarks/counts.py)

Context switches and CPU come from a run of their own; Python calls from a second run in a fresh process, with a
profile function counting calls in every thread (which slows it down too much to time it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import ssl
import statistics
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from meter import Cost, Meter, count_calls

#: The operations, and how many of each a measurement makes.
OPERATIONS = {
    "ping-pong round trip, 64 B": 2000,
    "ping-pong round trip, callback owner": 2000,
    "100 B packet streamed": 20000,
    "handshake cycle (connect, echo, close)": 100,
    "handshake cycle, both sides on X25519": 100,
}
#: What the X25519 row gives sslsocket, whose default offers X25519MLKEM768 first (some 250 µs more per handshake):
#: the key exchange of the OpenSSL 3.0 that Python's ``ssl`` links here, so that the row compares the designs.
X25519 = " -groups X25519"


# ---- asyncio streams over ssl: what a Python user picks instead of a thread per connection ----------------------


def asyncio_pingpong(setup: object, count: int, size: int) -> float:
    async def run() -> float:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while header := await _read_packet_header(reader):
                writer.write(header + await reader.readexactly(struct.unpack(">I", header)[0]))

        server, reader, writer = await _pair(setup, echo)
        message = struct.pack(">I", size) + b"p" * size
        meter = Meter()
        for _ in range(count):
            writer.write(message)
            await reader.readexactly(4 + size)
        elapsed = meter.stop(count)
        await _close(server, writer)
        return elapsed

    return count / asyncio.run(run())


def asyncio_stream(setup: object, count: int, size: int) -> float:
    async def run() -> float:
        arrived = asyncio.Event()

        async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for _ in range(count):
                await reader.readexactly(struct.unpack(">I", await reader.readexactly(4))[0])
            arrived.set()

        server, _, writer = await _pair(setup, sink)
        message = struct.pack(">I", size) + b"s" * size
        meter = Meter()
        for _ in range(count):
            writer.write(message)
            await writer.drain()
        await arrived.wait()
        elapsed = meter.stop(count)
        await _close(server, writer)
        return elapsed

    return count / asyncio.run(run())


def asyncio_handshakes(setup: object, count: int) -> float:
    async def run() -> float:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            header = await reader.readexactly(4)
            writer.write(header + await reader.readexactly(struct.unpack(">I", header)[0]))
            await reader.read()  # until the client closes
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=setup.server_ctx)  # type: ignore[attr-defined]
        port = server.sockets[0].getsockname()[1]
        meter = Meter()
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=setup.client_ctx)  # type: ignore[attr-defined]
            writer.write(struct.pack(">I", 5) + b"hello")
            await reader.readexactly(9)
            writer.close()
            await writer.wait_closed()
        elapsed = meter.stop(count)
        server.close()
        await server.wait_closed()
        return elapsed

    return count / asyncio.run(run())


async def _read_packet_header(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readexactly(4)
    except asyncio.IncompleteReadError:
        return b""


async def _pair(
    setup: object, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object]
) -> tuple[asyncio.Server, asyncio.StreamReader, asyncio.StreamWriter]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=setup.server_ctx)  # type: ignore[attr-defined]
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=setup.client_ctx)  # type: ignore[attr-defined]
    return server, reader, writer


async def _close(server: asyncio.Server, writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError):
        pass
    server.close()
    await server.wait_closed()


# ---- the table -----------------------------------------------------------------------------------------------


def implementations() -> dict[str, dict[str, Callable[[], float]]]:
    import run

    setup = run.Setup()
    n = OPERATIONS
    ping, cb, small, shake, x25519 = n.keys()
    return {
        "ssl, a thread per side": {
            ping: lambda: run.baseline_pingpong(setup, n[ping], 64),
            cb: lambda: run.baseline_pingpong(setup, n[cb], 64),
            small: lambda: run.baseline_stream(setup, n[small], 100),
            shake: lambda: run.baseline_handshakes(setup, n[shake]),
            x25519: lambda: run.baseline_handshakes(setup, n[x25519]),
        },
        "sslsocket": {
            ping: lambda: run.sslsocket_pingpong(setup, n[ping], 64),
            cb: lambda: run.sslsocket_pingpong_callback(setup, n[cb], 64),
            small: lambda: run.sslsocket_stream(setup, n[small], 100),
            shake: lambda: run.sslsocket_handshakes(setup, n[shake]),
            x25519: lambda: run.sslsocket_handshakes(
                setup, n[x25519], setup.client_flags + X25519, setup.flags + X25519
            ),
        },
        "asyncio streams": {
            ping: lambda: asyncio_pingpong(setup, n[ping], 64),
            cb: lambda: asyncio_pingpong(setup, n[cb], 64),
            small: lambda: asyncio_stream(setup, n[small], 100),
            shake: lambda: asyncio_handshakes(setup, n[shake]),
            x25519: lambda: asyncio_handshakes(setup, n[x25519]),
        },
    }


def measure(reps: int) -> dict[str, dict[str, list[Cost]]]:
    """Every operation of every implementation, ``reps`` times, alternating; the cost of each run."""
    table: dict[str, dict[str, list[Cost]]] = {}
    for _ in range(reps):
        for name, operations in implementations().items():
            for operation, run_it in operations.items():
                run_it()
                assert Meter.last is not None
                table.setdefault(operation, {}).setdefault(name, []).append(Meter.last)
    return table


def calls_in_a_fresh_process() -> dict[str, dict[str, float]]:
    out = subprocess.run(
        [sys.executable, __file__, "--calls-only"], capture_output=True, text=True, check=True, timeout=600
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3, help="runs of each operation (default 3), medians shown")
    parser.add_argument("--calls-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="where to write the table as JSON")
    args = parser.parse_args(argv)
    if args.calls_only:
        count_calls()
        table = measure(1)
        print(json.dumps({op: {name: costs[0].calls for name, costs in row.items()} for op, row in table.items()}))
        return 0
    table = measure(args.reps)
    calls = calls_in_a_fresh_process()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, medians of {args.reps}")
    print(f"{'operation':<40} {'implementation':<24} {'switches':>9} {'CPU µs':>9} {'calls':>7} {'rate/s':>9}")
    result: dict[str, dict[str, dict[str, float | None]]] = {}
    for operation, row in table.items():
        for name, costs in row.items():
            cost = {
                "switches": statistics.median(c.switches for c in costs),
                "cpu_us": statistics.median(c.cpu_us for c in costs),
                "calls": calls[operation][name],
                "rate": statistics.median(c.rate for c in costs),
            }
            result.setdefault(operation, {})[name] = cost
            print(
                f"{operation:<40} {name:<24} {cost['switches']:>9.1f} {cost['cpu_us']:>9.0f}"
                f" {cost['calls'] or 0:>7.0f} {cost['rate']:>9,.0f}"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
