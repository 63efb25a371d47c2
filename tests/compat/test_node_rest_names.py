"""@azure/web-pubsub reaches users and groups whatever their names hold.

The JavaScript SDK encodes a name with ``encodeURIComponent`` and signs the URL it sends, the
same form as the Python SDK (test_python_rest_names.py). Calls go through
``tests/node/rest_calls.mjs``; the clients are plain WebSockets opened from Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.compat._clients import Clients, ServerLike
from tests.compat._node import node_calls
from tests.conftest import Server

pytestmark = [pytest.mark.node, pytest.mark.timeout(60)]


@pytest.fixture
def server(server_either_lane: Server) -> Server:
    """Every test twice: with the REST fast lane, and with aiohttp answering every request."""
    return server_either_lane


NAMES = [
    "a?b",
    "a#b",
    "a%2Fb",
    "a%252Fb",
    "100%",
    "a%zz",
    "a b",
    "zoë",
    "日本語",
    "a/b",
    "a+b",
    "a&b=c;d",
    "o'brien",
    "a.b~c_d-e",
]


def ok(value: Any = None) -> dict[str, Any]:
    return {"ok": True, "value": value}


@pytest.fixture
def clients(server: ServerLike, hub: str) -> Iterator[Clients]:
    factory = Clients(server, hub)
    yield factory
    factory.close_all()


def test_every_route_with_odd_names(server: ServerLike, hub: str, clients: Clients) -> None:
    sockets = {name: clients.json(user_id=name, groups=[name]) for name in NAMES}
    calls: list[list[Any]] = []
    expected: list[dict[str, Any]] = []
    for name, client in sockets.items():
        cid, other = client.connection_id, f"{name}-2"
        calls += [
            ["userExists", name],
            ["groupExists", name],
            ["listConnections", name],
            ["sendToUser", name, "to-user"],
            ["sendToGroup", name, "to-group"],
            ["sendToAll", "to-filtered", {"filter": "userId eq '" + name.replace("'", "''") + "'"}],
            ["addUserToGroup", other, name],
            ["listConnections", other],
            ["removeUserFromGroup", other, name],
            ["groupExists", other],
            ["grantPermission", cid, "joinLeaveGroup", name],
            ["hasPermission", cid, "joinLeaveGroup", name],
        ]
        expected += [
            ok(True),
            ok(True),
            ok([cid]),
            ok(),
            ok(),
            ok(),
            ok(),
            ok([cid]),
            ok(),
            ok(False),
            ok(),
            ok(True),
        ]
    calls.append(["sendToAll", "marker"])
    expected.append(ok())

    outcomes = node_calls(server, hub, calls)
    assert [{k: o.get(k) for k in ("ok", "value", "status")} for o in outcomes] == [
        {**e, "status": None} for e in expected
    ], list(zip(calls, outcomes, strict=True))
    for client in sockets.values():
        assert client.data_until("marker") == ["to-user", "to-group", "to-filtered", "marker"]
