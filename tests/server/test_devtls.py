"""``--dev-tls``: a local CA kept across runs and a server certificate clients of it verify."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import stat
from pathlib import Path

from cryptography import x509

from hubbub.server.devtls import ensure_dev_certs, trust_hint
from hubbub.server.tls import server_context


async def test_a_client_trusting_the_dev_ca_verifies_the_server(tmp_path: Path) -> None:
    """The certificate serves TLS that a client of the CA accepts for localhost and 127.0.0.1."""
    certs = ensure_dev_certs(tmp_path / "dev")
    context = server_context(str(certs.cert_file), str(certs.key_file))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        for name in ("localhost", "127.0.0.1"):
            trusting = ssl.create_default_context(cafile=str(certs.ca_file))
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=trusting, server_hostname=name
            )
            assert await reader.readline() == b"ok\n"
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_the_ca_is_kept_and_the_server_certificate_reused(tmp_path: Path) -> None:
    """A second run changes nothing; asking for another host name renews the server's only."""
    first = ensure_dev_certs(tmp_path)
    ca = first.ca_file.read_bytes()
    server = first.cert_file.read_bytes()
    again = ensure_dev_certs(tmp_path)
    assert first.created and not again.created
    assert again.cert_file.read_bytes() == server
    more = ensure_dev_certs(tmp_path, ("pubsub.test", "localhost"))
    assert more.created
    assert more.ca_file.read_bytes() == ca
    cert = x509.load_pem_x509_certificate(more.cert_file.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "pubsub.test" in names.get_values_for_type(x509.DNSName)
    assert cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < datetime.timedelta(
        days=398
    )


def test_keys_are_private(tmp_path: Path) -> None:
    """Both keys are readable by their owner only."""
    certs = ensure_dev_certs(tmp_path)
    for key in (certs.key_file, tmp_path / "ca-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_trust_hint_names_the_variables_the_sdks_read(tmp_path: Path) -> None:
    """The printed hint says how each client stack is told about the CA."""
    hint = trust_hint(tmp_path / "ca.pem")
    for variable in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
        assert f"{variable}={tmp_path / 'ca.pem'}" in hint
