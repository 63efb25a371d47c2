"""`json.webpubsub.azure.v1` / `json.reliable.webpubsub.azure.v1` over a real socket."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from tests.integration._wire import (
    JSON,
    RELIABLE,
    ROLE_JOIN,
    ROLE_SEND,
    Client,
    ServerLike,
    Wire,
    ok_ack,
    server_text,
)

ALL_ROLES = [ROLE_JOIN, ROLE_SEND]
MB = 1024 * 1024


def group_message(
    group: str, data: Any, data_type: str = "text", user: str | None = None
) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "message", "from": "group", "group": group}
    if user is not None:
        msg["fromUserId"] = user
    msg["dataType"] = data_type
    msg["data"] = data
    return msg


def split_ack(frames: list[Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Separate the single ack from the data messages among frames received together."""
    acks = [f for f in frames if f.get("type") == "ack"]
    assert len(acks) == 1, frames
    return acks[0], [f for f in frames if f.get("type") != "ack"]


def assert_ok(ack: dict[str, Any]) -> None:
    assert ack == ok_ack(ack["ackId"]), ack


def assert_error(ack: dict[str, Any], name: str) -> None:
    assert ack["success"] is False, ack
    assert list(ack) == ["type", "ackId", "success", "error"], ack
    assert ack["error"]["name"] == name, ack
    assert isinstance(ack["error"]["message"], str), ack


async def publish(
    client: Client, group: str, data: Any, data_type: str = "text", **extra: Any
) -> dict[str, Any]:
    return await client.request(
        {"type": "sendToGroup", "group": group, "dataType": data_type, "data": data, **extra}
    )


# --------------------------------------------------------------------------- connected


async def test_connected_message_is_compact_and_ordered(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="alice")
        assert client.connected_text is not None
        assert re.fullmatch(
            r'\{"type":"system","event":"connected","userId":"alice","connectionId":"[^"\\]+"\}',
            client.connected_text,
        ), client.connected_text


async def test_connected_message_without_user_has_null_user_id(server: ServerLike) -> None:
    async with Wire(server) as wire:
        client = await wire.connect("anon", auth="none")
        assert client.connected_text is not None
        assert re.fullmatch(
            r'\{"type":"system","event":"connected","userId":null,"connectionId":"[^"\\]+"\}',
            client.connected_text,
        ), client.connected_text


async def test_reliable_connected_message_adds_reconnection_token(
    server: ServerLike, hub: str
) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="alice", protocols=(RELIABLE,))
        assert client.connected_text is not None
        assert re.fullmatch(
            r'\{"type":"system","event":"connected","userId":"alice","connectionId":"[^"\\]+",'
            r'"reconnectionToken":"[^"\\]+"\}',
            client.connected_text,
        ), client.connected_text


async def test_connection_ids_are_unique(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        ids = {(await wire.connect(hub, user="same")).connection_id for _ in range(5)}
        assert len(ids) == 5


# --------------------------------------------------------------------------- reliable sequencing


async def test_reliable_messages_carry_sequence_ids(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="r", roles=ALL_ROLES, protocols=(RELIABLE,))
        b = await wire.connect(hub, user="s", groups=["g"], protocols=(RELIABLE,))

        await a.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
        assert await a.recv_text() == '{"type":"ack","ackId":1,"success":true}'

        await wire.send_to_connection(hub, a.connection_id, "one")
        assert await a.recv_text() == (
            '{"type":"message","from":"server","dataType":"text","data":"one","sequenceId":1}'
        )

        await a.send_json(
            {"type": "sendToGroup", "group": "g", "ackId": 2, "dataType": "text", "data": "two"}
        )
        texts = [await a.recv_text(), await a.recv_text()]
        assert sorted(texts) == sorted(
            [
                '{"type":"ack","ackId":2,"success":true}',
                '{"type":"message","from":"group","group":"g","fromUserId":"r",'
                '"dataType":"text","data":"two","sequenceId":2}',
            ]
        )

        await a.send_json({"type": "ping"})
        assert await a.recv_text() == '{"type":"pong"}'
        await a.send_json({"type": "sequenceAck", "sequenceId": 2})

        await wire.send_to_group(hub, "g", "three")
        assert await a.recv_text() == (
            '{"type":"message","from":"group","group":"g","dataType":"text","data":"three",'
            '"sequenceId":3}'
        )
        # sequence ids are per connection: b starts at 1
        assert await b.recv_text() == (
            '{"type":"message","from":"group","group":"g","fromUserId":"r","dataType":"text",'
            '"data":"two","sequenceId":1}'
        )
        assert await b.recv_text() == (
            '{"type":"message","from":"group","group":"g","dataType":"text","data":"three",'
            '"sequenceId":2}'
        )


async def test_reliable_error_ack_has_no_sequence_id(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="r", protocols=(RELIABLE,))
        ack = await a.request({"type": "joinGroup", "group": "g"})
        assert_error(ack, "Forbidden")
        await wire.send_to_connection(hub, a.connection_id, "first")
        assert await a.recv_json() == {**server_text("first"), "sequenceId": 1}


async def test_sequence_ack_is_accepted_on_plain_json(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="u")
        await a.send_json({"type": "sequenceAck", "sequenceId": 1})
        await a.ping_pong()


# --------------------------------------------------------------------------- groups and acks


async def test_join_send_leave_with_ack_ids(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=ALL_ROLES)
        b = await wire.connect(hub, user="b", roles=[ROLE_JOIN])

        await a.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
        assert await a.recv_text() == '{"type":"ack","ackId":1,"success":true}'
        await b.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
        assert await b.recv_json() == ok_ack(1)

        await a.send_json(
            {"type": "sendToGroup", "group": "g", "ackId": 2, "dataType": "json", "data": {"n": 1}}
        )
        ack, messages = split_ack(await a.recv_many(2))
        assert ack == ok_ack(2)
        assert messages == [group_message("g", {"n": 1}, "json", "a")]
        assert await b.recv_text() == (
            '{"type":"message","from":"group","group":"g","fromUserId":"a",'
            '"dataType":"json","data":{"n":1}}'
        )

        await b.send_json({"type": "leaveGroup", "group": "g", "ackId": 2})
        assert await b.recv_json() == ok_ack(2)

        await a.send_json(
            {
                "type": "sendToGroup",
                "group": "g",
                "ackId": 3,
                "dataType": "text",
                "data": "after-leave",
            }
        )
        ack, messages = split_ack(await a.recv_many(2))
        assert ack == ok_ack(3)
        assert messages == [group_message("g", "after-leave", user="a")]
        await wire.marker(hub, b)  # b left before "after-leave" was published


async def test_join_send_leave_without_ack_ids(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=ALL_ROLES)
        b = await wire.connect(hub, user="b", roles=[ROLE_JOIN])

        await a.send_json({"type": "joinGroup", "group": "g"})
        await a.ping_pong()  # no ack in between
        await b.send_json({"type": "joinGroup", "group": "g"})
        await b.ping_pong()

        await a.send_json({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "hi"})
        assert await a.recv_json() == group_message("g", "hi", user="a")
        await a.ping_pong()
        assert await b.recv_json() == group_message("g", "hi", user="a")

        await b.send_json({"type": "leaveGroup", "group": "g"})
        await b.ping_pong()
        await wire.send_to_group(hub, "g", "gone")
        assert await a.recv_json() == group_message("g", "gone")
        await wire.marker(hub, b)


async def test_large_ack_id_is_echoed(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=ALL_ROLES)
        await a.send_json({"type": "joinGroup", "group": "g", "ackId": 2**64 - 1})
        assert await a.recv_text() == '{"type":"ack","ackId":18446744073709551615,"success":true}'


# --------------------------------------------------------------------------- permissions


async def test_no_role_is_forbidden_and_not_executed(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a")
        b = await wire.connect(hub, user="b", groups=["g"])

        assert_error(await a.request({"type": "joinGroup", "group": "g"}), "Forbidden")
        assert_error(await a.request({"type": "leaveGroup", "group": "g"}), "Forbidden")
        assert_error(await publish(a, "g", "nope"), "Forbidden")

        await wire.send_to_group(hub, "g", "rest")
        assert await b.recv_json() == group_message("g", "rest")  # "nope" never arrived
        await wire.marker(hub, a)  # a did not join g


async def test_scoped_roles_apply_to_their_group_only(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(
            hub, user="a", roles=["webpubsub.joinLeaveGroup.g1", "webpubsub.sendToGroup.g1"]
        )
        assert_ok(await a.request({"type": "joinGroup", "group": "g1"}))
        for group in ["g2", "G1", "g10"]:
            assert_error(await a.request({"type": "joinGroup", "group": group}), "Forbidden")
            assert_error(await publish(a, group, "x"), "Forbidden")

        await a.send_json(
            {"type": "sendToGroup", "group": "g1", "ackId": 99, "dataType": "text", "data": "ok"}
        )
        ack, messages = split_ack(await a.recv_many(2))
        assert ack == ok_ack(99)
        assert messages == [group_message("g1", "ok", user="a")]
        assert_ok(await a.request({"type": "leaveGroup", "group": "g1"}))
        assert_error(await a.request({"type": "leaveGroup", "group": "g2"}), "Forbidden")


async def test_wildcard_roles_match_pattern(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(
            hub,
            user="a",
            roles=["webpubsub.sendToGroups.chat-*", "webpubsub.joinLeaveGroups.chat-*"],
        )
        b = await wire.connect(hub, user="b", groups=["chat-1", "chat.1"])

        assert_ok(await publish(a, "chat-1", "allowed"))
        assert await b.recv_json() == group_message("chat-1", "allowed", user="a")
        assert_error(await publish(a, "chat.1", "denied"), "Forbidden")

        assert_ok(await a.request({"type": "joinGroup", "group": "chat-2"}))
        assert_error(await a.request({"type": "joinGroup", "group": "chat.2"}), "Forbidden")

        await wire.marker(hub, b)  # "denied" never reached chat.1


# --------------------------------------------------------------------------- idempotency


async def test_duplicate_ack_id_is_not_executed_twice(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=[ROLE_SEND])
        b = await wire.connect(hub, user="b", groups=["g"])

        msg = {"type": "sendToGroup", "group": "g", "ackId": 5, "dataType": "text"}
        await a.send_json({**msg, "data": "once"})
        assert await a.recv_json() == ok_ack(5)
        await a.send_json({**msg, "data": "twice"})
        ack = await a.recv_json()
        assert ack["ackId"] == 5
        assert_error(ack, "Duplicate")
        await a.send_json({**msg, "ackId": 6, "data": "after"})
        assert await a.recv_json() == ok_ack(6)

        assert await b.recv_json() == group_message("g", "once", user="a")
        assert await b.recv_json() == group_message("g", "after", user="a")


async def test_duplicate_join_is_not_executed_again(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=[ROLE_JOIN])
        await a.send_json({"type": "joinGroup", "group": "g", "ackId": 7})
        assert await a.recv_json() == ok_ack(7)
        await a.send_json({"type": "leaveGroup", "group": "g", "ackId": 8})
        assert await a.recv_json() == ok_ack(8)
        await a.send_json({"type": "joinGroup", "group": "g", "ackId": 7})
        assert_error(await a.recv_json(), "Duplicate")
        await wire.send_to_group(hub, "g", "should-not-arrive")
        await wire.marker(hub, a)


async def test_failed_ack_id_is_not_remembered(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=["webpubsub.sendToGroup.ok"])
        b = await wire.connect(hub, user="b", groups=["ok"])
        msg = {"type": "sendToGroup", "ackId": 1, "dataType": "text", "data": "x"}
        await a.send_json({**msg, "group": "denied"})
        assert_error(await a.recv_json(), "Forbidden")
        await a.send_json({**msg, "group": "denied"})
        assert_error(await a.recv_json(), "Forbidden")
        await a.send_json({**msg, "group": "ok"})
        assert await a.recv_json() == ok_ack(1)
        assert await b.recv_json() == group_message("ok", "x", user="a")


# --------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize(
    "group", ["", " ", "\t\n", "x" * 1025], ids=["empty", "space", "ws", "long"]
)
@pytest.mark.parametrize("kind", ["joinGroup", "leaveGroup", "sendToGroup"])
async def test_invalid_group_name_is_bad_request(
    server: ServerLike, hub: str, group: str, kind: str
) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=ALL_ROLES)
        message: dict[str, Any] = {"type": kind, "group": group}
        if kind == "sendToGroup":
            message.update(dataType="text", data="x")
        assert_error(await a.request(message), "BadRequest")
        await a.ping_pong()


async def test_group_name_of_max_length_is_accepted(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=ALL_ROLES)
        assert_ok(await a.request({"type": "joinGroup", "group": "y" * 1024}))


async def test_invalid_base64_is_bad_request(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=ALL_ROLES)
        b = await wire.connect(hub, user="b", groups=["g"])
        assert_error(await publish(a, "g", "***not base64***", "binary"), "BadRequest")
        await wire.marker(hub, b)


# --------------------------------------------------------------------------- delivery


async def test_no_echo(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=[ROLE_SEND], groups=["g"])
        b = await wire.connect(hub, user="b", groups=["g"])

        assert_ok(await publish(a, "g", "quiet", noEcho=True))
        assert await b.recv_json() == group_message("g", "quiet", user="a")
        await wire.marker(hub, a)  # a did not get its own message

        await a.send_json(
            {
                "type": "sendToGroup",
                "group": "g",
                "ackId": 2,
                "noEcho": False,
                "dataType": "text",
                "data": "loud",
            }
        )
        ack, messages = split_ack(await a.recv_many(2))
        assert ack == ok_ack(2)
        assert messages == [group_message("g", "loud", user="a")]
        assert await b.recv_json() == group_message("g", "loud", user="a")


@pytest.mark.parametrize(
    ("data_type", "data"),
    [
        ("json", {"a": [1, 2.5, {"b": None}], "s": "\u00fc\u2603", "t": True}),
        ("json", "a json string"),
        ("json", [1, "two"]),
        ("text", 'hello \u2603 "quoted"'),
        ("binary", base64.b64encode(b"\x00\x01\xfe\xff").decode()),
    ],
    ids=["json-object", "json-string", "json-array", "text", "binary"],
)
async def test_data_types_round_trip(
    server: ServerLike, hub: str, data_type: str, data: Any
) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="sender", roles=[ROLE_SEND])
        b = await wire.connect(hub, user="receiver", groups=["g"])
        assert_ok(await publish(a, "g", data, data_type))
        frame = await b.recv_json()
        assert frame == group_message("g", data, data_type, "sender")
        assert list(frame) == ["type", "from", "group", "fromUserId", "dataType", "data"]
        if data_type == "binary":
            assert base64.b64decode(frame["data"], validate=True) == b"\x00\x01\xfe\xff"


async def test_default_data_type_is_json(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=[ROLE_SEND])
        b = await wire.connect(hub, user="b", groups=["g"])
        assert_ok(await a.request({"type": "sendToGroup", "group": "g", "data": {"k": 1}}))
        assert await b.recv_json() == group_message("g", {"k": 1}, "json", "a")


async def test_from_user_id_absent_for_sender_without_user(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, roles=[ROLE_SEND])
        assert a.connected is not None and a.connected["userId"] is None
        b = await wire.connect(hub, user="b", groups=["g"])
        assert_ok(await publish(a, "g", "anon"))
        assert await b.recv_text() == (
            '{"type":"message","from":"group","group":"g","dataType":"text","data":"anon"}'
        )


async def test_ping_gets_pong(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a")
        for _ in range(3):
            await a.send_json({"type": "ping"})
            assert await a.recv_text() == '{"type":"pong"}'


async def test_event_without_handler_acks_internal_server_error(
    server: ServerLike, hub: str
) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a")
        event = {"type": "event", "event": "custom", "dataType": "text", "data": "x"}
        assert_error(await a.request(event), "InternalServerError")
        await a.send_json({**event, "ackId": 1})  # failures are not remembered
        assert_error(await a.recv_json(), "InternalServerError")
        await a.send_json(event)  # fire-and-forget: no ack, connection stays open
        await a.ping_pong()
        await wire.marker(hub, a)


async def test_invoke_without_handler_answers_failed_invoke_response(
    server: ServerLike, hub: str
) -> None:
    """An invocation no handler takes fails with an invokeResponse; the connection stays."""
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a")
        await a.send_json(
            {
                "type": "invoke",
                "invocationId": "7",
                "target": "event",
                "event": "order",
                "dataType": "json",
                "data": {"n": 1},
            }
        )
        response = await a.recv_json()
        assert response["type"] == "invokeResponse" and response["invocationId"] == "7"
        assert response["success"] is False
        assert response["error"]["name"] == "InternalServerError"
        await a.send_json({"type": "cancelInvocation", "invocationId": "7"})
        await a.ping_pong()


# --------------------------------------------------------------------------- malformed input


async def test_binary_frame_closes_with_1003(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a")
        await a.ws.send_bytes(b'{"type":"ping"}')
        code, _ = await a.expect_close()
        assert code == 1003


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        "[1,2]",
        '"ping"',
        '{"type":"bogus"}',
        '{"ackId":1,"group":"g"}',
        '{"type":"joinGroup","ackId":1}',
        '{"type":"joinGroup","group":5}',
        '{"type":"joinGroup","group":"g","ackId":"1"}',
        '{"type":"joinGroup","group":"g","ackId":1.5}',
        '{"type":"sendToGroup","group":"g","ackId":1}',
        '{"type":"sendToGroup","group":"g","data":"x","noEcho":"yes"}',
        '{"type":"event","dataType":"text","data":"x"}',
        '{"type":"sequenceAck"}',
    ],
    ids=[
        "invalid-json",
        "array",
        "string",
        "unknown-type",
        "missing-type",
        "missing-group",
        "group-not-string",
        "ackid-string",
        "ackid-float",
        "missing-data",
        "noecho-string",
        "missing-event",
        "missing-sequence-id",
    ],
)
async def test_malformed_message_closes_with_1007(server: ServerLike, hub: str, frame: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=ALL_ROLES)
        await a.ws.send_str(frame)
        code, _ = await a.expect_close()
        assert code == 1007


def _publish_frame(size: int) -> str:
    head = '{"type":"sendToGroup","group":"g","ackId":1,"noEcho":true,"dataType":"text","data":"'
    tail = '"}'
    frame = head + "x" * (size - len(head) - len(tail)) + tail
    assert len(frame.encode()) == size
    return frame


async def test_message_over_1mb_closes_with_1009(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=ALL_ROLES)
        await a.ws.send_str(_publish_frame(MB + 1024))
        code, _ = await a.expect_close()
        assert code == 1009


async def test_message_just_under_1mb_is_accepted(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        a = await wire.connect(hub, user="a", roles=ALL_ROLES)
        b = await wire.connect(hub, user="b", groups=["g"])
        frame = _publish_frame(MB - 1024)
        await a.ws.send_str(frame)
        assert await a.recv_json() == ok_ack(1)
        received = await b.recv_json()
        assert received["data"] == json.loads(frame)["data"]


# --------------------------------------------------------------------------- server-side close


CLOSE_ROUTES = {
    "connection": ("DELETE", "/api/hubs/{hub}/connections/{cid}"),
    "user": ("POST", "/api/hubs/{hub}/users/closer/:closeConnections"),
    "group": ("POST", "/api/hubs/{hub}/groups/cg/:closeConnections"),
    "hub": ("POST", "/api/hubs/{hub}/:closeConnections"),
}


@pytest.mark.parametrize("route", list(CLOSE_ROUTES))
@pytest.mark.parametrize("protocol", [JSON, RELIABLE], ids=["json", "reliable"])
async def test_rest_close_sends_disconnected_then_1000(
    server: ServerLike, hub: str, route: str, protocol: str
) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="closer", groups=["cg"], protocols=(protocol,))
        method, path = CLOSE_ROUTES[route]
        status, body = await wire.rest(
            method,
            path.format(hub=hub, cid=client.connection_id),
            params=[("reason", "bye for now")],
        )
        assert status == 204, (status, body)
        assert await client.recv_text() == (
            '{"type":"system","event":"disconnected","message":"bye for now"}'
        )
        code, _ = await client.expect_close()
        assert code == 1000


async def test_rest_close_excluded_connection_stays_open(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        keep = await wire.connect(hub, user="keep")
        drop = await wire.connect(hub, user="drop")
        status, _ = await wire.rest(
            "POST",
            f"/api/hubs/{hub}/:closeConnections",
            params=[("excluded", keep.connection_id), ("reason", "r")],
        )
        assert status == 204
        assert (await drop.recv_json())["event"] == "disconnected"
        assert (await drop.expect_close())[0] == 1000
        await keep.ping_pong()


# --------------------------------------------------------------------------- recovery attempts


async def test_reconnect_to_unknown_connection_is_closed_with_1008(
    server: ServerLike, hub: str
) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(
            hub,
            auth="none",
            protocols=(RELIABLE,),
            query=[
                ("awps_connection_id", "no-such-connection"),
                ("awps_reconnection_token", "bogus"),
            ],
            read_connected=False,
        )
        code, _ = await client.expect_close()
        assert code == 1008


async def test_reconnect_with_wrong_token_is_closed_with_1008(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        original = await wire.connect(hub, user="r", protocols=(RELIABLE,))
        retry = await wire.connect(
            hub,
            user="r",
            protocols=(RELIABLE,),
            query=[
                ("awps_connection_id", original.connection_id),
                ("awps_reconnection_token", "wrong-token"),
            ],
            read_connected=False,
        )
        code, _ = await retry.expect_close()
        assert code == 1008


async def test_reconnect_after_normal_close_is_closed_with_1008(
    server: ServerLike, hub: str
) -> None:
    async with Wire(server) as wire:
        original = await wire.connect(hub, user="r", protocols=(RELIABLE,))
        assert original.connected is not None
        token = original.connected["reconnectionToken"]
        await original.ws.close(code=1000)
        retry = await wire.connect(
            hub,
            user="r",
            protocols=(RELIABLE,),
            query=[
                ("awps_connection_id", original.connection_id),
                ("awps_reconnection_token", token),
            ],
            read_connected=False,
        )
        code, _ = await retry.expect_close()
        assert code == 1008


# --------------------------------------------------------------------------- exact REST frames


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        (
            "application/json",
            '{"message":"Hello world!"}',
            '{"type":"message","from":"server","dataType":"json",'
            '"data":{"message":"Hello world!"}}',
        ),
        (
            "text/plain",
            "Hi there!",
            '{"type":"message","from":"server","dataType":"text","data":"Hi there!"}',
        ),
        (
            "text/plain; charset=utf-8",
            "Hi there!",
            '{"type":"message","from":"server","dataType":"text","data":"Hi there!"}',
        ),
        (
            "application/octet-stream",
            b"\x05\x01\x01",
            '{"type":"message","from":"server","dataType":"binary","data":"BQEB"}',
        ),
    ],
    ids=["json", "text", "text-charset", "binary"],
)
async def test_rest_send_to_all_exact_frames(
    server: ServerLike, hub: str, content_type: str, body: str | bytes, expected: str
) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="u")
        await wire.send_to_all(hub, body, content_type)
        assert await client.recv_text() == expected


async def test_rest_group_send_exact_frame(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        plain = await wire.connect(hub, user="u", groups=["g"])
        reliable = await wire.connect(hub, user="v", groups=["g"], protocols=(RELIABLE,))
        await wire.send_to_group(hub, "g", '{"message":"Hello world!"}', "application/json")
        assert await plain.recv_text() == (
            '{"type":"message","from":"group","group":"g","dataType":"json",'
            '"data":{"message":"Hello world!"}}'
        )
        assert await reliable.recv_text() == (
            '{"type":"message","from":"group","group":"g","dataType":"json",'
            '"data":{"message":"Hello world!"},"sequenceId":1}'
        )
