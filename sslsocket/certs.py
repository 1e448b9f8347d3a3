"""Keys and certificates with ``cryptography``: the manual's ``req -new -x509 -nodes`` recipes, as functions.

Used by the demo, the tests and the ``makecert`` command; nothing here touches a socket.
"""

from __future__ import annotations

import datetime
import ipaddress
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
        ``key_path``."""
        if key_path is None:
            with open(path, "wb") as file:
                file.write(self.cert_pem() + self.key_pem(password))
        else:
            with open(path, "wb") as file:
                file.write(self.cert_pem())
            with open(key_path, "wb") as file:
                file.write(self.key_pem(password))


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
    private = new_key(key)
    start = not_before or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
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
                alt.append(x509.DNSName(name))
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
