"""The certificate commands of ``sslsocket`` (``makecert``, ``csr``, ``rehash``, ``unprotect``), and what every
command shares: ``Failure``, the one-line error, and the progress and pass phrase helpers."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from cryptography.hazmat.primitives import serialization

from . import certs
from .flags import pass_source


class Failure(Exception):
    """A failure to report in one line, with exit status 1."""


def secret(text: str) -> bytes:
    return pass_source("--pass", text).resolve(os.environ)


def status(text: str) -> None:
    """A progress line on standard error, for what may take a moment."""
    print(text, file=sys.stderr, flush=True)


def run_makecert(args: argparse.Namespace) -> int:
    _check_makecert(args)
    if args.key == "rsa":
        status("generating a 2048-bit RSA key ...")
    common_name = args.cn or (args.name[0] if args.name else "sslsocket test CA" if args.ca else "localhost")
    identity = _make_ca(args, common_name) if args.ca else _make_signed(args, common_name)
    if args.hash_link:
        link = os.path.join(os.path.dirname(os.path.abspath(args.out)), certs.subject_hash_name(identity.cert))
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(os.path.basename(args.out), link)
        print(f"linked {link} -> {os.path.basename(args.out)}")
    return 0


def _check_makecert(args: argparse.Namespace) -> None:
    if args.ca and (args.issuer or args.name):
        raise Failure("--ca makes a CA, which names no host and has no issuer: leave out --name and --issuer")
    if "" in args.name or args.cn == "":
        raise Failure("--name and --cn take a host name or an IP address, not an empty string")
    for path in (args.out, certs.ca_key_path(args.out)) if args.ca else (args.out,):
        if os.path.exists(path) and not args.force:
            why = " (what its key signed would no longer verify)" if args.ca else ""
            raise Failure(f"{path} exists{why}: give --force to overwrite it")


def _make_ca(args: argparse.Namespace, common_name: str) -> certs.Identity:
    identity = certs.make_ca(common_name, days=args.days, key=args.key)
    identity.write_ca(args.out)
    print(f"wrote {args.out}: a CA certificate for {common_name}, valid {args.days} days (give it to clients)")
    print(f"wrote {certs.ca_key_path(args.out)}: its {args.key} key (keep it to yourself)")
    return identity


def _make_signed(args: argparse.Namespace, common_name: str) -> certs.Identity:
    try:
        issuer = certs.load_ca(args.issuer) if args.issuer else None
    except (OSError, ValueError) as exc:
        raise Failure(f"--issuer {args.issuer}: cannot read the CA and its key ({exc})") from exc
    try:
        identity = certs.make_cert(
            common_name, issuer=issuer, names=tuple(args.name) or None, days=args.days, key=args.key
        )
    except ValueError as exc:
        raise Failure(f"--name/--cn: {exc}") from exc
    identity.write(args.out)
    by = f", signed by {args.issuer}" if args.issuer else ", self-signed"
    print(
        f"wrote {args.out}: a certificate for {', '.join(identity.names())}{by}, valid {args.days} days,"
        f" and its {args.key} key"
    )
    return identity


def run_rehash(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.directory):
        raise Failure(f"{args.directory}: not a directory")
    made = certs.rehash(args.directory)
    for link, target in made:
        print(f"{link} -> {target}")
    if not made:
        raise Failure(f"{args.directory}: no PEM certificate (*.pem, *.crt) found")
    return 0


def run_csr(args: argparse.Namespace) -> int:
    if args.key == "rsa":
        status("generating a 2048-bit RSA key ...")
    try:
        request, key = certs.make_csr(args.cn, args.key)
    except ValueError as exc:
        raise Failure(f"--cn {args.cn!r}: {exc}") from exc
    password = secret(args.password) if args.password else None
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    certs.write_private(
        args.keyout, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    with open(args.out, "wb") as file:
        file.write(request.public_bytes(serialization.Encoding.PEM))
    print(f"wrote {args.out} (the request, for CN={args.cn}) and {args.keyout} (its key)")
    return 0


def run_unprotect(args: argparse.Namespace) -> int:
    with open(args.input, "rb") as file:
        pem = file.read()
    if b"ENCRYPTED" not in pem:
        raise Failure(f"{args.input}: not a key protected by a pass phrase (nothing to remove)")
    try:
        password = secret(args.password) if args.password else getpass.getpass(f"pass phrase for {args.input}: ")
    except EOFError:
        raise Failure(f"{args.input}: no pass phrase: standard input ended (give it with --pass)") from None
    if isinstance(password, str):
        password = password.encode()
    try:
        plain = certs.unprotect(pem, password)
    except (ValueError, TypeError) as exc:
        raise Failure(f"{args.input}: wrong pass phrase, or not a protected PEM key") from exc
    certs.write_private(args.output, plain)
    print(f"wrote {args.output}: the key without a pass phrase; only the file system protects it now")
    return 0
