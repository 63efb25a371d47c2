"""Message metadata from REST: ``X-WebPubSub-Metadata-<key>`` headers on a ``:send``.

Every subprotocol member gets it with the data (JSON as ``metadata`` after ``data``, reliable
JSON with its ``sequenceId`` too, protobuf in the ``metadata`` map), a plain WebSocket the data
alone; keys lower case, as the headers are case-insensitive. Bad metadata is a 400 and sends
nothing. The fast lane steps aside for metadata: each test runs with it and without.
"""

from __future__ import annotations

from typing import Any

import pytest

from hubbub.protocol.webpubsub_pb2 import DownstreamMessage
from tests.conftest import Server
from tests.integration._wire import RELIABLE, Client, Wire

PROTOBUF = "protobuf.webpubsub.azure.v1"
METADATA = {"X-WebPubSub-Metadata-Trace": "t1", "x-webpubsub-metadata-Tenant": "blue"}
SEEN = {"trace": "t1", "tenant": "blue"}
METADATA_ONE = "X-WebPubSub-Metadata-One"


@pytest.fixture
def server(server_either_lane: Server) -> Server:
    return server_either_lane


async def _protobuf(client: Client) -> DownstreamMessage:
    message = DownstreamMessage()
    message.ParseFromString(await client.recv_bytes())
    return message


async def _send(wire: Wire, path: str, headers: dict[str, str], body: str = "hi") -> int:
    status, _ = await wire.rest("POST", path, body=body, content_type="text/plain", headers=headers)
    return status


async def test_metadata_reaches_every_kind_of_receiver(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        json_client = await wire.connect(hub, user="j", groups=["g"])
        reliable = await wire.connect(hub, user="r", protocols=(RELIABLE,), groups=["g"])
        proto = await wire.connect(hub, user="p", protocols=(PROTOBUF,), groups=["g"])
        assert (await _protobuf(proto)).HasField("system_message")
        plain = await wire.connect(hub, user="w", protocols=(), groups=["g"])

        assert await _send(wire, f"/api/hubs/{hub}/:send", METADATA) == 202
        expected: dict[str, Any] = {
            "type": "message",
            "from": "server",
            "dataType": "text",
            "data": "hi",
            "metadata": SEEN,
        }
        assert await json_client.recv_json() == expected
        assert await reliable.recv_json() == {**expected, "sequenceId": 1}
        data = (await _protobuf(proto)).data_message
        assert (data.data.text_data, dict(data.metadata)) == ("hi", SEEN)
        assert await plain.recv_text() == "hi"

        assert await _send(wire, f"/api/hubs/{hub}/groups/g/:send", {METADATA_ONE: "x"}) == 202
        group = {"type": "message", "from": "group", "group": "g", "dataType": "text"}
        assert await json_client.recv_json() == {**group, "data": "hi", "metadata": {"one": "x"}}
        assert await reliable.recv_json() == {
            **group,
            "data": "hi",
            "metadata": {"one": "x"},
            "sequenceId": 2,
        }
        data = (await _protobuf(proto)).data_message
        assert (data.group, dict(data.metadata)) == ("g", {"one": "x"})
        assert await plain.recv_text() == "hi"


async def test_a_send_without_metadata_carries_none(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="j")
        assert await _send(wire, f"/api/hubs/{hub}/users/j/:send", {"X-Other": "y"}) == 202
        assert "metadata" not in await client.recv_json()


@pytest.mark.parametrize(
    "headers",
    [
        {METADATA_ONE: "x" * 1025},  # a value over 1 KiB
        {"X-WebPubSub-Metadata-" + "k" * 257: "x"},  # a key over 256 bytes
    ],
    ids=["long-value", "long-key"],
)
async def test_bad_metadata_is_400_and_sends_nothing(
    server: Server, hub: str, headers: dict[str, str]
) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="j")
        assert await _send(wire, f"/api/hubs/{hub}/:send", headers) == 400
        await wire.marker(hub, client)  # the refused send reached nobody
