"""Hand-written protobuf.reliable clients survive over 1,000 abrupt drops with no loss.

The client does what the SDKs do for the JSON protocol: it remembers the highest ``sequence_id``
seen, acknowledges it, and after a drop reconnects with ``awps_connection_id`` and
``awps_reconnection_token``, ignoring resent messages it already has.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient

from hubbub.protocol import webpubsub_pb2 as pb
from tests.conftest import Server
from tests.integration._proxy import CuttingProxy
from tests.integration._wire import mint_client_token

PROTOCOL = "protobuf.reliable.webpubsub.azure.v1"
CLIENTS = 25
MESSAGES = 1500
DEADLINE = 60.0
PUBLISH_SECONDS = 12.0
"""Publishing is paced to last at least this long, so the cutter gets its 1,000 drops in however
fast the machine publishes (25 clients, a cut every 0.15 s on average: ~2,000 drops)."""


class ProtobufReliableClient:
    """One logical connection, recovered across as many sockets as it takes."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self._http = http
        self._url = url
        self.connection_id = ""
        self._token = ""
        self.highest = 0
        self.received: list[str] = []
        self.sockets = 0
        self.rejected = False

    def _recovery_url(self) -> str:
        return (
            f"{self._url}&awps_connection_id={self.connection_id}"
            f"&awps_reconnection_token={self._token}"
        )

    async def _socket(self) -> AsyncIterator[pb.DownstreamMessage]:
        url = self._recovery_url() if self.connection_id else self._url
        async with self._http.ws_connect(url, protocols=(PROTOCOL,), autoping=True) as ws:
            self.sockets += 1
            async for frame in ws:
                if frame.type is aiohttp.WSMsgType.BINARY:
                    message = pb.DownstreamMessage()
                    message.ParseFromString(frame.data)
                    yield message
                    if message.HasField("data_message"):
                        await self._ack(ws)
            if ws.close_code == 1008:
                self.rejected = True

    async def _ack(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        ack = pb.UpstreamMessage(
            sequence_ack_message=pb.UpstreamMessage.SequenceAckMessage(sequence_id=self.highest)
        )
        try:
            await ws.send_bytes(ack.SerializeToString())
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            pass  # the socket was cut; the next one acknowledges

    async def run(self, until: int) -> None:
        """Receive until ``until`` messages arrived, reconnecting after every drop."""
        deadline = time.monotonic() + DEADLINE
        while len(self.received) < until and time.monotonic() < deadline and not self.rejected:
            try:
                async for message in self._socket():
                    self._handle(message)
                    if len(self.received) >= until:
                        return
            except (aiohttp.ClientError, ConnectionError, OSError):
                await asyncio.sleep(0.02)

    def _handle(self, message: pb.DownstreamMessage) -> None:
        if message.HasField("system_message"):
            connected = message.system_message.connected_message
            if connected.connection_id and not self.connection_id:
                self.connection_id = connected.connection_id
                self._token = connected.reconnection_token
        elif message.HasField("data_message"):
            data = message.data_message
            if data.sequence_id <= self.highest:
                return  # a resend of something already received
            assert data.sequence_id == self.highest + 1, (self.highest, data.sequence_id)
            self.highest = data.sequence_id
            self.received.append(data.data.text_data)


async def cutter(proxy: CuttingProxy, stop: asyncio.Event) -> None:
    """Cut every connection at random moments until told to stop."""
    rng = random.Random(7)
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.05, 0.25))
        proxy.cut()


@pytest.mark.timeout(120)
async def test_protobuf_reliable_clients_survive_drops(server: Server, hub: str) -> None:
    """Over 1,000 drops under steady group publishing: no loss, no duplicate, order kept."""
    async with CuttingProxy(server.host, server.port) as proxy, aiohttp.ClientSession() as http:
        base = f"ws://127.0.0.1:{proxy.port}/client/hubs/{hub}"
        clients = []
        for i in range(CLIENTS):
            token = mint_client_token(server, hub, user=f"u{i}", groups=["room"])
            clients.append(ProtobufReliableClient(http, f"{base}?access_token={token}"))
        receivers = [asyncio.create_task(c.run(MESSAGES)) for c in clients]
        deadline = time.monotonic() + 10
        while not all(c.connection_id for c in clients):
            assert time.monotonic() < deadline, "clients did not connect"
            await asyncio.sleep(0.05)
        stop = asyncio.Event()
        cuts = asyncio.create_task(cutter(proxy, stop))
        service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub)
        async with service:
            started = time.monotonic()
            for n in range(MESSAGES):
                await service.send_to_group("room", str(n), content_type="text/plain")
                ahead = started + PUBLISH_SECONDS * (n + 1) / MESSAGES - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await asyncio.wait_for(asyncio.gather(*receivers), DEADLINE)
        stop.set()
        await cuts
    expected = [str(n) for n in range(MESSAGES)]
    drops = sum(c.sockets - 1 for c in clients)
    for client in clients:
        assert not client.rejected
        assert client.received == expected
    print(f"protobuf reliable: {drops} drops over {CLIENTS} clients, {MESSAGES} messages each")
    assert drops >= 1000, drops
