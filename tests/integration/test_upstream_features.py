"""Invocations side by side, message metadata to event handlers, and group presence events.

The recording event handler app of test_upstream_faults.py (an aiohttp app on its own thread,
real sockets) plays the application; clients are raw WebSockets, REST calls go through the
Python service SDK. Hubs:

* ``inv``: every user event; ``hold`` waits until the test releases it, then answers ``late``.
* ``meta``: every user event, echoed.
* ``gp``: group presence events ``joined`` and ``left`` for every group.
* ``gpf``: only ``joined``, and only for groups matching ``room-*``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from _wire import ROLE_JOIN, ROLE_SEND, Client, Wire
from aiohttp import web
from test_upstream_faults import WAIT, HandlerApp, Seen, Stack

from hubbub.protocol.webpubsub_pb2 import DownstreamMessage, UpstreamMessage
from tests.conftest import ACCESS_KEY, start_server, stop_server

PROTOBUF = "protobuf.webpubsub.azure.v1"


def _config(port: int) -> str:
    def hub(name: str, extra: str = "") -> str:
        return (
            f"[[hubs.{name}.event_handlers]]\n"
            f'url_template = "http://127.0.0.1:{port}/{{hub}}/{{event}}"\n'
            'user_event_pattern = "*"\n'
            'system_events = ["connected", "disconnected"]\n' + extra
        )

    return "\n".join(
        [
            f'[auth]\naccess_keys = ["{ACCESS_KEY}"]\n',
            hub("inv"),
            hub("meta"),
            hub("gp", 'group_presence_events = ["joined", "left"]\n'),
            hub("gpf", 'group_presence_events = ["joined"]\ngroup_presence_filters = ["room-*"]\n'),
        ]
    )


RELEASE = threading.Event()


async def _hold(seen: Seen, request: web.Request) -> web.StreamResponse | None:
    if seen.method == "POST" and seen.event == "hold":
        await asyncio.to_thread(RELEASE.wait, 20)
        return web.Response(text="late")
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    app = HandlerApp()
    app.start()
    app.rules["inv"] = _hold
    try:
        server = start_server(
            tmp_path_factory.mktemp("upstream-features"), config_toml=_config(app.port)
        )
    except BaseException:
        app.stop()
        raise
    try:
        yield Stack(server, app)
    finally:
        RELEASE.set()
        stop_server(server)
        app.stop()


@pytest.fixture
def released() -> Iterator[None]:
    RELEASE.clear()
    yield
    RELEASE.set()


def invoke(invocation_id: str, event: str, text: str) -> dict[str, Any]:
    return {
        "type": "invoke",
        "invocationId": invocation_id,
        "target": "event",
        "event": event,
        "dataType": "text",
        "data": text,
    }


def answered(invocation_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "invokeResponse",
        "invocationId": invocation_id,
        "success": True,
        "dataType": "text",
        "data": text,
    }


# --------------------------------------------------------------------------- invocations


@pytest.mark.usefixtures("released")
async def test_a_cancelled_invocation_holds_nothing_and_its_late_answer_is_dropped(
    stack: Stack,
) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect("inv", user="u1")
        await client.send_json(invoke("1", "hold", "wait"))
        await stack.handler.wait_seen("the held call", "inv", event="hold")
        await client.send_json({"type": "cancelInvocation", "invocationId": "1"})
        await client.send_json(invoke("2", "echo", "next"))
        # Answered while the handler still holds the cancelled call.
        assert await client.recv_json() == answered("2", "next")
        RELEASE.set()
        await stack.handler.wait_seen("the held answer", "inv", event="hold", answered=True)
        await client.send_json({"type": "cancelInvocation", "invocationId": "unknown"})
        await client.send_json(invoke("3", "echo", "after"))
        assert await client.recv_json() == answered("3", "after")  # nothing for "1" before it
        await client.ping_pong()


@pytest.mark.usefixtures("released")
async def test_invocations_run_side_by_side_up_to_sixteen(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect("inv", user="u2")
        for n in range(1, 17):
            await client.send_json(invoke(str(n), "hold", "wait"))
        await stack.handler.wait_seen("16 held calls", "inv", 16, event="hold")
        await client.send_json(invoke("17", "hold", "wait"))
        assert await client.recv_json() == {
            "type": "invokeResponse",
            "invocationId": "17",
            "success": False,
            "error": {
                "name": "BadRequest",
                "message": "Too many concurrent invocations (at most 16).",
            },
        }
        RELEASE.set()
        answers = [await client.recv_json() for _ in range(16)]
        assert sorted(a["invocationId"] for a in answers) == sorted(str(n) for n in range(1, 17))
        assert {a["data"] for a in answers} == {"late"}


async def test_an_invocation_of_another_target_is_a_bad_request(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect("inv", user="u3")
        await client.send_json({**invoke("1", "echo", "x"), "target": "server"})
        response = await client.recv_json()
        assert (response["success"], response["error"]["name"]) == (False, "BadRequest")


async def test_a_client_invoke_response_is_read_and_ignored(stack: Stack) -> None:
    """The 1.1.0 protocol can write one (the answer to a service invocation): no 1007."""
    async with Wire(stack.server) as wire:
        client = await wire.connect("inv", user="u4")
        await client.send_json(
            {
                "type": "invokeResponse",
                "invocationId": "9",
                "success": True,
                "dataType": "text",
                "data": "x",
            }
        )
        await client.ping_pong()


# --------------------------------------------------------------------------- metadata


async def test_event_metadata_reaches_the_handler_as_headers(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect("meta", user="m1")
        await client.send_json(
            {
                "type": "event",
                "event": "audit",
                "dataType": "text",
                "data": "hi",
                "metadata": {"Trace": "t1", "tenant": "blue"},
                "ackId": 1,
            }
        )
        assert (await client.recv_json())["type"] == "message"  # the echo, then the ack
        assert (await client.recv_json())["success"] is True
        (seen,) = await stack.handler.wait_seen("the event", "meta", event="audit")
        assert seen.headers["x-webpubsub-metadata-trace"] == "t1"
        assert seen.headers["x-webpubsub-metadata-tenant"] == "blue"
        assert seen.body == b"hi"


def _protobuf_send(group: str, text: str, metadata: dict[str, str]) -> bytes:
    message = UpstreamMessage()
    send = message.send_to_group_message
    send.group = group
    send.data.text_data = text
    send.metadata.update(metadata)
    return message.SerializeToString()


async def _next_protobuf(client: Client) -> DownstreamMessage:
    message = DownstreamMessage()
    message.ParseFromString(await client.recv_bytes())
    return message


async def test_group_message_metadata_reaches_every_kind_of_member(stack: Stack) -> None:
    """JSON members get ``metadata`` after ``data``, protobuf members the ``metadata`` map,
    plain members the data alone; from JSON and from protobuf senders alike."""
    roles = [ROLE_JOIN, ROLE_SEND]
    async with Wire(stack.server) as wire:
        json_member = await wire.connect("meta", user="j", roles=roles, groups=["g"])
        proto_member = await wire.connect(
            "meta", user="p", roles=roles, protocols=(PROTOBUF,), groups=["g"]
        )
        assert (await _next_protobuf(proto_member)).HasField("system_message")
        plain = await wire.connect("meta", user="r", protocols=(), groups=["g"])
        await json_member.send_json(
            {
                "type": "sendToGroup",
                "group": "g",
                "dataType": "text",
                "data": "hello",
                "metadata": {"k": "v"},
                "noEcho": True,
            }
        )
        data = (await _next_protobuf(proto_member)).data_message
        assert (data.data.text_data, dict(data.metadata)) == ("hello", {"k": "v"})
        assert await plain.recv_text() == "hello"
        await proto_member.ws.send_bytes(_protobuf_send("g", "from pb", {"origin": "pb"}))
        assert await json_member.recv_json() == {
            "type": "message",
            "from": "group",
            "group": "g",
            "fromUserId": "p",
            "dataType": "text",
            "data": "from pb",
            "metadata": {"origin": "pb"},
        }
        assert dict((await _next_protobuf(proto_member)).data_message.metadata) == {"origin": "pb"}
        assert await plain.recv_text() == "from pb"


# --------------------------------------------------------------------------- group presence


def presence(stack: Stack, hub: str, connection_id: str) -> list[tuple[str, str]]:
    """``(event, group)`` of the presence events the handler got about one connection."""
    return [
        (s.headers["ce-eventname"], s.json()["group"])
        for s in sorted(
            stack.handler.seen(hub, connection_id=connection_id), key=lambda s: int(s.ce_id or 0)
        )
        if s.headers["ce-type"].startswith("azure.webpubsub.gp.")
    ]


async def _until(stack: Stack, hub: str, connection_id: str, count: int) -> list[tuple[str, str]]:
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        events = presence(stack, hub, connection_id)
        if len(events) >= count or asyncio.get_running_loop().time() > deadline:
            return events
        await asyncio.sleep(0.02)


async def test_every_membership_change_is_a_presence_event(stack: Stack) -> None:
    service = stack.service("gp")
    async with service, Wire(stack.server) as wire:
        client = await wire.connect("gp", user="ann", roles=[ROLE_JOIN], groups=["token"])
        cid = client.connection_id
        await client.join("room")
        await client.join("room")  # a member already: nothing
        await client.request({"type": "leaveGroup", "group": "room"})
        await service.add_connection_to_group("by-rest", cid)
        await service.add_connection_to_group("by-rest", cid)  # nothing
        await service.remove_connection_from_group("by-rest", cid)
        await service.add_user_to_group("by-user", "ann")
        await service.remove_user_from_all_groups("ann")  # leaves token and by-user
        for verb in ("addToGroups", "removeFromGroups"):  # not in the Python SDK
            body = '{"groups":["by-filter"],"filter":"userId eq \'ann\'"}'
            status, _ = await wire.rest(
                "POST", f"/api/hubs/gp/:{verb}", body=body, content_type="application/json"
            )
            assert status == 200
        await service.add_connection_to_group("other", cid)
        await service.remove_connection_from_all_groups(cid)
        await client.request({"type": "leaveGroup", "group": "never-joined"})
        expected = [
            ("joined", "token"),
            ("joined", "room"),
            ("left", "room"),
            ("joined", "by-rest"),
            ("left", "by-rest"),
            ("joined", "by-user"),
            ("left", "by-user"),
            ("left", "token"),
            ("joined", "by-filter"),
            ("left", "by-filter"),
            ("joined", "other"),
            ("left", "other"),
        ]
        events = await _until(stack, "gp", cid, len(expected))
        # One event per real change; "remove from all groups" leaves them in no set order.
        assert sorted(events) == sorted(expected)
        for group in {g for _, g in expected}:
            assert [e for e in events if e[1] == group] == [e for e in expected if e[1] == group]
        (first,) = [
            s
            for s in stack.handler.seen("gp", connection_id=cid)
            if s.headers["ce-type"] == "azure.webpubsub.gp.joined" and s.json() == {"group": "room"}
        ]
        assert first.headers["ce-eventname"] == "joined"
        assert first.headers["ce-userid"] == "ann"
        assert first.headers["ce-hub"] == "gp"
        assert first.headers["ce-source"] == f"/hubs/gp/client/{cid}"
        assert first.headers["content-type"] == "application/json; charset=utf-8"
        assert first.headers["ce-signature"].startswith("sha256=")


async def test_a_closing_connection_leaves_its_groups_before_disconnected(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect("gp", user="bob", roles=[ROLE_JOIN], groups=["a", "b"])
        cid = client.connection_id
        await client.ws.close()
        await stack.handler.wait_seen("disconnected", "gp", event="disconnected", connection_id=cid)
        events = await _until(stack, "gp", cid, 4)
        assert events == [("joined", "a"), ("joined", "b"), ("left", "a"), ("left", "b")]
        seen = stack.handler.seen("gp", connection_id=cid)
        (disconnected,) = [
            int(s.ce_id or 0)
            for s in seen
            if s.headers["ce-type"] == "azure.webpubsub.sys.disconnected"
        ]
        left = [
            int(s.ce_id or 0) for s in seen if s.headers["ce-type"] == "azure.webpubsub.gp.left"
        ]
        assert len(left) == 2 and max(left) < disconnected  # sent first


async def test_a_rest_close_leaves_the_groups_too(stack: Stack) -> None:
    service = stack.service("gp")
    async with service, Wire(stack.server) as wire:
        client = await wire.connect("gp", user="cy", groups=["c"])
        await service.close_connection(client.connection_id, reason="bye")
        assert (await client.recv_json())["event"] == "disconnected"
        await client.expect_close()
        assert await _until(stack, "gp", client.connection_id, 2) == [
            ("joined", "c"),
            ("left", "c"),
        ]


async def test_presence_events_follow_the_handlers_settings(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect("gpf", user="dee", roles=[ROLE_JOIN])
        for group in ("room-1", "lobby", "room-2"):
            await client.join(group)
        await client.request({"type": "leaveGroup", "group": "room-1"})
        await wire.marker("gpf", client)
        await client.ws.close()
        cid = client.connection_id
        await stack.handler.wait_seen(
            "disconnected", "gpf", event="disconnected", connection_id=cid
        )
        await asyncio.sleep(0.2)
        assert presence(stack, "gpf", cid) == [("joined", "room-1"), ("joined", "room-2")]


async def test_no_presence_events_without_the_setting(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect("meta", user="eve", roles=[ROLE_JOIN], groups=["t"])
        await client.join("room")
        await client.ws.close()
        cid = client.connection_id
        await stack.handler.wait_seen(
            "disconnected", "meta", event="disconnected", connection_id=cid
        )
        assert presence(stack, "meta", cid) == []
