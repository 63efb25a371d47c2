"""Network access control on a running node: ``[network]`` rules per kind of traffic, the
forwarded address believed only from trusted proxies, and REST on a listener of its own.

Every test client connects from 127.0.0.1, so the rules here either name 127.0.0.1 or judge the
address a trusted proxy (127.0.0.1 too) forwards. A denied REST call is 403 with the service's
error body, on the fast lane's path (a plain ``:send``) and aiohttp's alike; a denied WebSocket
upgrade is 403 before the upgrade.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import HttpResponseError
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient

from tests.compat._clients import rest_token
from tests.conftest import CONFIG_TOML, Server, free_port, start_server, stop_server
from tests.integration._wire import mint_client_token

RULES = """
[network]
default_action = "deny"
{proxies}

[[network.rules]]
action = "allow"
addresses = ["10.0.0.0/8"]
kinds = ["rest"]

[[network.rules]]
action = "deny"
addresses = ["203.0.113.66"]

[[network.rules]]
action = "allow"
addresses = ["127.0.0.1", "203.0.113.0/24"]
kinds = ["client"]
"""


def rules_config(trusted: bool) -> str:
    proxies = 'trusted_proxies = ["127.0.0.0/8"]' if trusted else ""
    return CONFIG_TOML + RULES.format(proxies=proxies)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Rules for REST from 10/8 and clients from 127.0.0.1 and 203.0.113/24; behind a proxy."""
    srv = start_server(tmp_path_factory.mktemp("acl-proxied"), config_toml=rules_config(True))
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same rules, no trusted proxy: forwarding headers are ignored."""
    srv = start_server(tmp_path_factory.mktemp("acl-direct"), config_toml=rules_config(False))
    yield srv
    stop_server(srv)


async def call(
    http: aiohttp.ClientSession,
    server: Server,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    query: str = "api-version=2024-12-01",
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    """A REST call with a valid access-key token; the status, JSON body (or {}) and headers."""
    url = f"{server.endpoint}{path}?{query}"
    sent = {
        "Authorization": f"Bearer {rest_token(url, server.access_key)}",
        "Content-Type": "text/plain",
        **(headers or {}),
    }
    async with http.request(method, url, headers=sent, data=b"hi") as resp:
        body = await resp.read()
        return resp.status, json.loads(body) if body else {}, resp.headers


SEND = "/api/hubs/chat/:send"  # plain: the fast lane answers it
NOT_PLAIN = ("/api/hubs/chat/:send", "api-version=2024-12-01&filter=userId%20eq%20'a'")


async def assert_refused(http: aiohttp.ClientSession, server: Server, **headers: str) -> None:
    """403 with the service's error body, on the lane's path and aiohttp's."""
    for path, query in ((SEND, "api-version=2024-12-01"), NOT_PLAIN):
        status, body, answered = await call(http, server, "POST", path, headers, query)
        assert status == 403, (path, body)
        assert body == {
            "code": "Forbidden",
            "message": "the network rules do not allow this address",
        }
        assert answered["x-ms-error-code"] == "Forbidden"
        # Judged before the token check: no api-supported-versions (unlike the Entra 403).
        assert "api-supported-versions" not in answered


async def assert_allowed(http: aiohttp.ClientSession, server: Server, **headers: str) -> None:
    for path, query in ((SEND, "api-version=2024-12-01"), NOT_PLAIN):
        status, body, _ = await call(http, server, "POST", path, headers, query)
        assert status == 202, (path, body)


async def test_rest_is_refused_403_from_an_address_the_rules_deny(
    proxied: Server, http: aiohttp.ClientSession
) -> None:
    """127.0.0.1 may connect clients, not call REST: the SDK gets 403 and the body."""
    await assert_refused(http, proxied)
    async with WebPubSubServiceClient.from_connection_string(
        proxied.connection_string, "chat", retry_total=0
    ) as svc:
        with pytest.raises(HttpResponseError) as caught:
            await svc.send_to_all("hi", content_type="text/plain")
        with pytest.raises(HttpResponseError) as exists:
            await svc.group_exists("room")
    assert caught.value.status_code == 403 and exists.value.status_code == 403
    async with http.head(f"{proxied.endpoint}/api/health") as resp:
        assert resp.status == 200  # health tells nothing: answered from anywhere


async def test_a_trusted_proxy_forwards_the_address(
    proxied: Server, http: aiohttp.ClientSession
) -> None:
    """X-Forwarded-For and Forwarded from the trusted proxy decide; the nearest untrusted hop
    is the client, so what a client writes in front of the proxy's entry does not count."""
    await assert_allowed(http, proxied, **{"X-Forwarded-For": "10.1.2.3"})
    await assert_allowed(http, proxied, Forwarded='for="10.9.8.7:4711";proto=https')
    await assert_allowed(http, proxied, **{"X-Forwarded-For": "198.51.100.1, 10.1.2.3"})
    await assert_refused(http, proxied, **{"X-Forwarded-For": "10.1.2.3, 198.51.100.1"})
    await assert_refused(http, proxied, Forwarded="for=198.51.100.1")


async def test_forwarding_headers_are_ignored_without_a_trusted_proxy(
    direct: Server, http: aiohttp.ClientSession
) -> None:
    await assert_refused(http, direct, **{"X-Forwarded-For": "10.1.2.3"})
    await assert_refused(http, direct, Forwarded="for=10.1.2.3")


async def upgrade(server: Server, **headers: str) -> int:
    """The status of a client's handshake (101 when it connected)."""
    url = f"{server.ws_endpoint}/client/hubs/chat?access_token={mint_client_token(server, 'chat')}"
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(
                url, protocols=["json.webpubsub.azure.v1"], headers=headers
            ) as ws:
                hello = json.loads((await ws.receive(timeout=5)).data)
                assert hello["event"] == "connected"
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def test_client_connections_by_address(proxied: Server) -> None:
    """Clients from 127.0.0.1 and 203.0.113/24 connect; others, and the one address a deny rule
    names before the allow, get 403 before the upgrade."""
    assert await upgrade(proxied) == 101
    assert await upgrade(proxied, **{"X-Forwarded-For": "203.0.113.5"}) == 101
    assert await upgrade(proxied, **{"X-Forwarded-For": "203.0.113.66"}) == 403
    assert await upgrade(proxied, **{"X-Forwarded-For": "198.51.100.9"}) == 403
    assert await upgrade(proxied, **{"X-Forwarded-For": "10.1.2.3"}) == 403  # REST only


async def test_denials_are_counted(proxied: Server, http: aiohttp.ClientSession) -> None:
    """hubbub_network_denials_total counts each refused request once (the lane hands a refused
    send to aiohttp, which answers and counts it); metrics follow the REST rules."""

    async def denials() -> float:
        headers = {"X-Forwarded-For": "10.0.0.1"}
        async with http.get(f"{proxied.endpoint}/metrics", headers=headers) as resp:
            assert resp.status == 200
            text = await resp.text()
        (line,) = [x for x in text.splitlines() if x.startswith("hubbub_network_denials_total")]
        return float(line.split()[1])

    async with http.get(f"{proxied.endpoint}/metrics") as resp:
        assert resp.status == 403
    before = await denials()
    await call(http, proxied, "POST", SEND)
    assert await upgrade(proxied, **{"X-Forwarded-For": "198.51.100.9"}) == 403
    assert await denials() == before + 2


@pytest.fixture
def split(tmp_path: Path) -> Iterator[tuple[Server, int]]:
    """REST and metrics on a port of their own; the main port serves client connections."""
    rest_port = free_port()
    config = CONFIG_TOML + f'\n[network]\nrest_host = "127.0.0.1"\nrest_port = {rest_port}\n'
    srv = start_server(tmp_path, config_toml=config)
    yield srv, rest_port
    stop_server(srv)


async def test_rest_on_a_listener_of_its_own(
    split: tuple[Server, int], http: aiohttp.ClientSession
) -> None:
    """The SDK reaches REST through reverse_proxy_endpoint (the internal listener) while the
    client URLs it mints name the public one; each port answers 404 for the other's traffic."""
    server, rest_port = split
    internal = f"http://127.0.0.1:{rest_port}"
    async with WebPubSubServiceClient.from_connection_string(
        server.connection_string, "chat", reverse_proxy_endpoint=internal, retry_total=0
    ) as svc:
        token = await svc.get_client_access_token(user_id="alice")
        assert token["url"].startswith(f"{server.ws_endpoint}/client/hubs/chat?")
        async with http.ws_connect(token["url"], protocols=["json.webpubsub.azure.v1"]) as ws:
            assert json.loads((await ws.receive(timeout=5)).data)["event"] == "connected"
            await svc.send_to_user("alice", "hi", content_type="text/plain")
            assert json.loads((await ws.receive(timeout=5)).data)["data"] == "hi"
    status, body, _ = await call(http, server, "POST", SEND)
    assert status == 404 and body["code"] == "NotFound"
    async with http.get(f"{server.endpoint}/metrics") as resp:
        assert resp.status == 404
    async with http.get(f"{internal}/metrics") as resp:
        assert resp.status == 200
    async with http.head(f"{server.endpoint}/api/health") as resp:
        assert resp.status == 200
    try:
        async with http.ws_connect(f"{internal}/client/hubs/chat?access_token=x"):
            pytest.fail("a client connection on the REST port")
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 404


async def test_rules_and_limits_reload_live(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Rules and limits written into the running file apply on SIGHUP; the connected client
    stays (it keeps answering pings) while REST from its address is now refused."""
    srv = start_server(tmp_path, config_toml=CONFIG_TOML)
    try:
        token = mint_client_token(srv, "chat")
        async with http.ws_connect(
            f"{srv.ws_endpoint}/client/hubs/chat?access_token={token}",
            protocols=["json.webpubsub.azure.v1"],
        ) as ws:
            assert json.loads((await ws.receive(timeout=5)).data)["event"] == "connected"
            assert (await call(http, srv, "POST", SEND))[0] == 202
            (tmp_path / "hubbub.toml").write_text(
                CONFIG_TOML + '\n[network]\ndefault_action = "deny"\n'
                '[[network.rules]]\naction = "allow"\naddresses = ["127.0.0.1"]\n'
                'kinds = ["client"]\n'
            )
            srv.process.send_signal(signal.SIGHUP)
            for _ in range(100):
                if (await call(http, srv, "POST", SEND))[0] == 403:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the reloaded rules were not applied")
            await ws.send_str('{"type":"ping"}')
            while (reply := json.loads((await ws.receive(timeout=5)).data))["type"] == "message":
                assert reply["data"] == "hi"  # the send before the reload
            assert reply == {"type": "pong"}
            assert await upgrade(srv) == 101
    finally:
        stop_server(srv)
