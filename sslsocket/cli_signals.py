"""The commands' signals: SIGINT (Ctrl-C) and SIGTERM, as a KeyboardInterrupt (``interrupt``) or, in ``serve``'s
loop, as exit signals to its main process (``signals_as_exits``)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from . import process
from .process import Pid


def on_signals(handler: Callable[[int, Any], object] | signal.Handlers) -> None:
    """SIGINT (Ctrl-C) and SIGTERM go to ``handler``: in the main thread only, where Python runs signal handlers
    (another thread runs a command as it stands)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


def interrupt(signum: int, frame: object) -> NoReturn:
    """SIGINT (Ctrl-C) and SIGTERM: a KeyboardInterrupt that names the signal, once. Every later signal is ignored,
    so that the stop that follows is never cut short by a second one (a terminal's Ctrl-C often reaches the
    process twice), which would print a traceback from inside it. (serve's loop takes them as exit signals.)"""
    on_signals(signal.SIG_IGN)
    raise KeyboardInterrupt(signum)


@contextmanager
def signals_as_exits(me: Pid) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are exit signals to ``me``, raised as ``Exit`` at its next wait, never
    between two steps of its bookkeeping as a KeyboardInterrupt would be; the reason is the signal's name. After the
    block a signal is ignored: at exit Python restores the default action, and a late SIGTERM would kill serve."""
    on_signals(lambda signum, frame: process.exit(me, signal.Signals(signum).name))
    try:
        yield
    finally:
        on_signals(signal.SIG_IGN)
