"""What differs between Linux, macOS and Windows, in one place, so that the rest of the library is written once.

- **Waiting**: ``select.poll`` where the system has it (Linux, macOS, the BSDs); elsewhere (Windows) the
  ``selectors`` module's best, whose ``select`` takes sockets only, which is all a mediator waits on.
- **Waking**: an ``eventfd`` where there is one (Linux), else a connected socket pair, which every ``select`` takes.
- **What the peer has not yet taken**: Linux tells, byte by byte (``SIOCOUTQ``); elsewhere the answer is 0, and a
  closing socket counts as progressing only when a write of its completes.
- **Fork**: the hooks that reset a child are registered only where the system forks.
- **Reusing an address**: ``SO_REUSEADDR`` lets a server listen again at once on POSIX; on Windows the same option
  would let another program take a port in use, so there it is ``SO_EXCLUSIVEADDRUSE`` instead.
"""

from __future__ import annotations

import os
import select
import selectors
import socket
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from time import monotonic
from typing import Protocol

try:
    import fcntl
    import termios
except ImportError:  # Windows
    fcntl = termios = None  # type: ignore[assignment]

#: Whether the system has ``poll``; without it, the selectors' ``select`` (Windows: 512 sockets at most).
HAS_POLL = hasattr(select, "poll")
#: Whether the system forks (and can run hooks in the child).
HAS_FORK = hasattr(os, "register_at_fork")

if HAS_POLL:
    IN, OUT, HUP = select.POLLIN, select.POLLOUT, select.POLLHUP | select.POLLERR
else:  # the selectors' events; a hang-up shows as readable or writable there
    IN, OUT, HUP = selectors.EVENT_READ, selectors.EVENT_WRITE, 0

#: Whether the system tells how many bytes the peer has not yet acknowledged (Linux).
CAN_TELL_UNSENT = fcntl is not None and sys.platform.startswith("linux")
#: Sockets one ``select`` can wait on at most, where there is no ``poll``: Windows' ``FD_SETSIZE`` in CPython.
SELECT_LIMIT = 512


class Poller(Protocol):
    """Waits on a few file descriptors: ``register`` / ``modify`` / ``unregister`` them with ``IN`` and ``OUT``,
    then ``poll(timeout)`` (milliseconds, as ``select.poll`` takes them; None for ever) returns ``[(fd, events)]``."""

    def register(self, fd: int, events: int) -> None: ...
    def modify(self, fd: int, events: int) -> None: ...
    def unregister(self, fd: int) -> None: ...
    def poll(self, timeout: float | None) -> list[tuple[int, int]]: ...
    def close(self) -> None: ...


class _PollPoller:
    def __init__(self) -> None:
        self._poll = select.poll()
        self.register, self.modify, self.unregister = self._poll.register, self._poll.modify, self._poll.unregister
        self.poll = self._poll.poll  # (no call of Python between a sleeping thread and the system)

    def close(self) -> None:
        pass


class _SelectorPoller:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    def register(self, fd: int, events: int) -> None:
        self._selector.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._selector.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self._selector.unregister(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        return [(key.fd, events) for key, events in self._selector.select(None if timeout is None else timeout / 1000)]

    def close(self) -> None:
        self._selector.close()


def poller() -> Poller:
    """A new poller, the best the system has."""
    return _PollPoller() if HAS_POLL else _SelectorPoller()


class Waker:
    """A file descriptor that any thread can make readable, to wake a thread waiting in ``poll`` or ``select``:
    never a timer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # so that no poke writes to a descriptor number already reused
        self._closed = False
        self._pair: tuple[socket.socket, socket.socket] | None = None
        if hasattr(os, "eventfd"):
            self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:
            self._pair = reader, writer = socket.socketpair()
            reader.setblocking(False)
            writer.setblocking(False)
            self._fd = reader.fileno()

    def fileno(self) -> int:
        return self._fd

    def poke(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                if self._pair is None:
                    os.write(self._fd, b"\1\0\0\0\0\0\0\0")
                else:
                    self._pair[1].send(b"\1")
            except BlockingIOError:
                pass  # already readable: nobody sleeps unwoken

    def drain(self) -> None:
        try:
            if self._pair is None:
                os.read(self._fd, 8)
            else:
                self._pair[0].recv(4096)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            self._close_fds()

    def close_copy(self) -> None:
        """``close`` in a child after ``fork()``, where no other thread can hold the lock, and it may be held
        for ever by a thread of the parent's."""
        self._lock = threading.Lock()
        self._close_fds()

    def _close_fds(self) -> None:
        if self._closed:  # a child forked between a mediator's teardown and its leaving the registry
            return
        self._closed = True
        if self._pair is None:
            os.close(self._fd)
        else:
            for end in self._pair:
                end.close()


class Waits:
    """What a connection's last read and write waited for (0: try now, ``IN`` or ``OUT``), and what the TCP socket was
    ready for when ``poll`` last woke its thread."""

    __slots__ = ("read", "ready", "write")

    def __init__(self) -> None:
        self.read = self.write = self.ready = 0

    def may(self, wait: int) -> bool:
        """Whether an operation that waited for ``wait`` may be tried again."""
        return not wait or bool(self.ready & (wait | HUP))


class Sleeper:
    """Where one connection's thread sleeps: ``poll`` on its TCP socket, for what the caller asks, and on a waker
    that any thread may poke. One poller for the connection's life, told only of changes."""

    def __init__(self, fd: int) -> None:
        self.waker = Waker()
        self._fd = fd
        self._poller = poller()
        self._poller.register(self.waker.fileno(), IN)
        self._mask = 0

    def sleep(self, events: int, deadline: float | None) -> int:
        """Sleep until the TCP socket has one of ``events``, a poke, or the deadline (``time.monotonic()``).
        Returns what the TCP socket is ready for (0 when it was not what woke us)."""
        if events != self._mask:
            if not events:
                self._poller.unregister(self._fd)
            elif not self._mask:
                self._poller.register(self._fd, events)
            else:
                self._poller.modify(self._fd, events)
            self._mask = events
        ready = 0
        for fd, revents in self._poller.poll(None if deadline is None else max(0.0, deadline - monotonic()) * 1000):
            if fd == self._fd:
                ready = revents
            else:
                self.waker.drain()
        return ready

    def close(self) -> None:
        self.waker.close()
        self._poller.close()


def unsent(tcp: socket.socket) -> int:
    """The bytes a TCP socket holds that its peer has not yet acknowledged (Linux's ``SIOCOUTQ``), 0 where the
    system cannot say."""
    if not CAN_TELL_UNSENT:
        return 0
    try:
        return int.from_bytes(fcntl.ioctl(tcp.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"), sys.byteorder)
    except OSError:
        return 0


def reuse_address(sock: socket.socket) -> None:
    """Let a server listen again at once on a port it just left, and never let another take a port in use."""
    exclusive = getattr(socket, "SO_EXCLUSIVEADDRUSE", None)
    if exclusive is not None:  # Windows
        sock.setsockopt(socket.SOL_SOCKET, exclusive, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


#: Held while a connection's descriptor is made (and tracked) or closed, and across a ``fork()``: no child is made
#: with a descriptor half made or half closed (Python marks a socket closed before the system has closed it), which
#: it could not tell from its copies of the parent's objects, and so would keep open.
#: Re-entrant: a signal's handler that forks in the middle of a close would otherwise wait for ever (its child may
#: then keep that one connection open: the lesser harm).
_fork_guard = threading.RLock()


def no_fork() -> AbstractContextManager[bool]:
    """``with no_fork():`` a block that no ``fork()`` of another thread cuts into: the making of a descriptor and
    its tracking. (The guard itself, as the child's is a new one: no generator between a block and its lock.)"""
    return _fork_guard


def close_tcp(tcp: socket.socket) -> None:
    """Close a connection's TCP socket, never across a ``fork()``."""
    with _fork_guard:
        tcp.close()


def at_fork(hook: Callable[[], None]) -> None:
    """Run ``hook`` in every child right after a ``fork()``, where the system forks; the fork waits for the blocks
    of ``no_fork`` and ``close_tcp`` under way."""
    if HAS_FORK:
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_reset)
        os.register_at_fork(after_in_child=hook)


def _before_fork() -> None:
    _fork_guard.acquire()


def _after_fork_in_parent() -> None:
    _fork_guard.release()


def _reset() -> None:
    """In the child: the guard, taken by the forking thread for the fork, is this process's own now."""
    global _fork_guard
    _fork_guard = threading.RLock()
