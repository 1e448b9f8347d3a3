"""Monitors, links, trap_exit, a crash's log and drain, as Erlang has them (docs/operations.rst)."""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import sslsocket

from helpers import expect, pair, wait_for


def down(ref: sslsocket.Ref, timeout: float = 10) -> Any:
    """The ``DOWN`` message of ``ref``."""
    return sslsocket.receive(lambda m: isinstance(m, tuple) and m[:2] == ("DOWN", ref), timeout=timeout)


def exit_message(timeout: float = 10) -> Any:
    return sslsocket.receive(lambda m: isinstance(m, tuple) and m[0] == "EXIT", timeout=timeout)


@pytest.fixture
def trapping() -> Iterator[None]:
    old = sslsocket.process_flag("trap_exit", True)
    try:
        yield
    finally:
        sslsocket.process_flag("trap_exit", old)


class Crash(Exception):
    pass


def crash() -> None:
    raise Crash("bad packet")


# ---- monitors -----------------------------------------------------------------------------------------------------


def test_a_monitor_hears_normal_when_the_function_returns() -> None:
    pid, ref = sslsocket.spawn_monitor(lambda: None)
    assert down(ref) == ("DOWN", ref, "process", pid, "normal")
    assert repr(ref).startswith("#Ref<")


def test_a_monitor_hears_the_exception_and_nothing_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    pid, ref = sslsocket.spawn_monitor(crash)
    _, _, kind, who, reason = down(ref)
    assert (kind, who) == ("process", pid) and isinstance(reason, Crash) and str(reason) == "bad packet"
    assert not [r for r in caplog.records if r.name == "sslsocket"]


def test_a_monitor_hears_the_exit_reason() -> None:
    pid, ref = sslsocket.spawn_monitor(sslsocket.receive)
    wait_for(lambda: pid.waiting == "receive")
    sslsocket.exit(pid, "shutdown now")
    assert down(ref)[4] == "shutdown now"


def test_a_monitor_set_after_the_end_hears_noproc() -> None:
    pid, first = sslsocket.spawn_monitor(lambda: None)
    down(first)
    ref = sslsocket.monitor(pid)
    assert down(ref) == ("DOWN", ref, "process", pid, "noproc")


def test_demonitor_leaves_no_down_behind() -> None:
    pid, ref = sslsocket.spawn_monitor(sslsocket.receive)
    sslsocket.demonitor(ref)
    pid.send("go")
    wait_for(lambda: not pid.alive)
    with pytest.raises(sslsocket.Timeout):
        down(ref, timeout=0.2)
    pid, ref = sslsocket.spawn_monitor(lambda: None)  # and one that came already is taken out of the mailbox
    wait_for(lambda: not pid.alive)
    sslsocket.demonitor(ref)
    with pytest.raises(sslsocket.Timeout):
        down(ref, timeout=0.2)


def test_spawn_monitor_has_no_window_even_for_a_process_that_ends_at_once() -> None:
    for _ in range(200):
        _, ref = sslsocket.spawn_monitor(lambda: None)
        assert down(ref)[4] == "normal"  # never "noproc": monitored before it ran


def test_a_thread_can_be_monitored_and_its_exception_is_its_reason() -> None:
    thread = threading.Thread(target=crash)
    ref = sslsocket.monitor(thread)
    thread.start()
    _, _, kind, who, reason = down(ref)
    thread.join()
    assert kind == "process" and who is sslsocket.process.as_pid(thread) and isinstance(reason, Crash)


def test_an_unwatched_crash_is_logged_once_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="sslsocket")
    pid = sslsocket.spawn(crash)
    wait_for(lambda: not pid.alive and caplog.records)
    [record] = [r for r in caplog.records if r.name == "sslsocket"]
    assert record.levelno == logging.ERROR and repr(pid) in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is Crash


def test_an_accept_ended_by_its_closed_listen_socket_is_a_shutdown(certs: Any) -> None:
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2))
    pid, ref = sslsocket.spawn_monitor(sslsocket.accept, listen, f"-cert {certs.server}")
    wait_for(lambda: pid.waiting is not None)
    sslsocket.close(listen)
    assert down(ref)[4] == "shutdown"


# ---- links --------------------------------------------------------------------------------------------------------


def test_a_linked_crash_is_an_exit_signal_at_the_next_wait() -> None:
    pid = sslsocket.spawn_link(crash)
    with pytest.raises(sslsocket.Exit) as info:
        sslsocket.receive(lambda m: False, timeout=10)
    assert isinstance(info.value.reason, Crash)
    assert not pid.alive


def test_a_normal_end_of_a_linked_process_is_no_signal() -> None:
    pid = sslsocket.spawn_link(lambda: None)
    wait_for(lambda: not pid.alive)
    with pytest.raises(sslsocket.Timeout):
        sslsocket.receive(lambda m: False, timeout=0.2)


def test_a_link_goes_both_ways() -> None:
    """A process linked to a waiting one ends abnormally: the waiting one ends too, with the same reason."""

    def partner(other: sslsocket.Pid) -> None:
        sslsocket.link(other)
        raise Crash("partner failed")

    waiter, ref = sslsocket.spawn_monitor(sslsocket.receive)
    sslsocket.spawn(partner, waiter)
    reason = down(ref)[4]
    assert isinstance(reason, Crash) and str(reason) == "partner failed"


@pytest.mark.usefixtures("trapping")
def test_trap_exit_turns_links_ends_into_messages() -> None:
    crashed = sslsocket.spawn_link(crash)
    _, who, reason = exit_message()
    assert who is crashed and isinstance(reason, Crash)
    ended = sslsocket.spawn_link(lambda: None)
    assert exit_message() == ("EXIT", ended, "normal")


def test_a_link_to_an_ended_process_is_noproc() -> None:
    pid, ref = sslsocket.spawn_monitor(lambda: None)
    down(ref)
    sslsocket.link(pid)
    with pytest.raises(sslsocket.Exit) as info:
        sslsocket.receive(lambda m: False, timeout=10)
    assert info.value.reason == "noproc"


def test_unlink_and_the_process_ends_alone() -> None:
    pid = sslsocket.spawn_link(sslsocket.receive)
    sslsocket.unlink(pid)
    sslsocket.exit(pid, "alone")
    wait_for(lambda: not pid.alive)
    with pytest.raises(sslsocket.Timeout):
        sslsocket.receive(lambda m: False, timeout=0.2)


def test_bad_arguments_name_the_culprit() -> None:
    with pytest.raises(sslsocket.BadArgument, match="monitor takes a Pid"):
        sslsocket.monitor("pid")  # type: ignore[arg-type]
    with pytest.raises(sslsocket.BadArgument, match="demonitor takes"):
        sslsocket.demonitor(3)  # type: ignore[arg-type]
    with pytest.raises(sslsocket.BadArgument, match="process_flag takes"):
        sslsocket.process_flag("trap_exits", True)
    with pytest.raises(sslsocket.BadArgument, match="drain takes"):
        sslsocket.drain(-1)


def test_i_shows_links_and_monitors() -> None:
    pid = sslsocket.spawn_link(sslsocket.receive)
    ref = sslsocket.monitor(pid)
    view = sslsocket.overview()
    [row] = [p for p in view.processes if p.pid is pid]
    assert row.links == [sslsocket.self()] and row.monitors == 1
    sslsocket.demonitor(ref)
    sslsocket.unlink(pid)
    pid.send("done")
    wait_for(lambda: not pid.alive)


def test_monitors_and_links_under_stress() -> None:
    """Processes that end while others monitor and link them, in a tiny switch interval: every monitor hears
    exactly one DOWN, every trapped link exactly one EXIT, and nothing is left behind."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    old = sslsocket.process_flag("trap_exit", True)
    try:
        for _ in range(300):
            pid = sslsocket.spawn(lambda: None)
            ref = sslsocket.monitor(pid)
            sslsocket.link(pid)
            assert down(ref)[4] in ("normal", "noproc")
            assert exit_message()[:2] == ("EXIT", pid)
        with pytest.raises(sslsocket.Timeout):
            sslsocket.receive(lambda m: isinstance(m, tuple) and m[0] in ("DOWN", "EXIT"), timeout=0.2)
        assert sslsocket.supervision.links(sslsocket.self()) == []
    finally:
        sslsocket.process_flag("trap_exit", old)
        sys.setswitchinterval(interval)


# ---- found by a review from the outside ----------------------------------------------------------------------------


def test_a_pending_exit_signal_is_the_reason_of_a_process_that_then_returns() -> None:
    """A link's crash reaches a process busy outside any wait; it returns normally: its end is that crash, so a
    chain of links passes the crash on."""
    release = threading.Event()

    def middle() -> None:
        sslsocket.spawn_link(crash)
        release.wait(10)  # not a wait of the library: the exit signal stays pending

    pid, ref = sslsocket.spawn_monitor(middle)
    wait_for(lambda: pid.exiting)
    release.set()
    reason = down(ref)[4]
    assert isinstance(reason, Crash)


def test_the_monitors_of_an_ended_process_go_with_it(caplog: pytest.LogCaptureFixture) -> None:
    """A process that monitored another and ended leaves no monitor behind: nothing piles up on a long-lived
    process, and a crash that only a dead process watched is logged."""
    caplog.set_level(logging.ERROR, logger="sslsocket")
    room = sslsocket.spawn(sslsocket.receive)
    watchers = [sslsocket.spawn(sslsocket.monitor, room) for _ in range(50)]
    wait_for(lambda: not any(pid.alive for pid in watchers))
    assert sslsocket.supervision.monitors(room) == 0
    room.send("done")
    go = threading.Event()

    def crash_later() -> None:
        go.wait(10)
        raise Crash("watched by the dead only")

    target = sslsocket.spawn(crash_later)
    watcher = sslsocket.spawn(sslsocket.monitor, target)
    wait_for(lambda: not watcher.alive)
    go.set()
    wait_for(lambda: not target.alive and caplog.records)
    assert "watched by the dead only" in caplog.text


def test_demonitor_racing_the_down_leaves_nothing_behind() -> None:
    """The DOWN of a monitor taken back while the process ends never arrives afterwards (many monitors make the
    end long enough for the race)."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(30):
            pid = sslsocket.spawn(sslsocket.receive)
            refs = [sslsocket.monitor(pid) for _ in range(300)]
            pid.send("go")
            while pid.alive:
                pass
            sslsocket.demonitor(refs[-1])
            for ref in refs[:-1]:
                down(ref)
            with pytest.raises(sslsocket.Timeout):
                down(refs[-1], timeout=0.01)
    finally:
        sys.setswitchinterval(interval)


def test_a_thread_that_never_used_the_library_is_seen_to_end() -> None:
    done = threading.Thread(target=lambda: None)
    done.start()
    done.join()
    ref = sslsocket.monitor(done)
    assert down(ref)[4] == "noproc"
    go = threading.Event()
    running = threading.Thread(target=go.wait, args=(10,))
    running.start()
    ref = sslsocket.monitor(running)
    go.set()
    running.join()
    assert down(ref)[4] == "normal"


def test_a_thread_that_was_a_process_and_raised_ends_with_its_exception() -> None:
    started, go = threading.Event(), threading.Event()

    def worker() -> None:
        sslsocket.self()
        started.set()
        go.wait(10)
        raise Crash("in a plain thread")

    thread = threading.Thread(target=worker)
    hook = threading.excepthook
    threading.excepthook = sslsocket.process._excepthook  # reported here as before, less the noise
    sslsocket.process._previous_excepthook, previous = (lambda args: None), sslsocket.process._previous_excepthook
    try:
        thread.start()
        started.wait(10)
        ref = sslsocket.monitor(thread)
        go.set()
        thread.join()
        reason = down(ref)[4]
    finally:
        sslsocket.process._previous_excepthook = previous
        threading.excepthook = hook
    assert isinstance(reason, Crash)


def test_unlink_takes_back_an_exit_signal_not_yet_acted_on() -> None:
    pid = sslsocket.spawn(crash)
    sslsocket.link(pid)  # its crash, or "noproc" if it has crashed already
    wait_for(lambda: sslsocket.self().exiting)  # (no wait of the library: the signal stays pending)
    sslsocket.unlink(pid)
    with pytest.raises(sslsocket.Timeout):
        sslsocket.receive(lambda m: False, timeout=0.05)


def test_drain_without_an_end_and_with_connections_not_yet_accepted(certs: Any) -> None:
    """drain(inf) waits as long as it takes (no overflow); handshakes under way are closed with their listen
    socket, and counted neither way."""
    client, server = pair(certs=certs)
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2))
    acceptor = sslsocket.spawn(sslsocket.accept, listen, f"-cert {certs.server}")
    stalled = [socket.create_connection(("127.0.0.1", listen.port)) for _ in range(3)]
    for raw in stalled:
        raw.sendall(b"\x16\x03\x01")  # the start of a hello, and no more
    wait_for(lambda: sum(li.handshaking + li.queued for li in sslsocket.overview().listeners) == 3)

    def closer() -> None:  # closes both ends once the drain has begun (the listen sockets are closed first)
        wait_for(lambda: not sslsocket.overview().listeners)
        server.close()
        client.close()

    pid = sslsocket.process.new(closer)
    for sock in (client, server):
        sslsocket.controlling_process(sock, pid)
    sslsocket.process.start(pid, closer)
    assert sslsocket.drain(float("inf")) == (2, 0)  # the pair's two ends; not the three stalled ones
    wait_for(lambda: not pid.alive and not acceptor.alive)
    for raw in stalled:
        raw.close()


def test_spawning_something_that_is_not_a_function_is_a_bad_argument() -> None:
    for spawn in (sslsocket.spawn, sslsocket.spawn_link, sslsocket.spawn_monitor):
        with pytest.raises(sslsocket.BadArgument, match="a process runs a function, not None"):
            spawn(None)  # type: ignore[arg-type]


# ---- monitors of sockets ------------------------------------------------------------------------------------------


def test_a_socket_monitor_hears_how_the_socket_ended(certs: Any) -> None:
    client, server = pair(certs=certs)
    ref = sslsocket.monitor(server)
    client.close()
    assert expect(server) == ("socket_closed", "normal")
    assert down(ref) == ("DOWN", ref, "socket", server, "normal")
    late = sslsocket.monitor(server)  # after the end: its reason all the same
    assert down(late)[4] == "normal"
    watched = sslsocket.monitor(client)
    assert down(watched)[4] == "closed"  # its owner closed it


# ---- drain --------------------------------------------------------------------------------------------------------


def test_drain_lets_a_busy_owner_finish_and_cuts_one_that_does_not(certs: Any) -> None:
    me = sslsocket.self()
    listen = sslsocket.listen("STREAM", "AF_INET", ("127.0.0.1", 0), ("packet", 2))
    flags = f"-cert {certs.server}"

    def finisher() -> None:  # answers one request, then closes: done within the drain
        sock = sslsocket.accept(listen, flags)
        me.send(("accepted", sslsocket.self()))
        _, (_, data) = sslsocket.receive(lambda m: m[0] is sock)
        sock.deliver(data)
        sock.close()

    def lingerer() -> None:  # keeps its socket until told: cut by the drain
        sock = sslsocket.accept(listen, flags)
        me.send(("accepted", sslsocket.self()))
        _, (_, error) = sslsocket.receive(lambda m: m[0] is sock and m[1][0] == "socket_closed")
        me.send(("lingerer cut", error))

    sslsocket.spawn(finisher)
    sslsocket.spawn(lingerer)
    clients = []
    for _ in range(2):
        clients.append(sslsocket.client("STREAM", "AF_INET", ("127.0.0.1", listen.port), ("packet", 2), ""))
        sslsocket.receive(lambda m: m[0] == "accepted", timeout=10)
    acceptor, acceptor_ref = sslsocket.spawn_monitor(sslsocket.accept, listen, flags)  # one that waits, for nobody
    wait_for(lambda: acceptor.waiting is not None)
    result: list[tuple[int, int]] = []
    drainer = threading.Thread(target=lambda: result.append(sslsocket.drain(3)))
    drainer.start()
    assert down(acceptor_ref)[4] == "shutdown"  # no more accepting, at once
    for sock in clients:
        sock.deliver(b"last request")  # the finisher answers its own, then closes
    drainer.join(30)
    # Finished: the finisher's socket, and its client's, closed by its peer; cut: the lingerer's, and its client.
    assert result == [(2, 2)]
    _, error = sslsocket.receive(lambda m: m[0] == "lingerer cut", timeout=10)
    assert error.reason == "stopped"
    assert sorted(ending(sock) for sock in clients) == [["fromsocket", "normal"], ["stopped"]]


def ending(sock: sslsocket.Socket) -> list[str]:
    """What ``sock``'s owner heard, to its ``socket_closed``: the kinds of packets, then how it closed."""
    heard = [expect(sock)]
    while heard[-1][0] != "socket_closed":
        heard.append(expect(sock))
    return [msg[0] for msg in heard[:-1]] + [getattr(heard[-1][1], "reason", heard[-1][1])]


def test_drain_waits_for_a_client_whose_thread_has_not_started_yet(certs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by a newcomer running docs/operations.rst: a client's socket is open from the end of its handshake,
    and its mediator's thread starts a moment later; a drain in that moment cut it, though its owner was about
    to close it. (Its peer is Python's ssl, so that the drain has this one socket to wait for.)"""
    from sslsocket import registry as registry_module
    from sslsocket.lifecycle import State
    from sslsocket.registry import registry

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.server)
    server = socket.create_server(("127.0.0.1", 0))

    def peer() -> None:
        raw, _ = server.accept()
        with context.wrap_socket(raw, server_side=True) as tls:
            while tls.recv(1024):
                pass

    peer_thread = threading.Thread(target=peer)
    peer_thread.start()
    began = threading.Event()
    start, wait_for_ends = sslsocket.Socket.start, registry_module._wait_for_ends

    def late_start(sock: sslsocket.Socket) -> None:
        began.wait(20)  # the client's thread starts only once the drain has chosen what to wait for
        start(sock)

    def drain_waits(*args: Any) -> None:
        began.set()
        wait_for_ends(*args)

    monkeypatch.setattr(sslsocket.Socket, "start", late_start)
    monkeypatch.setattr(registry_module, "_wait_for_ends", drain_waits)
    port = server.getsockname()[1]
    sslsocket.spawn(lambda: sslsocket.client("STREAM", "AF_INET", ("127.0.0.1", port), ("packet", 2), "").close())
    wait_for(lambda: any(s.state is State.OPEN and s.thread is None for s in registry.snapshot()[1]))
    try:
        assert sslsocket.drain(10) == (1, 0)
    finally:
        began.set()  # (if the drain failed to wait: the client goes on, and ends)
        peer_thread.join(10)
        server.close()


def test_a_supervisor_hears_of_a_crash_before_the_crashed_process_s_peer_does(
    certs: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process's monitors and links hear of its end before its sockets close: a supervisor learns of a crash no
    later than the clients of the crashed connection do. (The monitors are told late on purpose here, after up to
    a second's wait for the peer to hear of the close: if the close came first, it would have been heard.)"""
    client, server = pair(certs=certs)
    watchers_end = sslsocket.watchers.Watchers.end

    def late(self: Any, reason: Any) -> bool:
        if reason == "crashed on purpose":
            client.wait_closed(1)
        return watchers_end(self, reason)

    monkeypatch.setattr(sslsocket.watchers.Watchers, "end", late)

    def owner() -> None:
        sslsocket.receive(lambda m: m == "go")
        raise sslsocket.Exit("crashed on purpose", "crashed on purpose")

    pid, ref = sslsocket.spawn_monitor(owner)
    sslsocket.controlling_process(server, pid)
    pid.send("go")
    first = sslsocket.receive(lambda m: (isinstance(m, tuple) and m[:2] == ("DOWN", ref)) or m[0] is client)
    assert first[:2] == ("DOWN", ref), first
    assert expect(client)[0] == "socket_closed"


def test_exit_cuts_a_drain_short_and_leaves_the_connections_as_they_are(certs: Any) -> None:
    """drain waits with the process's one wait: ``exit`` ends it at once (serve's second SIGTERM), the connections
    still open left as they are, for ``stop()`` to cut."""
    client, server = pair(certs=certs)
    pid, ref = sslsocket.spawn_monitor(lambda: sslsocket.drain(60))
    wait_for(lambda: pid.waiting == "drain")
    sslsocket.exit(pid, "enough")
    assert down(ref, timeout=5)[4] == "enough"
    client.deliver("still open")
    assert expect(server) == ("fromsocket", "still open")
    client.close()
    assert expect(server) == ("socket_closed", "normal")
    server.close()
