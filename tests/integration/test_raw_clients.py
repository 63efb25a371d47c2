"""Plain WebSocket clients (no or unknown subprotocol): bodies verbatim, no envelope."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiohttp import WSMsgType

from tests.integration._wire import ROLE_SEND, Client, ServerLike, Wire

RAW_USER = "raw-user"


async def raw_client(wire: Wire, hub: str, groups: list[str] | None = None) -> Client:
    return await wire.connect(hub, user=RAW_USER, groups=groups, protocols=())


async def raw_marker(wire: Wire, hub: str, client: Client) -> None:
    await wire.send_to_user(hub, RAW_USER, "raw-marker")
    assert await client.recv_text() == "raw-marker"


@pytest.mark.parametrize(
    ("content_type", "body", "frame_type"),
    [
        ("text/plain", "plain text \u2603", WSMsgType.TEXT),
        ("application/json", '{"a": 1,  "b":[true]}', WSMsgType.TEXT),
        ("application/json", '"Hello"', WSMsgType.TEXT),
        ("application/octet-stream", b"\x00\xffbinary\x01", WSMsgType.BINARY),
    ],
    ids=["text", "json-object", "json-string", "binary"],
)
@pytest.mark.parametrize("route", ["all", "user", "group"])
async def test_raw_client_receives_rest_bodies_verbatim(
    server: ServerLike,
    hub: str,
    content_type: str,
    body: str | bytes,
    frame_type: WSMsgType,
    route: str,
) -> None:
    async with Wire(server) as wire:
        client = await raw_client(wire, hub, groups=["rg"])
        if route == "all":
            await wire.send_to_all(hub, body, content_type)
        elif route == "user":
            await wire.send_to_user(hub, RAW_USER, body, content_type)
        else:
            await wire.send_to_group(hub, "rg", body, content_type)
        msg = await client.recv()
        assert msg.type == frame_type, (msg.type, msg.data)
        assert msg.data == body


@pytest.mark.parametrize(
    ("data_type", "data", "expected"),
    [
        ("text", "hello \u2603", "hello \u2603"),
        ("json", {"k": [1, 2], "s": "x"}, {"k": [1, 2], "s": "x"}),
        ("json", "a string", "a string"),
        ("binary", base64.b64encode(b"\x00\x01\x02\xff").decode(), b"\x00\x01\x02\xff"),
    ],
    ids=["text", "json-object", "json-string", "binary"],
)
async def test_raw_client_receives_group_messages_from_json_client(
    server: ServerLike, hub: str, data_type: str, data: Any, expected: Any
) -> None:
    async with Wire(server) as wire:
        raw = await raw_client(wire, hub, groups=["g"])
        sender = await wire.connect(hub, user="sender", roles=[ROLE_SEND])
        ack = await sender.request(
            {"type": "sendToGroup", "group": "g", "dataType": data_type, "data": data}
        )
        assert ack["success"] is True, ack
        msg = await raw.recv()
        if data_type == "binary":
            assert msg.type == WSMsgType.BINARY, (msg.type, msg.data)
            assert msg.data == expected
        elif data_type == "text":
            assert msg.type == WSMsgType.TEXT, (msg.type, msg.data)
            assert msg.data == expected
        else:
            assert msg.type == WSMsgType.TEXT, (msg.type, msg.data)
            assert json.loads(msg.data) == expected


async def test_raw_client_gets_no_acks_or_system_frames(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        raw = await raw_client(wire, hub, groups=["g"])
        json_client = await wire.connect(hub, user="other", groups=["g"])
        # the raw client's first frame is the marker: no `connected` frame was sent
        await raw_marker(wire, hub, raw)
        await wire.send_to_group(hub, "g", "both")
        assert await raw.recv_text() == "both"
        assert (await json_client.recv_json())["data"] == "both"


@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_raw_client_frame_without_handler_closes_with_1000(
    server: ServerLike, hub: str, kind: str
) -> None:
    async with Wire(server) as wire:
        raw = await raw_client(wire, hub)
        if kind == "text":
            await raw.ws.send_str("hello upstream")
        else:
            await raw.ws.send_bytes(b"\x01\x02")
        code, _ = await raw.expect_close()
        assert code == 1000


async def test_rest_close_of_raw_client_sends_no_disconnected_frame(
    server: ServerLike, hub: str
) -> None:
    async with Wire(server) as wire:
        raw = await raw_client(wire, hub)
        status, body = await wire.rest(
            "POST",
            f"/api/hubs/{hub}/users/{RAW_USER}/:closeConnections",
            params=[("reason", "bye")],
        )
        assert status == 204, (status, body)
        code, _ = await raw.expect_close()
        assert code is not None
