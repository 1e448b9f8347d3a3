"""SSLFlags' ``Settings`` built into a pyOpenSSL ``Context``: ``build_context`` reads the files the settings name,
checks everything a handshake would trip on later (a missing file, a key that does not match its certificate, a
wrong pass phrase, a cipher OpenSSL cannot use, a weak one) and returns a Context that is never changed again.
Also what a connection needs of the settings beyond its context: the host check of ``-verify 2``, ``-log`` files and
``SSLKEYLOGFILE``."""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL, crypto

from . import tls
from .errors import FlagError
from .flags import (
    DEFAULT_CIPHERS,
    DEFAULT_GROUPS,
    DEFAULT_SECLEVEL,
    MODERN_SUGGESTION,
    UNKNOWN_ISSUER_ERRORS,
    InsecureClientWarning,
    Settings,
    refusal,
)

_PEM_KEY = re.compile(rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.+?-----END \1-----", re.S)


def _read(flag: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise FlagError(f"{flag} {path}: {exc.strerror}", ("file", path)) from exc


def _load_key(flag: str, path: str, pem: bytes, password: bytes | None) -> Any:
    try:
        return load_pem_private_key(pem, password)
    except TypeError as exc:
        if password is None:
            raise FlagError(f"{flag} {path}: the key is protected by a pass phrase; give it with -pass") from exc
        raise FlagError(f"{flag} {path}: the key is not protected, but -pass was given") from exc
    except ValueError as exc:
        if password is not None:
            raise FlagError(f"{flag} {path}: wrong pass phrase, or the key cannot be read") from exc
        raise FlagError(f"{flag} {path}: the private key cannot be read: {exc}") from exc


def _set_ciphers(ctx: SSL.Context, cipher: str) -> None:
    """Set a ``-cipher`` list, refusing, before any handshake, one whose suites include what ``_REFUSED`` names
    or that lowers OpenSSL's security level."""
    for name in cipher.split(":"):  # the manual's names first: OpenSSL no longer knows most of them
        found = None if name.startswith(("!", "-")) else refusal(name.lstrip("+"))  # "!RC4" leaves one out
        if found:
            raise FlagError(
                f"-cipher {name}: this cipher from the manual's day is gone: {found[1]}. "
                f"Use a modern one such as {MODERN_SUGGESTION}",
                ("cipher", name),
            )
    for level in re.findall(r"@SECLEVEL=(\d+)", cipher):
        if int(level) < DEFAULT_SECLEVEL:
            raise FlagError(
                f"-cipher {cipher}: @SECLEVEL={level} is below OpenSSL's default of {DEFAULT_SECLEVEL}, which would"
                " allow SHA-1 signatures and short keys; leave the level out",
                ("cipher", f"@SECLEVEL={level}"),
            )
    try:
        ctx.set_cipher_list(cipher.encode())
    except SSL.Error as exc:
        raise FlagError(f"-cipher {cipher}: OpenSSL knows none of these ciphers", ("cipher", cipher)) from exc
    scratch = SSL.Context(SSL.TLS_METHOD)  # a Connection would freeze ctx: the list is read from a copy
    scratch.set_cipher_list(cipher.encode())
    for suite in SSL.Connection(scratch, None).get_cipher_list():
        found = refusal(suite)
        if found:
            keyword, why = found
            raise FlagError(
                f"-cipher {cipher}: it allows {suite}, and {why}. Add :!{keyword} to leave such suites out, or use"
                f" a modern list such as {MODERN_SUGGESTION}",
                ("cipher", suite),
            )


def _set_groups(ctx: SSL.Context, groups: str | None) -> None:
    """The key exchange groups: ``-groups`` (checked name by name, so that the error names the unknown one), or
    ``DEFAULT_GROUPS``, the first that this OpenSSL takes."""
    if groups is None:
        for default in DEFAULT_GROUPS:
            if tls.set_groups(ctx, default):
                return
        return  # pragma: no cover - an OpenSSL without X25519 keeps its own defaults
    for name in groups.split(":"):
        if not name.startswith("?") and not tls.set_groups(SSL.Context(SSL.TLS_METHOD), name.lstrip("*")):
            raise FlagError(
                f"-groups {groups}: this OpenSSL knows no key exchange group {name.lstrip('*')!r}"
                " (known ones include X25519MLKEM768, X25519, P-256, P-384)",
                ("groups", name),
            )
    if not tls.set_groups(ctx, groups):
        raise FlagError(f"-groups {groups}: OpenSSL refuses this list", ("groups", groups))


#: OpenSSL's SSL_MODE_ENABLE_PARTIAL_WRITE (ssl.h), which pyOpenSSL has no name for.
_PARTIAL_WRITE = 0x1


def _whole_writes(ctx: SSL.Context) -> None:
    """Make ``SSL_write`` write all it is given before it returns, as OpenSSL does by default; pyOpenSSL turns on
    partial writes, which return after every 16 KiB record. Every call into OpenSSL gives up the GIL and takes it
    back, a thread hand-off when another thread wants it: one call per 256 KiB instead of sixteen."""
    ctx.clear_mode(_PARTIAL_WRITE)


def build_context(settings: Settings, *, server: bool, env: Mapping[str, str] | None = None) -> SSL.Context:
    """A pyOpenSSL Context for one side, fully configured and checked; never mutated afterwards."""
    env = os.environ if env is None else env
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD if server else SSL.TLS_CLIENT_METHOD)
    # TLS 1.2 is the oldest version without known protocol breaks; 1.3 is preferred by OpenSSL on its own.
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    # No compression: CRIME. No renegotiation: its attacks and its complexity; TLS 1.3 has none either.
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_RENEGOTIATION)
    # An idle connection gives back its 34 KiB of record buffers: thousands of held connections stay small.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    _whole_writes(ctx)
    _load_identity(ctx, settings, server, env)
    if settings.cipher:
        _set_ciphers(ctx, settings.cipher)
    else:
        ctx.set_cipher_list(DEFAULT_CIPHERS.encode())
    # The server's order, not the client's: an old client that lists CBC suites first still gets an AEAD.
    ctx.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE)
    _set_groups(ctx, settings.groups)
    keylog = env.get("SSLKEYLOGFILE")
    logger = _key_logger(keylog) if keylog else None
    if logger is not None:
        ctx.set_keylog_callback(logger)
    if settings.ciphersuites:
        try:
            ctx.set_tls13_ciphersuites(settings.ciphersuites.encode())
        except SSL.Error as exc:
            raise FlagError(
                f"-ciphersuites {settings.ciphersuites}: OpenSSL knows none of these TLS 1.3 suites",
                ("ciphersuites", settings.ciphersuites),
            ) from exc
    _set_verify(ctx, settings, server)
    if server:  # resumption with client certificates checked needs a session context; tickets are this ctx's own
        ctx.set_session_id(os.urandom(16))
    if server and settings.verify == 1:  # OpenSSL would record what the check forgave as passed (see sessions)
        ctx.set_options(SSL.OP_NO_TICKET)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    return ctx


def _load_identity(ctx: SSL.Context, settings: Settings, server: bool, env: Mapping[str, str]) -> None:
    password = settings.password.resolve(env) if settings.password else None
    certificates, key = _read_identity(settings, password)
    if server and not certificates:
        raise FlagError("a server must always have a certificate: give -cert FILE", ("flag", "-cert"))
    if certificates and key is None:
        raise FlagError(f"-cert {settings.certs[0]}: no private key; give -key FILE", ("flag", "-key"))
    if not certificates and key is not None:
        raise FlagError(f"-key {settings.key}: a key without a certificate; give -cert FILE", ("flag", "-cert"))
    if not certificates:
        return
    ctx.use_certificate(certificates[0])
    for extra in certificates[1:]:
        ctx.add_extra_chain_cert(extra)
    try:
        ctx.use_privatekey(key)
        ctx.check_privatekey()
    except SSL.Error as exc:
        where = f" (-key {settings.key})" if settings.key else ""
        raise FlagError(
            f"the private key{where} does not match the certificate in -cert {settings.certs[0]}", ("flag", "-key")
        ) from exc


def _read_identity(settings: Settings, password: bytes | None) -> tuple[list[x509.Certificate], Any]:
    """The certificates of the ``-cert`` files, in order, and the first key found in them or in ``-key``."""
    certificates: list[x509.Certificate] = []
    key = None
    for path in settings.certs:
        pem = _read("-cert", path)
        try:
            certificates += x509.load_pem_x509_certificates(pem)
        except ValueError:
            pass  # a -cert file may hold only the key, as in the manual's client example
        found = _PEM_KEY.search(pem)
        if found and key is None:
            key = _load_key("-cert", path, found.group(0), password)
        if not found and not certificates:
            raise FlagError(f"-cert {path}: holds no PEM certificate or private key", ("file", path))
    if settings.key:
        pem = _read("-key", settings.key)
        found = _PEM_KEY.search(pem)
        if not found:
            raise FlagError(f"-key {settings.key}: holds no PEM private key", ("file", settings.key))
        key = _load_key("-key", settings.key, found.group(0), password)
    return certificates, key


def _set_verify(ctx: SSL.Context, settings: Settings, server: bool) -> None:
    level = settings.verify
    if level == 0:
        ctx.set_verify(SSL.VERIFY_NONE)
        if not server:
            warnings.warn(
                "a client at -verify 0 checks nothing: anyone on the path can pose as the server "
                "(use -verify 2 -CAfile ca.pem)",
                InsecureClientWarning,
                stacklevel=5,  # _set_verify, build_context, load_context, client: the caller of client()
            )
        return
    for option, path in (("-CAfile", settings.cafile), ("-CApath", settings.capath)):
        if path and not os.path.exists(path):
            raise FlagError(f"{option} {path}: No such file or directory", ("file", path))
    try:
        if settings.cafile or settings.capath:
            ctx.load_verify_locations(settings.cafile, settings.capath)
        else:
            ctx.set_default_verify_paths()
    except SSL.Error as exc:
        where = settings.cafile or settings.capath
        raise FlagError(f"-CAfile/-CApath {where}: OpenSSL cannot read it", ("file", where)) from exc
    mode = SSL.VERIFY_PEER
    if server and level == 2:
        mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    ctx.set_verify(mode, _verify_callback(level))
    if settings.depth is not None:
        ctx.set_verify_depth(settings.depth)


def require_name(conn: SSL.Connection, name: str) -> None:
    """Make the handshake of ``conn`` (a client's) check that the peer's certificate names ``name``, a host name
    or an IP address: OpenSSL's own check (X509_check_host, X509_check_ip), run inside the certificate
    verification, so that a refusal is a verify error like any other and reaches the server as a TLS alert
    (bad_certificate)."""
    if is_ip(name):
        done = tls.require_ip(conn, socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name))
    else:
        done = tls.require_host(conn, name.encode("idna"))
    if not done:
        raise FlagError(f"cannot check the certificate against the host name {name!r}", ("servername", name))


def new_connection(
    context: SSL.Context, tcp: socket.socket, settings: Settings, server: bool, hostname: str | None
) -> tuple[SSL.Connection, str | None]:
    """A TLS connection over ``tcp``, for one side, and the name a client at ``-verify 2`` requires its server's
    certificate to bear (None otherwise). A client names ``hostname`` in SNI, unless it is an IP address."""
    conn = SSL.Connection(context, tcp)
    if server:
        conn.set_accept_state()
        return conn, None
    conn.set_connect_state()
    if hostname and not is_ip(hostname):
        conn.set_tlsext_host_name(hostname.encode("idna"))
    expected = (settings.servername or hostname) if settings.verify == 2 else None
    if expected:
        require_name(conn, expected)
    return conn, expected


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address rather than a name."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except OSError:
            pass
    return False


def _verify_callback(level: int) -> Callable[[SSL.Connection, crypto.X509, int, int, int], bool]:
    """Record every verify error on the connection's mediator; forgive an unknown issuer at level 1."""

    def verify(conn: SSL.Connection, cert: crypto.X509, code: int, depth: int, ok: int) -> bool:
        if ok:
            return True
        mediator = conn.get_app_data()
        if mediator is not None:
            mediator.verify_errors.append((depth, code))
        return level == 1 and code in UNKNOWN_ISSUER_ERRORS

    return verify


_log_handlers: dict[str, logging.Logger] = {}


def connection_logger(path: str) -> logging.Logger:
    """The logger that ``-log FILE`` writes to: a child of ``sslsocket`` with a file handler of its own."""
    path = os.path.abspath(path)
    logger = _log_handlers.get(path)
    if logger is None:
        logger = logging.getLogger(f"sslsocket.log.{len(_log_handlers)}")
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        _log_handlers[path] = logger
    return logger


def close_logs() -> None:
    """Close every ``-log`` file (``stop()`` does this)."""
    for logger in _log_handlers.values():
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    _log_handlers.clear()
    _contexts.clear()


_keylog_lock = threading.Lock()
_keylog_warned: set[str] = set()


def _key_logger(path: str) -> Callable[[SSL.Connection, bytes], None] | None:
    """``SSLKEYLOGFILE``: every connection appends its TLS secrets to ``path``, one NSS key log line each, as curl,
    browsers and Python's ``ssl`` do, so that Wireshark can read a capture. Said once per file, as a WARNING: with
    these lines anyone who has the capture reads the traffic; the file is made readable by its owner only. A file
    that cannot be opened is said once too, and then nothing is logged (None)."""
    problem: str | None = None
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
    except OSError as exc:
        problem = f"SSLKEYLOGFILE is set, but {path} cannot be opened ({exc.strerror}): no TLS secrets are logged"
    with _keylog_lock:
        if path not in _keylog_warned:
            _keylog_warned.add(path)
            logging.getLogger("sslsocket").warning(
                problem or f"SSLKEYLOGFILE is set: the TLS secrets of every connection are appended to {path}"
            )
    if problem:
        return None

    def write(conn: SSL.Connection, line: bytes) -> None:
        try:
            with _keylog_lock, open(path, "ab") as file:
                file.write(line + b"\n")
        except OSError:
            pass  # removed or made unwritable meanwhile: a connection does not fail for its key log

    return write


_contexts: dict[tuple[Any, ...], SSL.Context] = {}


def load_context(settings: Settings, *, server: bool) -> SSL.Context:
    """``build_context``, cached while the files it read are unchanged: a server accepting in a loop with the same
    flags shares one Context (OpenSSL contexts are safe to share between connections)."""
    stamps = []
    for path in (*settings.certs, settings.key, settings.cafile):
        try:
            stamps.append(os.stat(path).st_mtime_ns if path else None)
        except OSError:
            stamps.append(None)
    secret = settings.password
    env_secret = os.environ.get(secret.value) if secret and secret.kind == "env" else None
    key = (settings, server, tuple(stamps), env_secret, os.environ.get("SSLKEYLOGFILE"))
    ctx = _contexts.get(key)
    if ctx is None:
        ctx = build_context(settings, server=server)
        if settings.log:
            try:
                connection_logger(settings.log)
            except OSError as exc:
                raise FlagError(f"-log {settings.log}: {exc.strerror}", ("file", settings.log)) from exc
        if len(_contexts) > 64:
            _contexts.clear()
        _contexts[key] = ctx
    return ctx
