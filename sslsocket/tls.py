"""What the mediator needs to know of pyOpenSSL, apart from the calls themselves: the one want-read / want-write
dance, what a handshake tells of the peer, and OpenSSL's errors in words that say what to do about them."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from OpenSSL._util import no_zero_allocator
from OpenSSL.SSL import _ffi, _lib  # type: ignore[attr-defined]

from .errors import ConnectionBroken
from .flags import NAME_MISMATCH, UNKNOWN_ISSUER_ERRORS, Settings, verify_error_text
from .system import IN, OUT

# ---- pyOpenSSL's private bindings ----------------------------------------------------------------------------------
# Every use of them is here, each for what pyOpenSSL has no public call for, and each says what it buys. A test
# (test_units, "private bindings") fails at once if an upgrade of pyOpenSSL takes one of them away.

#: The OpenSSL functions reached through pyOpenSSL's bindings (``_lib``).
BINDINGS = (
    "SSL_write",
    "SSL_read",
    "SSL_CTX_set1_curves_list",
    "SSL_get0_param",
    "X509_VERIFY_PARAM_set1_ip",
    "X509_VERIFY_PARAM_set_hostflags",
    "X509_VERIFY_PARAM_set1_host",
    "i2d_SSL_SESSION",
    "SSL_get_session",
    "SSL_session_reused",
    "SSL_set_cert_cb",
)
# X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS and X509_CHECK_FLAG_NEVER_CHECK_SUBJECT (x509v3.h): "*" only as a whole
# left-most label, and never the subject's common name, as RFC 6125 and every browser have it.
_HOST_FLAGS = 0x4 | 0x20


def set_groups(ctx: SSL.Context, groups: str) -> bool:
    """``-groups``: the key exchange groups, as OpenSSL's ``SSL_CTX_set1_groups_list`` takes them (X25519MLKEM768
    first by default, which pyOpenSSL's ``set_tmp_ecdh`` cannot name). False if OpenSSL refuses the list."""
    return bool(_lib.SSL_CTX_set1_curves_list(ctx._context, groups.encode()) == 1)


def require_host(conn: SSL.Connection, name: bytes) -> bool:
    """At ``-verify 2``: the certificate must name the host ``name`` (IDNA), checked by OpenSSL inside the
    verification (``X509_check_host``), so that a refusal is a TLS alert like any other. False if OpenSSL refuses."""
    param = _lib.SSL_get0_param(conn._ssl)
    _lib.X509_VERIFY_PARAM_set_hostflags(param, _HOST_FLAGS)
    return bool(_lib.X509_VERIFY_PARAM_set1_host(param, name, len(name)) == 1)


def require_ip(conn: SSL.Connection, packed: bytes) -> bool:
    """``require_host`` for an IP address (4 or 16 bytes), ``X509_check_ip``."""
    return bool(_lib.X509_VERIFY_PARAM_set1_ip(_lib.SSL_get0_param(conn._ssl), packed, len(packed)) == 1)


def session_size(conn: SSL.Connection) -> int:
    """The size of the connection's session, encoded as OpenSSL would store it: a ticket makes it grow, which is
    how a client learns that a TLS 1.3 ticket came (OpenSSL 3.0 has no ``SSL_SESSION_has_ticket`` in pyOpenSSL);
    ``i2d_SSL_SESSION`` with no buffer only counts."""
    return int(_lib.i2d_SSL_SESSION(_lib.SSL_get_session(conn._ssl), _ffi.NULL))


class CertificateRequest:
    """Whether the server asked this client, which has no certificate, for one: so that a refusal can say what to do.
    OpenSSL runs a client's certificate callback (``SSL_set_cert_cb``) when, and only when, a CertificateRequest came
    (in TLS 1.2 and 1.3 alike), so a handshake without one costs no call of Python (pyOpenSSL's info callback, which
    this replaces, cost some 60 a handshake). The callback sets a C int that this object owns, with the connection
    (its mediator holds both): OpenSSL holds no Python object."""

    def __init__(self, conn: SSL.Connection) -> None:
        self._flag = _ffi.new("int *")
        _lib.SSL_set_cert_cb(conn._ssl, _certificate_requested, self._flag)

    def __bool__(self) -> bool:
        return bool(self._flag[0])


def _note_request(ssl: Any, flag: Any) -> int:
    _ffi.cast("int *", flag)[0] = 1
    return 1  # go on, sending no certificate, as without the callback


_certificate_requested = _ffi.callback("int(SSL *, void *)", _note_request, error=1)


def resumed(conn: SSL.Connection) -> bool:
    """Whether the handshake of ``conn`` resumed a session: what the resumption tests and ``sock.resumed`` say."""
    return bool(_lib.SSL_session_reused(conn._ssl))


class PeerClosed(Exception):
    """The peer sent close_notify."""


def attempt(call: Any, *args: Any) -> tuple[Any, int]:
    """Run one non-blocking TLS call: ``(its result, 0)``, or ``(None, IN or OUT)``, what it waits for. (A write
    that waits must be retried with the very same bytes, as OpenSSL requires.)"""
    try:
        return call(*args), 0
    except SSL.WantReadError:
        return None, IN
    except SSL.WantWriteError:
        return None, OUT


def write(conn: SSL.Connection, data: bytes | memoryview) -> tuple[int, int]:
    """One ``SSL_write`` of ``data``: ``(bytes written, 0)``, or ``(0, IN or OUT)``, what it waits for (a write that
    waits must be retried with the very same bytes, as OpenSSL requires). ``conn.send`` less one call into OpenSSL:
    pyOpenSSL asks ``SSL_get_error`` after every ``SSL_write``, and every call gives up the GIL, which costs a
    thread hand-off when another thread wants it (a peer's thread that the write just woke, in a request/response
    rhythm); here only a write that failed asks, through pyOpenSSL's own error reporting."""
    with _ffi.from_buffer(data) as buffer:
        result = _lib.SSL_write(conn._ssl, buffer, len(buffer))
    if result > 0:
        return int(result), 0
    try:
        conn._raise_ssl_error(conn._ssl, result)
    except SSL.WantWriteError:
        return 0, OUT
    except SSL.WantReadError:
        return 0, IN
    return 0, OUT  # (pyOpenSSL raises for every failure: never here)


def read(conn: SSL.Connection, size: int) -> tuple[bytes | None, int]:
    """One ``SSL_read`` of ``size`` bytes at most: ``(data, 0)``, or ``(None, IN or OUT)``; ``PeerClosed`` at the
    peer's close_notify. ``conn.recv`` less the same call as ``write``."""
    buffer = no_zero_allocator("char[]", size)
    result = _lib.SSL_read(conn._ssl, buffer, size)
    if result > 0:
        return _ffi.buffer(buffer, result)[:], 0
    try:
        conn._raise_ssl_error(conn._ssl, result)
    except SSL.WantReadError:
        return None, IN
    except SSL.WantWriteError:
        return None, OUT
    except SSL.ZeroReturnError:
        raise PeerClosed() from None
    except SSL.SysCallError:
        # OpenSSL 4 reports a close_notify that follows a warning alert (Java's user_canceled) as an unexpected
        # EOF, though it has read the close_notify: an orderly close all the same. (A fatal alert sets
        # RECEIVED_SHUTDOWN too, but raises SSL.Error, naming the alert.)
        if conn.get_shutdown() & SSL.RECEIVED_SHUTDOWN:
            raise PeerClosed() from None
        raise
    return None, IN  # (pyOpenSSL raises for every failure: never here)


@dataclass(frozen=True)
class PeerReport:
    """What the handshake settled: read once, when it ends."""

    #: The TLS version (``"TLSv1.3"``).
    protocol: str | None = None
    #: The cipher suite.
    cipher: str | None = None
    #: The key exchange group (``"X25519MLKEM768"``, ``"x25519"``...).
    group: str | None = None
    #: The peer's certificate (a ``cryptography`` object), or None.
    peer_certificate: x509.Certificate | None = None
    #: ``"ok"``, ``"not checked"``, ``"no certificate"``, or the errors forgiven below ``-verify 2``.
    verify_result: str = "not checked"
    #: On a server: the host name the client asked for (SNI), or None.
    servername: str | None = None
    #: Whether the handshake resumed an earlier session (its certificate and verify result are that session's).
    resumed: bool = False

    @classmethod
    def read(cls, conn: SSL.Connection, server: bool, level: int, verify_errors: list[tuple[int, int]]) -> PeerReport:
        certificate = conn.get_peer_certificate(as_cryptography=True)
        if level == 0:
            result = "not checked"
        elif certificate is None:
            result = "no certificate"
        elif verify_errors:
            seen = dict.fromkeys(verify_error_text(code) for _, code in verify_errors)
            result = f"accepted despite: {', '.join(seen)}"
        else:
            result = "ok"
        name = conn.get_servername() if server else None
        return cls(
            conn.get_protocol_version_name(),
            conn.get_cipher_name(),
            conn.get_group_name(),
            certificate,
            result,
            name.decode("idna") if name else None,
            resumed(conn),
        )

    def describe(self) -> str:
        subject = self.peer_certificate.subject.rfc4514_string() if self.peer_certificate else "without certificate"
        return f"{self.protocol} {self.cipher}, peer {subject}, verify {self.verify_result}"


def broken(exc: BaseException, certificate_requested: bool = False) -> ConnectionBroken:
    """The ``error`` of ``("socket_closed", error)`` for an exception from the TLS connection; a client without a
    certificate whose server asked for one (``certificate_requested``) is told so: in TLS 1.3 the server's refusal
    comes after the client's handshake has ended, as the first record it reads."""
    if isinstance(exc, ConnectionBroken):
        return exc
    if isinstance(exc, SSL.SysCallError):
        code, text = exc.args if len(exc.args) == 2 else (-1, str(exc))
        if code == -1 or code == 0:
            error = _truncated()
        else:
            error = ConnectionBroken(f"the connection failed: {text}", "reset" if code == errno.ECONNRESET else "os")
    elif isinstance(exc, SSL.Error):
        text = error_text(exc)
        if "unexpected eof" in text:
            error = _truncated()
        else:
            error = ConnectionBroken(f"TLS error: {without_certificate(text, certificate_requested)}", "tls")
    elif isinstance(exc, OSError):
        error = ConnectionBroken(f"the connection failed: {exc.strerror or exc}", "os")
    else:
        error = ConnectionBroken(f"the mediator failed: {exc!r}", "internal")
        error.__cause__ = exc  # a bug: its traceback says where (it is logged too)
        return error
    # The cause without its traceback: those frames are the mediator's, and would keep the socket alive as long as
    # its owner keeps the error.
    error.__cause__ = exc.with_traceback(None)
    return error


def _truncated() -> ConnectionBroken:
    return ConnectionBroken("the peer closed its TCP connection without a TLS close_notify (truncated)", "truncated")


# OpenSSL's reasons for a failed handshake, in words that say what to do about them.
HANDSHAKE_REASONS = {
    "unsupported protocol": "the peer offers only TLS versions this side refuses (TLS 1.2 is the oldest accepted)",
    "protocol version": "the peer refuses every TLS version this side offers (TLS 1.2 and 1.3)",
    "no shared cipher": "no cipher in common with the peer (see -cipher and -ciphersuites)",
    "handshake failure": "the peer refused the handshake (no cipher or TLS version in common?)",
    "wrong version number": "the peer is not speaking TLS",
    "http request": "the peer is speaking plain HTTP, not TLS",
    "packet length too long": "the peer is not speaking TLS",
    "record layer failure": "the peer is not speaking TLS",
    "certificate required": "the peer requires a certificate from this side: give -cert",
    "unknown ca": "the peer does not trust the issuer of this side's certificate",
    "bad certificate": "the peer refused this side's certificate",
    "certificate expired": "the peer says this side's certificate has expired",
}


#: The alerts with which servers refuse a client that gave no certificate: RFC 8446 says certificate_required, TLS 1.2
#: has no such alert, and peers send handshake_failure or bad_certificate (OpenSSL, JSSE, as their versions choose).
_REFUSALS_OF_NO_CERTIFICATE = ("certificate required", "handshake failure", "bad certificate", "access denied")


def without_certificate(text: str, certificate_requested: bool) -> str:
    """OpenSSL's ``text`` of a failure, or, when a client without a certificate was asked for one and then refused
    (``certificate_requested``), that, and what to do about it."""
    if certificate_requested and any(alert in text for alert in _REFUSALS_OF_NO_CERTIFICATE):
        return (
            "the server asked for a certificate from this client, which gave none: give -cert FILE (and -key FILE"
            f" unless the file holds the key) ({text})"
        )
    return text


def error_text(exc: SSL.Error) -> str:
    parts = []
    for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
        if isinstance(item, tuple) and len(item) == 3:
            parts.append(str(item[2]))
    return "; ".join(parts) or str(exc) or type(exc).__name__


@dataclass(frozen=True)
class HandshakeFailure:
    """Why a handshake failed, from OpenSSL's error and what the certificate check saw."""

    exc: SSL.Error
    server: bool
    verify_errors: list[tuple[int, int]]
    expected_name: str | None
    settings: Settings
    certificate_requested: bool = False

    @property
    def reason(self) -> str:
        """``"hostname"``, ``"refused_peer"`` (a server refusing its client's certificate, or its lack of one),
        or ``"tls"``."""
        if self.verify_errors and self.verify_errors[-1][1] in NAME_MISMATCH:
            return "hostname"
        if self.server and (self.verify_errors or "did not return a certificate" in error_text(self.exc)):
            return "refused_peer"
        return "tls"

    @property
    def cause(self) -> str:
        if self.verify_errors:
            depth, code = self.verify_errors[-1]
            if code in NAME_MISMATCH:
                return f"its certificate does not name {self.expected_name!r} (-verify 2)"
            hint = ""
            if code in UNKNOWN_ISSUER_ERRORS:
                trusted = self.settings.cafile or self.settings.capath or "the system's store"
                hint = f"; its issuer is not among the CAs of {trusted}: give the CA that signed it with -CAfile FILE"
            return f"the peer's certificate was refused: {verify_error_text(code)} (at depth {depth}){hint}"
        if isinstance(self.exc, SSL.SysCallError):
            return "the peer closed the connection (is it speaking TLS? does it accept our certificate?)"
        text = error_text(self.exc)
        explained = without_certificate(text, self.certificate_requested)
        if explained != text:
            return explained
        for reason, meaning in HANDSHAKE_REASONS.items():
            if reason in text:
                return f"{meaning} ({text})"
        return text
