"""Long request URLs from the official SDKs: served up to the limits, refused with 414/431 beyond.

The SDKs sign the whole URL into the token's ``aud``, so a URL of N bytes makes an
``Authorization`` header of about 4N/3: ``send_to_all`` with 1,000 ``excluded`` ids sends a
32 kB URL and a 43 kB header (hubbub/server/limits.py has the measurements). Too large is
answered with the service's error body, and the node logs no traceback and no token.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _clients import Clients, wait_until
from _node import node_calls
from azure.core.exceptions import HttpResponseError

from hubbub.server.limits import MAX_HEADER_BYTES, MAX_HEADERS, MAX_URL_BYTES
from tests.conftest import Server, start_server, stop_server

pytestmark = [pytest.mark.compat, pytest.mark.timeout(60)]

TEXT = "text/plain"


@dataclass(frozen=True)
class Node:
    server: Server
    log: Path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("rest-limits")
    server = start_server(tmp, ["--log-level", "debug"])
    yield Node(server, tmp / "server.log")
    stop_server(server)


@pytest.fixture(scope="module", autouse=True)
def log_stays_clean(node: Node) -> Iterator[None]:
    yield
    text = node.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]
    assert " ERROR " not in text, text[-4000:]
    assert "eyJ" not in text, "a token reached the log"  # every JWT starts so


@pytest.fixture
def clients(node: Node, hub: str) -> Iterator[Clients]:
    factory = Clients(node.server, hub)
    yield factory
    factory.close_all()


def ids(count: int, nbytes: int = 16) -> list[str]:
    """Connection ids like hubbub's (16 random bytes: 22 characters) or longer."""
    return [secrets.token_urlsafe(nbytes) for _ in range(count)]


def refused(call: Any, *args: Any, **kwargs: Any) -> tuple[int, dict[str, Any], str]:
    with pytest.raises(HttpResponseError) as info:
        call(*args, **kwargs)
    response = info.value.response
    assert response is not None
    body = response.json()
    assert response.headers["x-ms-error-code"] == body["code"], body
    return int(response.status_code), body, response.headers["Content-Type"]


@pytest.mark.parametrize("nbytes", [16, 32], ids=["22-char-ids", "43-char-ids"])
def test_python_sdk_sends_with_1000_excluded_ids(clients: Clients, nbytes: int) -> None:
    svc = clients.svc
    left_out, reached = clients.json(), clients.json()
    excluded = [*ids(999, nbytes), left_out.connection_id]
    svc.send_to_all("not for you", content_type=TEXT, excluded=excluded)
    svc.send_to_all("marker", content_type=TEXT)
    assert left_out.data_until("marker") == ["marker"]
    assert reached.data_until("marker") == ["not for you", "marker"]

    svc.close_all_connections(excluded=excluded, reason="all but one")
    wait_until(lambda: not svc.connection_exists(reached.connection_id), "closed")
    assert svc.connection_exists(left_out.connection_id)


def test_python_sdk_sends_with_a_long_filter(clients: Clients) -> None:
    svc = clients.svc
    alice, bob = clients.json(user_id="alice"), clients.json(user_id="bob")
    decoys = " or ".join(f"userId eq '{'x' * 200}{i}'" for i in range(90))
    svc.send_to_all("alice only", content_type=TEXT, filter=f"userId eq 'alice' or {decoys}")
    svc.send_to_all("marker", content_type=TEXT)
    assert alice.data_until("marker") == ["alice only", "marker"]
    assert bob.data_until("marker") == ["marker"]


def test_python_sdk_gets_414_for_a_url_too_long(clients: Clients) -> None:
    svc = clients.svc
    watcher = clients.json()
    status, body, content_type = refused(
        svc.send_to_all, "x", content_type=TEXT, excluded=ids(MAX_URL_BYTES // 30)
    )
    assert (status, body["code"]) == (414, "RequestUriTooLong")
    assert content_type.startswith("application/json")
    svc.send_to_all("marker", content_type=TEXT)
    assert watcher.data_until("marker") == ["marker"]


def test_python_sdk_gets_431_for_a_header_too_long(clients: Clients) -> None:
    svc = clients.svc
    status, body, _ = refused(
        svc.send_to_all, "x", content_type=TEXT, headers={"x-big": "a" * (MAX_HEADER_BYTES + 1)}
    )
    assert (status, body["code"]) == (431, "RequestHeaderFieldsTooLarge")


def test_too_many_headers_get_431(node: Node) -> None:
    server = node.server
    lines = [f"X-Header-{i}: {i}" for i in range(MAX_HEADERS + 1)]
    request = "\r\n".join(
        [
            "POST /api/hubs/h/:send?api-version=2024-12-01 HTTP/1.1",
            f"Host: {server.host}",
            "Connection: close",
            *lines,
        ]
    )
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(request.encode() + b"\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"431", answer
    assert b"x-ms-error-code: RequestHeaderFieldsTooLarge" in head
    assert body.startswith(b'{"code":"RequestHeaderFieldsTooLarge"')


def test_js_sdk_sends_with_1000_excluded_ids(node: Node, hub: str, clients: Clients) -> None:
    left_out, reached = clients.json(), clients.json()
    excluded = [*ids(999), left_out.connection_id]
    outcomes = node_calls(
        node.server,
        hub,
        [
            ["sendToAll", "not for you", {"excludedConnections": excluded}],
            ["sendToAll", "marker"],
            ["sendToAll", "x", {"excludedConnections": ids(MAX_URL_BYTES // 30)}],
            ["closeAllConnections", {"excluded": excluded}],
        ],
    )
    assert [(o["ok"], o.get("status"), o.get("code")) for o in outcomes] == [
        (True, None, None),
        (True, None, None),
        (False, 414, "RequestUriTooLong"),
        (True, None, None),
    ], outcomes
    assert left_out.data_until("marker") == ["marker"]
    assert reached.data_until("marker") == ["not for you", "marker"]
    wait_until(lambda: not clients.svc.connection_exists(reached.connection_id), "closed")
    assert clients.svc.connection_exists(left_out.connection_id)


def test_a_head_the_fast_lane_passes_on_is_served(node: Node, hub: str) -> None:
    """Heads above the lane's 16 KiB are aiohttp's; it serves them within the limits."""
    svc = Clients(node.server, hub).svc
    try:
        svc.send_to_user("u" * 12_000, "x", content_type=TEXT)  # a 16 kB token for a 12 kB URL
    finally:
        svc.close()
