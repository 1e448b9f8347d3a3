"""Processes, mailboxes, selective receive and exit signals: the manual's Erlang, as threads."""

from __future__ import annotations

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


def test_a_wake_that_comes_after_a_wait_timed_out_is_taken_back() -> None:
    """A process waits on a lock that ``_notify`` releases; when the wait times out and a notify comes before the
    waiter has the process's lock again, the waiter takes what that notify released: the next wait waits."""
    from sslsocket import process

    pid = process.Pid("waiter")
    real = pid._wakeup

    class TimesOutThenNotified:
        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if timeout > 0:  # the wait: it times out, and meanwhile another thread wakes the process
                other = threading.Thread(target=pid.wake)
                other.start()
                other.join()
                return False
            return real.acquire(blocking, timeout)

        def release(self) -> None:
            real.release()

    pid._wakeup = TimesOutThenNotified()  # type: ignore[assignment]
    with pid._lock:
        pid._wait(0.01)
    assert real.locked() and not pid._asleep
    pid._wakeup = real
    with pytest.raises(sslsocket.Timeout):  # and a receive waits its whole timeout, for nothing
        pid.receive(None, 0.05)


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


class _Wakeup:
    """A stand-in for a process's wake-up lock: runs ``during`` inside the wait's acquire, then the real one."""

    def __init__(self, real: Any, during: Any) -> None:
        self.real, self.during, self.results = real, during, []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking and self.during is not None:
            during, self.during = self.during, None
            during()
        got = self.real.acquire(blocking, timeout)
        if blocking:
            self.results.append(got)
        return got

    def release(self) -> None:
        self.real.release()


def test_a_wait_interrupted_after_it_was_woken_leaves_the_process_usable() -> None:
    """A signal's handler that raises (Ctrl-C) right after the wait took its wake-up: the exception goes up, the
    process's lock is free, and its wake-up held, ready for the next wait."""
    from sslsocket import process

    pid = process.Pid("interrupted")
    real = pid._wakeup

    class WokenThenInterrupted(_Wakeup):
        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if blocking:
                pid._notify()  # a sender's wake-up (the lock it would hold is the one the wait gave up)
                assert self.real.acquire(False)
                raise KeyboardInterrupt
            return self.real.acquire(blocking, timeout)

    pid._wakeup = WokenThenInterrupted(real, None)  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt), pid._lock:
        pid._wait(5)
    assert real.locked() and not pid._asleep and pid._waits == 0
    pid._wakeup = real
    pid.send("after")  # the lock is free: a sender gets through
    assert pid.receive(None, 5) == "after"


def test_a_wait_inside_a_wait_lets_the_outer_one_look_again() -> None:
    """A signal's handler in the main thread that receives while the thread waits in receive: woken by its
    message, it leaves a wake-up for the outer wait, which then finds its own message instead of sleeping on."""
    from sslsocket import process

    pid = process.Pid("nested")
    real = pid._wakeup

    def handler() -> None:  # as a handler runs: in the waiting thread, inside its acquire
        other = threading.Thread(target=lambda: (wait_for(lambda: pid._waits == 2), pid.send("inner")))
        other.start()
        assert pid.receive(lambda m: m == "inner", 30) == "inner"
        other.join()

    fake = _Wakeup(real, handler)
    pid._wakeup = fake  # type: ignore[assignment]
    with pid._lock:
        pid._wait(30)
    assert fake.results == [True, True]  # the inner wait was woken, and so was the outer, not timed out
    assert real.locked() and pid._waits == 0
