"""Protobuf subprotocol clients over real sockets, interoperating with JSON and plain clients."""

from __future__ import annotations

import base64

import pytest
from google.protobuf import any_pb2, wrappers_pb2

from hubbub.protocol import webpubsub_pb2 as pb
from tests.integration._wire import (
    JSON,
    ROLE_JOIN,
    ROLE_SEND,
    Client,
    ServerLike,
    Wire,
    compact,
)

PROTOBUF = "protobuf.webpubsub.azure.v1"
PROTOBUF_RELIABLE = "protobuf.reliable.webpubsub.azure.v1"
ROLES = [ROLE_JOIN, ROLE_SEND]


async def recv_pb(client: Client) -> pb.DownstreamMessage:
    message = pb.DownstreamMessage()
    message.ParseFromString(await client.recv_bytes())
    return message


async def send_pb(client: Client, message: pb.UpstreamMessage) -> None:
    await client.ws.send_bytes(message.SerializeToString())


async def connect_pb(wire: Wire, hub: str, protocol: str, user: str) -> tuple[Client, str]:
    client = await wire.connect(
        hub, user=user, roles=ROLES, protocols=(protocol,), read_connected=False
    )
    assert client.ws.protocol == protocol
    hello = await recv_pb(client)
    connected = hello.system_message.connected_message
    assert connected.user_id == user and connected.connection_id
    assert bool(connected.reconnection_token) is (protocol == PROTOBUF_RELIABLE)
    return client, connected.connection_id


async def join_pb(client: Client, group: str, ack_id: int) -> None:
    await send_pb(
        client,
        pb.UpstreamMessage(
            join_group_message=pb.UpstreamMessage.JoinGroupMessage(group=group, ack_id=ack_id)
        ),
    )
    ack = (await recv_pb(client)).ack_message
    assert (ack.ack_id, ack.success) == (ack_id, True)


@pytest.mark.parametrize("protocol", [PROTOBUF, PROTOBUF_RELIABLE])
async def test_protobuf_group_messages_reach_every_kind_of_client(
    server: ServerLike, hub: str, protocol: str
) -> None:
    """Text, binary and Any from a protobuf publisher reach protobuf, JSON and plain clients."""
    async with Wire(server) as wire:
        publisher, _ = await connect_pb(wire, hub, protocol, "pub")
        await join_pb(publisher, "g", 1)
        json_client = await wire.connect(hub, user="j", roles=ROLES, protocols=(JSON,))
        await json_client.join("g")
        plain = await wire.connect(hub, user="p", groups=["g"], protocols=())

        any_value = any_pb2.Any()
        any_value.Pack(wrappers_pb2.StringValue(value="packed"))
        datas = [
            pb.MessageData(text_data="hello"),
            pb.MessageData(binary_data=b"\x00\x01"),
            pb.MessageData(protobuf_data=any_value),
        ]
        for ack_id, data in enumerate(datas, start=2):
            await send_pb(
                publisher,
                pb.UpstreamMessage(
                    send_to_group_message=pb.UpstreamMessage.SendToGroupMessage(
                        group="g", ack_id=ack_id, data=data
                    )
                ),
            )
        seen: list[pb.DownstreamMessage] = [await recv_pb(publisher) for _ in range(6)]
        acks = [m.ack_message.ack_id for m in seen if m.HasField("ack_message")]
        echoes = [m.data_message for m in seen if m.HasField("data_message")]
        assert acks == [2, 3, 4]
        assert [e.data for e in echoes] == datas
        assert all(e.group == "g" and getattr(e, "from") == "group" for e in echoes)
        if protocol == PROTOBUF_RELIABLE:
            assert [e.sequence_id for e in echoes] == [1, 2, 3]

        texts = [await json_client.recv_json() for _ in range(3)]
        assert [(t["dataType"], t["data"]) for t in texts] == [
            ("text", "hello"),
            ("binary", base64.b64encode(b"\x00\x01").decode()),
            ("protobuf", base64.b64encode(any_value.SerializeToString()).decode()),
        ]
        assert all(t["fromUserId"] == "pub" and t["group"] == "g" for t in texts)
        assert await plain.recv_text() == "hello"
        assert await plain.recv_bytes() == b"\x00\x01"
        assert await plain.recv_bytes() == any_value.SerializeToString()


async def test_json_and_rest_messages_reach_protobuf_clients(server: ServerLike, hub: str) -> None:
    """JSON client data and REST bodies arrive with the matching MessageData member."""
    async with Wire(server) as wire:
        receiver, connection_id = await connect_pb(wire, hub, PROTOBUF, "r")
        await join_pb(receiver, "g", 1)
        sender = await wire.connect(hub, user="s", roles=ROLES, protocols=(JSON,))
        await sender.send_json(
            {"type": "sendToGroup", "group": "g", "dataType": "json", "data": {"a": 1}}
        )
        await sender.send_json(
            {
                "type": "sendToGroup",
                "group": "g",
                "dataType": "binary",
                "data": base64.b64encode(b"bin").decode(),
            }
        )
        await wire.send_to_connection(hub, connection_id, b"raw", "application/octet-stream")
        await wire.send_to_connection(hub, connection_id, "plain", "text/plain")
        got = [(await recv_pb(receiver)).data_message for _ in range(4)]
        assert got[0].data.text_data == compact({"a": 1}) and got[0].group == "g"
        assert got[1].data.binary_data == b"bin"
        assert getattr(got[2], "from") == "server" and got[2].data.binary_data == b"raw"
        assert got[3].data.text_data == "plain"


async def test_protobuf_ping_forbidden_and_malformed(server: ServerLike, hub: str) -> None:
    """Ping gets pong, a missing permission a Forbidden ack, a text frame closes with 1003."""
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="u", protocols=(PROTOBUF,), read_connected=False)
        await recv_pb(client)
        await send_pb(client, pb.UpstreamMessage(ping_message=pb.UpstreamMessage.PingMessage()))
        assert (await recv_pb(client)).HasField("pong_message")
        await send_pb(
            client,
            pb.UpstreamMessage(
                join_group_message=pb.UpstreamMessage.JoinGroupMessage(group="g", ack_id=7)
            ),
        )
        ack = (await recv_pb(client)).ack_message
        assert (ack.ack_id, ack.success, ack.error.name) == (7, False, "Forbidden")
        await client.ws.send_str("{}")
        code, _ = await client.expect_close()
        assert code == 1003
        garbage = await wire.connect(hub, user="u", protocols=(PROTOBUF,), read_connected=False)
        await recv_pb(garbage)
        await garbage.ws.send_bytes(b"\xff\xff\xff")
        code, _ = await garbage.expect_close()
        assert code == 1007
