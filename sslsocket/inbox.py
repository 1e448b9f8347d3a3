"""A mediator's inbox: what its owner sends it (packets to write, then perhaps its close), bounded in bytes.

Nothing here knows of sockets or TLS: a ``queue.Queue`` of two kinds of envelope, weighed so that a sender of large
packets is held back as soon as a sender of small ones.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Protocol

#: What the inbox holds before ``send`` blocks its caller, in units of ``INBOX_UNIT`` bytes of payload, each
#: message counting one unit at least: 1,024 small messages, or 512 KiB of large ones.
INBOX_SIZE = 1024
INBOX_UNIT = 512


class Deliver:
    """A packet to write: its length header (empty in raw and asn1 modes) and its payload."""

    __slots__ = ("header", "payload", "weight")

    def __init__(self, header: bytes, payload: bytes) -> None:
        self.header = header
        self.payload = payload
        self.weight = 1 + len(payload) // INBOX_UNIT

    def __repr__(self) -> str:
        return f"Deliver({len(self.header) + len(self.payload)} bytes)"


class Close:
    """The owner's close: written after every packet delivered before it, then close_notify."""

    __slots__ = ()
    weight = 1

    def __repr__(self) -> str:
        return "CLOSE"


CLOSE = Close()
Envelope = Deliver | Close

#: What ``offer`` and ``force`` did: refused (the inbox is closed), put, put and the mediator must be woken, or
#: nothing, the inbox being full (an ``offer`` that may not wait).
REFUSED, PUT, WAKE, FULL = 0, 1, 2, 3


class Sender(Protocol):
    """A process that waits for room with its one wait, which ``exit(pid, reason)`` interrupts."""

    def wait_until(self, ready: Callable[[], bool], deadline: float | None, what: str = ...) -> None: ...
    def wake(self) -> None: ...


class Source(Protocol):
    """A socket whose callback owner delivers here from its mediator's thread, which must never wait: while this
    inbox is full, the source reads nothing from its peer (backpressure pauses the source)."""

    def hold(self) -> None: ...
    def let_go(self) -> None: ...


class Inbox(queue.Queue[Envelope]):
    """A ``queue.Queue`` whose size is weighed in bytes, not messages (see ``Deliver.weight``). ``offer`` waits while
    the inbox holds ``maxsize`` units or more, so a sender of large packets is held back as soon as one of small
    ones; a single message larger than the whole inbox still enters an empty one.

    The mediator, its only reader, takes what waits with ``take``: under one lock, not a ``get`` per message. A
    close never waits for room (it weighs one unit, and comes once). When the connection has ended, ``close``
    empties the inbox and wakes every sender still waiting for room: ``offer`` then refuses.

    The same lock guards whether the mediator sleeps with nothing to take (``nap``): a sender learns from its
    ``offer`` or ``force`` whether it must wake the mediator (``WAKE``), and only the first after a nap does; an
    owner's direct write (``Socket.write_now``) may go only while nothing waits here."""

    def __init__(self, maxsize: int = INBOX_SIZE) -> None:
        super().__init__(maxsize)

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self._weight = 0
        self._closed = False
        self._held: list[Source] = []  # sources held back until there is room
        self._senders: list[Sender] = []  # processes waiting for room, woken when there is
        self._napping = False  # the mediator sleeps, and takes nothing more until it is woken

    def offer(self, item: Envelope, sender: Callable[[], Sender] | None) -> int:
        """Put ``item``, waiting while the inbox is full (a delivery only): ``PUT``, ``WAKE`` (put, and the mediator
        must be woken), or ``REFUSED`` once the inbox is closed. The calling process, ``sender()``, waits with its
        one wait: an exit signal raises ``Exit``, and nothing is put. Without a sender, ``FULL`` instead of a wait."""
        while True:
            with self.mutex:
                if self._weight < self.maxsize or type(item) is not Deliver or self._closed:  # (_must_wait, inlined)
                    return self._enter(item)
                if sender is None:
                    return FULL
                me = sender()
                self._senders.append(me)
            try:
                me.wait_until(lambda: not self._must_wait(item), None, "deliver")
            finally:
                with self.mutex:
                    self._senders.remove(me)

    def force(self, item: Envelope, source: Source) -> int:
        """Put ``item`` without waiting, as a callback of ``source`` must (of this socket or another), and answer as
        ``offer``. If the inbox is full now, ``source`` is held (``hold``) until it has room again (``let_go``),
        under the inbox's lock, so that no room made meanwhile goes unseen."""
        with self.mutex:
            outcome = self._enter(item)
            if outcome and self._weight >= self.maxsize:
                source.hold()
                self._held.append(source)
            return outcome

    def _enter(self, item: Envelope) -> int:
        """Under the lock: put ``item`` unless the inbox is closed; whether the mediator must be woken for it."""
        if self._closed:
            return REFUSED
        self.queue.append(item)  # (_put, inlined: the path of every packet)
        self._weight += item.weight
        if self._napping:
            self._napping = False  # one wake-up a nap: the senders after this one find it awake
            return WAKE
        return PUT

    def nap(self, taking: bool) -> bool:
        """The mediator is about to sleep: False if it must not, with a message waiting that it would take
        (``taking``: it takes more now); else, from now on, the next sender wakes it, if it takes more."""
        with self.mutex:
            if taking and self.queue:
                return False
            self._napping = taking
            return True

    def _let_go(self) -> tuple[list[Source], list[Sender]]:
        """Under the lock: the sources to let go of and the senders to wake, once there is room (or the inbox is
        closed)."""
        if self._weight >= self.maxsize and not self._closed:
            return [], []
        held, self._held = self._held, []
        return held, list(self._senders)

    def _must_wait(self, item: Envelope) -> bool:
        return not self._closed and self._weight >= self.maxsize and type(item) is Deliver

    def close(self) -> None:
        """The connection has ended: drop what waits, and let no sender wait any longer."""
        with self.mutex:
            self._closed = True
            self.queue.clear()
            self._weight = 0
            held, senders = self._let_go()
        _wake(held, senders)

    def _qsize(self) -> int:
        return self._weight  # 0 exactly when empty: every message weighs one unit at least

    def _put(self, item: Envelope) -> None:
        self.queue.append(item)
        self._weight += item.weight

    def _get(self) -> Envelope:
        item: Envelope = self.queue.popleft()
        self._weight -= item.weight
        return item

    def __len__(self) -> int:
        return len(self.queue)

    def take(self, room: int) -> list[Envelope]:
        """Remove the oldest messages, in order, while their bytes fit ``room`` (the first at least), up to the
        first that is not a delivery; wake the senders that wait for space."""
        taken: list[Envelope] = []
        with self.mutex:
            self._napping = False  # the mediator takes: it is awake
            queued, weight = self.queue, self._weight
            while queued and room > 0:
                item = queued.popleft()  # (_get, inlined)
                self._weight -= item.weight
                taken.append(item)
                if type(item) is not Deliver:
                    break
                room -= len(item.header) + len(item.payload)
            if weight < self.maxsize:  # only a full one holds anyone
                return taken
            held, senders = self._let_go()
        _wake(held, senders)
        return taken


def _wake(held: list[Source], senders: list[Sender]) -> None:
    """Outside the inbox's lock: let go of the sources held, wake the senders waiting for room."""
    for source in held:
        source.let_go()
    for sender in senders:
        sender.wake()
