"""azure-messaging-webpubsubclient (sync and asyncio) against hubbub."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final

import pytest
from azure.messaging.webpubsubclient import WebPubSubClient
from azure.messaging.webpubsubclient.aio import WebPubSubClient as AioWebPubSubClient
from azure.messaging.webpubsubclient.models import (
    OpenClientError,
    SendMessageError,
    WebPubSubDataType,
    WebPubSubProtocolType,
)
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient as AioServiceClient

from tests.compat._clients import (
    RELIABLE_SUBPROTOCOL,
    TIMEOUT,
    AioSdkClient,
    Clients,
    RawClient,
    ServerLike,
    members,
    sdk_options,
    wait_until,
)

pytestmark = [pytest.mark.compat, pytest.mark.timeout(20)]

JOIN = "webpubsub.joinLeaveGroup"
SEND = "webpubsub.sendToGroup"
TEXT: Final = WebPubSubDataType.TEXT
JSON: Final = WebPubSubDataType.JSON
BINARY: Final = WebPubSubDataType.BINARY

PROTOCOLS = [
    pytest.param(None, id="json-reliable-default"),
    pytest.param(WebPubSubProtocolType.JSON, id="json"),
]


@pytest.fixture
def clients(server: ServerLike, hub: str) -> Iterator[Clients]:
    factory = Clients(server, hub)
    yield factory
    factory.close_all()


@pytest.fixture
def svc(clients: Clients) -> WebPubSubServiceClient:
    return clients.svc


def _error_name(call: Callable[[], Any]) -> str:
    with pytest.raises(SendMessageError) as exc:
        call()
    assert exc.value.error_detail is not None
    return str(exc.value.error_detail.name)


def _reliable(protocol: WebPubSubProtocolType | None) -> bool:
    return protocol is None


# ----------------------------------------------------------- open / close


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_open_emits_connected(
    clients: Clients, svc: WebPubSubServiceClient, protocol: WebPubSubProtocolType | None
) -> None:
    c = clients.sdk(protocol=protocol, user_id="alice")

    event = c.connected.wait_for()
    assert event.user_id == "alice"
    assert event.connection_id
    assert c.client.is_connected()
    assert svc.connection_exists(event.connection_id)
    first = c.wire.snapshot()[0]
    assert first["type"] == "system"
    assert first["event"] == "connected"
    assert first["connectionId"] == event.connection_id
    assert first["userId"] == "alice"
    if _reliable(protocol):
        assert isinstance(first.get("reconnectionToken"), str) and first["reconnectionToken"]
    else:
        assert "reconnectionToken" not in first


def test_open_without_user(clients: Clients) -> None:
    c = clients.sdk()
    assert c.connected.wait_for().user_id is None
    assert c.wire.snapshot()[0].get("userId") is None


def test_open_with_bad_token_fails(server: ServerLike, hub: str, clients: Clients) -> None:
    wrong_key = WebPubSubServiceClient.from_connection_string(
        f"Endpoint={server.endpoint};AccessKey={'Q' * 44};Version=1.0;", hub=hub
    )
    try:
        bad_urls = [
            wrong_key.get_client_access_token(user_id="x")["url"],
            clients.svc.get_client_access_token(user_id="x", minutes_to_expire=-10)["url"],
        ]
    finally:
        wrong_key.close()
    for url in bad_urls:
        client = WebPubSubClient(url, **sdk_options())
        with pytest.raises(OpenClientError) as exc:
            client.open()
        assert "401" in str(exc.value)
        assert not client.is_connected()


def test_open_with_hub_in_query(server: ServerLike, hub: str, clients: Clients) -> None:
    token = clients.svc.get_client_access_token(user_id="q")["token"]
    c = clients.sdk(url=f"{server.ws_endpoint}/client/?hub={hub}&access_token={token}")

    assert c.connected.wait_for().user_id == "q"
    clients.svc.send_to_user("q", "via-query-hub", content_type="text/plain")
    assert c.server_messages.wait_for().data == "via-query-hub"


def test_recovery_after_clean_close_is_refused_with_1008(clients: Clients) -> None:
    # The SDKs reconnect with these parameters after a drop; 1008 tells them to start afresh.
    first = clients.json(subprotocol=RELIABLE_SUBPROTOCOL, user_id="r")
    reconnection_token = first.connected["reconnectionToken"]
    first.close()
    assert first.closed.wait_for()[0] == 1000
    query = urllib.parse.urlencode(
        {"awps_connection_id": first.connection_id, "awps_reconnection_token": reconnection_token}
    )

    again = RawClient(f"{clients.url(user_id='r')}&{query}", [RELIABLE_SUBPROTOCOL])

    assert again.closed.wait_for()[0] == 1008


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_close_emits_disconnected_and_stopped(
    clients: Clients, svc: WebPubSubServiceClient, protocol: WebPubSubProtocolType | None
) -> None:
    c = clients.sdk(protocol=protocol, user_id="leaver")
    cid = c.connection_id

    c.close()

    assert c.disconnected.wait_for().connection_id == cid
    c.stopped.wait_for()
    assert not c.client.is_connected()
    wait_until(lambda: not svc.connection_exists(cid), "connection removed after close()")
    assert not svc.user_exists("leaver")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rest_close_reason_reaches_disconnected_handler(
    clients: Clients, svc: WebPubSubServiceClient, protocol: WebPubSubProtocolType | None
) -> None:
    c = clients.sdk(protocol=protocol)
    cid = c.connection_id

    svc.close_connection(cid, reason="kicked")

    assert c.disconnected.wait_for().message == "kicked"
    c.stopped.wait_for()
    wait_until(lambda: not svc.connection_exists(cid), "connection removed after REST close")


def test_rest_close_then_auto_reconnect(clients: Clients, svc: WebPubSubServiceClient) -> None:
    c = clients.sdk(reconnect=True, user_id="phoenix")
    first = c.connection_id

    svc.close_connection(first, reason="come back")

    assert c.disconnected.wait_for().message == "come back"
    second = c.connected.wait_for(lambda e: e.connection_id != first, 3 * TIMEOUT)
    assert second.user_id == "phoenix"
    wait_until(lambda: svc.connection_exists(second.connection_id), "new connection exists")
    assert not svc.connection_exists(first)
    svc.send_to_user("phoenix", "welcome back", content_type="text/plain")
    assert c.server_messages.wait_for().data == "welcome back"


# ----------------------------------------------------------- groups


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_join_and_leave_group_with_role(
    clients: Clients, svc: WebPubSubServiceClient, protocol: WebPubSubProtocolType | None
) -> None:
    c = clients.sdk(protocol=protocol, roles=[JOIN])
    cid = c.connection_id

    c.client.join_group("lobby")
    assert members(svc, "lobby") == {cid}
    svc.send_to_group("lobby", {"hello": "lobby"})
    msg = c.group_messages.wait_for()
    assert (msg.group, msg.data_type, msg.data) == ("lobby", "json", {"hello": "lobby"})
    assert msg.from_user_id is None
    assert msg.sequence_id == (1 if _reliable(protocol) else None)

    c.client.leave_group("lobby")
    assert not svc.group_exists("lobby")
    svc.send_to_group("lobby", "after-leave", content_type="text/plain")
    svc.send_to_connection(cid, "marker", content_type="text/plain")
    assert c.data_until("marker") == [{"hello": "lobby"}, "marker"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_forbidden_without_role(
    clients: Clients, svc: WebPubSubServiceClient, protocol: WebPubSubProtocolType | None
) -> None:
    c = clients.sdk(protocol=protocol)
    cid = c.connection_id

    assert _error_name(lambda: c.client.join_group("locked")) == "Forbidden"
    assert not svc.group_exists("locked")
    svc.add_connection_to_group("locked", cid)  # REST bypasses client permissions
    assert _error_name(lambda: c.client.leave_group("locked")) == "Forbidden"
    assert _error_name(lambda: c.client.send_to_group("locked", "x", TEXT)) == "Forbidden"
    assert members(svc, "locked") == {cid}
    assert c.client.is_connected()
    acks = [f for f in c.wire.snapshot() if f.get("type") == "ack"]
    assert len(acks) == 3
    assert all(a["success"] is False and a["error"]["name"] == "Forbidden" for a in acks)


def test_group_scoped_roles(clients: Clients, svc: WebPubSubServiceClient) -> None:
    c = clients.sdk(roles=[f"{JOIN}.alpha", f"{SEND}.alpha"])

    c.client.join_group("alpha")
    c.client.send_to_group("alpha", "scoped", TEXT)
    assert c.group_messages.wait_for().data == "scoped"
    assert _error_name(lambda: c.client.join_group("beta")) == "Forbidden"
    assert _error_name(lambda: c.client.send_to_group("beta", "x", TEXT)) == "Forbidden"
    assert not svc.group_exists("beta")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("data_type", "content"),
    [
        pytest.param(JSON, {"k": [1, "two", None], "nested": {"x": 1.5}}, id="json"),
        pytest.param(TEXT, "hello text", id="text"),
        pytest.param(BINARY, b"\x00\x01binary\xff", id="binary"),
    ],
)
def test_send_to_group_between_clients(
    clients: Clients,
    protocol: WebPubSubProtocolType | None,
    data_type: WebPubSubDataType,
    content: Any,
) -> None:
    sender = clients.sdk(protocol=protocol, user_id="sender", roles=[SEND])
    receiver = clients.sdk(protocol=protocol, user_id="receiver", roles=[JOIN])
    plain = clients.raw(groups=["chat"])
    receiver.client.join_group("chat")
    payload = memoryview(content) if data_type == BINARY else content

    sender.client.send_to_group("chat", payload, data_type)  # type: ignore[call-overload]

    msg = receiver.group_messages.wait_for()
    assert (msg.group, msg.from_user_id, msg.data_type) == ("chat", "sender", data_type.value)
    frame = plain.frames.wait_for()
    if data_type == BINARY:
        assert bytes(msg.data) == content
        assert frame == content
    elif data_type == TEXT:
        assert msg.data == content
        assert frame == content
    else:
        assert msg.data == content
        assert isinstance(frame, str)
        assert json.loads(frame) == content
    wire = receiver.wire.wait_for(lambda f: f.get("type") == "message")
    assert wire["from"] == "group"
    assert wire["fromUserId"] == "sender"
    if data_type == BINARY:
        assert base64.b64decode(wire["data"]) == content


def test_no_echo(clients: Clients) -> None:
    a = clients.sdk(roles=[SEND, JOIN])
    b = clients.sdk(roles=[JOIN])
    a.client.join_group("echo")
    b.client.join_group("echo")

    a.client.send_to_group("echo", "quiet", TEXT, no_echo=True)
    a.client.send_to_group("echo", "loud", TEXT, no_echo=False)

    assert a.data_until("loud") == ["loud"]
    assert b.data_until("loud") == ["quiet", "loud"]


def test_duplicate_ack_id_is_not_executed_twice(clients: Clients) -> None:
    sender = clients.sdk(roles=[SEND])
    receiver = clients.sdk(roles=[JOIN])
    receiver.client.join_group("dup")

    sender.client.send_to_group("dup", "once", TEXT, ack_id=100)
    sender.client.send_to_group("dup", "once", TEXT, ack_id=100)  # the SDK accepts "Duplicate"
    sender.client.send_to_group("dup", "marker", TEXT, ack_id=101)

    assert receiver.data_until("marker") == ["once", "marker"]
    acks = [f for f in sender.wire.snapshot() if f.get("type") == "ack"]
    assert [a["ackId"] for a in acks] == [100, 100, 101]
    assert acks[0]["success"] is True
    assert acks[1]["success"] is False
    assert acks[1]["error"]["name"] == "Duplicate"
    assert acks[2]["success"] is True


# ----------------------------------------------------------- events, messages


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_send_event_without_handler(
    clients: Clients, svc: WebPubSubServiceClient, protocol: WebPubSubProtocolType | None
) -> None:
    c = clients.sdk(protocol=protocol)
    cid = c.connection_id

    name = _error_name(lambda: c.client.send_event("greet", {"a": 1}, JSON))
    assert name == "InternalServerError"
    c.client.send_event("greet", "fire and forget", TEXT, ack=False)

    assert c.client.is_connected()
    assert svc.connection_exists(cid)
    svc.send_to_connection(cid, "marker", content_type="text/plain")
    assert c.data_until("marker") == ["marker"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_message_handler(
    clients: Clients, svc: WebPubSubServiceClient, protocol: WebPubSubProtocolType | None
) -> None:
    c = clients.sdk(protocol=protocol, user_id="srv")

    svc.send_to_connection(c.connection_id, {"n": 1})
    svc.send_to_user("srv", "text-msg", content_type="text/plain")
    svc.send_to_all(b"\x01\x02", content_type="application/octet-stream")  # type: ignore[call-overload]

    msgs = c.server_messages.wait_count(3)
    seen = {
        (m.data_type, bytes(m.data) if m.data_type == "binary" else json.dumps(m.data))
        for m in msgs
    }
    assert seen == {("json", '{"n": 1}'), ("text", '"text-msg"'), ("binary", b"\x01\x02")}
    ids = sorted(m.sequence_id or 0 for m in msgs)
    assert ids == ([1, 2, 3] if _reliable(protocol) else [0, 0, 0])
    assert not c.group_messages.snapshot()


# ----------------------------------------------------------- asyncio client


@pytest.fixture
async def aio_svc(server: ServerLike, hub: str) -> AsyncIterator[AioServiceClient]:
    client = AioServiceClient.from_connection_string(server.connection_string, hub=hub)
    async with client:
        yield client


async def _aio_client(
    clients: Clients, protocol: WebPubSubProtocolType | None = None, **token: Any
) -> AioSdkClient:
    extra: dict[str, Any] = {} if protocol is None else {"protocol_type": protocol}
    c = AioSdkClient(AioWebPubSubClient(clients.url(**token), **sdk_options(), **extra))
    await c.start()
    return c


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_aio_group_messaging(
    clients: Clients, aio_svc: AioServiceClient, protocol: WebPubSubProtocolType | None
) -> None:
    a = await _aio_client(clients, protocol, user_id="aio-a", roles=[SEND, JOIN])
    b = await _aio_client(clients, protocol, user_id="aio-b", roles=[JOIN])
    try:
        connected = a.connected.snapshot()[0]
        assert connected.user_id == "aio-a"
        assert await aio_svc.connection_exists(connected.connection_id)
        await a.client.join_group("aio")
        await b.client.join_group("aio")

        await a.client.send_to_group("aio", {"x": 1}, JSON, no_echo=True)
        await a.client.send_to_group("aio", memoryview(b"\x00aio"), BINARY, no_echo=True)
        await a.client.send_to_group("aio", "done", TEXT)

        assert await a.data_until("done") == ["done"]
        got = await b.data_until("done")
        assert got == [{"x": 1}, base64.b64encode(b"\x00aio").decode(), "done"]
        first = await b.group_messages.wait_for(lambda m: m.data == {"x": 1})
        assert (first.group, first.from_user_id, first.data_type) == ("aio", "aio-a", "json")
        binary = await b.group_messages.wait_for(lambda m: m.data_type == "binary")
        assert bytes(binary.data) == b"\x00aio"

        b_id = b.connected.snapshot()[0].connection_id
        await aio_svc.send_to_connection(b_id, "from-server", content_type="text/plain")
        srv = await b.server_messages.wait_for()
        assert (srv.data_type, srv.data) == ("text", "from-server")

        await b.client.leave_group("aio")
        assert await aio_svc.group_exists("aio")  # a is still in it
    finally:
        await a.client.close()
        await b.client.close()
    assert (await a.disconnected.wait_for()).connection_id == connected.connection_id


async def test_aio_forbidden_and_event_errors(clients: Clients, aio_svc: AioServiceClient) -> None:
    c = await _aio_client(clients)
    try:
        with pytest.raises(SendMessageError) as exc:
            await c.client.join_group("nope")
        assert exc.value.error_detail is not None
        assert exc.value.error_detail.name == "Forbidden"
        with pytest.raises(SendMessageError) as exc:
            await c.client.send_event("evt", "payload", TEXT)
        assert exc.value.error_detail is not None
        assert exc.value.error_detail.name == "InternalServerError"
        assert c.client.is_connected()
        assert not await aio_svc.group_exists("nope")
    finally:
        await c.client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_aio_rest_close(
    clients: Clients, aio_svc: AioServiceClient, protocol: WebPubSubProtocolType | None
) -> None:
    c = await _aio_client(clients, protocol)
    cid = c.connected.snapshot()[0].connection_id
    try:
        await aio_svc.close_connection(cid, reason="aio-bye")
        assert (await c.disconnected.wait_for()).message == "aio-bye"
        frame = await c.wire.wait_for(lambda f: f.get("event") == "disconnected")
        assert frame["message"] == "aio-bye"
    finally:
        await c.client.close()
    await _aio_wait_gone(aio_svc, cid)


async def _aio_wait_gone(svc: AioServiceClient, cid: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while await svc.connection_exists(cid):
        assert time.monotonic() < deadline, f"connection {cid} still exists"
        await asyncio.sleep(0.02)
