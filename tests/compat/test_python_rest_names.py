"""azure-messaging-webpubsubservice reaches users and groups whatever their names hold.

The SDK percent-encodes a name into the path (``a?b`` as ``a%3Fb``, a literal ``%2F`` as
``%252F``) and signs the URL it sends; hubbub must read the path the way it was sent, both to
check the token's audience and to find the name.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.compat._clients import Clients, ServerLike, members, rest_token, wait_until
from tests.conftest import Server

pytestmark = [pytest.mark.compat, pytest.mark.timeout(30)]


@pytest.fixture
def server(server_either_lane: Server) -> Server:
    """Every test twice: with the REST fast lane, and with aiohttp answering every request."""
    return server_either_lane


TEXT_PLAIN = "text/plain"

NAMES = [
    "a?b",
    "a#b",
    "a%2Fb",
    "a%252Fb",
    "100%",
    "%",
    "a%zz",
    "a b",
    " leading and trailing ",
    "zoë",
    "日本語",
    "emoji 😀",
    "a/b",
    "a/b/c",
    "a+b",
    "a&b=c;d",
    "o'brien",
    'say "hi"',
    "a.b~c_d-e",  # nothing to escape: a plain send takes the fast lane
]


@pytest.fixture
def clients(server: ServerLike, hub: str) -> Iterator[Clients]:
    factory = Clients(server, hub)
    yield factory
    factory.close_all()


@pytest.mark.parametrize("name", NAMES)
def test_every_route_with_an_odd_name(clients: Clients, name: str) -> None:
    svc: WebPubSubServiceClient = clients.svc
    client = clients.json(user_id=name, groups=[name])
    cid = client.connection_id

    assert svc.user_exists(name)
    assert svc.group_exists(name)
    assert members(svc, name) == {cid}
    svc.send_to_user(name, "to-user", content_type=TEXT_PLAIN)
    svc.send_to_group(name, "to-group", content_type=TEXT_PLAIN)
    svc.send_to_all("to-filtered", content_type=TEXT_PLAIN, filter=f"userId eq '{_odata(name)}'")

    other = f"{name}-2"
    svc.add_user_to_group(other, name)
    assert members(svc, other) == {cid}
    svc.remove_user_from_group(other, name)
    assert not svc.group_exists(other)
    svc.add_connection_to_group(other, cid)
    assert svc.group_exists(other)
    svc.remove_connection_from_group(other, cid)
    assert not svc.group_exists(other)

    svc.grant_permission("joinLeaveGroup", cid, target_name=name)
    assert svc.has_permission("joinLeaveGroup", cid, target_name=name)
    svc.revoke_permission("joinLeaveGroup", cid, target_name=name)
    assert not svc.has_permission("joinLeaveGroup", cid, target_name=name)

    svc.send_to_all("marker", content_type=TEXT_PLAIN)
    assert client.data_until("marker") == ["to-user", "to-group", "to-filtered", "marker"]

    svc.close_user_connections(name, reason="bye")
    wait_until(lambda: not svc.user_exists(name), f"user {name!r} closed")


def test_names_that_differ_only_in_escaping_stay_apart(clients: Clients) -> None:
    """``a/b``, ``a%2Fb`` and ``a%252Fb`` are three users, each reached by its own name."""
    svc = clients.svc
    users = ["a/b", "a%2Fb", "a%252Fb", "a?b", "a"]
    sockets = {user: clients.json(user_id=user) for user in users}
    for user in users:
        svc.send_to_user(user, f"to {user}", content_type=TEXT_PLAIN)
    svc.send_to_all("marker", content_type=TEXT_PLAIN)
    for user, client in sockets.items():
        assert client.data_until("marker") == [f"to {user}", "marker"]


@pytest.mark.parametrize("name", ["a?b", "a#b", "a%252Fb", "a/b", "zoë", "100%"])
def test_listing_an_odd_group_page_by_page(clients: Clients, name: str) -> None:
    """The SDK follows each nextLink, signing it as it sends it."""
    members_ = {clients.json(groups=[name]).connection_id for _ in range(3)}
    pager = clients.svc.list_connections(group=name, maxpagesize=1)
    pages = [[m.connection_id for m in page] for page in pager.by_page()]
    assert sorted(len(page) for page in pages) == [1, 1, 1]
    assert {cid for page in pages for cid in page} == members_


def test_a_request_in_absolute_form(clients: Clients) -> None:
    """``POST http://host/api/...`` (as a proxy may send it) finds the same route and name."""
    server = clients.server
    client = clients.json(user_id="a?b")
    url = server.endpoint + f"/api/hubs/{clients.hub}/users/a%3Fb/:send?api-version=2024-12-01"
    token = rest_token(url, server.access_key)
    host, port = server.endpoint.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            f"POST {url} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabs".encode()
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 202"), answer
    clients.svc.send_to_all("marker", content_type=TEXT_PLAIN)
    assert client.data_until("marker") == ["abs", "marker"]


def _odata(text: str) -> str:
    return text.replace("'", "''")
