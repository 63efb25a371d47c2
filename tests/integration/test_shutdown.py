"""A stopping node says goodbye: every client gets ``disconnected`` and a 1001 close frame.

Each test starts its own ``hubbub serve`` and stops it with SIGTERM, as a process manager would.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import jwt
import pytest
import yarl
from aiohttp import web

from tests.conftest import CONFIG_TOML, Server, free_port, start_server, stop_server
from tests.integration._wire import JSON, RELIABLE, Wire, mint_client_token

GOING_AWAY = 1001


def _terminate(server: Server) -> None:
    server.process.terminate()


async def _exit_code(server: Server, within: float = 15.0) -> int:
    try:
        return await asyncio.to_thread(server.process.wait, within)
    except subprocess.TimeoutExpired:
        stop_server(server)
        raise AssertionError(f"hubbub did not exit within {within} s of SIGTERM") from None


async def test_sigterm_closes_every_connection_with_going_away(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        async with Wire(server) as wire:
            json_client = await wire.connect("shutdown")
            reliable = await wire.connect("shutdown", protocols=(RELIABLE,))
            plain = await wire.connect("shutdown", protocols=())
            await json_client.ping_pong()
            _terminate(server)
            for client in (json_client, reliable):
                assert await client.recv_json() == {
                    "type": "system",
                    "event": "disconnected",
                    "message": "ServiceReload",
                }
                assert await client.expect_close() == (GOING_AWAY, "ServiceReload")
            assert await plain.expect_close() == (GOING_AWAY, "ServiceReload")
            assert await _exit_code(server) == 0
    finally:
        stop_server(server)
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def _silent_client(server: Server, hub: str) -> socket.socket:
    """A client that completes the handshake and then never answers a close frame."""
    claims = {"aud": f"{server.endpoint}/client/hubs/{hub}", "exp": int(time.time()) + 600}
    token = jwt.encode(claims, server.access_key.encode(), algorithm="HS256")
    sock = socket.create_connection((server.host, server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /client/hubs/{hub}?access_token={token} HTTP/1.1\r\n"
            f"Host: {server.host}:{server.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {JSON}\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def test_a_client_that_never_answers_does_not_hold_the_node_up(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    sock = _silent_client(server, "silent")
    try:
        _terminate(server)
        assert await _exit_code(server) == 0
        # What the client was sent before the end: connected, disconnected, the close frame.
        sock.settimeout(5)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        assert b'"event":"disconnected","message":"ServiceReload"' in received
        close = bytes((0x88, 2 + len(b"ServiceReload"))) + GOING_AWAY.to_bytes(2, "big")
        assert close + b"ServiceReload" in received
    finally:
        sock.close()
        stop_server(server)


async def test_a_handshake_waiting_for_its_connect_event_is_refused_with_503(
    tmp_path: Path,
) -> None:
    """SIGTERM while the connect handler thinks: the client gets 503, not a doomed 101."""
    asked = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(headers={"WebHook-Allowed-Origin": "*"})
        if request.headers.get("ce-eventName") == "connect":
            asked.set()
            await asyncio.sleep(1.5)
            return web.Response(status=204)
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    handler_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", handler_port).start()
    config = CONFIG_TOML + (
        "\n[[hubs.slowconnect.event_handlers]]\n"
        f'url_template = "http://127.0.0.1:{handler_port}/{{event}}"\n'
        'system_events = ["connect"]\n'
    )
    server = start_server(tmp_path, config_toml=config)
    try:
        token = mint_client_token(server, "slowconnect")
        url = yarl.URL(f"{server.ws_endpoint}/client/hubs/slowconnect?access_token={token}")
        async with aiohttp.ClientSession() as http:
            handshake = asyncio.ensure_future(http.ws_connect(url, protocols=(JSON,)))
            await asyncio.wait_for(asked.wait(), 10)
            _terminate(server)
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await asyncio.wait_for(handshake, 10)
            assert refused.value.status == 503
        assert await _exit_code(server) == 0
    finally:
        stop_server(server)
        await runner.cleanup()
