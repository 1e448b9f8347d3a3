"""A process's ``Pid``: its mailbox, its one wait, its pending exit signal, the sockets it controls, and what it
watches (its monitors and links); ``process`` makes threads into processes.

All waiting of a process (``receive``, ``accept``, a ``deliver`` waiting for room) goes through ``Pid.wait_until``,
under the process's one lock, so ``exit(pid, reason)`` can interrupt whichever wait the process is in.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any, Protocol

from .errors import Exit, Timeout
from .watchers import Watchers

_ids = itertools.count(1)
#: Every process not yet collected, by id: what ``sslsocket.i()`` lists (the ended ones are left out there).
_processes: weakref.WeakValueDictionary[int, Pid] = weakref.WeakValueDictionary()


class Controlled(Protocol):
    """What a process's mailbox needs of a socket it controls."""

    def consumed(self, weight: int) -> object:
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
        msg[0].consumed(len(msg[1][1]) + MESSAGE_COST)  # (its weight, inlined: the path of every packet)
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
        self._exit: tuple[Any, Any] | None = None  # a pending exit signal: its reason, and the process it came from
        #: What this process watches, its monitors and links: key -> (whose ``watchers``, the key there).
        self._watching: dict[Hashable, tuple[Watchers, Hashable]] = {}
        #: Its thread's ``threading.get_ident()``, once it runs (0 before): a sender is checked without a lookup.
        self.ident = 0
        #: The exception that ended its thread, for a thread not started as a process (``_excepthook``).
        self.crash: BaseException | None = None
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
        true calls ``wake`` after (a message, an outcome for ``accept``, room in an inbox).

        The wait enlists (``_sleepers``) before its last look at ``ready()``: a wake that comes between that look
        and the block releases it all the same, even one from this very thread (a signal's handler, which Python
        runs between two bytecodes of the main thread, that sends to its own process); a condition variable, which
        enlists only as it blocks, would lose it."""
        with self._lock:
            sleeper = None
            try:
                while True:
                    if self._exit is not None:
                        self._raise_exit()
                    if ready():
                        return
                    if sleeper is None:  # enlisted, then one more look
                        sleeper = threading.Lock()
                        sleeper.acquire()
                        self._sleepers.append(sleeper)
                        continue
                    self.waiting = what
                    remaining = None if deadline is None else deadline - monotonic()
                    if remaining is not None and remaining <= 0:
                        raise Timeout(f"{what} timed out", "timeout")
                    saved = self._lock._release_save()  # type: ignore[attr-defined]  # (as Condition.wait does)
                    try:
                        woken = sleeper.acquire(
                            True, -1 if remaining is None else min(remaining, threading.TIMEOUT_MAX)
                        )
                    finally:
                        self._lock._acquire_restore(saved)  # type: ignore[attr-defined]
                    if woken:  # (and taken off the list by the wake)
                        sleeper = None
            finally:
                if sleeper is not None:
                    try:
                        self._sleepers.remove(sleeper)
                    except ValueError:
                        pass  # a wake took it off
                self.waiting = None

    def _new_locks(self) -> None:
        """``_lock`` guards the mailbox and the process's state; ``_sleepers`` are the waits enlisted, each a lock
        held until a wake releases it (more than one when a signal's handler waits during a wait)."""
        self._lock = threading.RLock()
        self._sleepers: list[threading.Lock] = []
        self.watchers.renew()

    def _notify(self) -> None:
        """Wake the process's thread if it waits (called under ``_lock``): every wait enlisted, each taken off by one
        ``pop`` and released once, though a signal's handler that wakes it too comes in the middle."""
        sleepers = self._sleepers
        while sleepers:
            try:
                sleeper = sleepers.pop()
            except IndexError:  # a handler took the last one meanwhile
                return
            sleeper.release()

    def receive(self, match: Callable[[Any], bool] | None, timeout: float | None) -> Any:
        """The oldest message for which ``match`` is true; the others stay, in order. Run by the owner only."""
        box = self._mailbox
        if match is None:  # a message there already, and no exit signal: taken at once, without the wait's machinery
            with self._lock:
                if box and self._exit is None:
                    self._taken += 1
                    return _received(box.popleft())
        deadline = None if timeout is None else monotonic() + timeout
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

    def exit(self, reason: Any, source: Any = None) -> None:
        """``sslsocket.exit(pid, reason)``: see there. ``source``: the linked process whose end this is."""
        with self._lock:
            if self._alive and self._exit is None:
                self._exit = (reason, source)
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
            reason, _ = self._exit
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

    def watch(self, key: Hashable, watchers: Watchers, key_there: Hashable) -> bool:
        """Record that this process watches something, whose ``watchers`` have it as ``key_there`` (a monitor, a
        link): what it hears of it goes through ``hear``, and its end takes it off there. False if it has ended."""
        with self._lock:
            if self._alive:
                self._watching[key] = (watchers, key_there)
            return self._alive

    def unwatch(self, key: Hashable) -> bool:
        """Stop watching (``demonitor``, ``unlink``): from now on ``hear`` of ``key`` says nothing."""
        with self._lock:
            return self._watching.pop(key, None) is not None

    def hear(self, key: Hashable, message: Any) -> bool:
        """What a watch has to say, once, and only while it is there: ``message`` goes to the mailbox. False if the
        watch was taken back (``demonitor`` before the ``DOWN`` came) or the process has ended."""
        with self._lock:
            if self._watching.pop(key, None) is None or not self._alive:
                return False
            self._mailbox.append(message)
            self._notify()
            return True

    def forget_exit_from(self, source: Any) -> None:
        """``unlink``: an exit signal from that process, pending still, has no effect any more."""
        with self._lock:
            if self._exit is not None and self._exit[1] is source:
                self._exit = None

    def _ended(self, reason: Any) -> bool:
        """The process ended, for ``reason`` (an exit signal still pending, if it ended normally): what it watched
        forgets it, its monitors and links hear why, and then its sockets close. False if nobody monitored or linked
        it (or it had ended already)."""
        with self._lock:
            if not self._alive:
                return False
            if reason == "normal":
                reason = self._exit[0] if self._exit is not None else self.crash or reason
            self._alive = False
            self.ident = 0  # (a thread that reuses its ident is not this process)
            sockets = list(self._sockets)
            self._sockets.clear()
            self._mailbox.clear()
            watching = list(self._watching.values())
            self._watching.clear()
            self._notify()
        for watchers, key in watching:
            watchers.remove(key)
        told = self.watchers.end(reason)  # first: a supervisor hears of the end before any peer does
        for sock in sockets:
            sock.owner_ended(self)
        return told


def processes() -> list[Pid]:
    """The processes alive now, oldest first: for ``sslsocket.i()``."""
    return sorted((pid for pid in list(_processes.values()) if pid.alive), key=lambda pid: pid.id)


def mailbox_length(pid: Pid) -> int:
    """How many messages wait in ``pid``'s mailbox."""
    return len(pid._mailbox)


def socket_count(pid: Pid) -> int:
    """How many sockets ``pid`` controls."""
    return len(pid._sockets)


def sent_by(sender: object) -> Callable[[Any], bool]:
    """A ``receive`` pattern, the manual's ``{Sender, _}``: a message whose first element is ``sender``."""
    return lambda msg: isinstance(msg, tuple) and len(msg) == 2 and msg[0] is sender


#: Why the child of a ``fork()`` hears that the parent's processes and sockets ended: they live on, but not here,
#: as an Erlang node's monitors and links hear of the processes of a node it lost its connection to.
NO_CONNECTION = "noconnection"


def forked(keep: Pid | None) -> None:
    """In a child after ``fork()``: every process but ``keep`` (the forking thread's) has ended, with locks of its
    own (a ``send`` to one must not wait on a lock that a thread of the parent's held at the fork); ``keep`` keeps
    its mailbox, with a lock of its own too, and hears of their end through its monitors and links
    (``NO_CONNECTION``)."""
    gone = []
    for other in list(_processes.values()):
        if other is not keep:
            other._new_locks()
            if other._alive:
                gone.append(other)
            other._alive = False
            other._mailbox.clear()
            other._sockets.clear()
    if keep is not None:
        keep._new_locks()
    for other in gone:
        other.watchers.end(NO_CONNECTION)
