"""Runs pytest with what Windows' Python does not have taken away, before anything imports sslsocket:
``fcntl``, ``termios``, ``select.poll`` / ``epoll`` / ``kqueue`` (and the selectors built on them), ``os.eventfd``,
``os.fork`` and ``os.register_at_fork``. The library must then choose its Windows paths (``selectors``' select, a
socket-pair waker, no unsent-bytes query, no fork hooks), and the tests run against them on this machine.

    python tests/windows_surface.py tests/test_sockets.py ...   (pytest's arguments)

(A ``-p`` plugin would come too late: pytest imports sslsocket while it reads setup.cfg's warning filters.)

What this cannot show: Windows' own sockets (its select takes 512 sockets, counted, where Linux's takes descriptor
numbers below 1024), its certificate store, its paths. A CI workflow for real Windows and macOS runners is in
.github/workflows/; these machines have neither.
"""

from __future__ import annotations

import os
import select
import selectors
import sys

import pytest

if "sslsocket" in sys.modules:  # pragma: no cover - too late to mean anything
    raise RuntimeError("windows_surface must run before sslsocket is imported")

for name in ("fcntl", "termios"):
    sys.modules[name] = None  # type: ignore[assignment]  # import fails, as on Windows
for name in ("poll", "epoll", "kqueue", "devpoll"):
    if hasattr(select, name):
        delattr(select, name)
for name in ("PollSelector", "EpollSelector", "KqueueSelector", "DevpollSelector"):
    if hasattr(selectors, name):
        delattr(selectors, name)
selectors.DefaultSelector = selectors.SelectSelector  # type: ignore[misc]
for name in ("eventfd", "fork", "forkpty", "register_at_fork"):
    if hasattr(os, name):
        delattr(os, name)


def pytest_report_header() -> str:
    import sslsocket.system as system

    assert not system.HAS_POLL and not system.HAS_FORK
    return "windows_surface: no fcntl, termios, poll, epoll, kqueue, eventfd, fork (the library's Windows paths)"


@pytest.fixture(autouse=True)
def _still_windows() -> None:
    """Nothing put the surface back (a test's import of a module that brings poll along would)."""
    assert not hasattr(select, "poll") and not hasattr(os, "eventfd")
    assert sys.modules.get("fcntl", 0) is None and sys.modules.get("termios", 0) is None


if __name__ == "__main__":
    sys.exit(pytest.main(sys.argv[1:], plugins=[sys.modules[__name__]]))
