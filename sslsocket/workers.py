"""The threads that mediators run in, kept for the next connection when one ends."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from . import process


class Workers:
    """The threads that mediators run in. A thread whose connection has ended waits a while for the next one,
    because here starting a thread costs some 100 µs and several GIL hand-offs, waking a waiting one a single
    hand-off: a server taking connection after connection (or a client making them) reuses a few threads. A
    connection has one thread at a time of its own from its handshake to its end; only the thread's next life is
    new. (A server's handshake runs in one of ``handshakers``; the open connection goes on in one of ``workers``,
    which never run a handshake: see ``Socket._move_on``.)"""

    #: How many threads wait for a next connection, at most; the others end with their connection.
    KEEP = 32
    #: How long a waiting thread waits before it ends.
    IDLE = 5.0
    #: The name of a thread while it waits.
    IDLE_NAME = "sslsocket-idle"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[tuple[queue.SimpleQueue[Callable[[], None] | None], threading.Thread]] = []  # LIFO
        self._generation = 0  # dismiss() ends the threads of earlier generations, waiting or still busy

    def forked(self) -> None:
        """In a child process, the waiting threads are gone: a pre-forking server's workers start their own."""
        self._lock = threading.Lock()
        self._idle = []

    def run(self, job: Callable[[], None], name: str) -> threading.Thread:
        """Run ``job`` in a waiting thread, or a new one, named ``name``; return that thread."""
        with self._lock:
            idle = self._idle.pop() if self._idle else None
            generation = self._generation
        if idle is not None:
            jobs, thread = idle
            thread.name = name
            jobs.put(job)
            return thread
        fresh: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        fresh.put(job)
        thread = threading.Thread(target=self._work, args=(fresh, generation), name=name, daemon=True)
        thread.start()
        return thread

    def _work(self, jobs: queue.SimpleQueue[Callable[[], None] | None], generation: int) -> None:
        job = jobs.get()
        while job is not None:
            job()
            job = None  # waiting for the next, this thread keeps nothing of the connection it served alive
            process.end_thread_process()  # a callback owner that asked for self() in this thread ended with it
            job = self._next(jobs, generation)

    def _next(self, jobs: queue.SimpleQueue[Callable[[], None] | None], generation: int) -> Callable[[], None] | None:
        """Wait, as an idle thread, for the next job; None to end the thread."""
        me = threading.current_thread()
        with self._lock:
            if generation != self._generation or len(self._idle) >= self.KEEP:
                return None
            me.name = self.IDLE_NAME
            self._idle.append((jobs, me))
        try:
            return jobs.get(timeout=self.IDLE)
        except queue.Empty:
            with self._lock:
                if (jobs, me) in self._idle:  # nobody took this thread meanwhile
                    self._idle.remove((jobs, me))
                    return None
            return jobs.get()  # taken just now: its job is on the way

    def dismiss(self) -> None:
        """End every waiting thread, and let none that is busy now wait afterwards (``stop()``)."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._generation += 1
        for jobs, _ in idle:
            jobs.put(None)
        for _, thread in idle:
            thread.join()


#: The threads of open connections.
workers = Workers()
#: The threads of servers' handshakes.
handshakers = Workers()
