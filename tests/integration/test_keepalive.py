"""Server-initiated WebSocket ping frames (hub keep-alive interval)."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from aiohttp import WSMsgType

from tests.integration._wire import JSON, ServerLike, Wire

OBSERVE_SECONDS = 3.6


@pytest.mark.parametrize("protocols", [(JSON,), ()], ids=["json", "raw"])
async def test_fastping_hub_sends_ping_frames_every_second(
    server: ServerLike, protocols: tuple[str, ...]
) -> None:
    async with Wire(server) as wire:
        client = await wire.connect("fastping", user="pinged", protocols=protocols, autoping=False)
        pings: list[float] = []
        deadline = time.monotonic() + OBSERVE_SECONDS
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = await client.ws.receive(timeout=remaining)
            except TimeoutError:
                break
            assert msg.type == WSMsgType.PING, (msg.type, msg.data)
            pings.append(time.monotonic())
            await client.ws.pong(msg.data)
        assert len(pings) >= 2, pings
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert all(0.5 <= gap <= 2.0 for gap in gaps), gaps
        if protocols:
            # answered pings keep the connection alive
            await client.send_json({"type": "ping"})
            msg = await client.recv()
            assert msg.type == WSMsgType.TEXT and msg.data == '{"type":"pong"}', msg


async def test_default_hub_does_not_ping_every_second(server: ServerLike, hub: str) -> None:
    """A default hub pings every 20 s: in 2.5 s a client sees at most one ping (the shared
    timer may tick just after it connected), where a 1 s hub would send two or more."""
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="quiet", autoping=False)
        pings = 0
        deadline = time.monotonic() + 2.5
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                msg = await client.ws.receive(timeout=remaining)
            except TimeoutError:
                break
            assert msg.type == WSMsgType.PING, (msg.type, msg.data)
            pings += 1
            await client.ws.pong(msg.data)
        assert pings <= 1
        await client.send_json({"type": "ping"})
        while (msg := await client.recv()).type == WSMsgType.PING:
            pass
        assert msg.type == WSMsgType.TEXT and msg.data == '{"type":"pong"}', (msg.type, msg.data)


async def test_silent_client_is_dropped_after_three_intervals(server: ServerLike) -> None:
    """A client that answers nothing for three 1 s intervals is dropped (PingTimeout)."""
    async with Wire(server) as wire:
        client = await wire.connect("fastping", user="silent", autoping=False)
        started = time.monotonic()
        while True:
            msg = await client.ws.receive(timeout=8)
            if msg.type != WSMsgType.PING:
                break
        elapsed = time.monotonic() - started
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR), msg
        assert 2.5 <= elapsed <= 6.0, elapsed


async def test_any_frame_counts_as_alive(server: ServerLike) -> None:
    """A client that ignores ping frames but keeps sending messages stays connected."""
    async with Wire(server) as wire:
        client = await wire.connect("fastping", user="chatty", autoping=False)
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            await client.send_json({"type": "ping"})
            while (msg := await client.recv()).type == WSMsgType.PING:
                pass
            assert msg.type == WSMsgType.TEXT and msg.data == '{"type":"pong"}', msg
            await asyncio.sleep(0.5)
