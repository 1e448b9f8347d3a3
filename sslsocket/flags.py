"""SSLFlags: the manual's option string, parsed into frozen ``Settings`` and built into a pyOpenSSL ``Context``.

``parse_flags`` is pure (a string and an environment mapping in, ``Settings`` out). ``build_context`` reads the
files it names, checks everything a handshake would trip on later (a missing file, a key that does not match its
certificate, a wrong pass phrase, a cipher OpenSSL cannot use) and returns a Context that is never changed again.

The verify levels keep the manual's meaning exactly:

======  =====================================  ==========================================================
level   server                                 client
======  =====================================  ==========================================================
0       asks for no certificate                checks nothing (warns: nothing stops an impostor)
1       asks for one, connects without it      checks; an unknown issuer (or self-signed) still connects
2       requires one                           checks, and checks the certificate names the host
======  =====================================  ==========================================================

At 1 and 2 any failure other than an unknown issuer (expired, bad signature, not yet valid...) refuses.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import shlex
import socket
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL, crypto

from .errors import FlagError

#: How long a TLS handshake may take when no ``-timeout`` is given: long enough for a slow network and a human
#: typing a pass phrase into ``openssl s_client``, short enough that a silent client does not tie up a server.
DEFAULT_HANDSHAKE_TIMEOUT = 30.0

#: The TLS 1.2 suites when no ``-cipher`` (nor ``SSL_CIPHER``) is given: Mozilla's "intermediate" configuration
#: (ssl-config.mozilla.org, guidelines 5.7) without its finite-field DHE suites, so only ECDHE (forward secrecy) with
#: an AEAD (AES-GCM, ChaCha20-Poly1305), in this order of the server's preference. TLS 1.3 keeps OpenSSL's suites,
#: which are all of Mozilla's.
DEFAULT_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
#: The key exchange groups when no ``-groups`` is given: Mozilla's (X25519, P-256, P-384) with, first, the hybrid
#: post-quantum X25519MLKEM768 where this OpenSSL has it. A client sends key shares for the two marked ``*``, so a
#: server without ML-KEM (OpenSSL 3.0, Erlang/OTP 25, Java 17) needs no extra round trip. X448 and P-521 are left
#: out, as Mozilla does.
DEFAULT_GROUPS = ("*X25519MLKEM768:*X25519:P-256:P-384", "X25519:P-256:P-384")
#: OpenSSL's default security level (since 3.2): a ``-cipher`` string that asks for less (``@SECLEVEL=0`` or ``1``)
#: would allow SHA-1 signatures and keys too short to resist, and is refused.
DEFAULT_SECLEVEL = 2

# What no configuration should allow, judged on each suite OpenSSL makes of a cipher list (not on the string, which
# OpenSSL expands: "ALL:eNULL" names no suite): the mark in the suite's name, and why it is refused. The manual's own
# ciphers are all here. Checked in this order: "DES-CBC3" before "DES".
_REFUSED = (
    ("NULL", "eNULL", "it does not encrypt at all"),
    ("ADH", "aNULL", "it authenticates nobody (anonymous Diffie-Hellman): anyone on the path can pose as the server"),
    ("AECDH", "aNULL", "it authenticates nobody (anonymous ECDH): anyone on the path can pose as the server"),
    ("EXP", "EXP", "export ciphers use 40-bit keys, broken in seconds"),
    ("RC4", "RC4", "RC4 is broken (RFC 7465 forbids it in TLS)"),
    ("IDEA", "IDEA", "IDEA was removed from TLS 1.2 (RFC 5469)"),
    ("RC2", "RC2", "RC2 is broken and was never in TLS 1.2"),
    ("DES-CBC3", "3DES", "3DES has 64-bit blocks: Sweet32 (CVE-2016-2183) recovers plaintext after some 32 GiB"),
    ("3DES", "3DES", "3DES has 64-bit blocks: Sweet32 (CVE-2016-2183) recovers plaintext after some 32 GiB"),
    ("DES", "DES", "single DES uses 56-bit keys, broken by brute force"),
    ("MD5", "MD5", "MD5 is broken"),
)
_MODERN_SUGGESTION = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256 (TLS 1.2), or leave -cipher out"

#: Verify errors that mean only "I do not know who issued this": what level 1 forgives.
UNKNOWN_ISSUER_ERRORS = frozenset(
    {
        SSL.X509VerificationCodes.ERR_UNABLE_TO_GET_ISSUER_CERT,
        SSL.X509VerificationCodes.ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        SSL.X509VerificationCodes.ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
        SSL.X509VerificationCodes.ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
        SSL.X509VerificationCodes.ERR_SELF_SIGNED_CERT_IN_CHAIN,
    }
)

_VERIFY_ERROR_NAMES = {
    value: name[4:].lower().replace("_", " ")
    for name, value in vars(SSL.X509VerificationCodes).items()
    if name.startswith("ERR_")
}


def verify_error_text(code: int) -> str:
    """A readable name for an X509 verify error code, e.g. ``cert has expired``."""
    return _VERIFY_ERROR_NAMES.get(code, f"verify error {code}")


class InsecureClientWarning(UserWarning):
    """A client at ``-verify 0`` checks nothing, so anyone on the path can pose as its server."""


@dataclass(frozen=True)
class Secret:
    """A pass phrase source (``pass:TEXT``, ``env:VAR``, ``file:PATH``) whose text never shows in a repr."""

    kind: str
    value: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Secret({self.kind}:...)"

    def resolve(self, env: Mapping[str, str]) -> bytes:
        if self.kind == "pass":
            return self.value.encode()
        if self.kind == "env":
            if self.value not in env:
                raise FlagError(f"-pass env:{self.value}: the environment variable {self.value} is not set")
            return env[self.value].encode()
        try:
            with open(self.value, "rb") as file:
                return file.readline().rstrip(b"\r\n")
        except OSError as exc:
            raise FlagError(f"-pass file:{self.value}: {exc.strerror}") from exc


@dataclass(frozen=True)
class Settings:
    """What an SSLFlags string asks for, every option in its final form."""

    certs: tuple[str, ...] = ()
    key: str | None = None
    cipher: str | None = None
    ciphersuites: str | None = None
    verify: int = 0
    depth: int | None = None
    log: str | None = None
    cafile: str | None = None
    capath: str | None = None
    password: Secret | None = None
    servername: str | None = None
    groups: str | None = None
    timeout: float = DEFAULT_HANDSHAKE_TIMEOUT


def _verify_level(flag: str, text: str) -> int:
    if text not in ("0", "1", "2"):
        raise FlagError(f"{flag} {text}: the verify level must be 0, 1 or 2", ("flag", flag))
    return int(text)


def _depth(flag: str, text: str) -> int:
    if not text.isdigit():
        raise FlagError(f"{flag} {text}: the depth must be a whole number", ("flag", flag))
    return int(text)


def _seconds(flag: str, text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 86400:
        raise FlagError(f"{flag} {text}: give a number of seconds above 0 and at most 86400 (a day)", ("flag", flag))
    return seconds


def pass_source(flag: str, text: str) -> Secret:
    """``pass:TEXT``, ``env:VAR`` or ``file:PATH``, as ``-pass`` takes it; ``flag`` names the culprit in errors."""
    kind, sep, value = text.partition(":")
    if not sep or kind not in ("pass", "env", "file"):
        raise FlagError(f"{flag}: give the pass phrase as pass:TEXT, env:VAR or file:PATH", ("flag", flag))
    return Secret(kind, value)


def _text(flag: str, text: str) -> str:
    return text


# Each flag: the Settings field it sets and how its argument is read. The old Erlang port program's spellings
# (-certfile, -keyfile, -ciphers, -cacertfile, -password, -depth) are aliases.
_FLAGS: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "-cert": ("certs", _text),
    "-certfile": ("certs", _text),
    "-key": ("key", _text),
    "-keyfile": ("key", _text),
    "-cipher": ("cipher", _text),
    "-ciphers": ("cipher", _text),
    "-ciphersuites": ("ciphersuites", _text),
    "-verify": ("verify", _verify_level),
    "-depth": ("depth", _depth),
    "-log": ("log", _text),
    "-CAfile": ("cafile", _text),
    "-cacertfile": ("cafile", _text),
    "-CApath": ("capath", _text),
    "-pass": ("password", pass_source),
    "-password": ("password", lambda flag, text: Secret("pass", text)),
    "-servername": ("servername", _text),
    "-groups": ("groups", _text),
    "-curves": ("groups", _text),
    "-timeout": ("timeout", _seconds),
}


def parse_flags(flags: str, env: Mapping[str, str] | None = None) -> Settings:
    """Read an SSLFlags string (options separated by spaces; a value with spaces may be quoted).

    ``env`` supplies ``SSL_CIPHER``, ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` (default: ``os.environ``).

    >>> settings = parse_flags("-cert 'my server.pem' -verify 2", env={"SSL_CERT_FILE": "ca.pem"})
    >>> settings.certs, settings.verify, settings.cafile
    (('my server.pem',), 2, 'ca.pem')
    >>> parse_flags("-verfy 2", env={})
    Traceback (most recent call last):
    ...
    sslsocket.errors.FlagError: unknown SSLFlags option '-verfy' (did you mean -verify?)
    """
    if not isinstance(flags, str):
        raise FlagError(f"SSLFlags must be a str such as '-cert server.pem', not {type(flags).__name__}")
    env = os.environ if env is None else env
    return _parse(flags, env.get("SSL_CIPHER"), env.get("SSL_CERT_FILE"), env.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=64)
def _parse(flags: str, cipher_env: str | None, cafile_env: str | None, capath_env: str | None) -> Settings:
    """``parse_flags`` of the string and the three variables it reads: remembered, since a server accepting in a
    loop, or a client connecting again and again, passes the same flags each time (``shlex`` is slow; Settings
    are frozen). A string that fails is not remembered: it raises each time."""
    try:
        words = shlex.split(flags)
    except ValueError as exc:
        raise FlagError(f"SSLFlags {flags!r}: {exc}") from None
    values: dict[str, Any] = {}
    certs: list[str] = []
    index = 0
    while index < len(words):
        flag = words[index]
        if flag not in _FLAGS:
            same_but_case = [known for known in _FLAGS if known.lower() == flag.lower()]  # -cafile: -CAfile
            close = same_but_case or difflib.get_close_matches(flag, _FLAGS, n=1, cutoff=0.75)  # -verfy; not -bogus
            hint = f" (did you mean {close[0]}?)" if close else f"; known flags: {' '.join(_FLAGS)}"
            raise FlagError(f"unknown SSLFlags option {flag!r}{hint}", ("flag", flag))
        if index + 1 >= len(words) or (words[index + 1].startswith("-") and words[index + 1] in _FLAGS):
            raise FlagError(f"SSLFlags option {flag} needs an argument", ("flag", flag))
        name, read = _FLAGS[flag]
        value = read(flag, words[index + 1])
        if name == "certs":
            certs.append(value)
        else:
            values[name] = value
        index += 2
    values["certs"] = tuple(certs)
    if "cipher" not in values and cipher_env:
        values["cipher"] = cipher_env
    if "cafile" not in values and "capath" not in values:
        if cafile_env:
            values["cafile"] = cafile_env
        if capath_env:
            values["capath"] = capath_env
    return Settings(**values)


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


def refusal(suite: str) -> tuple[str, str] | None:
    """Why a TLS 1.2 suite (in OpenSSL's spelling) is refused: OpenSSL's keyword that leaves its kind out, and the
    reason; None when it is acceptable.

    >>> refusal("DES-CBC3-SHA")
    ('3DES', '3DES has 64-bit blocks: Sweet32 (CVE-2016-2183) recovers plaintext after some 32 GiB')
    >>> refusal("ECDHE-RSA-AES128-GCM-SHA256") is None
    True
    """
    for mark, keyword, why in _REFUSED:
        if suite == mark or suite.startswith(mark + "-") or suite.endswith("-" + mark) or f"-{mark}-" in suite:
            return keyword, why
    return None


def _set_ciphers(ctx: SSL.Context, cipher: str) -> None:
    """Set a ``-cipher`` list, refusing, before any handshake, one whose suites include what ``_REFUSED`` names
    or that lowers OpenSSL's security level."""
    for name in cipher.split(":"):  # the manual's names first: OpenSSL no longer knows most of them
        found = None if name.startswith(("!", "-")) else refusal(name.lstrip("+"))  # "!RC4" leaves one out
        if found:
            raise FlagError(
                f"-cipher {name}: this cipher from the manual's day is gone: {found[1]}. "
                f"Use a modern one such as {_MODERN_SUGGESTION}",
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
                f" a modern list such as {_MODERN_SUGGESTION}",
                ("cipher", suite),
            )


def _set_groups(ctx: SSL.Context, groups: str | None) -> None:
    """The key exchange groups: ``-groups`` (checked name by name, so that the error names the unknown one), or
    ``DEFAULT_GROUPS``, the first that this OpenSSL takes."""
    from OpenSSL.SSL import _lib  # type: ignore[attr-defined]

    if groups is None:
        for default in DEFAULT_GROUPS:
            if _lib.SSL_CTX_set1_curves_list(ctx._context, default.encode()) == 1:
                return
        return  # pragma: no cover - an OpenSSL without X25519 keeps its own defaults
    for name in groups.split(":"):
        if not name.startswith("?"):
            alone = SSL.Context(SSL.TLS_METHOD)
            if _lib.SSL_CTX_set1_curves_list(alone._context, name.lstrip("*").encode()) != 1:
                raise FlagError(
                    f"-groups {groups}: this OpenSSL knows no key exchange group {name.lstrip('*')!r}"
                    " (known ones include X25519MLKEM768, X25519, P-256, P-384)",
                    ("groups", name),
                )
    if _lib.SSL_CTX_set1_curves_list(ctx._context, groups.encode()) != 1:
        raise FlagError(f"-groups {groups}: OpenSSL refuses this list", ("groups", groups))


def _whole_writes(ctx: SSL.Context) -> None:
    """Make ``SSL_write`` write all it is given before it returns, as OpenSSL does by default; pyOpenSSL turns on
    partial writes, which return after every 16 KiB record. Every call into OpenSSL gives up the GIL and takes it
    back, a thread hand-off when another thread wants it: one call per 256 KiB instead of sixteen. pyOpenSSL has no
    public ``clear_mode``, so this reaches its bindings, and does nothing where they lack the function."""
    from OpenSSL.SSL import _lib  # type: ignore[attr-defined]

    clear_mode = getattr(_lib, "SSL_CTX_clear_mode", None)
    if clear_mode is not None:
        clear_mode(ctx._context, _lib.SSL_MODE_ENABLE_PARTIAL_WRITE)


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
    return ctx


def _load_identity(ctx: SSL.Context, settings: Settings, server: bool, env: Mapping[str, str]) -> None:
    password = settings.password.resolve(env) if settings.password else None
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
    if server and not certificates:
        raise FlagError("a server must always have a certificate: give -cert FILE", ("flag", "-cert"))
    if certificates and key is None:
        raise FlagError(f"-cert {settings.certs[0]}: no private key; give -key FILE", ("flag", "-key"))
    if not certificates and key is not None:
        raise FlagError(f"-key {settings.key}: a key without a certificate; give -cert FILE", ("flag", "-cert"))
    if certificates and key is not None:
        ctx.use_certificate(certificates[0])
        for extra in certificates[1:]:
            ctx.add_extra_chain_cert(extra)
        try:
            ctx.use_privatekey(key)
            ctx.check_privatekey()
        except SSL.Error as exc:
            where = f" (-key {settings.key})" if settings.key else ""
            raise FlagError(
                f"the private key{where} does not match the certificate in -cert {settings.certs[0]}",
                ("flag", "-key"),
            ) from exc


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


#: The verify errors of OpenSSL's host check: at ``-verify 2`` the certificate does not name the host asked for.
NAME_MISMATCH = frozenset(
    {SSL.X509VerificationCodes.ERR_HOSTNAME_MISMATCH, SSL.X509VerificationCodes.ERR_IP_ADDRESS_MISMATCH}
)
# X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS and X509_CHECK_FLAG_NEVER_CHECK_SUBJECT (x509v3.h): "*" only as a whole
# left-most label, and never the subject's common name, as RFC 6125 and every browser have it.
_HOST_FLAGS = 0x4 | 0x20


def require_name(conn: SSL.Connection, name: str) -> None:
    """Make the handshake of ``conn`` (a client's) check that the peer's certificate names ``name``, a host name
    or an IP address: OpenSSL's own check (X509_check_host, X509_check_ip), run inside the certificate
    verification, so that a refusal is a verify error like any other and reaches the server as a TLS alert
    (bad_certificate). pyOpenSSL has no call for it, so this reaches its bindings."""
    from OpenSSL.SSL import _lib  # type: ignore[attr-defined]

    param = _lib.SSL_get0_param(conn._ssl)
    if is_ip(name):
        packed = socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
        done = _lib.X509_VERIFY_PARAM_set1_ip(param, packed, len(packed))
    else:
        _lib.X509_VERIFY_PARAM_set_hostflags(param, _HOST_FLAGS)
        encoded = name.encode("idna")
        done = _lib.X509_VERIFY_PARAM_set1_host(param, encoded, len(encoded))
    if done != 1:
        raise FlagError(f"cannot check the certificate against the host name {name!r}", ("servername", name))


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
