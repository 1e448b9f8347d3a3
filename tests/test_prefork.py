"""Several worker processes for one server, as Python 3.12 and later want them: ``os.fork()`` in a process that
has threads warns (``DeprecationWarning: This process ... is multi-threaded, use of fork() may lead to deadlocks
in the child``). Two ways that never meet the warning, each run in a fresh interpreter with the warning made an
error: fork before the first thread, or no fork at all (workers started afresh, each listening with
``reuse_port=True``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import sslsocket

from helpers import LOCAL, expect

FORK_BEFORE_THE_FIRST_THREAD = """
import os, sys, threading, warnings
import sslsocket
warnings.simplefilter("error", DeprecationWarning)  # the fork's warning, on 3.12 and later, fails the run

listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2))
assert threading.active_count() == 1, threading.enumerate()  # listen starts no thread: forking is safe
children = []
for _ in range(2):
    child = os.fork()
    if child == 0:  # a worker: its threads are its own, started by its first accept
        sock = sslsocket.accept(listen, "-cert " + sys.argv[1])
        sock.deliver(f"served by {os.getpid()}")
        sslsocket.receive(lambda m: m[0] is sock and m[1][0] == "socket_closed", timeout=20)
        os._exit(0)
    children.append(child)
print(listen.port, flush=True)  # the parent forks no more: it may now have threads of its own
for child in children:
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
print("workers done", flush=True)
"""

WORKER_THAT_LISTENS_ITSELF = """
import os, sys, warnings
import sslsocket
warnings.simplefilter("error", DeprecationWarning)
listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", int(sys.argv[2])), ("packet", 2), reuse_port=True)
print("listening", flush=True)
while True:  # a worker serves until it is told to stop (SIGTERM)
    sock = sslsocket.accept(listen, "-cert " + sys.argv[1])
    sock.deliver(f"served by {os.getpid()}")
    sslsocket.receive(lambda m: m[0] is sock and m[1][0] == "socket_closed", timeout=20)
"""


def served(port: int) -> str:
    with sslsocket.client("STREAM", "AF_INET", (LOCAL, port), ("packet", 2), "") as sock:
        kind, text = expect(sock, 20)
        assert kind == "fromsocket"
        return str(text)


def test_fork_the_workers_before_the_first_thread(certs: Any) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(FORK_BEFORE_THE_FIRST_THREAD), str(certs.server)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        port = int(parent.stdout.readline())
        workers = {served(port), served(port)}
        assert len(workers) == 2  # each child accepted one
        out, err = parent.communicate(timeout=30)
        assert "workers done" in out and parent.returncode == 0, err
        assert "DeprecationWarning" not in err
    finally:
        parent.kill()
        parent.wait()


def test_workers_without_fork_each_listen_on_the_port(certs: Any) -> None:
    probe = sslsocket.listen("STREAM", "AF_INET", (LOCAL, 0), "raw", reuse_port=True)  # a free port for all
    port = probe.port
    sslsocket.close(probe)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WORKER_THAT_LISTENS_ITSELF), str(certs.server), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline() == "listening\n"
        answers = {served(port) for _ in range(6)}
        assert answers <= {f"served by {worker.pid}" for worker in workers}, answers
    finally:
        for worker in workers:
            worker.terminate()
            _, err = worker.communicate(timeout=30)
            assert "DeprecationWarning" not in err, err
