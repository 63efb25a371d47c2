"""Reliable sessions over real sockets: `json.reliable.webpubsub.azure.v1` spoken by hand.

A client that should lose its connection goes through a :class:`CuttingProxy`; ``cut()``
resets its TCP connection with no close frame, the way a broken network path looks to the
service. The client then recovers with ``?awps_connection_id=&awps_reconnection_token=``
(client-protocols.md §4) and must get every unacknowledged message again, in order, exactly
once, on the same logical connection. Refused recoveries are upgraded, then closed with 1008.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from tests.conftest import CONFIG_TOML, Server, free_port, start_server, stop_server
from tests.integration._proxy import CuttingProxy
from tests.integration._wire import (
    JSON,
    RELIABLE,
    ROLE_JOIN,
    ROLE_SEND,
    TIMEOUT,
    Client,
    Wire,
    mint_client_token,
    raw_handshake,
)

POLICY_VIOLATION = 1008
ALL_ROLES = [ROLE_JOIN, ROLE_SEND]
PROTOBUF_RELIABLE = "protobuf.reliable.webpubsub.azure.v1"
MAX_UNACKED = 1000
DETACH_WAIT = 0.3
"""Seconds after a cut by which the service has seen the reset and detached the session."""


# --------------------------------------------------------------------------- helpers


@dataclass
class Net:
    """A direct wire (REST, senders) and a wire whose sockets go through a cutting proxy."""

    server: Server
    direct: Wire
    via: Wire
    proxy: CuttingProxy

    def cut(self) -> None:
        """Reset the proxied connections; the service may not have noticed yet."""
        assert self.proxy.cut() >= 1, "nothing was connected through the proxy"

    async def drop(self) -> None:
        """Reset the proxied connections and give the service time to notice the drop."""
        self.cut()
        await asyncio.sleep(DETACH_WAIT)


@pytest.fixture
async def net(server: Server) -> AsyncIterator[Net]:
    async with CuttingProxy(server.host, server.port) as proxy:
        proxied = dataclasses.replace(server, port=proxy.port)
        async with Wire(server) as direct, Wire(proxied) as via:
            yield Net(server, direct, via, proxy)
        await settle(proxy)


async def settle(proxy: CuttingProxy, wait: float = 2.0) -> None:
    """Let connections that were just closed leave the proxy before it cuts the rest.

    A connection half torn down by its own close is still listed by the proxy for a moment;
    cutting it then would touch a socket that is already closed.
    """
    for _ in range(int(wait / 0.01)):
        if not proxy.open_connections:
            return
        await asyncio.sleep(0.01)


def token_of(client: Client) -> str:
    assert client.connected is not None
    token = client.connected.get("reconnectionToken")
    assert isinstance(token, str) and token, client.connected
    return token


def server_msg(text: str, seq: int) -> dict[str, Any]:
    return {
        "type": "message",
        "from": "server",
        "dataType": "text",
        "data": text,
        "sequenceId": seq,
    }


def group_msg(group: str, text: str, seq: int, user: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "message", "from": "group", "group": group}
    if user is not None:
        msg["fromUserId"] = user
    msg.update({"dataType": "text", "data": text, "sequenceId": seq})
    return msg


def recovery_query(connection_id: str, token: str) -> list[tuple[str, str]]:
    return [("awps_connection_id", connection_id), ("awps_reconnection_token", token)]


async def recover(
    wire: Wire,
    hub: str,
    connection_id: str,
    token: str,
    *,
    protocols: tuple[str, ...] = (RELIABLE,),
    access_token: str | None = None,
) -> Client:
    """Open a recovery socket; nothing is read from it."""
    query: list[tuple[str, str]] = []
    if access_token is not None:
        query.append(("access_token", access_token))
    query += recovery_query(connection_id, token)
    return await wire.connect(
        hub, auth="none", protocols=protocols, query=query, read_connected=False
    )


async def resume(wire: Wire, hub: str, old: Client) -> Client:
    """Recover ``old``'s session; the new client keeps its connected message for later use."""
    client = await recover(wire, hub, old.connection_id, token_of(old))
    assert client.protocol == RELIABLE
    client.connected = old.connected
    client.ack_counter = old.ack_counter
    return client


async def assert_refused(
    wire: Wire, hub: str, connection_id: str, token: str, **kwargs: Any
) -> None:
    """The recovery is upgraded (101), then closed with 1008 before any other frame."""
    client = await recover(wire, hub, connection_id, token, **kwargs)
    code, _ = await client.expect_close()
    assert code == POLICY_VIOLATION


async def exists(wire: Wire, path: str) -> bool:
    status, _ = await wire.rest("HEAD", path)
    assert status in (200, 404), status
    return status == 200


async def wait_exists(wire: Wire, path: str, expected: bool, wait: float = TIMEOUT) -> None:
    deadline = time.monotonic() + wait
    while await exists(wire, path) is not expected:
        assert time.monotonic() < deadline, f"HEAD {path} did not become {expected} in {wait} s"
        await asyncio.sleep(0.05)


def conn_path(hub: str, connection_id: str) -> str:
    return f"/api/hubs/{hub}/connections/{urllib.parse.quote(connection_id, safe='')}"


async def ack(client: Client, seq: int) -> None:
    """Acknowledge up to ``seq`` and make sure the service has handled it."""
    await client.send_json({"type": "sequenceAck", "sequenceId": seq})
    await client.ping_pong()


async def recv_until_close(client: Client, wait: float = 30.0) -> tuple[list[Any], int | None]:
    """Every text frame up to the close; returns them and the close code."""
    frames: list[Any] = []
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the connection was not closed within {wait} s ({len(frames)} frames)"
        msg = await client.recv(left)
        if msg.type == WSMsgType.TEXT:
            frames.append(json.loads(msg.data))
            continue
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING), msg
        code = int(msg.data) if msg.type == WSMsgType.CLOSE else client.ws.close_code
        return frames, code


async def flood(sender: Client, group: str, count: int, size: int = 0) -> None:
    """Fire-and-forget ``count`` group messages, then wait until the service handled them."""
    pad = "x" * size
    for i in range(count):
        await sender.send_json(
            {"type": "sendToGroup", "group": group, "dataType": "text", "data": f"{i}{pad}"}
        )
    await sender.ping_pong()


# --------------------------------------------------------------------------- resend


async def test_sequence_ack_trims_what_is_resent(net: Net, hub: str) -> None:
    """After `sequenceAck` 3 and a drop, only 4 and 5 come again; numbering continues."""
    client = await net.via.connect(hub, protocols=(RELIABLE,))
    cid = client.connection_id
    for i in range(1, 6):
        await net.direct.send_to_connection(hub, cid, f"m{i}")
    assert await client.recv_many(5) == [server_msg(f"m{i}", i) for i in range(1, 6)]
    await ack(client, 3)
    net.cut()
    again = await resume(net.via, hub, client)
    assert await again.recv_many(2) == [server_msg("m4", 4), server_msg("m5", 5)]
    await net.direct.send_to_connection(hub, cid, "m6")
    assert await again.recv_json() == server_msg("m6", 6)
    await again.ping_pong()


async def test_ack_of_everything_resends_nothing(net: Net, hub: str) -> None:
    client = await net.via.connect(hub, protocols=(RELIABLE,))
    for i in range(1, 4):
        await net.direct.send_to_connection(hub, client.connection_id, f"m{i}")
    await client.recv_many(3)
    await ack(client, 3)
    net.cut()
    again = await resume(net.via, hub, client)
    # no connected message and no resend: the first frame is the pong
    await again.ping_pong()
    await net.direct.send_to_connection(hub, client.connection_id, "m4")
    assert await again.recv_json() == server_msg("m4", 4)


async def test_resend_in_order_exactly_once(net: Net, hub: str) -> None:
    """Unacked frames from before and during the drop arrive once each, in order, then new ones.

    The recovery URL also carries the original, now expired access token, as the SDKs send it.
    """
    expired = mint_client_token(net.server, hub, user="alice", lifetime=-60)
    client = await net.via.connect(hub, user="alice", protocols=(RELIABLE,))
    cid = client.connection_id
    for i in range(1, 4):
        await net.direct.send_to_connection(hub, cid, f"m{i}")
    assert await client.recv_many(3) == [server_msg(f"m{i}", i) for i in range(1, 4)]
    net.cut()
    for i in range(4, 7):
        await net.direct.send_to_connection(hub, cid, f"m{i}")
    again = await recover(net.via, hub, cid, token_of(client), access_token=expired)
    assert again.protocol == RELIABLE
    assert await again.recv_many(6) == [server_msg(f"m{i}", i) for i in range(1, 7)]
    await net.direct.send_to_connection(hub, cid, "m7")
    assert await again.recv_json() == server_msg("m7", 7)
    await again.ping_pong()  # nothing was sent twice


async def test_repeated_drops_keep_numbering(net: Net, hub: str) -> None:
    """Five drops in a row, acks on some rounds: each resend is exactly the unacked tail."""
    client = await net.via.connect(hub, protocols=(RELIABLE,))
    cid = client.connection_id
    token = token_of(client)
    sent = acked = 0
    for round_ in range(5):
        first = sent + 1
        for _ in range(4):
            sent += 1
            await net.direct.send_to_connection(hub, cid, f"m{sent}")
        assert await client.recv_many(sent - first + 1) == [
            server_msg(f"m{i}", i) for i in range(first, sent + 1)
        ]
        if round_ % 2 == 0:
            acked = sent - 2
            await ack(client, acked)
        net.cut()
        sent += 1
        await net.direct.send_to_connection(hub, cid, f"m{sent}")
        client = await recover(net.via, hub, cid, token)
        assert await client.recv_many(sent - acked) == [
            server_msg(f"m{i}", i) for i in range(acked + 1, sent + 1)
        ]
    await client.ping_pong()


# --------------------------------------------------------------------------- session state


async def test_identity_groups_and_permissions_survive(net: Net, hub: str) -> None:
    """Same id and user, groups and roles kept; group and user messages sent while detached."""
    client = await net.via.connect(hub, user="alice", roles=ALL_ROLES, protocols=(RELIABLE,))
    cid = client.connection_id
    assert client.connected == {
        "type": "system",
        "event": "connected",
        "userId": "alice",
        "connectionId": cid,
        "reconnectionToken": token_of(client),
    }
    await client.join("room")
    net.cut()
    # while detached the session still exists and receives
    assert await exists(net.direct, conn_path(hub, cid))
    assert await exists(net.direct, f"/api/hubs/{hub}/groups/room")
    assert await exists(net.direct, f"/api/hubs/{hub}/users/alice")
    await net.direct.send_to_group(hub, "room", "to-group")
    await net.direct.send_to_user(hub, "alice", "to-user")
    other = await net.direct.connect(hub, user="bob", roles=ALL_ROLES, groups=["room"])
    ack_ = await other.request(
        {
            "type": "sendToGroup",
            "group": "room",
            "dataType": "text",
            "data": "from-bob",
            "noEcho": True,
        }
    )
    assert ack_["success"] is True
    again = await resume(net.via, hub, client)
    assert await again.recv_many(3) == [
        group_msg("room", "to-group", 1),
        server_msg("to-user", 2),
        group_msg("room", "from-bob", 3, user="bob"),
    ]
    # user and send permission kept: its own group message comes back from "alice"
    await again.send_json(
        {"type": "sendToGroup", "group": "room", "dataType": "text", "data": "hi", "ackId": 7}
    )
    frames = [await again.recv_json(), await again.recv_json()]
    assert sorted(frames, key=lambda f: f["type"]) == [
        {"type": "ack", "ackId": 7, "success": True},
        group_msg("room", "hi", 4, user="alice"),
    ]
    assert await other.recv_json() == {
        "type": "message",
        "from": "group",
        "group": "room",
        "fromUserId": "alice",
        "dataType": "text",
        "data": "hi",
    }
    # the connection id still addresses it
    await net.direct.send_to_connection(hub, cid, "by-id")
    assert await again.recv_json() == server_msg("by-id", 5)
    # leaving works on the recovered socket
    ack_ = await again.request({"type": "leaveGroup", "group": "room"})
    assert ack_["success"] is True
    await net.direct.send_to_group(hub, "room", "after-leave")
    assert (await other.recv_json())["data"] == "after-leave"
    await again.ping_pong()


async def test_ack_id_cache_survives_recovery(net: Net, hub: str) -> None:
    """An ackId processed before the drop is a `Duplicate` after it, and is not re-executed."""
    client = await net.via.connect(hub, user="alice", roles=ALL_ROLES, protocols=(RELIABLE,))
    await client.send_json({"type": "joinGroup", "group": "room", "ackId": 1})
    assert await client.recv_json() == {"type": "ack", "ackId": 1, "success": True}
    listener = await net.direct.connect(hub, groups=["room"])
    send = {
        "type": "sendToGroup",
        "group": "room",
        "dataType": "text",
        "data": "once",
        "noEcho": True,
    }
    await client.send_json({**send, "ackId": 2})
    assert await client.recv_json() == {"type": "ack", "ackId": 2, "success": True}
    assert (await listener.recv_json())["data"] == "once"
    net.cut()
    again = await resume(net.via, hub, client)
    for ack_id in (1, 2):
        await again.send_json({**send, "ackId": ack_id})
        reply = await again.recv_json()
        assert reply["ackId"] == ack_id and reply["success"] is False, reply
        assert reply["error"]["name"] == "Duplicate", reply
        assert reply["error"]["message"] == f"Message with ack-id: {ack_id} has been processed"
    await again.send_json({**send, "data": "twice", "ackId": 3})
    assert await again.recv_json() == {"type": "ack", "ackId": 3, "success": True}
    # the duplicate was not published again: the next group message is the new one
    assert (await listener.recv_json())["data"] == "twice"


# --------------------------------------------------------------------------- refused


async def test_forged_or_foreign_token_is_refused(net: Net, hub: str) -> None:
    """Bad tokens get 1008; the genuine token still recovers afterwards."""
    client = await net.via.connect(hub, protocols=(RELIABLE,))
    other = await net.direct.connect(hub, protocols=(RELIABLE,))
    cid, token = client.connection_id, token_of(client)
    await net.direct.send_to_connection(hub, cid, "kept")
    assert await client.recv_json() == server_msg("kept", 1)
    net.cut()
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for bad in (flipped, token_of(other), "", "not-a-token", token + "x"):
        await assert_refused(net.direct, hub, cid, bad)
    # the right token for another hub's URL is not that session either
    await assert_refused(net.direct, f"{hub}other", cid, token)
    again = await resume(net.direct, hub, client)
    assert await again.recv_json() == server_msg("kept", 1)


async def test_unknown_connection_is_refused(net: Net, hub: str) -> None:
    client = await net.direct.connect(hub, protocols=(RELIABLE,))
    await assert_refused(net.direct, hub, "no-such-connection", "no-such-token")
    # a valid token does not make up for an id nobody has
    await assert_refused(net.direct, hub, client.connection_id + "x", token_of(client))
    await assert_refused(net.direct, hub, "", token_of(client))


async def test_client_close_1000_ends_the_session(net: Net, hub: str) -> None:
    client = await net.direct.connect(hub, protocols=(RELIABLE,), groups=["room"])
    cid = client.connection_id
    await client.ws.close(code=1000)
    await wait_exists(net.direct, conn_path(hub, cid), False)
    assert not await exists(net.direct, f"/api/hubs/{hub}/groups/room")
    await assert_refused(net.direct, hub, cid, token_of(client))


@pytest.mark.parametrize("code", [1001, 1011, 4000])
async def test_client_close_other_codes_keep_the_session(net: Net, hub: str, code: int) -> None:
    client = await net.direct.connect(hub, protocols=(RELIABLE,), groups=["room"])
    cid = client.connection_id
    await client.ws.close(code=code)
    await net.direct.send_to_group(hub, "room", "while-away")
    assert await exists(net.direct, conn_path(hub, cid))
    again = await resume(net.direct, hub, client)
    assert await again.recv_json() == group_msg("room", "while-away", 1)


async def test_rest_close_ends_the_session(net: Net, hub: str) -> None:
    """Closed by the REST API while attached: disconnected, close, then recovery is refused."""
    client = await net.via.connect(hub, protocols=(RELIABLE,))
    cid = client.connection_id
    status, body = await net.direct.rest("DELETE", conn_path(hub, cid), params=[("reason", "bye")])
    assert status == 204, body
    assert await client.recv_json() == {"type": "system", "event": "disconnected", "message": "bye"}
    code, _ = await client.expect_close()
    assert code != POLICY_VIOLATION
    await assert_refused(net.direct, hub, cid, token_of(client))


async def test_rest_close_of_a_detached_session(net: Net, hub: str) -> None:
    client = await net.via.connect(hub, protocols=(RELIABLE,), groups=["room"])
    cid = client.connection_id
    await net.drop()
    status, body = await net.direct.rest("DELETE", conn_path(hub, cid))
    assert status == 204, body
    assert not await exists(net.direct, conn_path(hub, cid))
    assert not await exists(net.direct, f"/api/hubs/{hub}/groups/room")
    await assert_refused(net.direct, hub, cid, token_of(client))


async def test_non_reliable_connection_is_not_kept(net: Net, hub: str) -> None:
    client = await net.via.connect(hub, protocols=(JSON,), groups=["room"])
    assert client.connected is not None and "reconnectionToken" not in client.connected
    reliable = await net.direct.connect(hub, protocols=(RELIABLE,))
    await net.drop()
    await wait_exists(net.direct, conn_path(hub, client.connection_id), False)
    assert not await exists(net.direct, f"/api/hubs/{hub}/groups/room")
    await assert_refused(net.direct, hub, client.connection_id, token_of(reliable))


# --------------------------------------------------------------------------- buffer limits


async def test_detached_overflow_makes_the_session_unrecoverable(net: Net, hub: str) -> None:
    client = await net.via.connect(hub, protocols=(RELIABLE,), groups=["room"])
    sender = await net.direct.connect(hub, roles=ALL_ROLES)
    await net.drop()
    await flood(sender, "room", MAX_UNACKED + 1)
    await wait_exists(net.direct, conn_path(hub, client.connection_id), False)
    assert not await exists(net.direct, f"/api/hubs/{hub}/groups/room")
    await assert_refused(net.direct, hub, client.connection_id, token_of(client))


async def test_detached_at_the_limit_recovers_everything(net: Net, hub: str) -> None:
    """Exactly 1000 unacked messages are still recoverable; one more, never acked, closes."""
    client = await net.via.connect(hub, protocols=(RELIABLE,), groups=["room"])
    sender = await net.direct.connect(hub, roles=ALL_ROLES)
    await net.drop()
    await flood(sender, "room", MAX_UNACKED)
    again = await resume(net.via, hub, client)
    frames = await again.recv_many(MAX_UNACKED)
    assert frames == [group_msg("room", str(i), i + 1) for i in range(MAX_UNACKED)]
    await flood(sender, "room", 1)
    rest, code = await recv_until_close(again)
    assert code == POLICY_VIOLATION
    assert rest in ([], [group_msg("room", "0", MAX_UNACKED + 1)]), rest[:3]
    await assert_refused(net.direct, hub, client.connection_id, token_of(client))


async def test_attached_client_that_never_acks_is_closed(net: Net, hub: str) -> None:
    client = await net.direct.connect(hub, protocols=(RELIABLE,), groups=["room"])
    sender = await net.direct.connect(hub, roles=ALL_ROLES)
    await flood(sender, "room", MAX_UNACKED + 50)
    frames, code = await recv_until_close(client)
    assert code == POLICY_VIOLATION
    ids = [f["sequenceId"] for f in frames]
    assert ids[:MAX_UNACKED] == list(range(1, MAX_UNACKED + 1))
    assert len(ids) <= MAX_UNACKED + 1, len(ids)
    await wait_exists(net.direct, conn_path(hub, client.connection_id), False)
    await assert_refused(net.direct, hub, client.connection_id, token_of(client))


async def test_acking_client_is_never_over_the_limit(net: Net, hub: str) -> None:
    client = await net.direct.connect(hub, protocols=(RELIABLE,), groups=["room"])
    sender = await net.direct.connect(hub, roles=ALL_ROLES)
    total = 3 * MAX_UNACKED
    for start in range(0, total, 500):
        await flood(sender, "room", 500)
        frames = await client.recv_many(500)
        assert [f["sequenceId"] for f in frames] == list(range(start + 1, start + 501))
        await ack(client, start + 500)
    assert await exists(net.direct, conn_path(hub, client.connection_id))


async def test_detached_byte_overflow_makes_the_session_unrecoverable(net: Net, hub: str) -> None:
    """17 messages of ~1 MB pass the 16 MB bound."""
    client = await net.via.connect(hub, protocols=(RELIABLE,), groups=["room"])
    sender = await net.direct.connect(hub, roles=ALL_ROLES)
    await net.drop()
    await flood(sender, "room", 17, size=1_000_000)
    await wait_exists(net.direct, conn_path(hub, client.connection_id), False)
    await assert_refused(net.direct, hub, client.connection_id, token_of(client))


async def test_large_backlog_under_the_byte_limit_is_resent(net: Net, hub: str) -> None:
    """Eight ~1 MB messages kept while detached all arrive after the recovery."""
    client = await net.via.connect(hub, protocols=(RELIABLE,), groups=["room"])
    sender = await net.direct.connect(hub, roles=ALL_ROLES)
    await net.drop()
    await flood(sender, "room", 8, size=1_000_000)
    again = await resume(net.via, hub, client)
    frames, code = [], None
    for _ in range(8):
        msg = await again.recv(10)
        if msg.type != WSMsgType.TEXT:
            code = msg.data if msg.type == WSMsgType.CLOSE else again.ws.close_code
            break
        frames.append(json.loads(msg.data))
    assert code is None, f"closed with {code} after {len(frames)} of 8 resent frames"
    assert [f["sequenceId"] for f in frames] == list(range(1, 9))
    assert [f["data"][:2] for f in frames] == [f"{i}x" for i in range(8)]


# --------------------------------------------------------------------------- sockets


async def test_recovery_while_attached_replaces_the_socket(net: Net, hub: str) -> None:
    first = await net.direct.connect(hub, protocols=(RELIABLE,), groups=["room"])
    cid = first.connection_id
    await net.direct.send_to_connection(hub, cid, "m1")
    assert await first.recv_json() == server_msg("m1", 1)
    second = await resume(net.direct, hub, first)
    assert await second.recv_json() == server_msg("m1", 1)
    # the old socket is closed by the service; that does not end the session
    frames, _ = await recv_until_close(first, TIMEOUT)
    assert frames == []
    await net.direct.send_to_group(hub, "room", "m2")
    assert await second.recv_json() == group_msg("room", "m2", 2)
    assert await exists(net.direct, conn_path(hub, cid))
    # and a third socket replaces the second in turn
    await ack(second, 2)
    third = await resume(net.direct, hub, first)
    await third.ping_pong()
    await recv_until_close(second, TIMEOUT)
    await net.direct.send_to_connection(hub, cid, "m3")
    assert await third.recv_json() == server_msg("m3", 3)


async def test_recovery_gets_the_session_subprotocol(net: Net, hub: str) -> None:
    """Whatever the recovery offers, the session keeps speaking `json.reliable.webpubsub.azure.v1`.

    When the offer includes it, the handshake selects it. When it does not, the handshake may
    not name a subprotocol the client did not offer (RFC 6455 4.2.2), so either no header or the
    session's comes back; the frames are the session's JSON reliable frames in any case.
    """
    client = await net.via.connect(hub, protocols=(RELIABLE,))
    cid, token = client.connection_id, token_of(client)
    await net.direct.send_to_connection(hub, cid, "m1")
    net.cut()
    target = f"/client/hubs/{hub}?" + urllib.parse.urlencode(recovery_query(cid, token))
    for offer in ([JSON, RELIABLE], [RELIABLE, JSON], [JSON], [PROTOBUF_RELIABLE], None):
        result = await raw_handshake(net.server, target, protocols=offer)
        assert result.status == 101, (offer, result.status, result.body)
        selected = result.headers.get("Sec-WebSocket-Protocol")
        if offer is not None and RELIABLE in offer:
            assert selected == RELIABLE, (offer, result.headers)
        else:
            assert selected in (None, RELIABLE), (offer, result.headers)
    # each handshake above dropped its socket at once: the session is still there
    seq = 1
    for offer_ in ((JSON,), (PROTOBUF_RELIABLE,), (JSON, RELIABLE)):
        again = await recover(net.via, hub, cid, token, protocols=offer_)
        assert again.protocol in (None, RELIABLE)
        assert await again.recv_json() == server_msg("m1", 1)
        for i in range(2, seq + 1):
            assert await again.recv_json() == server_msg(f"m{i}", i)
        seq += 1
        await net.direct.send_to_connection(hub, cid, f"m{seq}")
        assert await again.recv_json() == server_msg(f"m{seq}", seq)
        net.cut()


@pytest.mark.parametrize("form", ["upper-case hub", "hub in query"])
async def test_recovery_on_another_form_of_the_same_hub_url(net: Net, hub: str, form: str) -> None:
    """Hub names are case-insensitive and may come as `/client/?hub=` (§1.1); the SDKs recover
    on whatever URL the client first used."""
    client = await net.via.connect(hub, protocols=(RELIABLE,))
    await net.direct.send_to_connection(hub, client.connection_id, "m1")
    await net.drop()
    query = recovery_query(client.connection_id, token_of(client))
    if form == "hub in query":
        again = await net.via.connect(
            hub,
            auth="none",
            path="/client/",
            query=[("hub", hub), *query],
            protocols=(RELIABLE,),
            read_connected=False,
        )
    else:
        again = await recover(net.via, hub.upper(), client.connection_id, token_of(client))
    assert await again.recv_json() == server_msg("m1", 1)


# --------------------------------------------------------------------------- retention


@dataclass
class Events:
    """System events a small upstream app received, as (ce-type, ce-connectionId)."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    def of(self, connection_id: str) -> list[str]:
        return [kind for kind, cid in self.seen if cid == connection_id]

    async def wait_for(self, connection_id: str, kinds: list[str], wait: float = TIMEOUT) -> None:
        deadline = time.monotonic() + wait
        while self.of(connection_id) != kinds:
            assert time.monotonic() < deadline, f"events {self.of(connection_id)} != {kinds}"
            await asyncio.sleep(0.02)


@dataclass(frozen=True)
class ShortServer:
    server: Server
    upstream_port: int


EVENTS_HUB = "reliableevents"


@pytest.fixture(scope="module")
def short_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShortServer]:
    """A node that keeps sessions for 1 s; hub `reliableevents` reports system events."""
    upstream_port = free_port()
    config = (
        CONFIG_TOML
        + "\n[server]\nsession_timeout_seconds = 1\n"
        + f"\n[[hubs.{EVENTS_HUB}.event_handlers]]\n"
        + f'url_template = "http://127.0.0.1:{upstream_port}/upstream/{{event}}"\n'
        + 'system_events = ["connect", "connected", "disconnected"]\n'
    )
    tmp: Path = tmp_path_factory.mktemp("reliable")
    srv = start_server(tmp, config_toml=config)
    yield ShortServer(srv, upstream_port)
    stop_server(srv)


@pytest.fixture
async def short_net(short_server: ShortServer) -> AsyncIterator[Net]:
    server = short_server.server
    async with CuttingProxy(server.host, server.port) as proxy:
        proxied = dataclasses.replace(server, port=proxy.port)
        async with Wire(server) as direct, Wire(proxied) as via:
            yield Net(server, direct, via, proxy)
        await settle(proxy)


@pytest.fixture
async def upstream(short_server: ShortServer) -> AsyncIterator[Events]:
    events = Events()

    async def handle(request: web.Request) -> web.Response:
        if request.method == "OPTIONS":
            return web.Response(headers={"WebHook-Allowed-Origin": "*"})
        events.seen.append(
            (request.headers.get("ce-type", ""), request.headers.get("ce-connectionId", ""))
        )
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/upstream/{event}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", short_server.upstream_port)
    await site.start()
    try:
        yield events
    finally:
        await runner.cleanup()


async def test_session_expires_after_the_timeout(short_net: Net, hub: str) -> None:
    """Kept (and still a group member) during the 1 s window; gone after it."""
    net = short_net
    client = await net.via.connect(hub, protocols=(RELIABLE,), groups=["room"])
    cid = client.connection_id
    net.cut()
    await asyncio.sleep(0.4)
    assert await exists(net.direct, conn_path(hub, cid))
    assert await exists(net.direct, f"/api/hubs/{hub}/groups/room")
    await net.direct.send_to_group(hub, "room", "kept")
    again = await resume(net.via, hub, client)
    assert await again.recv_json() == group_msg("room", "kept", 1)
    net.cut()
    await asyncio.sleep(1.5)
    assert not await exists(net.direct, conn_path(hub, cid))
    assert not await exists(net.direct, f"/api/hubs/{hub}/groups/room")
    await assert_refused(net.direct, hub, cid, token_of(client))


async def test_recovery_fires_no_events_and_expiry_fires_disconnected(
    short_net: Net, upstream: Events
) -> None:
    """connect/connected once; nothing on recovery; one disconnected when the session ends."""
    net = short_net
    client = await net.via.connect(EVENTS_HUB, user="alice", protocols=(RELIABLE,))
    cid = client.connection_id
    connected = ["azure.webpubsub.sys.connect", "azure.webpubsub.sys.connected"]
    await upstream.wait_for(cid, connected)
    for _ in range(3):
        net.cut()
        again = await resume(net.via, EVENTS_HUB, client)
        await again.ping_pong()
    await asyncio.sleep(0.5)
    assert upstream.of(cid) == connected
    net.cut()
    cut_at = time.monotonic()
    await upstream.wait_for(cid, [*connected, "azure.webpubsub.sys.disconnected"])
    assert time.monotonic() - cut_at >= 0.8, "disconnected fired before the retention window"
    await asyncio.sleep(0.3)
    assert upstream.of(cid) == [*connected, "azure.webpubsub.sys.disconnected"]
    await assert_refused(net.direct, EVENTS_HUB, cid, token_of(client))


async def test_expired_session_left_its_user(short_net: Net, hub: str) -> None:
    net = short_net
    client = await net.via.connect(hub, user="carol", protocols=(RELIABLE,))
    net.cut()
    assert await exists(net.direct, f"/api/hubs/{hub}/users/carol")
    await wait_exists(net.direct, f"/api/hubs/{hub}/users/carol", False, wait=3)
    await assert_refused(net.direct, hub, client.connection_id, token_of(client))


async def open_connections(wire: Wire) -> float:
    async with wire.http.get(f"{wire.server.endpoint}/metrics") as resp:
        for line in (await resp.text()).splitlines():
            if line.startswith("hubbub_connections "):
                return float(line.split()[1])
    raise AssertionError("hubbub_connections is not in /metrics")


async def test_every_way_a_session_ends_fires_one_disconnected(
    short_net: Net, upstream: Events
) -> None:
    """REST close (attached or detached), close 1000, overflow (attached or detached), expiry:
    each ends the session once: one `disconnected` event, the open-connection gauge back."""
    net, hub = short_net, EVENTS_HUB
    before = await open_connections(net.direct)
    sender = await net.direct.connect(hub, roles=ALL_ROLES)
    ended: list[str] = []

    async def reliable(via: bool = False, group: str | None = None) -> Client:
        wire = net.via if via else net.direct
        client = await wire.connect(hub, protocols=(RELIABLE,), groups=[group] if group else None)
        ended.append(client.connection_id)
        return client

    # REST close while attached, and while detached
    attached = await reliable()
    status, _ = await net.direct.rest("DELETE", conn_path(hub, attached.connection_id))
    assert status == 204
    await recv_until_close(attached, TIMEOUT)
    detached = await reliable(via=True)
    await net.drop()
    status, _ = await net.direct.rest("DELETE", conn_path(hub, detached.connection_id))
    assert status == 204
    # the client closes with 1000, first right away and then after a recovery
    closing = await reliable()
    await closing.ws.close(code=1000)
    recovered = await reliable(via=True)
    net.cut()
    again = await resume(net.via, hub, recovered)
    await again.ping_pong()
    await again.ws.close(code=1000)
    # overflow while attached, and while detached
    flooded = await reliable(group="flood1")
    await flood(sender, "flood1", MAX_UNACKED + 1)
    _, code = await recv_until_close(flooded)
    assert code == POLICY_VIOLATION
    await reliable(via=True, group="flood2")
    await net.drop()
    await flood(sender, "flood2", MAX_UNACKED + 1)
    # expiry of the 1 s retention
    await reliable(via=True)
    net.cut()
    await sender.ws.close()

    ends = ["azure.webpubsub.sys.connect", "azure.webpubsub.sys.connected"]
    ends.append("azure.webpubsub.sys.disconnected")
    for cid in ended:
        await upstream.wait_for(cid, ends)
    await asyncio.sleep(1.5)
    assert {cid: upstream.of(cid) for cid in ended} == {cid: ends for cid in ended}
    for cid in ended:
        assert not await exists(net.direct, conn_path(hub, cid))
    deadline = time.monotonic() + TIMEOUT
    while (now := await open_connections(net.direct)) != before:
        assert time.monotonic() < deadline, f"hubbub_connections {now}, was {before}"
        await asyncio.sleep(0.05)
