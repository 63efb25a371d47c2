"""A client that stops reading is closed as slow; memory stays bounded; others keep receiving."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import jwt
import pytest
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient

from tests.conftest import CONFIG_TOML, Server, start_server, stop_server

LIMIT = 256 * 1024
MESSAGE = b"x" * 32 * 1024
COUNT = 1500  # 48 MiB offered to the stalled client


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = CONFIG_TOML + f"\n[server]\nmax_outbound_bytes = {LIMIT}\n"
    srv = start_server(tmp_path_factory.mktemp("slow"), config_toml=config)
    yield srv
    stop_server(srv)


def token(server: Server, hub: str) -> str:
    claims = {"aud": f"{server.endpoint}/client/hubs/{hub}", "exp": int(time.time()) + 600}
    return jwt.encode(claims, server.access_key.encode(), algorithm="HS256")


def stalled_client(server: Server, hub: str, receive_buffer: int | None = 4096) -> socket.socket:
    """A plain WebSocket client that completes the handshake, then never reads again (with a
    small receive buffer unless ``receive_buffer`` is None: the kernel's default)."""
    sock = socket.create_connection((server.host, server.port))
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /client/hubs/{hub}?access_token={token(server, hub)} HTTP/1.1\r\n"
        f"Host: {server.host}:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101")
    return sock


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def slow_closes(server: Server) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server.endpoint}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith("hubbub_slow_client_closes_total"):
                    return float(line.split()[1])
    raise AssertionError("metric missing")


async def test_stalled_client_is_closed_and_memory_bounded(small_server: Server) -> None:
    """48 MiB sent to a client that does not read: it is cut off, RSS grows by far less."""
    hub = "slowhub"
    stalled = stalled_client(small_server, hub)
    before_closes = await slow_closes(small_server)
    async with aiohttp.ClientSession() as session:
        url = (
            f"{small_server.ws_endpoint}/client/hubs/{hub}?access_token={token(small_server, hub)}"
        )
        async with session.ws_connect(url) as healthy:
            service = WebPubSubServiceClient.from_connection_string(
                small_server.connection_string, hub=hub
            )
            async with service:
                rss_before = rss_kib(small_server.process.pid)
                received = 0

                async def read_all() -> None:
                    nonlocal received
                    while received < COUNT:
                        msg = await healthy.receive(timeout=20)
                        assert msg.type is aiohttp.WSMsgType.BINARY
                        received += 1

                reader = asyncio.create_task(read_all())
                for _ in range(COUNT // 10):
                    await asyncio.gather(
                        *(
                            # the SDK's overloads omit bytes, which it sends as the body
                            service.send_to_all(MESSAGE, content_type="application/octet-stream")  # type: ignore[call-overload]
                            for _ in range(10)
                        )
                    )
                await asyncio.wait_for(reader, 30)
                rss_after = rss_kib(small_server.process.pid)
    assert received == COUNT
    assert await slow_closes(small_server) == before_closes + 1
    # 48 MiB went to the stalled client; what it held is bounded by LIMIT plus socket buffers.
    assert rss_after - rss_before < 24 * 1024, (rss_before, rss_after)
    stalled.setblocking(False)
    stalled.close()
