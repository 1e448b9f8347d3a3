"""Erlang's processes as threads: ``self``, ``spawn``, ``Pid.send``, selective ``receive`` and ``exit``.

Every thread is a process as soon as it asks for ``self()``; ``spawn`` starts a new one. A ``Pid`` holds the
process's mailbox, a pending exit signal, and the sockets it controls. When the thread ends (``spawn``'s wrapper
returns, or, for any other thread, its thread-local state is torn down), every socket it controls is closed, as the
manual says.

A ``Pid`` and its mailbox are in ``mailbox``; this module says which thread is which process, and how a process
ends, and why (``spawn``'s reasons), for its monitors and links.

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

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from . import mailbox
from .errors import BadArgument, Exit, ListenClosed
from .mailbox import Pid, sent_by

__all__ = [
    "Pid",
    "as_pid",
    "end_thread_process",
    "exit",
    "forked",
    "new",
    "of_thread",
    "receive",
    "self",
    "sent_by",
    "spawn",
    "start",
]

log = logging.getLogger("sslsocket")


class _Local(threading.local):
    """The calling thread's process, once it has one, and the marker that tells of the thread's end (``_mark``).
    Defaults in the class: a thread without them reads None, not an ``AttributeError`` caught (0.06 against 0.39 µs,
    the path of every ``receive``)."""

    pid: Pid | None = None
    marker: _Marker | None = None


_local = _Local()


def self() -> Pid:
    """The calling thread's process, made on first use (or by ``of_thread``, before)."""
    pid: Pid | None = _local.pid
    if pid is None:
        thread = threading.current_thread()
        with _threads_lock:
            pid = _threads.get(thread)
            if pid is None:
                pid = _threads[thread] = Pid(thread.name)
        _local.pid = pid
        pid.ident = threading.get_ident()
        _mark(pid)
    return pid


#: The process of every thread that has one, or was given one before it asked (``of_thread``).
_threads: weakref.WeakKeyDictionary[threading.Thread, Pid] = weakref.WeakKeyDictionary()
_threads_lock = threading.Lock()


def of_thread(thread: threading.Thread) -> Pid:
    """The process of a ``threading.Thread``, started or not: the one ``self()`` returns in that thread. A thread
    not started yet is that process from its first step, and its end ends it (closing the sockets it controls), so
    that the legacy pattern works: ``t = Thread(target=handle, args=(sock,))``, ``controlling_process(sock, t)``,
    ``t.start()``. A thread running already ends its process when it ends (a thread of the library's joins it),
    and one that has ended is a process that has ended (a monitor of it hears ``"noproc"``)."""
    if thread is threading.current_thread():
        return self()
    with _threads_lock:
        pid = _threads.get(thread)
        if pid is not None:
            return pid
        pid = _threads[thread] = Pid(thread.name)
        if thread.ident is None:  # not started: it runs as this process from its first step
            run = thread.run
            thread.run = lambda: _run_as(pid, run)  # type: ignore[method-assign]
            return pid
    if thread.is_alive():
        threading.Thread(target=_reap, args=(thread, pid), name=f"process-{pid.id}-end", daemon=True).start()
    else:
        pid._ended("noproc")
    return pid


def _reap(thread: threading.Thread, pid: Pid) -> None:
    """Wait for a thread that was running when it was given a process, then end that process."""
    thread.join()
    pid._ended("normal")


def as_pid(who: Any) -> Any:
    """``who``, or the process of ``who`` if it is a ``threading.Thread``: whatever takes a ``Pid`` takes one."""
    return of_thread(who) if isinstance(who, threading.Thread) else who


class _Marker:
    pass


def _mark(pid: Pid) -> None:
    """Thread-local state is dropped when its thread ends, whoever started the thread: that is our signal."""
    _local.marker = marker = _Marker()
    weakref.finalize(marker, _thread_ended, pid, os.getpid())


def _excepthook(args: Any) -> None:
    """``threading.excepthook``, for a thread that is a process but was not started as one: the exception that ends
    it is its process's reason, for its monitors and links; then the hook that was there reports it, as before."""
    pid = _local.pid
    if pid is not None and args.thread is threading.current_thread():
        pid.crash = args.exc_value
    _previous_excepthook(args)


_previous_excepthook = threading.excepthook
threading.excepthook = _excepthook


def _thread_ended(pid: Pid, born_in: int) -> None:
    """A thread that was a process has ended, or, in a child after ``fork()``, is not there: CPython drops the other
    threads' state in the child before any at-fork hook runs. Only the first is an end: the second would take locks
    that a thread of the parent may have held at the fork (the child hung inside ``os.fork()``), and end what is the
    parent's."""
    if os.getpid() == born_in:
        pid._ended("normal")


def forked() -> None:
    """In a child after ``fork()``, only the forking thread is left: its process keeps its mailbox, with a lock of
    its own, which a thread of the parent's may have held at the fork. The others' threads are not here: their
    processes have ended, with locks of their own (a ``send`` to one must not wait on a lock held for ever)."""
    global _threads_lock
    _threads_lock = threading.Lock()  # a thread of the parent's may have held it at the fork
    pid: Pid | None = _local.pid or _threads.get(threading.current_thread())
    mailbox.forked(pid)
    if pid is not None:
        pid.ident = threading.get_ident()
    if pid is not None and _local.marker is not None:
        _mark(pid)  # the forking thread goes on in the child: its end is the child's to act on


def end_thread_process() -> None:
    """End the calling thread's process, if it made one, as the thread's own end would: for a library thread that
    goes on to other work (a mediator thread that will serve the next connection)."""
    if _local.marker is not None:
        pid = _local.pid
        with _threads_lock:
            _threads.pop(threading.current_thread(), None)  # the thread's next process is a new one
        del _local.pid, _local.marker  # the marker's finalizer ends the process
        assert pid is not None and not pid.alive


def spawn(func: Callable[..., object], *args: object) -> Pid:
    """Start ``func(*args)`` in a new process (a daemon thread) and return its ``Pid``.

    The process ends when ``func`` returns (reason ``"normal"``), or by what it raised: an uncaught ``Exit`` ends it
    quietly with the exit's reason, as an exit signal ends an Erlang process; the ``ListenClosed`` of an ``accept``
    whose listen socket was closed (or ``Stopped``, by ``stop()``) with ``"shutdown"``, an orderly end; any other
    exception with that exception, logged on the ``sslsocket`` logger unless someone monitors or links the process.
    """
    return start(new(func), func, *args)


def new(func: Callable[..., object]) -> Pid:
    """A process for ``func``, not running yet (see ``start``)."""
    if not callable(func):
        raise BadArgument(f"a process runs a function, not {func!r}", ("bad_argument", func))
    return Pid(getattr(func, "__name__", "process"))


def start(pid: Pid, func: Callable[..., object], *args: object) -> Pid:
    """Run ``func(*args)`` as ``pid``, made but not yet running, in a new daemon thread: for ``spawn``, and for
    ``spawn_monitor`` and ``spawn_link``, which watch the process before it runs."""
    threading.Thread(target=_run_as, args=(pid, func, *args), name=f"process-{pid.id}-{pid.name}", daemon=True).start()
    return pid


def _run_as(pid: Pid, func: Callable[..., object], *args: object) -> None:
    """Be ``pid`` in this thread, run ``func(*args)``, and end the process with why it ended (see ``spawn``)."""
    _local.pid = pid
    pid.ident = threading.get_ident()
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


def receive(match: Callable[[Any], bool] | None = None, timeout: float | None = None) -> Any:
    """``receive ... after``: the oldest message in the calling process's mailbox for which ``match(msg)`` is
    true (any message when ``match`` is None). Raises ``Timeout`` (a ``TimeoutError``) after ``timeout`` seconds."""
    pid: Pid | None = _local.pid
    return (pid or self()).receive(match, timeout)


def exit(pid: Pid | threading.Thread, reason: Any) -> None:
    """``exit(Pid, Reason)``: ``pid``, blocked in ``accept`` or ``receive`` (or, beyond the manual, in ``client``
    or in a ``deliver`` waiting for room, whose packet is then not sent) now or later, raises ``Exit(reason)``. A
    ``threading.Thread`` stands for its process."""
    as_pid(pid).exit(reason)
