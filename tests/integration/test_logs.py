"""What a running node writes to its log: one line per record, no secrets.

Each test reads the log file of a real ``hubbub serve --log-level debug`` (stdout and stderr)
after talking to it over real sockets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import pytest
from _wire import Wire, mint_client_token, raw_handshake

from tests.conftest import ACCESS_KEY, SECONDARY_KEY, Server, free_port, start_server, stop_server

WAIT = 10.0
FORGED = "2026-01-01 00:00:00,000 ERROR hubbub.node: forged"
FUNCTION_KEY = "s3cr3tFunctionKey0123456789"
HS256_HEADER = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
"""The first segment of every HS256 JWT, as aiohttp quotes the start of a header it refuses."""


@dataclass
class Node:
    server: Server
    log: Path

    def text(self) -> str:
        return self.log.read_bytes().decode("utf-8", "replace")

    def mark(self) -> int:
        """Where the log ends now: what a test does shows up after it."""
        return self.log.stat().st_size

    def since(self, mark: int) -> str:
        return self.log.read_bytes()[mark:].decode("utf-8", "replace")

    async def wait_for(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"the log never showed {what}:\n{self.text()}")
            await asyncio.sleep(0.05)


def _config(dead_port: int) -> str:
    return (
        f'[auth]\naccess_keys = ["{ACCESS_KEY}", "{SECONDARY_KEY}"]\n'
        "[[hubs.keyed.event_handlers]]\n"
        f'url_template = "http://127.0.0.1:{dead_port}/api/{{event}}?code={FUNCTION_KEY}"\n'
        'system_events = ["connect"]\n'
    )


@pytest.fixture(scope="module")
def debug_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("debug")
    server = start_server(tmp, ["--log-level", "debug"], config_toml=_config(free_port()))
    try:
        yield Node(server, tmp / "server.log")
    finally:
        stop_server(server)


# --------------------------------------------------------------------------- no forged lines


async def test_a_user_id_cannot_forge_a_log_line(debug_node: Node) -> None:
    user = f"alice\n{FORGED}\r\n\x00\x1b[2J"
    async with Wire(debug_node.server) as wire:
        await wire.connect("chat", user=user)
    escaped = f"user=alice\\n{FORGED}\\r\\n\\x00\\x1b[2J"
    await debug_node.wait_for("the connection", lambda: escaped in debug_node.text())
    data = debug_node.log.read_bytes()
    assert b"\x00" not in data and b"\x1b" not in data and b"\r" not in data
    lines = data.decode().splitlines()
    assert not [line for line in lines if line.startswith(FORGED)]
    assert all("alice\\n" in line for line in lines if "forged" in line)


async def test_tokens_and_keys_never_reach_the_log(debug_node: Node) -> None:
    huge = jwt.encode({"aud": "http://x", "pad": "p" * 128 * 1024}, ACCESS_KEY)
    server = debug_node.server
    tokens = [huge]
    async with aiohttp.ClientSession() as http:
        send = f"{server.endpoint}/api/hubs/chat/:send?api-version=2024-12-01"
        attempts = [
            (send, {"Authorization": f"Bearer {huge}"}),  # a header past any limit
            (f"{server.endpoint}/client/hubs/chat?access_token={huge}", {}),  # a URL as well
        ]
        for url, headers in attempts:
            try:
                async with http.post(url, headers=headers, data=b"hi") as resp:
                    await resp.read()
            except aiohttp.ClientError:
                pass  # the node may drop such a request
        bad = mint_client_token(server, "chat", user="u", key="k" * 32)
        tokens.append(bad)
        refused = await raw_handshake(server, f"/client/hubs/chat?access_token={bad}")
        assert refused.status == 401
        rest = jwt.encode({"aud": send, "exp": int(time.time()) + 60}, "k" * 32)
        tokens.append(rest)
        async with http.post(send, headers={"Authorization": f"Bearer {rest}"}, data=b"x") as r:
            assert r.status == 401
    async with Wire(server) as wire:
        client = await wire.connect(
            "chat", user="bob", protocols=("json.reliable.webpubsub.azure.v1",)
        )
        assert client.connected is not None
        reconnection = client.connected["reconnectionToken"]
    await debug_node.wait_for("the end of bob", lambda: "disconnected" in debug_node.text())
    text = debug_node.text()
    assert HS256_HEADER not in text
    for token in tokens:
        for segment in token.split("."):
            assert segment[:12] not in text
    assert reconnection not in text
    with_key = [line for line in text.splitlines() if ACCESS_KEY in line or SECONDARY_KEY in line]
    assert with_key == [f"Connection string: {server.connection_string}"]  # stdout, not the log


async def test_an_event_handler_key_never_reaches_the_log(debug_node: Node) -> None:
    mark = debug_node.mark()
    token = mint_client_token(debug_node.server, "keyed", user="carol")
    refused = await raw_handshake(debug_node.server, f"/client/hubs/keyed?access_token={token}")
    assert refused.status == 500
    assert FUNCTION_KEY not in refused.body.decode()
    redacted = "/api/validate?***"
    await debug_node.wait_for("the failed probe", lambda: redacted in debug_node.since(mark))
    assert FUNCTION_KEY not in debug_node.text()
