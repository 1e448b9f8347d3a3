"""Erlang's processes as threads: ``self``, ``spawn``, ``Pid.send``, selective ``receive`` and ``exit``.

Every thread is a process as soon as it asks for ``self()``; ``spawn`` starts a new one. A ``Pid`` holds the
process's mailbox, a pending exit signal, and the sockets it controls. When the thread ends (``spawn``'s wrapper
returns, or, for any other thread, its thread-local state is torn down), every socket it controls is closed, as the
manual says.

All waiting of a process (``receive``, ``accept``) goes through ``Pid.wait_until`` on the process's one condition
variable, so ``exit(pid, reason)`` can interrupt whichever wait the process is in.

>>> import sslsocket
>>> me = sslsocket.self()
>>> me.send(("first", 1))
>>> me.send("second")
>>> sslsocket.receive(lambda m: m == "second", timeout=1)  # selective: the first one stays
'second'
>>> sslsocket.receive(timeout=1)
('first', 1)
>>> def child(parent):
...     parent.send((sslsocket.self(), "hello from a new process"))
>>> pid = sslsocket.spawn(child, me)
>>> sslsocket.receive(timeout=5) == (pid, "hello from a new process")
True
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any, Protocol

from .errors import Exit, ListenClosed, Timeout
from .watchers import Watchers

log = logging.getLogger("sslsocket")
_ids = itertools.count(1)
_local = threading.local()
#: Every process not yet collected, by id: what ``sslsocket.i()`` lists (the ended ones are left out there).
_processes: weakref.WeakValueDictionary[int, Pid] = weakref.WeakValueDictionary()


class Controlled(Protocol):
    """What a process's mailbox needs of a socket it controls."""

    def consumed(self, weight: int) -> None:
        """The process received one of the socket's packets (a ``Delivery`` of this weight)."""

    def owner_ended(self, pid: Pid) -> None:
        """The process ended: the socket closes, unless it has been handed on."""


class Delivery(tuple):  # type: ignore[type-arg]
    """A ``(sock, ("fromsocket", data))`` message: a plain tuple to whoever receives it, and a marker to the
    mailbox, which tells the socket when it has been received (``consumed``), so that a socket can stop reading
    from the network while its owner has too much of it waiting."""

    __slots__ = ()

    @property
    def weight(self) -> int:
        """What this message counts against its socket's share of the mailbox: its bytes and a fixed cost."""
        return len(self[1][1]) + MESSAGE_COST


#: What one waiting message costs beyond its data (a tuple, a str or bytes object): so that a flood of empty
#: packets is bounded too.
MESSAGE_COST = 64


def _received(msg: Any) -> Any:
    if type(msg) is Delivery:
        msg[0].consumed(msg.weight)
    return msg


class Pid:
    """A process: the target of ``send``, with a mailbox read by ``receive`` in the process's own thread."""

    def __init__(self, name: str) -> None:
        self.id = next(_ids)
        self.name = name
        #: Its monitors and links (``sslsocket.monitor``, ``link``), told why it ended.
        self.watchers = Watchers()
        #: ``process_flag("trap_exit", True)``: its links' ends come as ``("EXIT", pid, reason)`` messages.
        self.trap_exit = False
        self._new_locks()
        self._mailbox: deque[Any] = deque()
        self._taken = 0  # how many times messages were taken out of the mailbox: a scan of it is stale if it moved
        self._exit: tuple[Any] | None = None
        self._interrupt: Callable[[], None] | None = None  # cuts short the work ``exit`` must interrupt (``working``)
        self._alive = True
        self._sockets: set[Controlled] = set()
        #: What the process waits in now (``"receive"``, ``"accept on ..."``, ``"client"``), or None.
        self.waiting: str | None = None
        _processes[self.id] = self

    def __repr__(self) -> str:
        return f"<Pid 0.{self.id}.0 {self.name}{'' if self._alive else ' (ended)'}>"

    @property
    def alive(self) -> bool:
        """False once the process's thread has ended."""
        return self._alive

    def send(self, msg: Any) -> None:
        """``Pid ! Msg``: put ``msg`` at the end of the mailbox. A message to an ended process is dropped."""
        with self._lock:
            if self._alive:
                self._mailbox.append(msg)
                self._notify()

    def post_many(self, msgs: list[Any]) -> bool:
        """Append several messages at once, in order. False when the process has ended."""
        with self._lock:
            if not self._alive:
                return False
            self._mailbox.extend(msgs)
            self._notify()
            return True

    def wake(self) -> None:
        """Make a waiting ``wait_until`` look again at its condition."""
        with self._lock:
            self._notify()

    def wait_until(self, ready: Callable[[], bool], deadline: float | None, what: str = "wait") -> None:
        """The one wait of a process: block until ``ready()`` (evaluated under the process's lock), raising ``Exit``
        on an exit signal and ``Timeout`` once ``time.monotonic()`` passes ``deadline``. Whatever makes ``ready()``
        true calls ``wake`` after (a message, an outcome for ``accept``, room in an inbox)."""
        with self._lock:
            try:
                while True:
                    self._raise_exit()
                    if ready():
                        return
                    self.waiting = what
                    remaining = None if deadline is None else deadline - monotonic()
                    if remaining is not None and remaining <= 0:
                        raise Timeout(f"{what} timed out", "timeout")
                    self._waits += 1
                    try:
                        self._changed.wait(remaining)
                    finally:
                        self._waits -= 1
            finally:
                self.waiting = None

    def _new_locks(self) -> None:
        """``_lock`` guards the mailbox and the process's state; ``_changed`` is its condition, waited on only by
        the process's own thread (more than once when a signal's handler waits during a wait), and notified only
        while someone waits (``_waits``)."""
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._waits = 0
        self.watchers.renew()

    def _notify(self) -> None:
        """Wake the process's thread if it waits (called under ``_lock``)."""
        if self._waits:
            self._changed.notify_all()

    def receive(self, match: Callable[[Any], bool] | None, timeout: float | None) -> Any:
        """The oldest message for which ``match`` is true; the others stay, in order. Run by the owner only."""
        deadline = None if timeout is None else monotonic() + timeout
        box = self._mailbox
        found: list[Any] = []
        if match is None:

            def ready() -> bool:
                if box:
                    self._taken += 1
                    found.append(_received(box.popleft()))
                return bool(found)

        else:
            checked, seen = 0, self._taken

            def ready() -> bool:  # looks only at what came since it last looked, unless something was taken since
                nonlocal checked, seen
                while True:
                    if seen != self._taken:  # a receive in a signal's handler, or controlling_process
                        checked, seen = 0, self._taken
                    end = len(box)
                    index = self._match(match, checked, end, seen)
                    if index is None:
                        checked = end
                        return False
                    if index >= 0:
                        self._taken += 1
                        found.append(_received(box[index]))
                        del box[index]
                        return True

        self.wait_until(ready, deadline, "receive")
        return found[0]

    def _match(self, match: Callable[[Any], bool], start: int, end: int, seen: int) -> int | None:
        """The index of the first message from ``start`` to ``end`` that matches, None if none does, or -1 if
        ``match`` took part of the mailbox meanwhile (a signal's handler received): look again."""
        box = self._mailbox
        for index in range(start, end):
            matched = match(box[index])
            if seen != self._taken:
                return -1
            if matched:
                return index
        return None

    def take(self, match: Callable[[Any], bool]) -> list[Any]:
        """Remove and return, in order, every waiting message that ``match``es, without waiting: for
        ``controlling_process`` (a socket's messages) and ``demonitor`` (a ``DOWN`` already there)."""
        with self._lock:
            mine = [m for m in self._mailbox if match(m)]
            if mine:
                self._taken += 1
                rest = [m for m in self._mailbox if not match(m)]
                self._mailbox.clear()
                self._mailbox.extend(rest)
            return mine

    def exit(self, reason: Any) -> None:
        """``sslsocket.exit(pid, reason)``: see there."""
        with self._lock:
            if self._alive and self._exit is None:
                self._exit = (reason,)
            self._notify()
            interrupt = self._interrupt
        if interrupt is not None:
            interrupt()

    @contextmanager
    def working(self, what: str, interrupt: Callable[[], None]) -> Iterator[None]:
        """The process works in its own thread at something that is not a wait for a condition, and that ``exit``
        must cut short (``client``'s handshake, whose waits are its socket's): ``exit`` calls ``interrupt``, at
        once if the signal came before. The signal stays pending: the worker calls ``check_exit`` after."""
        with self._lock:
            self._interrupt = interrupt
            pending = self._exit is not None
        self.waiting = what
        try:
            if pending:
                interrupt()
            yield
        finally:
            with self._lock:
                self._interrupt = None
            self.waiting = None

    @property
    def exiting(self) -> bool:
        """Whether an exit signal is pending."""
        return self._exit is not None

    def check_exit(self) -> None:
        """Raise ``Exit`` if an exit signal is pending (and consume it)."""
        with self._lock:
            self._raise_exit()

    def _raise_exit(self) -> None:
        if self._exit is not None:
            (reason,) = self._exit
            self._exit = None
            raise Exit(f"exit signal from another process: {reason!r}", reason)

    def adopt(self, sock: Controlled) -> bool:
        """Record that this process controls ``sock``; False when the process has ended."""
        with self._lock:
            if self._alive:
                self._sockets.add(sock)
            return self._alive

    def release(self, sock: Controlled) -> None:
        """Forget that this process controls ``sock`` (it was handed on, or it ended)."""
        with self._lock:
            self._sockets.discard(sock)

    def _ended(self, reason: Any) -> bool:
        """The process ended, for ``reason``: its sockets close, its monitors and links hear why. False if nobody
        monitored or linked it."""
        with self._lock:
            self._alive = False
            sockets = list(self._sockets)
            self._sockets.clear()
            self._mailbox.clear()
            self._notify()
        for sock in sockets:
            sock.owner_ended(self)
        return self.watchers.end(reason)


def self() -> Pid:
    """The calling thread's process, made on first use (or by ``of_thread``, before)."""
    pid: Pid | None = getattr(_local, "pid", None)
    if pid is None:
        thread = threading.current_thread()
        with _threads_lock:
            pid = _threads.get(thread)
            if pid is None:
                pid = _threads[thread] = Pid(thread.name)
        _local.pid = pid
        _mark(pid)
    return pid


#: The process of every thread that has one, or was given one before it asked (``of_thread``).
_threads: weakref.WeakKeyDictionary[threading.Thread, Pid] = weakref.WeakKeyDictionary()
_threads_lock = threading.Lock()


def of_thread(thread: threading.Thread) -> Pid:
    """The process of a ``threading.Thread``, started or not: the one ``self()`` returns in that thread. A thread
    not started yet is that process from its first step, and its end ends it (closing the sockets it controls), so
    that the legacy pattern works: ``t = Thread(target=handle, args=(sock,))``, ``controlling_process(sock, t)``,
    ``t.start()``. A thread already running ends its process once it has used the library itself."""
    if thread is threading.current_thread():
        return self()
    with _threads_lock:
        pid = _threads.get(thread)
        if pid is None:
            pid = _threads[thread] = Pid(thread.name)
            if thread.ident is None:  # not started: it runs as this process from its first step
                run = thread.run
                thread.run = lambda: _run_as(pid, run)  # type: ignore[method-assign]
    return pid


def as_pid(who: Any) -> Any:
    """``who``, or the process of ``who`` if it is a ``threading.Thread``: whatever takes a ``Pid`` takes one."""
    return of_thread(who) if isinstance(who, threading.Thread) else who


class _Marker:
    pass


def _mark(pid: Pid) -> None:
    """Thread-local state is dropped when its thread ends, whoever started the thread: that is our signal."""
    _local.marker = marker = _Marker()
    weakref.finalize(marker, _thread_ended, pid, os.getpid())


def _thread_ended(pid: Pid, born_in: int) -> None:
    """A thread that was a process has ended, or, in a child after ``fork()``, is not there: CPython drops the other
    threads' state in the child before any at-fork hook runs. Only the first is an end: the second would take locks
    that a thread of the parent may have held at the fork (the child hung inside ``os.fork()``), and end what is the
    parent's."""
    if os.getpid() == born_in:
        pid._ended("normal")


def processes() -> list[Pid]:
    """The processes alive now, oldest first: for ``sslsocket.i()``."""
    return sorted((pid for pid in list(_processes.values()) if pid.alive), key=lambda pid: pid.id)


def mailbox_length(pid: Pid) -> int:
    """How many messages wait in ``pid``'s mailbox."""
    return len(pid._mailbox)


def socket_count(pid: Pid) -> int:
    """How many sockets ``pid`` controls."""
    return len(pid._sockets)


def forked() -> None:
    """In a child after ``fork()``, only the forking thread is left: its process keeps its mailbox, with a lock of
    its own, which a thread of the parent's may have held at the fork. The others' threads are not here: their
    processes have ended, with locks of their own (a ``send`` to one must not wait on a lock held for ever)."""
    global _threads_lock
    _threads_lock = threading.Lock()  # a thread of the parent's may have held it at the fork
    pid: Pid | None = getattr(_local, "pid", None)
    for other in list(_processes.values()):
        if other is not pid:
            other._new_locks()
            other._alive = False
            other._mailbox.clear()
            other._sockets.clear()
    if pid is not None:
        pid._new_locks()
        if getattr(_local, "marker", None) is not None:
            _mark(pid)  # the forking thread goes on in the child: its end is the child's to act on


def end_thread_process() -> None:
    """End the calling thread's process, if it made one, as the thread's own end would: for a library thread that
    goes on to other work (a mediator thread that will serve the next connection)."""
    if getattr(_local, "marker", None) is not None:
        pid = _local.pid
        del _local.pid, _local.marker  # the marker's finalizer ends the process
        assert not pid.alive


def spawn(func: Callable[..., object], *args: object) -> Pid:
    """Start ``func(*args)`` in a new process (a daemon thread) and return its ``Pid``.

    The process ends when ``func`` returns (reason ``"normal"``), or by what it raised: an uncaught ``Exit`` ends it
    quietly with the exit's reason, as an exit signal ends an Erlang process; the ``ListenClosed`` of an ``accept``
    whose listen socket was closed (or ``Stopped``, by ``stop()``) with ``"shutdown"``, an orderly end; any other
    exception with that exception, logged on the ``sslsocket`` logger unless someone monitors or links the process.
    """
    return start(Pid(getattr(func, "__name__", "process")), func, *args)


def start(pid: Pid, func: Callable[..., object], *args: object) -> Pid:
    """Run ``func(*args)`` as ``pid``, made but not yet running, in a new daemon thread: for ``spawn``, and for
    ``spawn_monitor`` and ``spawn_link``, which watch the process before it runs."""
    threading.Thread(target=_run_as, args=(pid, func, *args), name=f"process-{pid.id}-{pid.name}", daemon=True).start()
    return pid


def _run_as(pid: Pid, func: Callable[..., object], *args: object) -> None:
    """Be ``pid`` in this thread, run ``func(*args)``, and end the process with why it ended (see ``spawn``)."""
    _local.pid = pid
    error: BaseException | None = None
    reason: Any = "normal"
    try:
        func(*args)
    except Exit as exc:
        reason = exc.reason
    except ListenClosed:
        reason = "shutdown"
    except BaseException as exc:  # (told to its watchers, or logged: never lost)
        reason = error = exc
    if not pid._ended(reason) and error is not None:
        log.error("%r ended by an exception", pid, exc_info=error)


def sent_by(sender: object) -> Callable[[Any], bool]:
    """A ``receive`` pattern, the manual's ``{Sender, _}``: a message whose first element is ``sender``."""
    return lambda msg: isinstance(msg, tuple) and len(msg) == 2 and msg[0] is sender


def receive(match: Callable[[Any], bool] | None = None, timeout: float | None = None) -> Any:
    """``receive ... after``: the oldest message in the calling process's mailbox for which ``match(msg)`` is
    true (any message when ``match`` is None). Raises ``Timeout`` (a ``TimeoutError``) after ``timeout`` seconds."""
    return self().receive(match, timeout)


def exit(pid: Pid | threading.Thread, reason: Any) -> None:
    """``exit(Pid, Reason)``: ``pid``, blocked in ``accept`` or ``receive`` (or, beyond the manual, in ``client``
    or in a ``deliver`` waiting for room, whose packet is then not sent) now or later, raises ``Exit(reason)``. A
    ``threading.Thread`` stands for its process."""
    as_pid(pid).exit(reason)
