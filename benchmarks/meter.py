"""What an operation costs, in the units that hold still on a shared machine: CPU, voluntary context switches,
and Python calls, beside the wall time.

``Meter`` goes around the measured operations of a benchmark. The counts are of the whole process, every thread
(``getrusage(RUSAGE_SELF)`` counts every thread's context switches on Linux). Python calls are counted only when
``count_calls()`` was called before any thread of the run started: a profile function in every thread, that
counts ``call`` events while a meter runs and does nothing else; it slows everything down, so a run that counts
calls is not the run that measures time.
"""

from __future__ import annotations

import itertools
import resource
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

_calls = itertools.count()
_counting = False


def _profile(frame: Any, event: str, arg: Any) -> None:
    if event == "call" and _counting:
        next(_calls)


def count_calls() -> None:
    """From now on, count the Python calls of this thread and of every thread started afterwards."""
    threading.setprofile(_profile)
    sys.setprofile(_profile)


def _calls_so_far() -> int:
    return next(_calls)  # (one more than were counted: the difference of two readings is what happened between)


@dataclass(frozen=True)
class Cost:
    """Per operation."""

    seconds: float
    cpu_us: float
    switches: float
    calls: float | None  # None when calls were not counted

    @property
    def rate(self) -> float:
        return 1 / self.seconds if self.seconds else 0.0


class Meter:
    """Started when made; ``stop(operations)`` returns the wall time and keeps the cost per operation in
    ``Meter.last``, for whoever wants more than the rate."""

    last: Cost | None = None

    def __init__(self) -> None:
        global _counting
        self._switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
        self._calls = _calls_so_far()
        _counting = True
        self._cpu = time.process_time()
        self._start = time.perf_counter()

    def stop(self, operations: int) -> float:
        global _counting
        elapsed = time.perf_counter() - self._start
        cpu = time.process_time() - self._cpu
        _counting = False
        calls = _calls_so_far() - self._calls - 1
        switches = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - self._switches
        counted = sys.getprofile() is _profile
        Meter.last = Cost(
            elapsed / operations,
            cpu * 1e6 / operations,
            switches / operations,
            calls / operations if counted else None,
        )
        return elapsed
