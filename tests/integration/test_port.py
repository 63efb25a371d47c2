"""The hand-over from aiohttp to the WebSocket adapter after the handshake (server/port.py).

A client socket serves HTTP through aiohttp until it is upgraded; from then on its bytes go to
hubbub's frame pump. These tests drive the edges of that switch over raw TCP: an upgrade after
keep-alive HTTP requests on the same socket, frames that arrive together with or right behind
the handshake, a burst far over the per-connection read queue, and close handshakes both ways.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

from tests.integration._wire import (
    JSON,
    ROLE_JOIN,
    ROLE_SEND,
    TIMEOUT,
    ServerLike,
    Wire,
    mint_client_token,
)

WS_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def masked(opcode: int, payload: bytes) -> bytes:
    """One final client frame (clients must mask)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", n)
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + struct.pack("!Q", n)
    return head + mask + body


class RawSocket:
    """A client WebSocket written by hand over one TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: ServerLike) -> RawSocket:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        return cls(reader, writer)

    async def http(self, request: bytes) -> tuple[int, bytes]:
        """Send one request; read the status and the head of the answer."""
        self.writer.write(request)
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length:
            await asyncio.wait_for(self.reader.readexactly(length), TIMEOUT)
        return status, head

    def upgrade_request(self, server: ServerLike, hub: str, token: str) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        return (
            f"GET /client/hubs/{hub}?access_token={token} HTTP/1.1\r\n"
            f"Host: {server.host}:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {JSON}\r\n\r\n"
        ).encode()

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame but a ping: opcode and payload (server frames are not masked).

        The server's keep-alive sweep pings every connection on its own clock, so a ping can
        land between any two frames; it is answered with a pong, as a browser would, and
        skipped.
        """
        while True:
            b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), TIMEOUT)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            opcode = b0 & 0x0F
            payload = await asyncio.wait_for(self.reader.readexactly(n), TIMEOUT)
            if opcode != 0x9:
                return opcode, payload
            self.writer.write(masked(0xA, payload))

    async def message(self) -> Any:
        opcode, payload = await self.frame()
        assert opcode == 0x1, (opcode, payload)
        return json.loads(payload)

    def send(self, obj: Any) -> None:
        self.writer.write(masked(0x1, json.dumps(obj).encode()))

    async def closed(self) -> bool:
        """True once the server has closed the TCP connection (a reset counts: it closed it
        with unread bytes of ours, such as the rest of a refused oversized frame)."""
        try:
            return await asyncio.wait_for(self.reader.read(), TIMEOUT) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def upgraded(
    server: ServerLike, hub: str, **claims: Any
) -> AsyncIterator[tuple[RawSocket, dict[str, Any]]]:
    """A raw socket past the handshake, with the ``connected`` message it got."""
    sock = await RawSocket.open(server)
    try:
        token = mint_client_token(server, hub, **claims)
        status, head = await sock.http(sock.upgrade_request(server, hub, token))
        assert status == 101, head
        connected = await sock.message()
        assert connected["event"] == "connected"
        yield sock, connected
    finally:
        sock.close()


async def test_upgrade_after_keep_alive_requests_on_the_same_socket(
    server: ServerLike, hub: str
) -> None:
    sock = await RawSocket.open(server)
    try:
        health = f"HEAD /api/health HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode()
        for _ in range(3):
            status, _ = await sock.http(health)
            assert status == 200
        token = mint_client_token(server, hub, roles=[ROLE_JOIN, ROLE_SEND])
        status, head = await sock.http(sock.upgrade_request(server, hub, token))
        assert status == 101, head
        assert (await sock.message())["event"] == "connected"
        sock.send({"type": "joinGroup", "group": "g", "ackId": 1})
        assert await sock.message() == {"type": "ack", "ackId": 1, "success": True}
        sock.writer.write(masked(0x8, struct.pack("!H", 1000)))
        opcode, payload = await sock.frame()
        assert (opcode, payload[:2]) == (0x8, struct.pack("!H", 1000))
        assert await sock.closed()
    finally:
        sock.close()


async def test_frames_right_behind_the_handshake(server: ServerLike, hub: str) -> None:
    """Frames written the moment the 101 arrives, in one write, are all the WebSocket's."""
    sock = await RawSocket.open(server)
    try:
        token = mint_client_token(server, hub, roles=[ROLE_JOIN, ROLE_SEND])
        frames = [
            masked(0x1, json.dumps({"type": "joinGroup", "group": "g", "ackId": i}).encode())
            for i in range(1, 6)
        ]
        sock.writer.write(sock.upgrade_request(server, hub, token))
        head = await asyncio.wait_for(sock.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        sock.writer.write(b"".join(frames))
        assert head.startswith(b"HTTP/1.1 101"), head
        assert (await sock.message())["event"] == "connected"
        acks = [await sock.message() for _ in range(5)]
        assert [a["ackId"] for a in acks] == [1, 2, 3, 4, 5]
        assert all(a["success"] for a in acks)
    finally:
        sock.close()


async def test_a_burst_over_the_read_queue_arrives_whole_and_in_order(
    server: ServerLike, hub: str
) -> None:
    """2 MiB of messages at once: reading pauses and resumes, every message is handled in order."""
    async with upgraded(server, hub, roles=[ROLE_JOIN, ROLE_SEND]) as (sock, _):
        sock.send({"type": "joinGroup", "group": "burst", "ackId": 1})
        assert (await sock.message())["ackId"] == 1
        count, filler = 1000, "x" * 2048
        burst = b"".join(
            masked(
                0x1,
                json.dumps(
                    {
                        "type": "sendToGroup",
                        "group": "burst",
                        "noEcho": True,
                        "dataType": "text",
                        "data": f"{i}:{filler}",
                        "ackId": 100 + i,
                    }
                ).encode(),
            )
            for i in range(count)
        )
        assert len(burst) > 2 * 1024 * 1024

        async def write() -> None:
            sock.writer.write(burst)
            await sock.writer.drain()

        writing = asyncio.create_task(write())
        acks = [await sock.message() for _ in range(count)]
        await writing
        assert [a["ackId"] for a in acks] == [100 + i for i in range(count)]
        assert all(a["success"] for a in acks)


async def test_service_close_waits_for_the_clients_close(server: ServerLike, hub: str) -> None:
    """REST close: the close frame, then the client's answer ends the TCP connection."""
    async with upgraded(server, hub, user="closing-user") as (sock, connected):
        async with Wire(server) as wire:
            status, _ = await wire.rest(
                "POST", f"/api/hubs/{hub}/users/closing-user/:closeConnections"
            )
            assert status == 204
        assert (await sock.message())["event"] == "disconnected"
        opcode, payload = await sock.frame()
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == 1000
        sock.writer.write(masked(0x8, payload[:2]))
        assert await sock.closed()
        assert connected["userId"] == "closing-user"


async def test_oversized_message_closes_1009(server: ServerLike, hub: str) -> None:
    """The close frame reaches the client even with the rest of the frame still arriving."""
    async with upgraded(server, hub) as (sock, _):
        sock.writer.write(masked(0x1, b"x" * (1024 * 1024 + 1)))
        opcode, payload = await sock.frame()
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == 1009
        # The server reads no frame after a refused one; it closes when the client has gone.
        sock.writer.write_eof()
        assert await sock.closed()


async def test_ping_gets_pong_with_the_same_payload(server: ServerLike, hub: str) -> None:
    async with upgraded(server, hub) as (sock, _):
        sock.writer.write(masked(0x9, b"are you there"))
        assert await sock.frame() == (0xA, b"are you there")
