"""``hubbub serve --dev-tls``: a local CA and a server certificate for development.

The CA is made once per state directory and kept (so a browser or system trust store that
trusts it keeps trusting it); the server certificate is made again when it is missing, expires
within 30 days or lacks a host name asked for. Keys are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["DEFAULT_HOSTS", "DevCerts", "default_state_dir", "ensure_dev_certs", "trust_hint"]

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
SERVER_DAYS = 365
"""Below the 398 days browsers accept for a server certificate."""
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class DevCerts:
    """Where the files are, and whether this call made the server certificate."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    created: bool


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/hubbub/dev-tls``, by default ``~/.local/state/hubbub/dev-tls``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hubbub" / "dev-tls"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hubbub development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as f:
        f.write(data)


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return cert, key


def _make_ca(
    directory: Path, now: datetime.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"hubbub development CA ({os.uname().nodename})")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(directory / "ca-key.pem", _key_bytes(key))
    (directory / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _server_fits(
    path: Path, ca: x509.Certificate, hosts: Sequence[str], now: datetime.datetime
) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    wanted = set(_san(hosts))
    return (
        cert.issuer == ca.subject
        and cert.not_valid_after_utc - RENEW_BEFORE > now
        and wanted <= set(names)
    )


def _make_server(
    directory: Path,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    hosts: Sequence[str],
    now: datetime.datetime,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(directory / "server-key.pem", _key_bytes(key))
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_dev_certs(directory: Path, hosts: Sequence[str] = DEFAULT_HOSTS) -> DevCerts:
    """The development CA and a server certificate for ``hosts`` under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.UTC)
    loaded = _load_ca(directory)
    ca, ca_key = loaded if loaded is not None else _make_ca(directory, now)
    cert_file, key_file = directory / "server.pem", directory / "server-key.pem"
    created = not (key_file.is_file() and _server_fits(cert_file, ca, hosts, now))
    if created:
        _make_server(directory, ca, ca_key, hosts, now)
    return DevCerts(directory / "ca.pem", cert_file, key_file, created)


def trust_hint(ca_file: Path) -> str:
    """How to make clients trust the development CA, printed by ``serve --dev-tls``."""
    return "\n".join(
        [
            f"Development TLS: certificates from the local CA {ca_file}. To trust it:",
            f"  Python (aiohttp, the async SDK clients): SSL_CERT_FILE={ca_file}",
            f"  Python requests (the sync service SDK): REQUESTS_CA_BUNDLE={ca_file}",
            f"  Python websocket-client (the sync client SDK):"
            f" WEBSOCKET_CLIENT_CA_BUNDLE={ca_file}",
            f"  Node.js: NODE_EXTRA_CA_CERTS={ca_file}",
            f"  Debian/Ubuntu: sudo cp {ca_file} /usr/local/share/ca-certificates/hubbub-dev.crt"
            " && sudo update-ca-certificates",
            f"  macOS: sudo security add-trusted-cert -d -r trustRoot"
            f" -k /Library/Keychains/System.keychain {ca_file}",
        ]
    )
