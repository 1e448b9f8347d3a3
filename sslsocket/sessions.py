"""Session resumption for clients, as Erlang/OTP's ``reuse_sessions``: a client that connects again to the same
server, with the same flags, offers the session (TLS 1.3: the ticket) its last connection there was given, and the
handshake skips the certificates and the signatures. ``-reuse_sessions false`` turns it off.

Nothing here is weaker than a full handshake: a session is kept per Context (so per flags, CAs included) and per
host and port as given, only once a handshake has succeeded; a server that cannot resume it (another server on that
port, other keys) makes a full handshake, and its certificate is checked as always. A resumed connection reports the
certificate of the session (OpenSSL keeps it there) and the verify errors its check forgave (kept here with it:
OpenSSL records a forgiven check as passed). A server at ``-verify 1`` has nowhere to keep what it forgave, so it
resumes no session (see ``context``).

``Sessions`` is the store; ``Resumption`` one client connection's part: offer before the handshake, keep after.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from OpenSSL import SSL

from .tls import resumed, session_size

#: Servers a process remembers a session for, the least recently used forgotten first.
SESSIONS_KEPT = 256


#: A session and the verify errors, as (depth, code), that its full handshake forgave.
Kept = tuple[SSL.Session, tuple[tuple[int, int], ...]]


class Sessions:
    """The last session of each (Context, host, port), with the verify errors its handshake forgave; bounded, and
    safe to share between threads."""

    def __init__(self, size: int = SESSIONS_KEPT) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._kept: OrderedDict[Any, Kept] = OrderedDict()

    def get(self, key: Any) -> Kept | None:
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
            return kept

    def put(self, key: Any, kept: Kept) -> None:
        with self._lock:
            self._kept[key] = kept
            self._kept.move_to_end(key)
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)

    def __len__(self) -> int:
        return len(self._kept)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()

    def forked(self) -> None:
        """In a child after ``fork()``: a lock of its own (a thread of the parent's may have held this one)."""
        self._lock = threading.Lock()


sessions = Sessions()


class Resumption:
    """One client connection's part in resumption: it offers the kept session before the handshake, and keeps the
    session it is given: at the handshake's end in TLS 1.2, and in TLS 1.3 once a ticket has arrived after it
    (its session then grows by the ticket), which a read sees."""

    def __init__(self, conn: SSL.Connection, key: Any, store: Sessions = sessions) -> None:
        self._conn, self._key, self._store = conn, key, store
        self._handshake_size = 0
        self._errors: tuple[tuple[int, int], ...] = ()
        self._offered = store.get(key)
        if self._offered is not None:
            conn.set_session(self._offered[0])

    @classmethod
    def of_client(cls, conn: SSL.Connection, settings: Any, host: str | None, port: int) -> Resumption | None:
        """A client's part, unless its flags say ``-reuse_sessions false``."""
        return cls(conn, (conn.get_context(), host, port)) if settings.reuse_sessions else None

    def handshake_done(self, verify_errors: list[tuple[int, int]]) -> bool:
        """After the handshake, whose check recorded ``verify_errors``: a resumed one ran no check, and gets the
        errors its session's check forgave. True when there is nothing more to do (the session is kept)."""
        if self._offered is not None and resumed(self._conn):
            verify_errors.extend(self._offered[1])
        self._errors = tuple(verify_errors)
        if self._conn.get_protocol_version_name() != "TLSv1.3":
            self._keep()
            return True
        self._handshake_size = session_size(self._conn)
        return False

    def after_read(self, delivered: bool) -> bool:
        """After a read, which ``delivered`` packets or not: True once there is nothing more to do, a ticket having
        come (its session is kept), or data without one first (a server that sends none: each look costs a call
        into OpenSSL, which gives up the GIL)."""
        if session_size(self._conn) <= self._handshake_size:
            return delivered
        self._keep()
        return True

    def _keep(self) -> None:
        session = self._conn.get_session()
        if session is not None:
            self._store.put(self._key, (session, self._errors))
