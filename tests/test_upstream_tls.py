"""Event handlers over https: verified against the configured CA bundle, updated live, and the
connect event's clientCertificates."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hubbub.config import Config, load_config
from hubbub.errors import HandshakeError
from hubbub.events import ConnectRequest, EventDispatcher
from hubbub.protocol.tokens import ClientClaims
from hubbub.server.tls import server_context
from hubbub.types import ConnectionId, HubName
from hubbub.upstream import HttpUpstream
from tests._pki import Pki

KEY = "K" * 43


@dataclass
class Handler:
    port: int = 0
    bodies: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@pytest.fixture
async def handler(pki: Pki) -> AsyncIterator[Handler]:
    """An https event handler of the test CA; records the path and body of each connect."""
    state = Handler()

    async def options(request: web.Request) -> web.Response:
        return web.Response(headers={"WebHook-Allowed-Origin": "*"})

    async def post(request: web.Request) -> web.Response:
        state.bodies.append((request.path, json.loads(await request.read())))
        return web.json_response({"userId": "from-handler"})

    app = web.Application()
    app.router.add_route("OPTIONS", "/{name}/{event}", options)
    app.router.add_post("/{name}/{event}", post)
    runner = web.AppRunner(app)
    await runner.setup()
    context = server_context(str(pki.server.cert_file), str(pki.server.key_file))
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    state.port = runner.addresses[0][1]
    yield state
    await runner.cleanup()


def config(tmp_path: Path, port: int, name: str, ca_file: Path | None) -> Config:
    ca = f'upstream_ca_file = "{ca_file}"\n' if ca_file else ""
    text = (
        f'[server]\n{ca}[auth]\naccess_keys = ["{KEY}"]\n'
        "[[hubs.chat.event_handlers]]\n"
        f'url_template = "https://localhost:{port}/{name}/{{event}}"\n'
        'system_events = ["connect"]\n'
    )
    path = tmp_path / f"{name}-{bool(ca_file)}.toml"
    path.write_text(text)
    return load_config(str(path), env={})


def request(certificates: list[dict[str, str]] | None = None) -> ConnectRequest:
    claims = ClientClaims("alice", (), (), {"sub": "alice"})
    return ConnectRequest(claims, [], [], [], certificates or [])


async def connect(
    upstream: HttpUpstream, certificates: list[dict[str, str]] | None = None
) -> str | None:
    decision = await EventDispatcher(upstream).connect(
        HubName("chat"), ConnectionId("c1"), request(certificates)
    )
    return decision.user_id


async def test_an_https_handler_of_the_configured_ca(
    tmp_path: Path, pki: Pki, handler: Handler
) -> None:
    """With upstream_ca_file the handler's certificate verifies; the certificates reach it."""
    upstream = HttpUpstream(config(tmp_path, handler.port, "a", pki.ca_file))
    certificate = {"thumbprint": pki.client.sha1, "content": pki.client.pem}
    try:
        assert await connect(upstream, [certificate]) == "from-handler"
    finally:
        await upstream.close()
    ((path, body),) = handler.bodies
    assert path == "/a/connect"
    assert body["clientCertificates"] == [certificate]


async def test_without_the_ca_the_handler_is_refused(
    tmp_path: Path, pki: Pki, handler: Handler
) -> None:
    """The system's CAs do not know the test CA: abuse protection fails, the connect is a 500."""
    upstream = HttpUpstream(config(tmp_path, handler.port, "a", None))
    try:
        with pytest.raises(HandshakeError) as caught:
            await connect(upstream)
        assert caught.value.status == 500
    finally:
        await upstream.close()
    assert handler.bodies == []


async def test_update_takes_a_new_ca_and_new_handlers_live(
    tmp_path: Path, pki: Pki, handler: Handler
) -> None:
    """A reloaded configuration: the CA now trusted is probed again at once, the new URL used."""
    upstream = HttpUpstream(config(tmp_path, handler.port, "a", None))
    try:
        with pytest.raises(HandshakeError):
            await connect(upstream)
        upstream.update(config(tmp_path, handler.port, "a", pki.ca_file))
        assert await connect(upstream) == "from-handler"
        upstream.update(config(tmp_path, handler.port, "b", pki.ca_file))
        assert await connect(upstream) == "from-handler"
    finally:
        await upstream.close()
    assert [path for path, _ in handler.bodies] == ["/a/connect", "/b/connect"]


async def test_no_certificates_is_an_empty_list(tmp_path: Path, pki: Pki, handler: Handler) -> None:
    """Without TLS client auth the field is there and empty, as the service sends it."""
    upstream = HttpUpstream(config(tmp_path, handler.port, "a", pki.ca_file))
    try:
        await connect(upstream)
    finally:
        await upstream.close()
    assert handler.bodies[0][1]["clientCertificates"] == []
