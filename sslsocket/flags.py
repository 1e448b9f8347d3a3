"""SSLFlags: the manual's option string, parsed into frozen ``Settings`` (``context`` builds them into a pyOpenSSL
``Context``), and the secure defaults, each with its reason.

``parse_flags`` is pure: a string and an environment mapping in, ``Settings`` out.

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
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from OpenSSL import SSL

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
MODERN_SUGGESTION = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256 (TLS 1.2), or leave -cipher out"

#: The verify errors of OpenSSL's host check: at ``-verify 2`` the certificate does not name the host asked for.
NAME_MISMATCH = frozenset(
    {SSL.X509VerificationCodes.ERR_HOSTNAME_MISMATCH, SSL.X509VerificationCodes.ERR_IP_ADDRESS_MISMATCH}
)

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
    #: ``-idle_timeout``: close an open connection after this many seconds without a byte either way (None: never,
    #: as in the manual).
    idle_timeout: float | None = None
    reuse_sessions: bool = True


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


def _boolean(flag: str, text: str) -> bool:
    if text not in ("true", "false"):
        raise FlagError(f"{flag} {text}: give true or false", ("flag", flag))
    return text == "true"


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
    "-idle_timeout": ("idle_timeout", _seconds),
    "-reuse_sessions": ("reuse_sessions", _boolean),
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
    values = _values(words)
    if "cipher" not in values and cipher_env:
        values["cipher"] = cipher_env
    if "cafile" not in values and "capath" not in values:
        if cafile_env:
            values["cafile"] = cafile_env
        if capath_env:
            values["capath"] = capath_env
    return Settings(**values)


def _values(words: list[str]) -> dict[str, Any]:
    """The words of an SSLFlags string, flag and argument by flag and argument, as ``Settings``' fields."""
    values: dict[str, Any] = {}
    certs: list[str] = []
    for index in range(0, len(words), 2):
        flag = words[index]
        if flag not in _FLAGS:
            raise FlagError(f"unknown SSLFlags option {flag!r}{_did_you_mean(flag)}", ("flag", flag))
        if index + 1 >= len(words) or (words[index + 1].startswith("-") and words[index + 1] in _FLAGS):
            raise FlagError(f"SSLFlags option {flag} needs an argument", ("flag", flag))
        name, read = _FLAGS[flag]
        value = read(flag, words[index + 1])
        if name == "certs":
            certs.append(value)
        else:
            values[name] = value
    values["certs"] = tuple(certs)
    return values


def _did_you_mean(flag: str) -> str:
    same_but_case = [known for known in _FLAGS if known.lower() == flag.lower()]  # -cafile: -CAfile
    close = same_but_case or difflib.get_close_matches(flag, _FLAGS, n=1, cutoff=0.75)  # -verfy; not -bogus
    return f" (did you mean {close[0]}?)" if close else f"; known flags: {' '.join(_FLAGS)}"


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
