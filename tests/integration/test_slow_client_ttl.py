"""``messageTtlSeconds`` for a connected client that is behind: the message waits in the node
(not in the socket's buffer) and is dropped at its deadline, never delivered late.

A plain WebSocket client stops reading; the node sends it more than the kernel buffers hold,
then a message with a 1 s TTL, one with a 30 s TTL and one without. When the client reads
again, after the short TTL passed, it gets everything but the expired message, in order.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator

import pytest

from tests.conftest import CONFIG_TOML, Server, start_server, stop_server
from tests.integration._wire import Wire
from tests.integration.test_slow_client import stalled_client

LIMIT = 16 * 1024 * 1024
FILLER = 900 * 1024  # under the REST body limit
FILLERS = 8  # 7.2 MB: more than the kernel buffers of a client that does not read


@pytest.fixture(scope="module")
def roomy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = CONFIG_TOML + f"\n[server]\nmax_outbound_bytes = {LIMIT}\n"
    srv = start_server(tmp_path_factory.mktemp("slow-ttl"), config_toml=config)
    yield srv
    stop_server(srv)


def _read_frames(sock: socket.socket, last: bytes) -> list[bytes]:
    """Server frames (unmasked, unfragmented) up to the one whose payload is ``last``."""
    sock.settimeout(5)
    buffer = bytearray()
    frames: list[bytes] = []

    def take(n: int) -> bytes:
        while len(buffer) < n:
            chunk = sock.recv(1 << 20)
            assert chunk, "closed"
            buffer.extend(chunk)
        out = bytes(buffer[:n])
        del buffer[:n]
        return out

    while not frames or frames[-1] != last:
        _, length = take(2)
        length &= 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", take(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", take(8))
        frames.append(take(length))
    return frames


async def test_an_expired_message_is_not_delivered_late_to_a_slow_client(
    roomy_server: Server,
) -> None:
    hub = "slowttl"
    stalled = stalled_client(roomy_server, hub, receive_buffer=None)  # it reads fast later
    try:
        async with Wire(roomy_server) as wire:

            async def send(text: str, ttl: int | None = None) -> None:
                params = [("messageTtlSeconds", str(ttl))] if ttl else []
                status, body = await wire.rest(
                    "POST",
                    f"/api/hubs/{hub}/:send",
                    params=params,
                    body=text,
                    content_type="text/plain",
                )
                assert status == 202, body

            for i in range(FILLERS):
                await send(str(i) * FILLER)
            await send("short-lived", ttl=1)
            await send("long-lived", ttl=30)
            await send("last")
            await asyncio.sleep(1.5)
        frames = await asyncio.to_thread(_read_frames, stalled, b"last")
    finally:
        stalled.close()
    assert [f[:1] for f in frames[:FILLERS]] == [str(i).encode() for i in range(FILLERS)]
    assert frames[FILLERS:] == [b"long-lived", b"last"]
