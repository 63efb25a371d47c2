"""TLS: the listener's context, client certificates, and the upstream client's context.

One port serves ``https``/``wss`` when a certificate and key are configured. Client
certificates (mTLS) are ``off``, ``optional`` (asked for; a client without one connects) or
``required`` (the handshake fails without one). Python's ``ssl`` verifies a presented client
certificate against ``tls_client_ca_file`` in both modes — the service instead accepts any
certificate and leaves the judgement to the ``connect`` handler — so the handler sees only
certificates of that CA.

The ``connect`` event carries ``clientCertificates: [{"thumbprint", "content"}]`` (CloudEvents
reference): ``thumbprint`` is the SHA-1 of the DER certificate in upper-case hex, as .NET's
``X509Certificate2.Thumbprint`` and the portal show it (the case the service sends is
unconfirmed), ``content`` the PEM with CRLF line ends, as in the reference's example.

The certificate is reloaded without a restart by loading the new chain into the live context:
OpenSSL copies the context's certificate into each new connection, so handshakes after
:func:`reload_cert_chain` use the new one and open connections keep theirs.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from dataclasses import dataclass

__all__ = [
    "CLIENT_AUTH_MODES",
    "CertFiles",
    "client_certificates",
    "reload_cert_chain",
    "server_context",
    "thumbprint",
    "upstream_context",
    "verify_mode",
]

CLIENT_AUTH_MODES = ("off", "optional", "required")
_VERIFY = {"off": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def verify_mode(client_auth: str) -> ssl.VerifyMode:
    """The context's ``verify_mode`` for a ``tls_client_auth`` mode.

    Raises:
        ValueError: an unknown mode.
    """
    try:
        return _VERIFY[client_auth]
    except KeyError:
        raise ValueError(f"client_auth must be one of {', '.join(CLIENT_AUTH_MODES)}") from None


def server_context(
    cert_file: str,
    key_file: str,
    *,
    client_auth: str = "off",
    client_ca_file: str | None = None,
) -> ssl.SSLContext:
    """The listener's context: TLS 1.2 or newer, HTTP/1.1 over ALPN.

    Raises:
        ValueError: an unknown ``client_auth``, or ``optional``/``required`` without a CA file.
        OSError, ssl.SSLError: a file cannot be read, or the key does not fit the certificate.
    """
    if client_auth not in _VERIFY:
        raise ValueError(f"client_auth must be one of {', '.join(CLIENT_AUTH_MODES)}")
    if client_auth != "off" and not client_ca_file:
        raise ValueError("client certificates need a CA file to verify them")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = _VERIFY[client_auth]
    if client_ca_file:
        context.load_verify_locations(cafile=client_ca_file)
    return context


def reload_cert_chain(context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    """Load a new certificate and key into ``context``: new handshakes use them.

    The pair is first loaded into a scratch context: OpenSSL replaces the certificate before it
    checks the key, so a bad pair loaded straight into the live context would leave it half
    changed. A pair that does not load leaves ``context`` as it was.

    Raises:
        OSError, ssl.SSLError: as :meth:`ssl.SSLContext.load_cert_chain`.
    """
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
    context.load_cert_chain(cert_file, key_file)


def upstream_context(ca_file: str | None = None) -> ssl.SSLContext:
    """The event-handler client's context: certificates and host names verified, against the
    system's CAs or ``ca_file`` when given."""
    return ssl.create_default_context(cafile=ca_file)


def thumbprint(der: bytes) -> str:
    """A certificate's SHA-1 thumbprint, upper-case hex."""
    return hashlib.sha1(der).hexdigest().upper()


def client_certificates(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> list[dict[str, str]]:
    """The ``clientCertificates`` of a ``connect`` event: the peer's certificate, if it sent one.

    Python's ``ssl`` exposes the leaf certificate only (before 3.13), so the list holds at most
    one entry.
    """
    if ssl_object is None:
        return []
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return []
    pem = ssl.DER_cert_to_PEM_cert(der).replace("\n", "\r\n")
    return [{"thumbprint": thumbprint(der), "content": pem}]


@dataclass(frozen=True)
class CertFiles:
    """The certificate and key files with their modification times, to notice a renewal.

    An adapter keeps the last :meth:`stat` and calls :func:`reload_cert_chain` when a new one
    differs (a certbot renewal, a rotated Kubernetes secret).
    """

    cert_file: str
    key_file: str
    stamp: tuple[int, int] = (0, 0)

    def stat(self) -> CertFiles:
        """The same files with their current modification times (0 for a missing file)."""
        stamp = (_mtime(self.cert_file), _mtime(self.key_file))
        return CertFiles(self.cert_file, self.key_file, stamp)

    def changed(self, newer: CertFiles) -> bool:
        """True when both files exist and either changed since this stat."""
        return all(newer.stamp) and newer.stamp != self.stamp


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0
