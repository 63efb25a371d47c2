"""Traffic rules on a running node: inbound bytes per token, and a client SDK over its rate.

``token_inbound_bytes`` (the service's ``TrafficThrottleByJwtSignatureRule``) sums the inbound
bytes of every connection made with one token over the aggregation window; the connection whose
message passes the sum is closed with 1008 and the reason ``Throttling``, and so is each other
connection of the token at its next message within the window. A connection with another token
is not touched. The JavaScript client SDK closed so (over the message rate) does not recover the
session (1008) and, with its default autoReconnect, opens a new connection by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.compat._node import NODE_DIR
from tests.conftest import CONFIG_TOML, Server, start_server, stop_server
from tests.integration._wire import closed_with, mint_client_token

LIMITS = """
[limits]
messages_per_second = 5
message_burst = 5
token_inbound_bytes = 5000
"""
PROTOCOL = "json.webpubsub.azure.v1"
PAD = 1500
"""Each ping of these tests carries this many bytes of padding (about 1530 bytes in all)."""


@pytest.fixture(scope="module")
def node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traffic")


@pytest.fixture(scope="module")
def limited(node_dir: Path) -> Iterator[Server]:
    srv = start_server(node_dir, config_toml=CONFIG_TOML + LIMITS)
    yield srv
    stop_server(srv)


async def throttle_closes(http: aiohttp.ClientSession, server: Server) -> float:
    async with http.get(f"{server.endpoint}/metrics") as resp:
        text = await resp.text()
    (line,) = [x for x in text.splitlines() if x.startswith("hubbub_throttle_closes_total ")]
    return float(line.split()[1])


async def connect(
    http: aiohttp.ClientSession, server: Server, hub: str, token: str
) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """A connected JSON client with ``token``, and its connection id."""
    ws = await http.ws_connect(
        f"{server.ws_endpoint}/client/hubs/{hub}?access_token={token}", protocols=[PROTOCOL]
    )
    hello = json.loads((await ws.receive(timeout=5)).data)
    assert hello["event"] == "connected"
    return ws, str(hello["connectionId"])


async def ping(ws: aiohttp.ClientWebSocketResponse) -> None:
    """A padded ping, answered with a pong while the connection is let through."""
    await ws.send_str(json.dumps({"type": "ping", "pad": "x" * PAD}))


async def pong(ws: aiohttp.ClientWebSocketResponse) -> None:
    assert json.loads((await ws.receive(timeout=5)).data) == {"type": "pong"}


def closed_over(log: Path, connection_id: str) -> str:
    """The reason the node logged for closing the connection."""
    found = re.search(rf"connection {re.escape(connection_id)} closed: (.*)", log.read_text())
    assert found is not None, f"no close of {connection_id} logged"
    return found.group(1)


async def test_connections_sharing_a_token_are_closed_over_its_inbound_bytes(
    limited: Server, node_dir: Path, http: aiohttp.ClientSession, hub: str
) -> None:
    """Two connections of one token send 2 + 1 pings (about 4600 bytes, under 5000): answered.
    The next ping of the second passes 5000: it is closed 1008 Throttling; the first, under the
    limit on its own, is closed at its next ping, and a new connection with the token at its
    first. A connection with another token (same claims) sends as many bytes in all, after
    those closes, and is answered."""
    before = await throttle_closes(http, limited)
    token = mint_client_token(limited, hub)
    other = mint_client_token(limited, hub, lifetime=1800)
    assert other.rsplit(".", 1)[1] != token.rsplit(".", 1)[1]
    first, first_id = await connect(http, limited, hub, token)
    second, second_id = await connect(http, limited, hub, token)
    apart, _ = await connect(http, limited, hub, other)
    for ws, pings in ((first, 2), (second, 1), (apart, 2)):
        for _ in range(pings):
            await ping(ws)
            await pong(ws)
    await ping(second)
    assert await closed_with(second) == (1008, "Throttling")
    await ping(first)
    assert await closed_with(first) == (1008, "Throttling")
    again, again_id = await connect(http, limited, hub, token)  # no connection count limit
    await again.send_str('{"type":"ping"}')
    assert await closed_with(again) == (1008, "Throttling")
    await ping(apart)
    await pong(apart)
    await apart.close()
    for ws in (first, second, again):
        await ws.close()
    assert await throttle_closes(http, limited) == before + 3
    log = node_dir / "server.log"
    for connection_id in (second_id, first_id, again_id):
        assert closed_over(log, connection_id) == (
            "inbound traffic over TrafficThrottleByJwtSignatureRule"
        )


async def run_throttled_client(server: Server, hub: str, **env: str) -> dict[str, Any]:
    """``tests/node/throttled_client.mjs`` with a token that may send to groups."""
    token = mint_client_token(server, hub, user="js", roles=["webpubsub.sendToGroup"])
    proc = await asyncio.create_subprocess_exec(
        "node",
        "throttled_client.mjs",
        cwd=NODE_DIR,
        env={
            **os.environ,
            "HUBBUB_CLIENT_URL": f"{server.ws_endpoint}/client/hubs/{hub}?access_token={token}",
            **env,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 45)
    assert proc.returncode == 0, err.decode()
    report: dict[str, Any] = json.loads(out.decode().splitlines()[-1])
    assert report["unexpected"] == []
    return report


@pytest.mark.node
@pytest.mark.parametrize("auto_reconnect", [True, False], ids=["auto-reconnect", "no-reconnect"])
async def test_the_js_client_sdk_over_its_message_rate(
    limited: Server, http: aiohttp.ClientSession, hub: str, auto_reconnect: bool
) -> None:
    """@azure/web-pubsub-client sends 20 group messages in a row (burst 5, 5 a second): the node
    closes it 1008 Throttling, which the SDK receives (it logs the code and reason; its
    ``disconnected`` event carries the connection id and no message, as the node sends no
    ``disconnected`` message first). It does not try to recover the session: with
    autoReconnect (its default) it opens a new connection at once, on which an acked message
    goes through; without, it reports ``stopped``."""
    before = await throttle_closes(http, limited)
    env = {"HUBBUB_MESSAGES": "20", "HUBBUB_AUTO_RECONNECT": str(auto_reconnect).lower()}
    report = await run_throttled_client(limited, hub, **env)
    assert report["closes"][0] == {"code": 1008, "reason": "Throttling"}
    first = report["connected"][0]
    assert report["disconnected"][0] == {"connectionId": first, "message": None}
    assert report["sendErrors"] < 20 - 5
    if auto_reconnect:
        assert len(report["connected"]) == 2 and report["connected"][1] != first
        assert report["afterReconnect"] == "acked"
    else:
        assert report["connected"] == [first]
        assert report["afterReconnect"] is None
    assert report["stopped"] == 1
    assert await throttle_closes(http, limited) == before + 1
