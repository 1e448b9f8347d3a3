"""Processes, mailboxes, selective receive and exit signals: the manual's Erlang, as threads."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

import pytest

import sslsocket

from helpers import wait_for


def test_self_is_stable_per_thread_and_distinct_between_threads() -> None:
    me = sslsocket.self()
    assert sslsocket.self() is me
    others: list[sslsocket.Pid] = []
    thread = threading.Thread(target=lambda: others.append(sslsocket.self()))
    thread.start()
    thread.join()
    assert others[0] is not me
    assert len({me, others[0]}) == 2  # hashable
    assert repr(me).startswith("<Pid 0.") and "MainThread" in repr(me)


def test_send_and_receive_in_order() -> None:
    me = sslsocket.self()
    for i in range(5):
        me.send(("n", i))
    assert [sslsocket.receive(timeout=1) for _ in range(5)] == [("n", i) for i in range(5)]


def test_selective_receive_leaves_the_others_in_order() -> None:
    me = sslsocket.self()
    for msg in ["a", 1, "b", 2, "c"]:
        me.send(msg)
    assert sslsocket.receive(lambda m: isinstance(m, int), timeout=1) == 1
    assert sslsocket.receive(lambda m: isinstance(m, int), timeout=1) == 2
    assert [sslsocket.receive(timeout=1) for _ in range(3)] == ["a", "b", "c"]


def test_selective_receive_waits_for_a_later_match() -> None:
    me = sslsocket.self()
    me.send("early")

    def later() -> None:
        wait_for(lambda: me.waiting == "receive")  # the receive below waits already
        me.send("skip")
        me.send(("wanted", 7))

    sslsocket.spawn(later)
    assert sslsocket.receive(lambda m: isinstance(m, tuple), timeout=5) == ("wanted", 7)
    assert sslsocket.receive(timeout=1) == "early"
    assert sslsocket.receive(timeout=1) == "skip"


def test_receive_timeout_raises_timeout_error() -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        sslsocket.receive(timeout=0.05)
    assert time.monotonic() - start >= 0.05
    with pytest.raises(sslsocket.Timeout):
        sslsocket.receive(timeout=0)


def test_spawn_runs_the_function_with_its_arguments_and_own_pid() -> None:
    me = sslsocket.self()

    def child(parent: sslsocket.Pid, value: int) -> None:
        parent.send((sslsocket.self(), value * 2))

    pid = sslsocket.spawn(child, me, 21)
    sender, value = sslsocket.receive(timeout=5)
    assert sender is pid and value == 42
    assert pid is not me


def test_exit_interrupts_a_blocked_receive() -> None:
    me = sslsocket.self()

    def child(parent: sslsocket.Pid) -> None:
        try:
            sslsocket.receive()
        except sslsocket.Exit as exc:
            parent.send(("exited", exc.reason))

    pid = sslsocket.spawn(child, me)
    wait_for(lambda: pid.waiting == "receive")
    sslsocket.exit(pid, "abort")
    assert sslsocket.receive(timeout=5) == ("exited", "abort")


def test_exit_before_receive_is_raised_when_it_is_entered() -> None:
    me = sslsocket.self()
    sslsocket.exit(me, "later")
    with pytest.raises(sslsocket.Exit) as info:
        sslsocket.receive(timeout=5)
    assert info.value.reason == "later"
    me.send("still works")
    assert sslsocket.receive(timeout=1) == "still works"


def test_an_uncaught_exit_ends_a_spawned_process_quietly() -> None:
    def child() -> None:
        sslsocket.receive()

    pid = sslsocket.spawn(child)
    sslsocket.exit(pid, "kill")
    wait_for(lambda: not pid.alive)
    assert "ended" in repr(pid)


def test_messages_to_an_ended_process_are_dropped() -> None:
    pid = sslsocket.spawn(lambda: None)
    wait_for(lambda: not pid.alive)
    pid.send("lost")  # no error, as in Erlang
    assert not pid.alive


def test_a_receive_that_timed_out_leaves_no_wake_up_behind() -> None:
    """A message that comes as a wait times out is found by the next receive, and a receive after that waits its
    whole timeout: nothing left over wakes it early."""
    me = sslsocket.self()
    for _ in range(200):
        other = threading.Thread(target=me.send, args=("late",))
        other.start()
        with pytest.raises(sslsocket.Timeout):
            sslsocket.receive(lambda m: m == "never", timeout=0.0001)
        other.join()
        assert sslsocket.receive(timeout=5) == "late"
    started = time.monotonic()
    with pytest.raises(sslsocket.Timeout):
        sslsocket.receive(timeout=0.05)
    assert time.monotonic() - started >= 0.05


def test_a_message_sent_while_the_process_waits_wakes_it_at_once() -> None:
    got: list[object] = []
    me = sslsocket.self()

    def waiter() -> None:
        got.append(sslsocket.receive(timeout=30))
        me.send("received")

    pid = sslsocket.spawn(waiter)
    wait_for(lambda: pid.waiting == "receive")
    pid.send("hello")
    assert sslsocket.receive(timeout=30) == "received"  # long before the 30 s: woken, not timed out
    assert got == ["hello"]


needs_signals = pytest.mark.skipif(
    not hasattr(signal, "pthread_kill"), reason="Windows has no signal to interrupt a waiting thread with"
)


def _signal_main_when_it_waits() -> threading.Thread:
    """A thread that sends SIGUSR1 to the main thread once that waits in ``receive``."""
    me = sslsocket.self()

    def kill() -> None:
        wait_for(lambda: me.waiting == "receive", 30)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    thread = threading.Thread(target=kill)
    thread.start()
    return thread


@needs_signals
def test_a_wait_interrupted_by_a_signal_leaves_the_process_usable() -> None:
    """A signal's handler that raises (Ctrl-C) in a wait: the exception goes up, and the process's lock is free
    for the next sender and the next wait."""
    me = sslsocket.self()

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        killer = _signal_main_when_it_waits()
        with pytest.raises(Interrupted):
            sslsocket.receive(timeout=30)
        killer.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    sender = threading.Thread(target=me.send, args=("after",))
    sender.start()
    assert sslsocket.receive(lambda m: m == "after", timeout=30) == "after"
    sender.join()


@needs_signals
def test_a_signal_s_handler_that_sends_to_its_own_waiting_process_wakes_it() -> None:
    """Found by a reviewer of serve's signals: a handler that sends to the main thread's own process, run after the
    wait had looked at its mailbox and before it blocked, woke no one (a condition variable enlists only as it
    blocks), and the message waited for the next one."""
    me, watchdog = sslsocket.self(), []

    def look(msg: Any) -> bool:  # the wait's look at its mailbox: the signal comes now, before it blocks
        if msg == "look":
            signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
        return bool(msg == "from the handler")

    old = signal.signal(signal.SIGUSR1, lambda signum, frame: me.send("from the handler"))
    timer = threading.Timer(20, lambda: (watchdog.append("fired"), me.send("watchdog")))  # only if it was lost
    try:
        me.send("look")
        timer.start()
        assert sslsocket.receive(look) == "from the handler"
        assert watchdog == []
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, old)


@needs_signals
def test_no_wake_is_lost_among_senders_exits_and_a_signal_s_handler_that_sends() -> None:
    """Three thousand waits under a thread switch every microsecond, each ended by what it waits for: a message
    from another thread, an exit signal from another thread, or a message from a signal's handler in the waiting
    thread itself. A lost wake would leave one to its 30 s timeout."""
    me, main = sslsocket.self(), threading.get_ident()
    interval = sys.getswitchinterval()
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: me.send("from the handler"))
    sys.setswitchinterval(1e-6)
    try:
        for i in range(3000):
            if i % 3 == 0:
                other = threading.Thread(target=me.send, args=(i,))
                other.start()
                assert sslsocket.receive(lambda m, i=i: m == i, timeout=30) == i
            elif i % 3 == 1:
                other = threading.Thread(target=sslsocket.exit, args=(me, i))
                other.start()
                with pytest.raises(sslsocket.Exit) as caught:
                    sslsocket.receive(lambda m: m == "never", timeout=30)
                assert caught.value.reason == i
            else:
                other = threading.Thread(target=signal.pthread_kill, args=(main, signal.SIGUSR1))
                other.start()
                assert sslsocket.receive(lambda m: m == "from the handler", timeout=30) == "from the handler"
            other.join()
    finally:
        sys.setswitchinterval(interval)
        signal.signal(signal.SIGUSR1, old)


def test_a_wake_in_the_middle_of_a_wake_releases_each_wait_once() -> None:
    """Found by a reviewer: a signal's handler that wakes a process between two bytecodes of another wake of it
    released a wait twice (RuntimeError: release unlocked lock). A tracer plays the handler at each bytecode of the
    wake in turn, with two waits enlisted (a wait, and one in a handler during it)."""
    from sslsocket.mailbox import Pid

    pid, tried = Pid("woken"), 0
    while True:
        sleepers = [threading.Lock(), threading.Lock()]
        seen = 0

        def step(frame: Any, event: str, arg: Any, at: int = tried) -> Any:
            nonlocal seen
            frame.f_trace_opcodes = True  # (3.13 takes it here, not in the call event)
            if event == "opcode":
                if seen == at:
                    pid.wake()  # the handler (a tracer is not traced)
                seen += 1
            return step

        def enter(frame: Any, event: str, arg: Any) -> Any:
            if frame.f_code is Pid._notify.__code__:
                frame.f_trace_opcodes = True
                return step
            return None

        with pid._lock:
            for sleeper in sleepers:
                sleeper.acquire()
                pid._sleepers.append(sleeper)
            sys.settrace(enter)
            try:
                pid.wake()
            finally:
                sys.settrace(None)
            assert pid._sleepers == [] and not any(sleeper.locked() for sleeper in sleepers), tried
        if seen <= tried:  # every bytecode of the wake has had its turn
            break
        tried += 1
    if tried == 0:
        pytest.skip("this Python's sys.settrace gives no opcode events (CPython 3.12.1): no bytecode to play at")


@needs_signals
def test_a_wait_inside_a_wait_lets_the_outer_one_look_again() -> None:
    """A signal's handler that receives while the main thread waits in receive: both are woken by their messages,
    the outer one too, not left to its timeout."""
    me = sslsocket.self()
    got: list[object] = []
    in_handler = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        in_handler.set()
        got.append(sslsocket.receive(lambda m: m == "inner", timeout=30))

    def sender() -> None:
        in_handler.wait(30)
        me.send("inner")
        wait_for(lambda: got)
        me.send("outer")

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        killer = _signal_main_when_it_waits()
        other = threading.Thread(target=sender)
        other.start()
        started = time.monotonic()
        assert sslsocket.receive(lambda m: m == "outer", timeout=30) == "outer"
        assert time.monotonic() - started < 25 and got == ["inner"]
        killer.join()
        other.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
