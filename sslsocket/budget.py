"""A listen socket's budget for peers that read nothing: what its connections may hold, in all, for them.

A connection whose peer reads nothing fills up to its own bounds (``HIGH_WATER`` unwritten and an inbox behind it,
some 1 MiB), and then its owner waits in ``deliver``. With a budget, at most ``limit // per_socket`` of a listen
socket's connections may be held up so at once; one more makes the one held up longest go, so that no number of
deaf peers exhausts the server's memory. No I/O here: the socket asks, and closes whom it is told to.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

S = TypeVar("S")


class Budget(Generic[S]):
    """The connections whose owners wait for room (their peers read nothing), the longest waiting first."""

    def __init__(self, limit: int, per_socket: int) -> None:
        self.limit, self.per_socket = limit, per_socket
        self.slots = max(1, limit // per_socket)
        self._lock = threading.Lock()
        self._waiting: dict[S, None] = {}

    def waits(self, sock: S) -> S | None:
        """``sock``'s owner is about to wait for room: the connection to close to stay within the budget (the one
        held up longest), or None."""
        with self._lock:
            self._waiting[sock] = None
            if len(self._waiting) <= self.slots:
                return None
            victim = next(iter(self._waiting))
            del self._waiting[victim]
            return victim

    def done(self, sock: S) -> None:
        """``sock``'s owner waits no more (there was room, or the connection ended)."""
        with self._lock:
            self._waiting.pop(sock, None)

    def renewed(self) -> Budget[S]:
        """The same budget, empty and with a lock of its own: for a child after ``fork()``."""
        return Budget(self.limit, self.per_socket)

    def __len__(self) -> int:
        return len(self._waiting)
