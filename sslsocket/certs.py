"""Keys and certificates with ``cryptography``: the manual's ``req -new -x509 -nodes`` recipes, as functions, and
a certificate authority of your own for ``-verify 2``, in the spirit of trustme: a CA in one call, certificates
that it signs in another, for host names and IP addresses alike.

>>> import os, tempfile
>>> from sslsocket.certs import make_ca, load_ca
>>> where = tempfile.mkdtemp()
>>> ca = make_ca("my test CA")
>>> ca.write_ca(os.path.join(where, "ca.pem"))            # ca.pem for the clients, its key in ca.key
>>> server = load_ca(os.path.join(where, "ca.pem")).issue("localhost", "127.0.0.1")
>>> server.write(os.path.join(where, "server.pem"))       # certificate and key: -cert server.pem
>>> server.names()
['localhost', '127.0.0.1']

Used by the demo, the tests and the ``makecert`` command; nothing here touches a socket.
"""

from __future__ import annotations

import datetime
import glob
import ipaddress
import os
import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def new_key(kind: str = "ec") -> PrivateKey:
    """A fresh private key: ``"ec"`` (P-256, fast) or ``"rsa"`` (2048 bits, the widest support)."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"key kind must be 'ec' or 'rsa', not {kind!r}")


@dataclass
class Identity:
    """A certificate and its key."""

    cert: x509.Certificate
    key: PrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: bytes | None = None) -> bytes:
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)

    def write(self, path: str, key_path: str | None = None, password: bytes | None = None) -> None:
        """Write the certificate to ``path``, with the key in the same file (the manual's ``test.pem``) or in
        ``key_path``. A file holding a key is readable by its owner only."""
        if key_path is None:
            write_private(path, self.cert_pem() + self.key_pem(password))
        else:
            with open(path, "wb") as file:
                file.write(self.cert_pem())
            write_private(key_path, self.key_pem(password))

    def write_ca(self, path: str, key_path: str | None = None) -> None:
        """Write a CA: its certificate alone to ``path`` (the file that clients get, as ``-CAfile``), its key to
        ``key_path`` (by default beside it: ``ca.pem`` -> ``ca.key``), readable by its owner only."""
        self.write(path, key_path or ca_key_path(path))

    def issue(self, *names: str, days: int = 365, key: str = "ec") -> Identity:
        """A certificate signed by this CA for ``names`` (host names or IP addresses, the first also its common
        name), good as a server's and as a client's."""
        if not names:
            raise ValueError("issue() needs at least one host name or IP address")
        return make_cert(names[0], issuer=self, names=names, days=days, key=key)

    def names(self) -> list[str]:
        """The host names and IP addresses that the certificate names (its subject alternative names)."""
        try:
            alt = self.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return [str(name.value) for name in alt]


def ca_key_path(ca_path: str) -> str:
    """Where a CA's key lies beside its certificate: ``ca.pem`` -> ``ca.key``."""
    root, _ = os.path.splitext(ca_path)
    return root + ".key"


def make_ca(common_name: str = "sslsocket test CA", *, days: int = 3650, key: str = "ec") -> Identity:
    """A new certificate authority: a self-signed CA certificate and its key."""
    return make_cert(common_name, ca=True, days=days, key=key)


def load_ca(path: str, key_path: str | None = None, password: bytes | None = None) -> Identity:
    """A CA written by ``write_ca`` (or ``sslsocket makecert --ca``): its certificate from ``path``, its key from
    ``key_path`` (by default beside it, ``ca.key``, or in the same file)."""
    with open(path, "rb") as file:
        pem = file.read()
    cert = x509.load_pem_x509_certificate(pem)
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError(f"{path} is not a CA certificate (make one with sslsocket makecert ca.pem --ca)")
    key_pem = pem if b"PRIVATE KEY-----" in pem else b""
    if not key_pem:
        with open(key_path or ca_key_path(path), "rb") as file:
            key_pem = file.read()
    private = serialization.load_pem_private_key(key_pem, password)
    if not isinstance(private, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ValueError(f"{path}: the CA's key is neither EC nor RSA")
    return Identity(cert, private)


def write_private(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, since it holds a private key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(path, 0o600)


def make_cert(
    common_name: str = "localhost",
    *,
    issuer: Identity | None = None,
    ca: bool = False,
    names: tuple[str, ...] | None = None,
    days: int = 365,
    not_before: datetime.datetime | None = None,
    key: str = "ec",
) -> Identity:
    """A certificate for ``common_name`` (and ``names``: host names or IP addresses), signed by ``issuer`` or by
    itself. ``ca=True`` makes a certificate authority."""
    if not common_name or any(not name for name in names or ()):
        raise ValueError("a certificate's names must not be empty")
    private = new_key(key)
    start = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    # A common name holds 64 characters at most; a longer host name goes whole into the alternative names (which
    # are what a client checks) and its first label, at most 63 characters, is the common name.
    short = common_name if len(common_name) <= 64 else common_name.split(".")[0][:64]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, short)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(private.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        alt: list[x509.GeneralName] = []
        for name in names if names is not None else (common_name,):
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name.encode("idna").decode("ascii")))  # bücher.example: its A-label
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    signer = issuer.key if issuer else private
    return Identity(builder.sign(signer, hashes.SHA256()), private)


def subject_hash_name(cert: x509.Certificate) -> str:
    """The ``<hash>.0`` link name OpenSSL looks up in a CA directory (``SSL_CERT_DIR``, ``-CApath``)."""
    from OpenSSL import crypto

    return f"{crypto.X509.from_cryptography(cert).subject_name_hash():08x}.0"


def make_csr(common_name: str, key: str = "ec") -> tuple[x509.CertificateSigningRequest, PrivateKey]:
    """A certificate signing request for ``common_name`` and its new key: the manual's ``req -new``."""
    if not common_name:
        raise ValueError("a request's common name must not be empty")
    private = new_key(key)
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(common_name.encode("idna").decode("ascii"))]), critical=False
        )
        .sign(private, hashes.SHA256())
    )
    return request, private


_HASH_LINK = re.compile(r"^[0-9a-f]{8}\.\d+$")


def rehash(directory: str) -> list[tuple[str, str]]:
    """Make the ``<hash>.N`` links OpenSSL looks up in a CA directory (``SSL_CERT_DIR``, ``-CApath``), as
    ``c_rehash`` does: stale links first removed, one link per certificate file. Returns (link, target) pairs."""
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if _HASH_LINK.match(name) and os.path.islink(path):
            os.unlink(path)
    made: list[tuple[str, str]] = []
    taken: set[str] = set()
    for path in sorted(glob.glob(os.path.join(directory, "*.pem")) + glob.glob(os.path.join(directory, "*.crt"))):
        try:
            with open(path, "rb") as file:
                cert = x509.load_pem_x509_certificates(file.read())[0]
        except (ValueError, IndexError):
            continue  # not a certificate (a key, a request): nothing to link
        base = subject_hash_name(cert)[:-2]
        index = 0
        while f"{base}.{index}" in taken:
            index += 1
        link = f"{base}.{index}"
        taken.add(link)
        os.symlink(os.path.basename(path), os.path.join(directory, link))
        made.append((link, os.path.basename(path)))
    return made


def unprotect(pem: bytes, password: bytes) -> bytes:
    """The key in ``pem`` without its pass phrase: the manual's ``rsa -in key-protected -out key-unprotected.pem``.
    Raises ``ValueError`` for a wrong pass phrase."""
    key = serialization.load_pem_private_key(pem, password)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
