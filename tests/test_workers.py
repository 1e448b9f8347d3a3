"""Mediator threads live on after their connection, waiting a while to serve the next one."""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import sslsocket
from sslsocket.lifecycle import State
from sslsocket.registry import registry
from sslsocket.workers import Workers, workers

from helpers import accepting, expect, pair, wait_for, waiting_acceptor


def idle_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == Workers.IDLE_NAME]


def closed_pair(certs: Any) -> tuple[threading.Thread, threading.Thread]:
    """Open a connection, close it from both ends, wait for both mediators to end; return their threads."""
    client, server = pair(certs=certs)
    client.deliver("x")  # read by the server's connection thread: its handshake's thread has handed over
    assert expect(server) == ("fromsocket", "x")
    threads = (client.thread, server.thread)
    assert all(t is not None and t.name.startswith("sslsocket-") and t.name != Workers.IDLE_NAME for t in threads)
    client.close()
    assert expect(server) == ("socket_closed", "normal")
    assert client.wait_closed(5) and server.wait_closed(5)
    return threads  # type: ignore[return-value]


def test_a_new_connection_reuses_the_thread_of_an_ended_one(certs: Any) -> None:
    sslsocket.stop()  # no thread waiting from an earlier test
    first = closed_pair(certs)
    wait_for(lambda: all(t.name == Workers.IDLE_NAME for t in first))
    second = closed_pair(certs)
    assert set(second) == set(first)  # no new thread started
    assert all(t.is_alive() for t in first)


def test_stop_ends_every_waiting_thread(certs: Any) -> None:
    first = closed_pair(certs)
    wait_for(lambda: all(t.name == Workers.IDLE_NAME for t in first))
    sslsocket.stop()
    assert not idle_threads()
    assert not any(t.is_alive() for t in first)


def test_a_waiting_thread_ends_after_the_idle_time(certs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sslsocket.stop()
    monkeypatch.setattr(Workers, "IDLE", 0.2)
    threads = closed_pair(certs)
    wait_for(lambda: not any(t.is_alive() for t in threads))


def test_at_most_keep_threads_wait(certs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sslsocket.stop()
    monkeypatch.setattr(Workers, "KEEP", 1)
    pairs = [pair(certs=certs) for _ in range(2)]  # four mediators at once
    for client, server in pairs:
        client.close()
        assert expect(server) == ("socket_closed", "normal")
        assert client.wait_closed(5) and server.wait_closed(5)
    # one waits in each pool: the servers' handshakes', the open connections'
    wait_for(lambda: len([t for t in threading.enumerate() if t.name.startswith("sslsocket-")]) == 2)
    assert len(idle_threads()) == 2
    sslsocket.stop()


def test_a_callback_owner_that_became_a_process_ends_with_its_connection(certs: Any) -> None:
    pids: list[sslsocket.Pid] = []

    def on_message(msg: Any) -> None:
        pids.append(sslsocket.self())  # in the mediator's thread, which lives on after the connection

    client, server = pair(certs=certs, owner=on_message)
    server.deliver("hello")
    wait_for(lambda: pids)
    assert pids[0].alive
    server.close()
    assert client.wait_closed(5)
    wait_for(lambda: not pids[0].alive, timeout=2)  # long before the thread would end (Workers.IDLE)


def test_a_job_runs_in_a_thread_of_the_given_name() -> None:
    done = threading.Event()
    names: list[str] = []

    def job() -> None:
        names.append(threading.current_thread().name)
        done.set()

    workers.run(job, "sslsocket-test-job")
    assert done.wait(5)
    assert names == ["sslsocket-test-job"]
    sslsocket.stop()


def test_a_forked_child_starts_threads_of_its_own(certs: Any) -> None:
    """A pre-forking server forks after its parent used sslsocket: the threads waiting in the parent are not in the
    child, which must not hand its connections to them."""
    threads = closed_pair(certs)
    wait_for(lambda: all(t.name == Workers.IDLE_NAME for t in threads))

    def connect_in_the_child() -> int:
        client, server = pair(certs=certs)
        client.deliver("from the child")
        ok = expect(server) == ("fromsocket", "from the child")
        client.close()
        return 0 if ok else 3

    assert exit_code(forked(connect_in_the_child)) == 0


def test_pre_forked_children_accept_on_the_parents_listen_socket(certs: Any) -> None:
    """The pre-forking server: the parent listens, each child accepts and serves on the inherited socket."""
    closed_pair(certs)  # the parent has used sslsocket: threads wait in it
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2))
    children = [forked(lambda: serve_one(listen, f"-cert {certs.server}")) for _ in range(2)]
    answers = set()
    for n in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sslsocket.InsecureClientWarning)
            client = sslsocket.client("STREAM", "AF_INET", ("127.0.0.1", listen.port), ("packet", 2), "")
        client.deliver(f"request {n}")
        kind, answer = expect(client, 10)
        assert kind == "fromsocket" and answer.startswith(f"request {n} served by ")
        answers.add(answer.rsplit(" ", 1)[1])
        client.close()
    assert [exit_code(child) for child in children] == [0, 0]
    assert answers == {str(child) for child in children}  # each child served one
    sslsocket.close(listen)


def test_a_child_forked_after_the_parent_accepted(certs: Any) -> None:
    """The parent has accepted (its listener thread runs) and holds a connection when it forks: the child accepts
    with a listener thread of its own, and holds no copy of the parent's connection open."""
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2))
    served = accepting(listen, f"-cert {certs.server}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sslsocket.InsecureClientWarning)
        kept = sslsocket.client("STREAM", "AF_INET", ("127.0.0.1", listen.port), ("packet", 2), "")
        theirs = served()
        child = forked(lambda: serve_one(listen, f"-cert {certs.server}"))
        client = sslsocket.client("STREAM", "AF_INET", ("127.0.0.1", listen.port), ("packet", 2), "")
    client.deliver("request")
    assert expect(client, 10) == ("fromsocket", f"request served by {child}")
    theirs.close()  # the child's copy of this connection is gone: the peer hears the close at once
    assert expect(kept, 5) == ("socket_closed", "normal")
    client.close()
    assert exit_code(child) == 0
    sslsocket.close(listen)


def test_in_a_forked_child_a_deliver_to_the_parents_socket_raises_closed(certs: Any) -> None:
    """Found by a review: the child's copy took 1,024 delivers silently, and the next waited for ever."""
    client, server = pair(certs=certs)

    def deliver_in_the_child() -> int:
        for _ in range(2000):
            try:
                server.deliver("x" * 1000)
            except sslsocket.Closed as exc:
                if "is the parent's (this process is a fork)" not in str(exc):
                    return 3
            else:
                return 2
        return 0

    assert exit_code(forked(deliver_in_the_child)) == 0
    server.deliver("the parent's still works")
    assert expect(client) == ("fromsocket", "the parent's still works")
    client.close()
    server.close()


def test_a_child_forked_while_other_threads_talk_does_not_hang_in_the_fork() -> None:
    """Found by a review: 17 and 21 children of 100 hung inside ``os.fork()``. CPython drops the other threads'
    state in the child before any at-fork hook runs, and each dropped thread ended its process there: it took the
    process's lock, which its thread in the parent may have held at the fork."""
    stop = threading.Event()
    chatters: list[sslsocket.Pid] = []

    def chatter() -> None:  # a process that takes its own lock all the time, in a thread that is not a spawn
        me = sslsocket.self()
        chatters.append(me)
        while not stop.is_set():
            me.send("x")
            sslsocket.receive(timeout=1)

    def in_the_child() -> int:
        for pid in chatters:  # their threads are not here: ended, and a send to one must not wait on its lock
            pid.send("anyone?")
            if pid.alive:
                return 3
        return 0

    threads = [threading.Thread(target=chatter) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_for(lambda: len(chatters) == 4)
    hung, codes = None, []
    try:
        for attempt in range(100):
            child = forked(in_the_child)
            deadline = time.monotonic() + 5
            while True:
                reaped, status = os.waitpid(child, os.WNOHANG)
                if reaped:
                    codes.append(os.waitstatus_to_exitcode(status))
                    break
                if time.monotonic() > deadline:
                    os.kill(child, signal.SIGKILL)
                    os.waitpid(child, 0)
                    hung = attempt
                    break
                time.sleep(0.005)  # the child's exit is polled: a hung child sends no signal to wait on
            if hung is not None:
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert hung is None, f"child {hung} of 100 hung in the fork"
    assert codes == [0] * 100, codes


def held_copies() -> int:
    """How many TCP connections (with a peer), and epoll instances, this process has open (Linux's /proc)."""
    held = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target == "anon_inode:[eventpoll]":
            held += 1
        elif target.startswith("socket:"):
            probe = socket.socket(fileno=os.dup(fd))
            try:
                if probe.type == socket.SOCK_STREAM and probe.family in (socket.AF_INET, socket.AF_INET6):
                    probe.getpeername()
                    held += 1
            except OSError:
                pass  # not connected (a listen socket among them)
            finally:
                probe.close()
    return held


def test_a_child_forked_while_connections_come_and_go_keeps_none_of_them(certs: Any) -> None:
    """Found by a review: 41 of 79 and 69 of 83 children held 1 to 4 of the parent's TCP connections (caught
    between connect and registration, or between accept and the quiet stage), and every child the listener's
    epoll descriptor."""
    stop = threading.Event()
    with sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2)) as listen:

        def serve() -> None:
            while not stop.is_set():
                try:
                    sslsocket.accept(listen, f"-cert {certs.server}", timeout=1).close()
                except sslsocket.SSLSocketError:
                    pass

        def connect() -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", sslsocket.InsecureClientWarning)
                while not stop.is_set():
                    try:
                        sslsocket.client("STREAM", "AF_INET", ("127.0.0.1", listen.port), ("packet", 2), "").close()
                    except sslsocket.SSLSocketError:
                        pass

        threads = [threading.Thread(target=f) for f in (serve, serve, connect, connect)]
        for thread in threads:
            thread.start()
        try:
            codes = [exit_code(forked(held_copies)) for _ in range(60)]
        finally:
            stop.set()
            sslsocket.close(listen)  # a client waiting for an acceptor that stopped: refused at once
            for thread in threads:
                thread.join()
    assert codes == [0] * 60, codes


def test_a_child_forked_while_a_handshake_is_under_way(certs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fork comes while the listener holds a connection in its handshake: the child drops its copy of it once,
    without an error, and its listen socket gets a working waker of its own."""
    errors: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", errors.append)  # where an at-fork handler's exception goes
    with sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2)) as listen:
        waiting_acceptor(listen, f"-cert {certs.server}", sslsocket.Closed)
        silent = socket.create_connection(("127.0.0.1", listen.port))
        silent.sendall(b"\x16")  # the first byte of a ClientHello, and never the rest: its handshake is under way
        listener = registry.listener(listen)
        wait_for(lambda: listener.counts()["handshaking"])

        def check_in_the_child() -> int:
            listener._waker.poke()  # its own waker: open, and no other's
            return 4 if errors else 0

        assert exit_code(forked(check_in_the_child)) == 0
    silent.close()  # after the listen socket: its acceptor ends with Closed, not with this handshake's failure
    assert sslsocket.receive(lambda m: m[0] == "accept ended", timeout=5) == ("accept ended", ("accept", "closed"))


def forked(body: Callable[[], int]) -> int:
    """Fork a child that runs ``body`` and exits with what it returns (1 if it raised); its pid."""
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child, which reports through its exit code
        code = 1
        try:
            signal.alarm(20)  # a child that hangs fails instead of holding up the test run
            code = body()
        finally:
            os._exit(code)
    return child


def exit_code(child: int) -> int:
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status)


def serve_one(listen: sslsocket.ListenSocket, flags: str) -> int:  # pragma: no cover - runs in a forked child
    """Accept one connection, answer its request with this process's id; 0 when all went as expected."""
    sock = sslsocket.accept(listen, flags)
    _, (kind, data) = sslsocket.receive(lambda m: m[0] is sock, timeout=10)
    sock.deliver(f"{data} served by {os.getpid()}")
    sslsocket.receive(lambda m: m[0] is sock, timeout=10)  # the client's close
    return 0 if kind == "fromsocket" else 3


def record_threads(monkeypatch: pytest.MonkeyPatch) -> tuple[set[threading.Thread], set[threading.Thread]]:
    """From now on: the threads that run a TLS handshake, and those that read an open connection."""
    from sslsocket import mediator

    handshaking: set[threading.Thread] = set()
    reading: set[threading.Thread] = set()
    real_attempt, real_read = mediator.attempt, mediator.read

    def attempt(call: Any, *args: Any) -> Any:
        if getattr(call, "__name__", "") == "do_handshake":
            handshaking.add(threading.current_thread())
        return real_attempt(call, *args)

    def read(conn: Any, size: int) -> Any:
        reading.add(threading.current_thread())
        return real_read(conn, size)

    monkeypatch.setattr(mediator, "attempt", attempt)
    monkeypatch.setattr(mediator, "read", read)
    return handshaking, reading


def test_no_thread_that_ran_a_handshake_serves_an_open_connection(certs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A handshake leaves per-thread state behind (OpenSSL's random generators, glibc's cache of freed blocks)
    for its thread's life: an open connection's thread must not carry it, even when threads are reused."""
    sslsocket.stop()
    handshaking, reading = record_threads(monkeypatch)
    for _ in range(3):  # the later connections reuse the threads of the earlier
        client, server = pair(certs=certs)
        client.deliver("ping")
        assert expect(server) == ("fromsocket", "ping")
        server.deliver("pong")
        assert expect(client) == ("fromsocket", "pong")
        client.close()
        assert expect(server) == ("socket_closed", "normal")
        assert client.wait_closed(5) and server.wait_closed(5)
    assert handshaking and reading
    assert not handshaking & reading


def test_a_server_with_no_thread_for_its_open_connection_serves_it_in_its_handshakes(
    certs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task limit reached as a server's handshake ends: its thread goes on serving, nothing is lost."""
    real = workers.run
    handshaking, reading = record_threads(monkeypatch)

    def none_after_a_handshake(job: Any, name: str) -> Any:  # the client's thread (the test's) starts
        if threading.current_thread() is threading.main_thread():
            return real(job, name)
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(workers, "run", none_after_a_handshake)
    client, server = pair(certs=certs)
    client.deliver("ping")
    assert expect(server) == ("fromsocket", "ping")
    server.deliver("pong")
    assert expect(client) == ("fromsocket", "pong")
    assert server.thread in handshaking & reading
    client.close()
    assert expect(server) == ("socket_closed", "normal")
    assert client.wait_closed(5) and server.wait_closed(5)


def test_a_server_whose_move_to_its_open_thread_fails_otherwise_ends_the_connection(
    certs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anything but the task limit raised as the open connection moves on: the connection ends, its owner hears it,
    its descriptors are released (the leak check), nothing waits for ever."""
    real = workers.run

    def broken_after_a_handshake(job: Any, name: str) -> Any:
        if threading.current_thread() is threading.main_thread():
            return real(job, name)
        raise MemoryError("no memory for a thread")

    monkeypatch.setattr(workers, "run", broken_after_a_handshake)
    with sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2)) as listen:
        outcome = accepting(listen, f"-cert {certs.server}")
        client = sslsocket.client("STREAM", "AF_INET", ("127.0.0.1", listen.port), ("packet", 2), "")
        server = outcome()
        assert server.wait_closed(5)
        assert expect(client)[0] == "socket_closed"
        client.close()


# Found by a review of the call cuts


def test_self_in_a_reused_mediator_thread_is_a_live_process(certs: Any) -> None:
    """A callback owner that asks for self() in a mediator's thread that served an earlier connection gets a
    process of its own, alive: not the one that thread's earlier job ended."""
    sslsocket.stop()
    main = sslsocket.self()

    def report(msg: Any) -> None:
        if msg[1][0] == "fromsocket":
            me = sslsocket.self()
            main.send(("pid", me, me.alive))

    seen = []
    for _ in range(4):
        client, server = pair(("binary_packet", 4), certs=certs)
        sslsocket.controlling_process(server, report)
        client.deliver(b"x")
        _, pid, alive = sslsocket.receive(lambda m: m[0] == "pid", timeout=10)
        assert alive, pid
        seen.append(pid)
        client.close()
        assert server.wait_closed(10) and client.wait_closed(10)
        wait_for(lambda pid=pid: not pid.alive)  # its job over, the thread's process ended with it
    assert len(set(seen)) == len(seen)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="a fork: POSIX only")
def test_a_thread_given_its_process_from_outside_keeps_it_in_a_forked_child() -> None:
    """A running thread whose process was made by another thread (monitor(thread), controlling_process(sock,
    thread)) forks before it called self(): in the child that process is its own, alive."""
    given, result = threading.Event(), []

    def body() -> None:
        given.wait(10)

        def in_the_child() -> int:
            me = sslsocket.self()
            if not me.alive:
                return 3
            me.send("hello")
            return 0 if sslsocket.receive(timeout=5) == "hello" else 4

        result.append(exit_code(forked(in_the_child)))

    thread = threading.Thread(target=body)
    thread.start()
    sslsocket.process.of_thread(thread)
    given.set()
    thread.join(30)
    assert result == [0]


def test_in_a_forked_child_the_parent_s_processes_and_sockets_are_down_for_noconnection(certs: Any) -> None:
    """The child of a fork has only the forking thread's process: what it monitored or linked to of the parent's
    (processes, a socket) ends for it there, "noconnection", as an Erlang node's monitors and links hear of the
    processes of a node it lost its connection to; in the parent they go on."""
    client, server = pair(certs=certs)
    busy = sslsocket.spawn(lambda: sslsocket.receive(lambda m: m == "stop"))
    partner = sslsocket.spawn(lambda: sslsocket.receive(lambda m: m == "stop"))
    process_ref, socket_ref = sslsocket.monitor(busy), sslsocket.monitor(server)
    old = sslsocket.process_flag("trap_exit", True)
    try:
        sslsocket.link(partner)

        def check_in_the_child() -> int:
            heard = [sslsocket.receive(timeout=5) for _ in range(3)]
            expected = [
                ("DOWN", process_ref, "process", busy, "noconnection"),
                ("EXIT", partner, "noconnection"),
                ("DOWN", socket_ref, "socket", server, "noconnection"),
            ]
            return 0 if sorted(map(repr, heard)) == sorted(map(repr, expected)) else 5

        assert exit_code(forked(check_in_the_child)) == 0
        assert busy.alive and partner.alive and server.state is State.OPEN  # the parent's go on
        client.deliver("still here")
        assert expect(server) == ("fromsocket", "still here")
    finally:
        sslsocket.process_flag("trap_exit", old)
        for pid in (busy, partner):
            pid.send("stop")
        client.close()
        server.close()
