"""Failed handshakes, told without letting a flood of bad clients fill a disk: a WARNING each, ``LOG_BURST`` per
``LOG_WINDOW`` at most, then a count."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from time import monotonic

log = logging.getLogger("sslsocket")

#: Failed handshakes logged per listen socket and window, at most; past that they are counted, and the count is
#: logged when the window ends: a flood of bad clients cannot fill a disk with one line each.
LOG_BURST = 10
LOG_WINDOW = 10.0


class Complaints:
    """The failed handshakes of one listen socket, logged as WARNINGs, ``LOG_BURST`` per ``LOG_WINDOW`` at most."""

    def __init__(self, where: str, clock: Callable[[], float] = monotonic) -> None:
        self._where = where
        self._clock = clock
        self._lock = threading.Lock()
        self._window_end = 0.0
        self._said = 0
        self._held = 0

    def say(self, error: BaseException) -> None:
        now = self._clock()
        with self._lock:
            held = 0
            if now >= self._window_end:
                held, self._held, self._said = self._held, 0, 0
                self._window_end = now + LOG_WINDOW
            speak = self._said < LOG_BURST
            if speak:
                self._said += 1
            else:
                self._held += 1
        if held:
            log.warning(
                "%s: %d more failed handshakes not shown (at most %d per %g s)",
                self._where,
                held,
                LOG_BURST,
                LOG_WINDOW,
            )
        if speak:
            log.warning("%s: %s; still accepting", self._where, error)
