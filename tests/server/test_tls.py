"""TLS helpers over real loopback sockets: serving, reloading, client certificates, upstream."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hubbub.server.tls import (
    CertFiles,
    client_certificates,
    reload_cert_chain,
    server_context,
    thumbprint,
    upstream_context,
)
from tests._pki import Pki, make_pki

Seen = list[list[dict[str, str]]]


async def serve(context: ssl.SSLContext) -> tuple[asyncio.Server, int, Seen]:
    """A TLS echo of one line that records each connection's clientCertificates."""
    seen: Seen = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(client_certificates(writer.get_extra_info("ssl_object")))
        try:
            writer.write(await reader.readline())
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1], seen


def client(pki: Pki, cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    if cert:
        context.load_cert_chain(pki.client.cert_file, pki.client.key_file)
    return context


async def talk(port: int, context: ssl.SSLContext) -> tuple[bytes, bytes]:
    """Send a line; the echo and the DER certificate the server presented."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.write(b"ping\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return line, peer


async def refused(port: int, context: ssl.SSLContext) -> bool:
    """True when the server refuses the handshake: an error, or (TLS 1.3, where the client's
    handshake ends before the server judges its certificate) the connection closed unanswered."""
    try:
        line, _ = await talk(port, context)
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return True
    return line == b""


@pytest.fixture
async def closer() -> AsyncIterator[Callable[[asyncio.Server], None]]:
    servers: list[asyncio.Server] = []
    yield servers.append
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_serves_tls_that_a_client_of_the_ca_verifies(
    pki: Pki, closer: Callable[[asyncio.Server], None]
) -> None:
    """Certificate and key files give a context clients verify, host name included."""
    server, port, seen = await serve(
        server_context(str(pki.server.cert_file), str(pki.server.key_file))
    )
    closer(server)
    line, peer = await talk(port, client(pki))
    assert line == b"ping\n"
    assert peer == pki.server.der
    assert seen == [[]]  # no client certificate asked for


async def test_reload_takes_effect_for_new_handshakes_only(
    pki: Pki, closer: Callable[[asyncio.Server], None]
) -> None:
    """Loading a new chain into the live context: the next handshake presents it."""
    context = server_context(str(pki.server.cert_file), str(pki.server.key_file))
    server, port, _ = await serve(context)
    closer(server)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client(pki), server_hostname="localhost"
    )
    renewed = pki.issue("renewed")
    reload_cert_chain(context, str(renewed.cert_file), str(renewed.key_file))
    _, peer = await talk(port, client(pki))
    assert peer == renewed.der
    writer.write(b"still here\n")  # the connection made before the reload goes on
    assert await asyncio.wait_for(reader.readline(), 5) == b"still here\n"
    writer.close()


async def test_a_bad_pair_does_not_break_the_live_context(
    pki: Pki, closer: Callable[[asyncio.Server], None]
) -> None:
    """A certificate with another's key is refused and the old certificate keeps serving."""
    context = server_context(str(pki.server.cert_file), str(pki.server.key_file))
    server, port, _ = await serve(context)
    closer(server)
    other = pki.issue("other")
    with pytest.raises(ssl.SSLError):
        reload_cert_chain(context, str(other.cert_file), str(pki.server.key_file))
    line, peer = await talk(port, client(pki))
    assert (line, peer) == (b"ping\n", pki.server.der)


async def test_required_client_certificates(
    pki: Pki, closer: Callable[[asyncio.Server], None]
) -> None:
    """Required: a client without a certificate fails the handshake; one with it is seen."""
    context = server_context(
        str(pki.server.cert_file),
        str(pki.server.key_file),
        client_auth="required",
        client_ca_file=str(pki.ca_file),
    )
    server, port, seen = await serve(context)
    closer(server)
    assert await refused(port, client(pki))
    line, _ = await talk(port, client(pki, cert=True))
    assert line == b"ping\n"
    assert seen[-1] == [
        {
            "thumbprint": pki.client.sha1,
            "content": pki.client.pem.replace("\n", "\r\n"),
        }
    ]


async def test_optional_client_certificates(
    pki: Pki, closer: Callable[[asyncio.Server], None], tmp_path: Path
) -> None:
    """Optional: both connect; the certificate, when sent, is passed on; another CA's is not."""
    context = server_context(
        str(pki.server.cert_file),
        str(pki.server.key_file),
        client_auth="optional",
        client_ca_file=str(pki.ca_file),
    )
    server, port, seen = await serve(context)
    closer(server)
    assert (await talk(port, client(pki)))[0] == b"ping\n"
    assert (await talk(port, client(pki, cert=True)))[0] == b"ping\n"
    assert seen[0] == [] and seen[1][0]["thumbprint"] == pki.client.sha1
    stranger = make_pki(tmp_path / "stranger", "another CA")
    foreign = client(pki)
    foreign.load_cert_chain(stranger.client.cert_file, stranger.client.key_file)
    assert await refused(port, foreign)


def test_client_auth_needs_a_ca_and_a_known_mode(pki: Pki) -> None:
    """A mode without a CA file, or an unknown mode, is a ValueError."""
    with pytest.raises(ValueError):
        server_context(str(pki.server.cert_file), str(pki.server.key_file), client_auth="required")
    with pytest.raises(ValueError):
        server_context(str(pki.server.cert_file), str(pki.server.key_file), client_auth="on")


async def test_upstream_context_verifies_against_the_configured_ca(
    pki: Pki, closer: Callable[[asyncio.Server], None]
) -> None:
    """The handler client trusts the given CA bundle, and without it the system's only."""
    server, port, _ = await serve(
        server_context(str(pki.server.cert_file), str(pki.server.key_file))
    )
    closer(server)
    assert (await talk(port, upstream_context(str(pki.ca_file))))[0] == b"ping\n"
    with pytest.raises(ssl.SSLCertVerificationError):
        await talk(port, upstream_context())


def test_thumbprint_is_upper_case_sha1(pki: Pki) -> None:
    """40 upper-case hex digits of the DER's SHA-1."""
    assert thumbprint(pki.client.der) == pki.client.sha1
    assert len(pki.client.sha1) == 40 and pki.client.sha1 == pki.client.sha1.upper()


def test_cert_files_notice_a_renewal(tmp_path: Path) -> None:
    """A changed modification time is a renewal; a missing file is not (mid-rotation)."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("a")
    key.write_text("b")
    first = CertFiles(str(cert), str(key)).stat()
    assert not first.changed(first.stat())
    os.utime(cert, ns=(first.stamp[0] + 10**9, first.stamp[0] + 10**9))
    assert first.changed(first.stat())
    key.unlink()
    assert not first.changed(first.stat())
