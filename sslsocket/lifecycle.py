"""A connection's life: one state, the reason it is ending, and the clock of an orderly close. No sockets here.

::

    HANDSHAKING ---> OPEN ---> CLOSING ---> CLOSED
         |                        ^           ^
         +------------------------+-----------+

(``start`` failing, or a fork's child dropping its copy, goes to CLOSED from anywhere.)

The mediator thread moves the state. Other threads *ask* for the end, with an ``Ending``: the owner's close or its
process's end (an orderly close: everything delivered is written first), or an abort (``stop()``, a closed listen
socket, an aborted ``client``: at once). The first asked wins; an abort after an orderly close hurries it. An
owner that has closed hears nothing more, and has nothing more taken from it, whatever ending came first.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from time import monotonic
from typing import Any

from .errors import ConnectionBroken

#: How long an orderly close may wait for a peer that takes none of its bytes before it gives up on that peer. A
#: peer that reads, however slowly, gets everything that was delivered before the close.
CLOSE_TIMEOUT = 10.0


class State(enum.Enum):
    HANDSHAKING = "handshaking"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"

    __hash__ = object.__hash__  # members are singletons; Enum's own hash is a call of Python at every move


_NEXT = {
    State.HANDSHAKING: {State.OPEN, State.CLOSING, State.CLOSED},
    State.OPEN: {State.CLOSING, State.CLOSED},
    State.CLOSING: {State.CLOSED},
    State.CLOSED: set(),
}


@dataclass(frozen=True)
class Ending:
    """Why a connection is to end, asked from outside its mediator."""

    #: ``"closed"`` (by its owner), ``"owner_ended"`` (the owner's process ended, or its callback failed) or
    #: ``"aborted"``.
    cause: str
    #: Why, for an abort; None for the owner's own close or end.
    error: ConnectionBroken | None = None
    #: End at once, without writing what waits.
    urgent: bool = False
    #: Whether the owner hears ``error``, as ``("socket_closed", error)``.
    tell: bool = False


CLOSED_BY_OWNER = Ending("closed")
OWNER_ENDED = Ending("owner_ended")


class Lifecycle:
    """The state of one connection and the ending asked for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.state = State.HANDSHAKING
        #: The ending asked for, or None: read without the lock by the mediator, at every turn of its loop.
        self.ending: Ending | None = None
        #: Whether the owner has closed the socket: from then on nothing more is taken from it, and it hears
        #: nothing more, whatever ending came first.
        self.closed_by_owner = False
        #: What the owner was told in its ``socket_closed`` message (``"normal"``, a ``ConnectionBroken``), if it was.
        self.told: Any = None

    @property
    def reason(self) -> Any:
        """Why the connection ended, for its monitors: what its owner was told, else the cause of the ending asked
        (``"closed"`` by the owner, ``"owner_ended"``, ``"aborted"``)."""
        if self.told is not None:
            return self.told
        return self.ending.cause if self.ending is not None else "closed"

    def move(self, state: State) -> None:
        """The mediator moves the connection on: only along the arrows above."""
        assert state is self.state or state in _NEXT[self.state], f"{self.state} -> {state}"
        self.state = state

    def ask(self, ending: Ending) -> bool:
        """Ask the connection to end; True if this changed what it will do (the owner's first close, the first
        abort)."""
        with self._lock:
            if self.state is State.CLOSED:
                return False
            current = self.ending
            if ending is CLOSED_BY_OWNER:
                if self.closed_by_owner:
                    return False
                self.closed_by_owner = True
                self.ending = ending if current is None else replace(current, tell=False)
                return True
            if current is None:
                self.ending = replace(ending, tell=ending.tell and not self.closed_by_owner)
                return True
            if ending.urgent and not current.urgent:  # an orderly close hurried: told as an abort would be
                self.ending = replace(ending, cause=current.cause, tell=ending.tell and not self.closed_by_owner)
                return True
            return False

    @property
    def seen(self) -> State:
        """The state as the other threads see it: ``CLOSING`` from the moment an end is asked of an open connection
        (its owner's ``close`` has returned), though the mediator has not moved it yet."""
        state = self.state
        return State.CLOSING if state is State.OPEN and self.ending is not None else state

    @property
    def urgent(self) -> Ending | None:
        """The ending, if it is to happen at once."""
        ending = self.ending
        return ending if ending is not None and ending.urgent else None


class CloseClock:
    """The bound of an orderly close: it gives up ``timeout`` seconds after its last progress, so that a peer that
    takes nothing costs at most that, while a slow reader gets everything."""

    def __init__(self, timeout: float | None = None, clock: Callable[[], float] = monotonic) -> None:
        self._timeout = CLOSE_TIMEOUT if timeout is None else timeout
        self._clock = clock
        self._since = clock()
        self._unsent = 0  # what the kernel held to send after the last write

    def progress(self, wrote: bool, unsent_before: int, unsent_after: int) -> None:
        """After a turn of writing: progress is a write that finished, or fewer bytes held by the kernel than after
        the last write (only the peer's acknowledgements lower that meanwhile)."""
        if wrote or unsent_before < self._unsent:
            self._since = self._clock()
        self._unsent = unsent_after

    @property
    def deadline(self) -> float:
        return self._since + self._timeout

    def expired(self) -> bool:
        return self._clock() >= self.deadline


class IdleClock:
    """The bound of an idle connection (``-idle_timeout``): it ends once no byte has gone either way for ``timeout``
    seconds. It watches the connection's byte counters, at each turn of its mediator and whenever another thread
    asks (``idle_for``), so that reading and writing pay nothing for it: traffic is dated when it is first seen."""

    def __init__(self, timeout: float, clock: Callable[[], float] = monotonic) -> None:
        self.timeout = timeout
        self._clock = clock
        #: The bytes counted when last seen to change, and when; None before the first open turn. One tuple,
        #: replaced whole, since two threads may see a change.
        self._last: tuple[int, float] | None = None

    @property
    def deadline(self) -> float:
        last = self._last
        return (self._clock() if last is None else last[1]) + self.timeout

    def idle_for(self, traffic: int) -> float:
        """Seconds since the last traffic either way, given the bytes counted so far: 0 if they changed since last
        seen (the change is dated now)."""
        now, last = self._clock(), self._last
        if last is None or last[0] != traffic:
            if last is not None:
                self._last = (traffic, now)
            return 0.0
        return now - last[1]

    def check(self, traffic: int) -> None:
        """At each open turn, with the bytes counted either way so far: ``ConnectionBroken`` (reason ``"idle"``)
        once they have not changed for ``timeout`` seconds. The clock starts at the first: a handshake, or a wait
        for an acceptor, is no idleness."""
        if self._last is None:
            self._last = (traffic, self._clock())
        elif self.idle_for(traffic) >= self.timeout:
            raise ConnectionBroken(f"no traffic either way for {self.timeout:g} s (-idle_timeout)", "idle")
