"""The listener's first two stages, as bookkeeping: connections taken that have sent nothing yet, oldest first, each
with its handshake deadline (``QuietRoom``), and the handshake slots with the connections that spoke and wait for
one (``Turns``). No I/O here: the listener polls the sockets, and asks these which to drop, start or abort."""

from __future__ import annotations

import heapq
import itertools
import socket
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from OpenSSL import SSL

from .flags import Settings

_order = itertools.count()


@dataclass(eq=False)
class Quiet:
    """A connection taken for an acceptor's flags that has sent nothing yet."""

    tcp: socket.socket
    peer: str
    flags: str
    context: SSL.Context
    settings: Settings
    deadline: float
    order: int = field(default_factory=lambda: next(_order))


class QuietRoom:
    """The quiet connections in the order they came, and a heap of their deadlines (entries of connections gone on
    are skipped, and swept out once they are most of the heap)."""

    def __init__(self) -> None:
        self._members: dict[Quiet, None] = {}
        self._deadlines: list[tuple[float, int, Quiet]] = []

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[Quiet]:
        return iter(list(self._members))

    def add(self, quiet: Quiet) -> None:
        self._members[quiet] = None
        heapq.heappush(self._deadlines, (quiet.deadline, quiet.order, quiet))

    def remove(self, quiet: Quiet) -> None:
        del self._members[quiet]
        if not self._members:
            self._deadlines.clear()
        elif len(self._deadlines) > 2 * len(self._members) + 64:
            self._deadlines = [(q.deadline, q.order, q) for q in self._members]
            heapq.heapify(self._deadlines)

    def oldest(self) -> Quiet:
        return next(iter(self._members))

    def next_deadline(self) -> float | None:
        return self._deadlines[0][0] if self._deadlines else None

    def expired(self, now: float) -> Iterator[Quiet]:
        """The connections whose deadline has passed, oldest deadline first, one at a time: each is still a member
        when given (the caller drops it), and the next is taken from the heap only after that."""
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, quiet = heapq.heappop(self._deadlines)
            if quiet in self._members:
                yield quiet

    def clear(self) -> None:
        self._members.clear()
        self._deadlines.clear()


class Handshake(Protocol):
    #: When the handshake last heard from its client (``time.monotonic()``).
    heard: float


H = TypeVar("H", bound=Handshake)


class Turns(Generic[H]):
    """The handshake slots: the handshakes under way, each with when it began, and the connections that spoke and
    wait for a slot, in the order they came. What progresses waits its turn; what stalls, or holds its slot too
    long, makes way. No lock: the listener holds its own around every call."""

    def __init__(self) -> None:
        self.running: dict[H, float] = {}
        self.queued: deque[Quiet] = deque()

    def started(self, handshake: H, now: float) -> None:
        self.running[handshake] = now

    def ended(self, handshake: H | None) -> bool:
        """A handshake ended (or was never started, as None); True if it freed a slot that a queued one wants."""
        if handshake is None or handshake not in self.running:
            return False
        del self.running[handshake]
        return bool(self.queued)

    def expired(self, now: float) -> list[Quiet]:
        """The connections at the head of the queue whose handshake deadline has passed, taken out of it."""
        late = []
        while self.queued and self.queued[0].deadline <= now:
            late.append(self.queued.popleft())
        return late

    def next(self, now: float, slots: int, stall: float, turn: float) -> tuple[Quiet | None, H | None, float | None]:
        """The connection whose handshake starts now, and the handshake that gives it its slot (to be aborted; None
        when a slot was free): the one silent longest if it has heard nothing for ``stall`` seconds, else the
        oldest if it has held its slot for ``turn`` seconds (a client that drips its hello). ``(None, None, when)``
        when the queue is empty (``when`` None) or must wait until ``when`` for a slot."""
        if not self.queued:
            return None, None, None
        victim = None
        if len(self.running) >= slots:
            silent = min(self.running, key=lambda handshake: handshake.heard)
            oldest, began = next(iter(self.running.items()))
            if now >= silent.heard + stall:
                victim = silent
            elif now >= began + turn:
                victim = oldest
            else:
                return None, None, min(silent.heard + stall, began + turn)
            del self.running[victim]
        return self.queued.popleft(), victim, None
