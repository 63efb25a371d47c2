"""Throttling on a running node (``[limits]``), with the service's answers, counted in metrics.

Connections over a per-hub or per-user limit are refused 429 before the upgrade (reason
``ConnectionCountLimitReached``); a client over its message rate or its user's inbound bytes is
closed with 1008 and the reason ``Throttling``, one over the message size with 1009; REST calls
over the hub's rate get 429 with ``Retry-After``, which the SDKs' retry policies wait for.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import HttpResponseError
from azure.messaging.webpubsubclient.aio import WebPubSubClient as AioWebPubSubClient
from azure.messaging.webpubsubclient.models import WebPubSubDataType
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient

from tests.compat._clients import AioSdkClient, rest_token, sdk_options
from tests.compat._node import NODE_DIR
from tests.conftest import (
    CONFIG_TOML,
    FAST_LANE_MODES,
    WITHOUT_LANE,
    Server,
    start_server,
    stop_server,
)
from tests.integration._wire import closed_with, mint_client_token

SUPPORTED_VERSIONS = "2021-10-01, 2022-11-01, 2023-07-01, 2024-01-01, 2024-12-01"
"""The service's ``api-supported-versions`` (every answer past the token check lists them)."""

LIMITS = """
[limits]
max_connections_per_hub = 3
max_connections_per_user = 1
max_connections_per_token = 2
messages_per_second = 5
message_burst = 5
max_message_bytes = 2048
user_inbound_bytes = 4000
rest_requests_per_second = 2
rest_burst = 2
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("limits"), config_toml=CONFIG_TOML + LIMITS)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def limited_without_lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same limits with the fast lane off: aiohttp reads every request."""
    config = CONFIG_TOML + LIMITS + WITHOUT_LANE
    srv = start_server(tmp_path_factory.mktemp("limits-no-lane"), config_toml=config)
    yield srv
    stop_server(srv)


async def counter(http: aiohttp.ClientSession, server: Server, name: str) -> float:
    async with http.get(f"{server.endpoint}/metrics") as resp:
        text = await resp.text()
    (line,) = [x for x in text.splitlines() if x.startswith(f"{name}_total ")]
    return float(line.split()[1])


async def connect(
    http: aiohttp.ClientSession, server: Server, hub: str, user: str
) -> aiohttp.ClientWebSocketResponse | int:
    """A connected client, or the status its handshake was refused with."""
    token = mint_client_token(server, hub, user=user)
    try:
        ws = await http.ws_connect(
            f"{server.ws_endpoint}/client/hubs/{hub}?access_token={token}",
            protocols=["json.webpubsub.azure.v1"],
        )
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    assert json.loads((await ws.receive(timeout=5)).data)["event"] == "connected"
    return ws


async def refused_body(server: Server, hub: str, user: str) -> tuple[int, dict[str, Any]]:
    """The status and error body of a refused handshake, read as plain HTTP."""
    token = mint_client_token(server, hub, user=user)
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{server.endpoint}/client/hubs/{hub}?access_token={token}", headers=headers
        ) as resp,
    ):
        return resp.status, json.loads(await resp.read())


async def test_connections_per_user_and_per_hub(
    limited: Server, http: aiohttp.ClientSession, hub: str
) -> None:
    """One connection per user, three per hub: the next is 429 with the service's reason; a
    closed connection gives its place back."""
    before = await counter(http, limited, "hubbub_connection_limit_refusals")
    alice = await connect(http, limited, hub, "alice")
    assert not isinstance(alice, int)
    assert await connect(http, limited, hub, "alice") == 429
    status, body = await refused_body(limited, hub, "alice")
    assert status == 429 and body["code"] == "TooManyRequests"
    assert "ConnectionCountLimitReached" in body["message"] and "per user" in body["message"]
    others = [await connect(http, limited, hub, f"user{i}") for i in range(2)]
    assert not any(isinstance(ws, int) for ws in others)
    status, body = await refused_body(limited, hub, "dave")
    assert status == 429 and "per hub" in body["message"]
    elsewhere = await connect(http, limited, f"{hub}b", "alice")  # another hub: its own counts
    assert not isinstance(elsewhere, int)
    await elsewhere.close()
    await alice.close()
    for _ in range(50):
        again = await connect(http, limited, hub, "alice")
        if not isinstance(again, int):
            await again.close()
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the closed connection did not give its place back")
    for ws in others:
        assert not isinstance(ws, int)
        await ws.close()
    assert await counter(http, limited, "hubbub_connection_limit_refusals") >= before + 3


async def test_connections_per_token(
    limited: Server, http: aiohttp.ClientSession, hub: str
) -> None:
    """A token without a user: two connections with it, the third is 429 per token; another
    token of the same claims has its own count."""
    token = mint_client_token(limited, hub)
    url = f"{limited.ws_endpoint}/client/hubs/{hub}?access_token={token}"
    first, second = [
        await http.ws_connect(url, protocols=["json.webpubsub.azure.v1"]) for _ in range(2)
    ]
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(url, protocols=["json.webpubsub.azure.v1"])
    assert caught.value.status == 429
    other = mint_client_token(limited, hub, lifetime=1800)
    third = await http.ws_connect(
        f"{limited.ws_endpoint}/client/hubs/{hub}?access_token={other}",
        protocols=["json.webpubsub.azure.v1"],
    )
    for ws in (first, second, third):
        await ws.close()


async def test_a_client_over_its_message_rate_is_closed(
    limited: Server, http: aiohttp.ClientSession, hub: str
) -> None:
    """A burst of 5, then 5 a second: the 8th ping in a row closes the connection 1008."""
    before = await counter(http, limited, "hubbub_throttle_closes")
    ws = await connect(http, limited, hub, "pinger")
    assert not isinstance(ws, int)
    for _ in range(8):
        await ws.send_str('{"type":"ping"}')
    assert await closed_with(ws) == (1008, "Throttling")
    await ws.close()
    assert await counter(http, limited, "hubbub_throttle_closes") == before + 1
    calm = await connect(http, limited, hub, "calm")
    assert not isinstance(calm, int)
    for _ in range(4):
        await calm.send_str('{"type":"ping"}')
        assert json.loads((await calm.receive(timeout=5)).data) == {"type": "pong"}
    await calm.close()


async def test_message_size_and_user_traffic(
    limited: Server, http: aiohttp.ClientSession, hub: str
) -> None:
    """A message over max_message_bytes closes 1009; a user over user_inbound_bytes per window
    is closed 1008 Throttling."""
    big = await connect(http, limited, hub, "big")
    assert not isinstance(big, int)
    await big.send_str(json.dumps({"type": "ping", "pad": "x" * 3000}))
    code, _ = await closed_with(big)
    assert code == 1009
    await big.close()
    chatty = await connect(http, limited, hub, "chatty")
    assert not isinstance(chatty, int)
    for _ in range(3):
        await chatty.send_str(json.dumps({"type": "ping", "pad": "x" * 1500}))
    assert await closed_with(chatty) == (1008, "Throttling")
    await chatty.close()


async def rest(http: aiohttp.ClientSession, server: Server, path: str) -> aiohttp.ClientResponse:
    url = f"{server.endpoint}{path}"
    headers = {"Authorization": f"Bearer {rest_token(url, server.access_key)}"}
    async with http.post(url, headers=headers, data=b"hi") as resp:
        await resp.read()
        return resp


@pytest.mark.parametrize("fast_lane", FAST_LANE_MODES)
async def test_rest_over_the_hub_rate_is_429_with_retry_after(
    request: pytest.FixtureRequest, http: aiohttp.ClientSession, hub: str, fast_lane: bool
) -> None:
    """Two calls, then 429 with Retry-After (seconds), retry-after-ms and the supported
    versions (the token was checked), on the lane's path (a plain send) and aiohttp's, with the
    fast lane on and off; another hub has its own budget."""
    limited: Server = request.getfixturevalue("limited" if fast_lane else "limited_without_lane")
    assert limited.fast_lane is fast_lane
    before = await counter(http, limited, "hubbub_rest_throttled")
    plain = f"/api/hubs/{hub}/:send?api-version=2024-12-01"
    statuses = [(await rest(http, limited, plain)).status for _ in range(3)]
    assert statuses == [202, 202, 429]
    throttled = await rest(http, limited, plain)
    assert throttled.status == 429
    assert throttled.headers["api-supported-versions"] == SUPPORTED_VERSIONS
    refused = await rest(http, limited, plain + "&excluded=x")
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "1"
    assert 0 < int(refused.headers["retry-after-ms"]) <= 500
    assert refused.headers["x-ms-error-code"] == "TooManyRequests"
    assert refused.headers["api-supported-versions"] == SUPPORTED_VERSIONS
    other = await rest(http, limited, f"/api/hubs/{hub}x/:send?api-version=2024-12-01")
    assert other.status == 202
    assert await counter(http, limited, "hubbub_rest_throttled") == before + 3


async def test_the_python_sdk_waits_for_retry_after(limited: Server, hub: str) -> None:
    """Without retries the SDK raises the 429; with its default retry policy it waits as told
    and the calls go through."""
    async with WebPubSubServiceClient.from_connection_string(
        limited.connection_string, hub, retry_total=0
    ) as svc:
        for _ in range(2):
            await svc.send_to_all("hi", content_type="text/plain")
        with pytest.raises(HttpResponseError) as caught:
            await svc.send_to_all("hi", content_type="text/plain")
    assert caught.value.status_code == 429
    async with WebPubSubServiceClient.from_connection_string(limited.connection_string, hub) as svc:
        started = time.monotonic()
        await svc.send_to_all("hi", content_type="text/plain")
        assert time.monotonic() - started > 0.1


@pytest.mark.node
async def test_the_js_sdk_sees_the_429(limited: Server, hub: str) -> None:
    """@azure/web-pubsub without retries: the third call fails with 429 TooManyRequests."""
    env = {**os.environ, "HUBBUB_CONNECTION_STRING": limited.connection_string, "HUBBUB_HUB": hub}
    proc = await asyncio.create_subprocess_exec(
        "node",
        "rest_calls.mjs",
        json.dumps([["sendToAll", "a"], ["sendToAll", "b"], ["sendToAll", "c"]]),
        cwd=NODE_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 45)
    assert proc.returncode == 0, err.decode()
    first, second, third = json.loads(out.decode().splitlines()[-1])
    assert first["ok"] and second["ok"]
    assert third["ok"] is False and third["status"] == 429 and third["code"] == "TooManyRequests"


async def test_the_python_client_sdk_over_its_rate_is_disconnected(
    limited: Server, hub: str, http: aiohttp.ClientSession
) -> None:
    """The async client SDK (reliable JSON, its default) sending faster than the rate: the
    service closes it, the SDK does not recover the session and reports it disconnected."""
    token = mint_client_token(limited, hub, user="sdk", roles=["webpubsub.sendToGroup"])
    url = f"{limited.ws_endpoint}/client/hubs/{hub}?access_token={token}"
    client = AioSdkClient(AioWebPubSubClient(url, auto_reconnect=False, **sdk_options()))
    before = await counter(http, limited, "hubbub_throttle_closes")
    await client.start()
    try:
        for number in range(10):
            await client.client.send_to_group(
                "room", f"m{number}", WebPubSubDataType.TEXT, ack=False
            )
        gone = await client.disconnected.wait_for()
        assert gone.connection_id is not None
        assert not client.client.is_connected()
        assert await counter(http, limited, "hubbub_throttle_closes") == before + 1
    finally:
        await client.client.close()
