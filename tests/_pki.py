"""A test certificate authority and the certificates tests need, made with ``cryptography``.

Independent of ``hubbub.server.devtls`` on purpose: the code under test never makes its own
fixtures. Keys are EC P-256 (fast to make); the server certificate names ``localhost``,
``127.0.0.1`` and ``::1``.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files."""

    cert_file: Path
    key_file: Path
    der: bytes

    @property
    def sha1(self) -> str:
        """Upper-case hex SHA-1 of the DER form: the thumbprint Windows and Azure show."""
        return hashlib.sha1(self.der).hexdigest().upper()

    @property
    def pem(self) -> str:
        return self.cert_file.read_text()


@dataclass(frozen=True)
class Pki:
    """A CA with a server certificate and a client certificate it issued."""

    ca_file: Path
    server: Issued
    client: Issued
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    root: Path

    def issue(self, name: str, *, server: bool = True, days: int = 30) -> Issued:
        """Another certificate from this CA, e.g. to rotate the server's."""
        return _issue(self.root, name, self.ca_key, self.ca_cert, server=server, days=days)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _issue(
    root: Path,
    name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    server: bool,
    days: int,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if server:
        sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in SERVER_NAMES[1:]]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    cert_file, key_file = root / f"{name}.pem", root / f"{name}-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_file, key)
    return Issued(cert_file, key_file, cert.public_bytes(serialization.Encoding.DER))


def make_pki(root: Path, ca_name: str = "hubbub test CA") -> Pki:
    """A new CA under ``root`` with a server (``server.pem``) and a client (``client.pem``)."""
    root.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = root / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server = _issue(root, "server", ca_key, ca_cert, server=True, days=30)
    client = _issue(root, "client", ca_key, ca_cert, server=False, days=30)
    return Pki(ca_file, server, client, ca_key, ca_cert, root)
