"""Message time-to-live: REST ``messageTtlSeconds`` and a client's ``ttlSeconds``.

A message not consumed within its TTL is dropped (REST spec: "messages that are not consumed by
the client within the specified TTL will be dropped by the service"). hubbub fixes the deadline
when it accepts the message; a copy still waiting at the deadline, here in a detached reliable
session's buffer, is never delivered late (core/expiry.py). Its ``sequenceId`` is not
reused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.parse
from collections.abc import AsyncIterator

import pytest
from _proxy import CuttingProxy
from _wire import ROLE_JOIN, ROLE_SEND, Client, Wire
from test_reliable import RELIABLE, Net, group_msg, resume, server_msg, settle

from tests.conftest import Server

WIRING = pytest.mark.xfail(strict=True, reason="node-side wiring pending")


@pytest.fixture
async def net(server: Server) -> AsyncIterator[Net]:
    """As in test_reliable: a direct wire and one through a proxy that can cut it."""
    async with CuttingProxy(server.host, server.port) as proxy:
        proxied = dataclasses.replace(server, port=proxy.port)
        async with Wire(server) as direct, Wire(proxied) as via:
            yield Net(server, direct, via, proxy)
        await settle(proxy)


async def _send_with_ttl(net: Net, hub: str, connection_id: str, text: str, ttl: int) -> None:
    path = f"/api/hubs/{hub}/connections/{urllib.parse.quote(connection_id, safe='')}/:send"
    status, body = await net.direct.rest(
        "POST",
        path,
        params=[("messageTtlSeconds", str(ttl))],
        body=text,
        content_type="text/plain",
    )
    assert status == 202, body


async def _detached(net: Net, hub: str) -> Client:
    client = await net.via.connect(hub, protocols=(RELIABLE,), roles=[ROLE_JOIN, ROLE_SEND])
    await net.drop()
    return client


@WIRING
async def test_a_rest_message_past_its_ttl_is_not_resent(net: Net, hub: str) -> None:
    client = await _detached(net, hub)
    await _send_with_ttl(net, hub, client.connection_id, "short-lived", 1)
    await net.direct.send_to_connection(hub, client.connection_id, "kept")
    await asyncio.sleep(1.3)
    again = await resume(net.via, hub, client)
    assert await again.recv_json() == server_msg("kept", 2)
    await again.ping_pong()


async def test_a_rest_message_within_its_ttl_is_resent(net: Net, hub: str) -> None:
    client = await _detached(net, hub)
    await _send_with_ttl(net, hub, client.connection_id, "in time", 30)
    again = await resume(net.via, hub, client)
    assert await again.recv_json() == server_msg("in time", 1)
    await again.ping_pong()


@WIRING
async def test_a_client_message_past_its_ttl_is_not_resent(net: Net, hub: str) -> None:
    reader = await net.via.connect(hub, protocols=(RELIABLE,), roles=[ROLE_JOIN])
    await reader.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
    assert (await reader.recv_json())["success"] is True
    await net.drop()
    writer = await net.direct.connect(hub, roles=[ROLE_SEND])
    for text, ttl in (("short-lived", 1), ("kept", 0)):
        await writer.send_json(
            {
                "type": "sendToGroup",
                "group": "g",
                "dataType": "text",
                "data": text,
                "ttlSeconds": ttl,
            }
        )
    await writer.ping_pong()
    await asyncio.sleep(1.3)
    again = await resume(net.via, hub, reader)
    assert await again.recv_json() == group_msg("g", "kept", 2)
    await again.ping_pong()


async def test_a_client_ttl_over_300_seconds_is_a_bad_request(net: Net, hub: str) -> None:
    writer = await net.direct.connect(hub, roles=[ROLE_SEND])
    await writer.send_json(
        {
            "type": "sendToGroup",
            "group": "g",
            "dataType": "text",
            "data": "x",
            "ttlSeconds": 301,
            "ackId": 5,
        }
    )
    ack = await writer.recv_json()
    assert (ack["type"], ack["ackId"], ack["success"], ack["error"]["name"]) == (
        "ack",
        5,
        False,
        "BadRequest",
    )
