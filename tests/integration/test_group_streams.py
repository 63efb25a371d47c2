"""Group streams spoken by hand over real sockets: JSON, protobuf, reliable receivers.

The newest JavaScript client's own view is in tests/compat/test_node22_sdk.py; here the frames
themselves: answers to the publisher (streamAck, streamNack, streamClosed), what every kind of
member receives, refusals that keep the connection, limits, and a reliable session's streams
across a dropped socket.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hubbub.protocol import webpubsub_pb2 as pb
from tests.conftest import Server
from tests.integration._proxy import CuttingProxy
from tests.integration._wire import JSON, RELIABLE, ROLE_JOIN, ROLE_SEND, Client, Wire
from tests.integration.test_reliable import Net, ack, resume, settle

PROTOBUF = "protobuf.webpubsub.azure.v1"
EVERYTHING = [ROLE_JOIN, ROLE_SEND]


@pytest.fixture
async def net(server: Server) -> AsyncIterator[Net]:
    """As in test_reliable: a direct wire and one through a proxy that can cut it."""
    async with CuttingProxy(server.host, server.port) as proxy:
        proxied = dataclasses.replace(server, port=proxy.port)
        async with Wire(server) as direct, Wire(proxied) as via:
            yield Net(server, direct, via, proxy)
        await settle(proxy)


def start(stream_id: str, group: str = "g", **extra: Any) -> dict[str, Any]:
    stream: dict[str, Any] = {"streamId": stream_id}
    if "idleTimeoutMs" in extra:
        stream["idleTimeoutMs"] = extra.pop("idleTimeoutMs")
    return {"type": "sendToGroup", "group": group, "noEcho": False, "stream": stream, **extra}


def data(stream_id: str, seq: int, text: str) -> dict[str, Any]:
    return {
        "type": "streamData",
        "streamId": stream_id,
        "streamSequenceId": seq,
        "dataType": "text",
        "data": text,
    }


def stream_ack(stream_id: str, expected: int) -> dict[str, Any]:
    return {"type": "streamAck", "streamId": stream_id, "expectedSequenceId": expected}


def closed(stream_id: str, name: str | None = None, message: str = "") -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "streamClosed", "streamId": stream_id}
    if name is not None:
        frame["error"] = {"name": name, "message": message}
    return frame


def fragment(text: str, info: dict[str, Any], user: str = "pub") -> dict[str, Any]:
    return {
        "type": "message",
        "from": "group",
        "group": "g",
        "fromUserId": user,
        "dataType": "text",
        "data": text,
        "stream": info,
    }


async def pair(wire: Wire, hub: str, protocols: tuple[str, ...] = (JSON,)) -> tuple[Client, Client]:
    """A publisher (not a member) and a member of ``g``."""
    publisher = await wire.connect(hub, user="pub", roles=[ROLE_SEND])
    member = await wire.connect(hub, user="sub", protocols=protocols, groups=["g"])
    return publisher, member


async def test_fragments_then_the_end_reach_a_member(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        publisher, member = await pair(wire, hub)
        await publisher.send_json(start("s"))
        assert await publisher.recv_json() == stream_ack("s", 1)
        await publisher.send_json(data("s", 1, "A"))
        assert await publisher.recv_json() == stream_ack("s", 2)
        await publisher.send_json({"type": "streamData", "streamId": "s"})  # keepalive
        await publisher.send_json(
            {
                "type": "streamData",
                "streamId": "s",
                "streamSequenceId": 2,
                "dataType": "json",
                "data": {"n": 2},
            }
        )
        assert await publisher.recv_json() == stream_ack("s", 3)
        await publisher.send_json({"type": "streamEnd", "streamId": "s"})
        assert await publisher.recv_json() == closed("s")
        assert await member.recv_json() == fragment("A", {"streamId": "s", "streamSequenceId": 1})
        second = await member.recv_json()
        assert (second["dataType"], second["data"]) == ("json", {"n": 2})
        end = {"streamId": "s", "streamSequenceId": 3, "endOfStream": True}
        assert await member.recv_json() == fragment("", end)
        await member.ping_pong()


async def test_sequence_gaps_are_nacked_and_repeats_acknowledged(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        publisher, member = await pair(wire, hub)
        await publisher.send_json(start("s"))
        await publisher.recv_json()
        await publisher.send_json(data("s", 2, "early"))
        assert await publisher.recv_json() == {
            "type": "streamNack",
            "streamId": "s",
            "expectedSequenceId": 1,
            "name": "InvalidSequenceId",
            "message": "Expected streamSequenceId 1, received 2.",
        }
        await publisher.send_json(data("s", 1, "one"))
        assert await publisher.recv_json() == stream_ack("s", 2)
        await publisher.send_json(data("s", 1, "one again"))
        assert await publisher.recv_json() == stream_ack("s", 2)
        assert (await member.recv_json())["data"] == "one"
        await member.ping_pong()  # the repeat was not delivered


async def test_refusals_answer_with_stream_closed_and_keep_the_connection(
    server: Server, hub: str
) -> None:
    async with Wire(server) as wire:
        publisher = await wire.connect(hub, user="pub", roles=[ROLE_SEND])
        await publisher.send_json(data("nope", 1, "x"))
        assert await publisher.recv_json() == closed(
            "nope", "StreamNotFound", "Stream 'nope' is not found."
        )
        await publisher.send_json({"type": "streamEnd", "streamId": "nope"})
        assert (await publisher.recv_json())["error"]["name"] == "StreamNotFound"
        await publisher.send_json(start(""))
        assert await publisher.recv_json() == closed(
            "", "BadRequest", "The stream id must not be empty."
        )
        await publisher.send_json(start("s", idleTimeoutMs=0))
        assert await publisher.recv_json() == closed(
            "s", "BadRequest", "The idle timeout must be greater than 0."
        )
        await publisher.send_json({**start("s"), "dataType": "text", "data": "x"})
        assert await publisher.recv_json() == closed(
            "s", "BadRequest", "A stream start must not carry data."
        )
        await publisher.send_json(start("s"))
        assert await publisher.recv_json() == stream_ack("s", 1)
        await publisher.send_json(start("s"))
        assert await publisher.recv_json() == closed(
            "s", "BadRequest", "Stream 's' already exists."
        )
        await publisher.send_json({"type": "streamData", "streamId": "s", "streamSequenceId": 1})
        assert await publisher.recv_json() == closed(
            "s", "BadRequest", "A stream fragment needs streamSequenceId, dataType and data."
        )
        await publisher.send_json(start("t", group=" "))
        assert (await publisher.recv_json())["error"]["name"] == "BadRequest"
        await publisher.ping_pong()


@pytest.mark.parametrize(
    ("invalid", "message"),
    [
        (
            {"type": "streamData", "streamId": "s", "streamSequenceId": 2},
            "A stream fragment needs streamSequenceId, dataType and data.",
        ),
        (
            {
                "type": "streamData",
                "streamId": "s",
                "streamSequenceId": 2,
                "dataType": "binary",
                "data": "not base64!",
            },
            "data is not valid base64 for dataType binary",
        ),
    ],
    ids=["incomplete", "undecodable"],
)
async def test_an_invalid_fragment_ends_its_stream_at_once(
    server: Server, hub: str, invalid: dict[str, Any], message: str
) -> None:
    async with Wire(server) as wire:
        publisher, member = await pair(wire, hub)
        await publisher.send_json(start("s"))
        await publisher.recv_json()
        await publisher.send_json(data("s", 1, "first"))
        assert await publisher.recv_json() == stream_ack("s", 2)
        await publisher.send_json(invalid)
        assert await publisher.recv_json() == closed("s", "BadRequest", message)
        assert (await member.recv_json())["data"] == "first"
        end = {
            "streamId": "s",
            "streamSequenceId": 2,
            "endOfStream": True,
            "error": {"name": "Cancelled", "message": message},
        }
        assert await member.recv_json(wait=1) == fragment("", end)
        await publisher.send_json(data("s", 2, "late"))
        assert await publisher.recv_json() == closed(
            "s", "StreamNotFound", "Stream 's' is not found."
        )
        await publisher.send_json({"type": "streamEnd", "streamId": "s"})
        assert (await publisher.recv_json())["error"]["name"] == "StreamNotFound"
        await member.ping_pong()  # nothing more reached the member
        await publisher.send_json(start("s"))  # the id is free again
        assert await publisher.recv_json() == stream_ack("s", 1)


async def test_an_invalid_protobuf_fragment_ends_its_stream(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        publisher = await wire.connect(hub, user="pub", roles=[ROLE_SEND], protocols=(PROTOBUF,))
        await publisher.recv_bytes()  # connected
        member = await wire.connect(hub, user="sub", groups=["g"])
        up = pb.UpstreamMessage()
        up.send_to_group_message.group = "g"
        up.send_to_group_message.stream.stream_id = "p"
        await publisher.ws.send_bytes(up.SerializeToString())
        answer = pb.DownstreamMessage()
        answer.ParseFromString(await publisher.recv_bytes())
        assert answer.stream_ack_message.expected_sequence_id == 1
        up = pb.UpstreamMessage()
        up.stream_data_message.stream_id = "p"
        up.stream_data_message.stream_sequence_id = 1  # no data
        await publisher.ws.send_bytes(up.SerializeToString())
        answer.ParseFromString(await publisher.recv_bytes())
        assert answer.stream_closed_message.error.name == "BadRequest"
        text = "A stream fragment needs stream_sequence_id and data."
        end = {
            "streamId": "p",
            "streamSequenceId": 1,
            "endOfStream": True,
            "error": {"name": "Cancelled", "message": text},
        }
        assert await member.recv_json(wait=1) == fragment("", end)
        up.stream_data_message.data.text_data = "late"
        await publisher.ws.send_bytes(up.SerializeToString())
        answer.ParseFromString(await publisher.recv_bytes())
        assert answer.stream_closed_message.error.name == "StreamNotFound"


async def test_a_start_without_send_permission_is_forbidden(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        scoped = await wire.connect(hub, user="pub", roles=["webpubsub.sendToGroup.other"])
        await scoped.send_json(start("s"))
        assert await scoped.recv_json() == closed(
            "s", "Forbidden", "The client has no permission to send message to group 'g'."
        )
        await scoped.send_json(start("s", group="other"))
        assert await scoped.recv_json() == stream_ack("s", 1)


async def test_at_most_a_hundred_open_streams_per_connection(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        publisher = await wire.connect(hub, user="pub", roles=[ROLE_SEND])
        for n in range(100):
            await publisher.send_json(start(f"s{n}"))
        answers = [await publisher.recv_json() for _ in range(100)]
        assert all(a["type"] == "streamAck" for a in answers)
        await publisher.send_json(start("one-too-many"))
        assert await publisher.recv_json() == closed(
            "one-too-many", "BadRequest", "Too many active streams on this connection (100)."
        )
        await publisher.send_json({"type": "streamEnd", "streamId": "s0"})
        assert await publisher.recv_json() == closed("s0")
        await publisher.send_json(start("one-too-many"))
        assert await publisher.recv_json() == stream_ack("one-too-many", 1)


async def test_an_idle_stream_times_out_for_both_sides(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        publisher, member = await pair(wire, hub)
        await publisher.send_json(start("s", idleTimeoutMs=300))
        await publisher.recv_json()
        message = "Stream 's' was idle for more than 300 ms."
        assert await publisher.recv_json(wait=3) == closed("s", "IdleTimeout", message)
        end = {
            "streamId": "s",
            "streamSequenceId": 1,
            "endOfStream": True,
            "error": {"name": "IdleTimeout", "message": message},
        }
        assert await member.recv_json() == fragment("", end)


async def test_keepalives_keep_a_stream_open(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        publisher, _ = await pair(wire, hub)
        await publisher.send_json(start("s", idleTimeoutMs=400))
        await publisher.recv_json()
        for _ in range(4):
            await asyncio.sleep(0.2)
            await publisher.send_json({"type": "streamData", "streamId": "s"})
        await publisher.send_json(data("s", 1, "still open"))
        assert await publisher.recv_json() == stream_ack("s", 2)


async def test_a_publisher_that_leaves_cancels_its_streams(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        publisher, member = await pair(wire, hub)
        await publisher.send_json(start("s"))
        await publisher.recv_json()
        await publisher.send_json(data("s", 1, "first"))
        await publisher.recv_json()
        await publisher.ws.close()
        assert (await member.recv_json())["data"] == "first"
        end = {
            "streamId": "s",
            "streamSequenceId": 2,
            "endOfStream": True,
            "error": {"name": "Cancelled", "message": "The publisher of the stream disconnected."},
        }
        assert await member.recv_json() == fragment("", end)


async def test_plain_and_protobuf_members(server: Server, hub: str) -> None:
    """Plain members get each fragment's data and nothing for the end; protobuf members get
    DataMessage.stream (an abort's error with its userErrorCode)."""
    async with Wire(server) as wire:
        publisher = await wire.connect(hub, user="pub", roles=[ROLE_SEND])
        plain = await wire.connect(hub, user="raw", protocols=(), groups=["g"])
        proto = await wire.connect(hub, user="pb", protocols=(PROTOBUF,), groups=["g"])
        await proto.recv_bytes()  # connected
        await publisher.send_json(start("s"))
        await publisher.recv_json()
        await publisher.send_json(data("s", 1, "A"))
        await publisher.recv_json()
        error = {"message": "gave up", "userErrorCode": "E42"}
        await publisher.send_json({"type": "streamEnd", "streamId": "s", "error": error})
        assert await publisher.recv_json() == closed("s")
        await wire.send_to_group(hub, "g", "after")
        assert [await plain.recv_text(), await plain.recv_text()] == ["A", "after"]
        first, last = pb.DownstreamMessage(), pb.DownstreamMessage()
        first.ParseFromString(await proto.recv_bytes())
        last.ParseFromString(await proto.recv_bytes())
        assert first.data_message.data.text_data == "A"
        assert first.data_message.stream.stream_id == "s"
        assert first.data_message.stream.stream_sequence_id == 1
        stream = last.data_message.stream
        assert (stream.stream_sequence_id, stream.end_of_stream) == (2, True)
        assert (stream.error.name, stream.error.message, stream.error.user_error_code) == (
            "UserError",
            "gave up",
            "E42",
        )


async def test_a_protobuf_publisher(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        publisher = await wire.connect(hub, user="pub", roles=[ROLE_SEND], protocols=(PROTOBUF,))
        await publisher.recv_bytes()  # connected
        member = await wire.connect(hub, user="sub", groups=["g"])
        up = pb.UpstreamMessage()
        up.send_to_group_message.group = "g"
        up.send_to_group_message.stream.stream_id = "p"
        await publisher.ws.send_bytes(up.SerializeToString())
        answer = pb.DownstreamMessage()
        answer.ParseFromString(await publisher.recv_bytes())
        assert answer.stream_ack_message.stream_id == "p"
        assert answer.stream_ack_message.expected_sequence_id == 1
        up = pb.UpstreamMessage()
        up.stream_data_message.stream_id = "p"
        up.stream_data_message.stream_sequence_id = 1
        up.stream_data_message.data.binary_data = b"\x00\x01"
        await publisher.ws.send_bytes(up.SerializeToString())
        answer.ParseFromString(await publisher.recv_bytes())
        assert answer.stream_ack_message.expected_sequence_id == 2
        up = pb.UpstreamMessage()
        up.stream_end_message.stream_id = "p"
        await publisher.ws.send_bytes(up.SerializeToString())
        answer.ParseFromString(await publisher.recv_bytes())
        assert answer.WhichOneof("message") == "stream_closed_message"
        assert not answer.stream_closed_message.HasField("error")
        received = await member.recv_json()
        assert (received["dataType"], received["data"], received["stream"]) == (
            "binary",
            "AAE=",
            {"streamId": "p", "streamSequenceId": 1},
        )
        assert (await member.recv_json())["stream"]["endOfStream"] is True


async def test_concurrent_streams_of_two_publishers_stay_apart(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        one = await wire.connect(hub, user="one", roles=[ROLE_SEND])
        two = await wire.connect(hub, user="two", roles=[ROLE_SEND])
        member = await wire.connect(hub, user="sub", groups=["g"])
        for client in (one, two):
            await client.send_json(start("same-id"))
            await client.recv_json()
        await one.send_json(data("same-id", 1, "one-1"))
        await two.send_json(data("same-id", 1, "two-1"))
        await one.send_json(data("same-id", 2, "one-2"))
        for client in (one, two):
            await client.send_json({"type": "streamEnd", "streamId": "same-id"})
        seen = [await member.recv_json() for _ in range(5)]
        by_user: dict[str, list[Any]] = {}
        for message in seen:
            by_user.setdefault(message["fromUserId"], []).append(
                (message["data"], message["stream"]["streamSequenceId"])
            )
        assert by_user == {
            "one": [("one-1", 1), ("one-2", 2), ("", 3)],
            "two": [("two-1", 1), ("", 2)],
        }


async def test_reliable_members_get_sequence_ids_and_recover_the_stream(net: Net, hub: str) -> None:
    publisher = await net.direct.connect(hub, user="pub", roles=[ROLE_SEND])
    member = await net.via.connect(hub, user="sub", protocols=(RELIABLE,), groups=["g"])
    await publisher.send_json(start("s"))
    await publisher.recv_json()
    await publisher.send_json(data("s", 1, "A"))
    await publisher.recv_json()
    first = await member.recv_json()
    assert (first["data"], first["stream"], first["sequenceId"]) == (
        "A",
        {"streamId": "s", "streamSequenceId": 1},
        1,
    )
    await ack(member, 1)
    await net.drop()
    await publisher.send_json(data("s", 2, "B"))
    await publisher.recv_json()
    await publisher.send_json({"type": "streamEnd", "streamId": "s"})
    await publisher.recv_json()
    again = await resume(net.via, hub, member)
    second, end = await again.recv_json(), await again.recv_json()
    assert (second["data"], second["sequenceId"]) == ("B", 2)
    assert (end["stream"]["endOfStream"], end["stream"]["streamSequenceId"], end["sequenceId"]) == (
        True,
        3,
        3,
    )


async def test_a_reliable_publishers_streams_survive_a_dropped_socket(net: Net, hub: str) -> None:
    publisher = await net.via.connect(hub, user="pub", roles=EVERYTHING, protocols=(RELIABLE,))
    member = await net.direct.connect(hub, user="sub", groups=["g"])
    await publisher.send_json(start("s"))
    assert await publisher.recv_json() == stream_ack("s", 1)
    await publisher.send_json(data("s", 1, "before"))
    assert await publisher.recv_json() == stream_ack("s", 2)
    await net.drop()
    again = await resume(net.via, hub, publisher)
    await again.send_json(data("s", 2, "after"))
    assert await again.recv_json() == stream_ack("s", 3)
    assert [(await member.recv_json())["data"] for _ in range(2)] == ["before", "after"]
    await member.ping_pong()  # no Cancelled end while the session waited
