"""Who hears of an end: the monitors and links of a process, the monitors of a socket.

Nothing here knows of threads' processes or sockets: a table of calls by key, each made once, with the reason the
watched thing ended, by whoever ends it; a watcher that comes after the end is told so, and decides what that means
(a process's monitor then hears ``"noproc"``).

>>> told = []
>>> watchers = Watchers()
>>> watchers.add("monitor 1", told.append)
True
>>> watchers.end("normal")
True
>>> told, watchers.add("monitor 2", told.append), watchers.reason
(['normal'], False, 'normal')
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

#: What ``reason`` is while the watched thing has not ended.
RUNNING = object()


class Watchers:
    """The calls to make when something ends, by key (a monitor's reference, a link's partner)."""

    def __init__(self) -> None:
        self.renew()
        self._calls: dict[Hashable, Callable[[Any], object]] = {}
        #: Why it ended, once it has; ``RUNNING`` until then.
        self.reason: Any = RUNNING

    def renew(self) -> None:
        """A lock of its own: in a child after ``fork()``, a thread of the parent's may have held the old one."""
        self._lock = threading.Lock()

    def add(self, key: Hashable, call: Callable[[Any], object]) -> bool:
        """Call ``call(reason)`` when it ends; False, and no call, if it has ended already."""
        with self._lock:
            if self.reason is not RUNNING:
                return False
            self._calls[key] = call
            return True

    def remove(self, key: Hashable) -> bool:
        """Forget the call of ``key``; False if there was none (it was made, or never added)."""
        with self._lock:
            return self._calls.pop(key, None) is not None

    def waiting(self) -> list[Hashable]:
        """The keys waiting for the end, in the order they were added."""
        with self._lock:
            return list(self._calls)

    def end(self, reason: Any) -> bool:
        """It ended, for ``reason``: make every call, once, outside the lock. False if nobody watched (or it had
        ended already)."""
        with self._lock:
            if self.reason is not RUNNING:
                return False
            self.reason = reason
            calls, self._calls = list(self._calls.values()), {}
        for call in calls:
            call(reason)
        return bool(calls)
