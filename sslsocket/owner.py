"""Who a socket's messages go to, behind one interface: a process's mailbox (``ProcessOwner``) or a callback
(``CallbackOwner``); and the socket's credit in that mailbox (``Credit``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from . import process
from .errors import NotOwner
from .mailbox import MESSAGE_COST, Controlled, Delivery, Pid

log = logging.getLogger("sslsocket")

#: Bytes of packets a socket may have waiting unread in its owner's mailbox before it stops reading from the
#: network: a peer faster than the owner is then held back by TCP instead of filling memory. No larger, because
#: packets made in this thread and freed in the owner's make glibc give memory back and take it again (a page
#: fault per page) once some megabytes come and go: at 4 MiB a 1 MiB stream took 40 to 200 faults per MB and ran
#: up to a third slower; at 1 MiB it takes 2, and small or 16 KiB packets go as fast.
MAILBOX_SHARE = 1024 * 1024


class Owner(Protocol):
    """What a socket needs of its owner."""

    #: What ``Socket.owner`` shows: the ``Pid``, or the callable.
    target: Any
    #: True for a callback, called in the mediator's thread (it may answer from there); False for a mailbox.
    calls_back: bool

    def check(self, sender: object, sock: object) -> None:
        """Raise ``NotOwner`` unless ``sender`` (``CALLER``: the process calling now), calling now, may talk to
        ``sock``."""

    def adopt(self, sock: Controlled) -> bool:
        """Begin to own ``sock``; False if this owner has already ended."""

    def post(self, msgs: list[Any], credit: Credit) -> bool:
        """Hand the owner messages, in order, charging the packets that wait in a mailbox to ``credit``; False if
        the owner has ended (or its callback failed)."""

    def release(self, sock: Controlled) -> None:
        """Own ``sock`` no more."""

    def take_back(self, sock: Controlled) -> list[Any]:
        """The messages of ``sock`` the owner has not received yet, taken out of its mailbox, in order."""


#: The sender that ``deliver`` and ``close`` name: the process calling now (no lookup of it on the way).
CALLER = object()

#: What a ``NotOwner`` says to do: the first thing a threaded server's maintainer writes hands the socket to a
#: new thread without a word to the socket.
HAND_OVER = (
    "To let another thread use it, its owner hands it over first: sslsocket.controlling_process(sock, thread), with"
    " a threading.Thread (before or after its start), or that thread's process (sslsocket.spawn(func, *args)"
    " returns one; sslsocket.self() in the thread is it)"
)


class ProcessOwner:
    """A process: messages go to its mailbox, and only it may talk to the socket."""

    calls_back: bool = False

    def __init__(self, pid: Pid) -> None:
        self.target: Any = pid
        self._pid = pid

    def check(self, sender: object, sock: object) -> None:
        pid = self._pid
        if (sender is pid or sender is CALLER) and pid.ident == threading.get_ident():  # the path of every send
            return
        me = process.self()
        if sender is CALLER:
            sender = me
        if sender is not pid or me is not pid:
            who = f"{me!r}" if sender is me else f"{me!r}, sending as {sender!r},"
            raise NotOwner(
                f"only the controlling process {pid!r} may send to {sock!r}; {who} is not it. {HAND_OVER}",
                ("not_owner", sender),
            )

    def adopt(self, sock: Controlled) -> bool:
        return self._pid.adopt(sock)

    def post(self, msgs: list[Any], credit: Credit) -> bool:
        credit.charge(msgs)
        return self._pid.post_many(msgs)

    def release(self, sock: Controlled) -> None:
        self._pid.release(sock)

    def take_back(self, sock: Controlled) -> list[Any]:
        return self._pid.take(process.sent_by(sock))


class CallbackOwner:
    """A callable, called with each message in the mediator's thread; anyone may talk to the socket. A callback
    that raises is an owner that died: it is logged, and the socket closes."""

    calls_back: bool = True

    def __init__(self, callback: Callable[[Any], object]) -> None:
        self.target: Any = callback
        self._callback = callback

    def check(self, sender: object, sock: object) -> None:
        pass

    def adopt(self, sock: Controlled) -> bool:
        return True

    def post(self, msgs: list[Any], credit: Credit) -> bool:
        for msg in msgs:
            try:
                self._callback(msg)
            except Exception:
                log.exception("the owner callback of %r failed on %r; closing the socket", msg[0], msg)
                return False
        return True

    def release(self, sock: Controlled) -> None:
        pass

    def take_back(self, sock: Controlled) -> list[Any]:
        return []


def owner_of(owner: Pid | Callable[[Any], object] | threading.Thread) -> Owner:
    """The owner for ``accept(..., owner=)``, ``client`` or ``controlling_process``: a ``Pid``, a
    ``threading.Thread`` (its process), or a callable."""
    target = process.as_pid(owner)
    return ProcessOwner(target) if isinstance(target, Pid) else CallbackOwner(target)


class Credit:
    """A socket's share of its owner's mailbox: the weight of its packets waiting there unread. Past
    ``MAILBOX_SHARE`` the socket stops reading from the network (it is *paused*), until the owner has received
    half of it."""

    def __init__(self, share: int = MAILBOX_SHARE, wake: Callable[[], object] = lambda: None) -> None:
        self._share = share
        self._wake = wake  # the socket's mediator, when its reading resumes
        self._lock = threading.Lock()
        self._unread = 0
        self._holds = 0  # full inboxes that this socket's callback owner delivered to (``Inbox.force``)
        self.paused = False

    def charge(self, msgs: list[Any]) -> None:
        """These messages go to the owner's mailbox now."""
        weight = 0
        for msg in msgs:  # (_weight, inlined: the path of every batch read)
            if type(msg) is Delivery:
                weight += len(msg[1][1]) + MESSAGE_COST
        if weight:
            with self._lock:
                self._unread += weight

    def reading(self) -> bool:
        """Whether the socket reads for its owner: not while it is paused."""
        with self._lock:
            return not self.paused

    def room(self) -> int:
        """How many bytes may be read for the owner now; 0 pauses the socket."""
        with self._lock:
            room = 0 if self._holds else self._share - self._unread
            if room <= 0:
                self.paused = True
            return max(room, 0)

    def given_back(self, msgs: list[Any]) -> bool:
        """These messages left the owner's mailbox unreceived (``controlling_process`` moves them on)."""
        return self.consumed(_weight(msgs))

    def consumed(self, weight: int) -> bool:
        """The owner received (or gave back) packets of this weight; True, and the mediator woken, when this resumes
        a paused socket."""
        with self._lock:  # the path of every packet received: _resume inlined
            self._unread -= weight
            resume = self.paused and not self._holds and self._unread <= self._share // 2
            if resume:
                self.paused = False
        if resume:
            self._wake()
        return resume

    def hold(self) -> None:
        """A socket that this one's callback owner delivered to is full: read nothing until it has room."""
        with self._lock:
            self._holds += 1

    def let_go(self) -> bool:
        """That socket has room again; True, and the mediator woken, when this resumes a paused socket."""
        with self._lock:
            self._holds -= 1
            resume = self._resume()
        if resume:
            self._wake()
        return resume

    def _resume(self) -> bool:
        resume = self.paused and not self._holds and self._unread <= self._share // 2
        if resume:
            self.paused = False
        return resume


def _weight(msgs: list[Any]) -> int:
    """What the packets among ``msgs`` count against a mailbox share."""
    return sum(m.weight for m in msgs if type(m) is Delivery)
