"""What a running node writes to its log: one line per record, no secrets, and summaries.

Each test reads the log file of a real ``hubbub serve`` (stdout and stderr) after talking to it
over real sockets. The nodes summarize every 0.5 s (``server.log_summary_seconds``).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import pytest
from _wire import Wire, mint_client_token, raw_handshake
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import ACCESS_KEY, SECONDARY_KEY, Server, free_port, start_server, stop_server

SUMMARY_SECONDS = 0.5
WAIT = 10.0
FORGED = "2026-01-01 00:00:00,000 ERROR hubbub.node: forged"
FUNCTION_KEY = "s3cr3tFunctionKey0123456789"
HS256_HEADER = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
"""The first segment of every HS256 JWT, as aiohttp quotes the start of a header it refuses."""
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
SUMMARY = re.compile(r"^\S+ \S+ (INFO|WARNING) hubbub\.activity: (.*)$")


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

    def summaries(self, mark: int, kind: str) -> list[tuple[str, str]]:
        """(level, text) of the summary lines of ``kind`` ("connections", "REST"...)."""
        found = (SUMMARY.match(line) for line in self.since(mark).splitlines())
        return [(m[1], m[2]) for m in found if m and m[2].startswith(kind + ":")]

    async def wait_for(self, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"the log never showed {what}:\n{self.text()}")
            await asyncio.sleep(0.05)


class Handler:
    """An event handler that passes abuse protection and accepts every event (own thread)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: TestServer | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        if request.method == "OPTIONS":
            return web.Response(headers={"WebHook-Allowed-Origin": "*"})
        await request.read()
        return web.Response(status=204)

    def start(self) -> None:
        self._thread.start()
        app = web.Application()
        app.router.add_route("*", "/{hub}/{event}", self._handle)
        self._server = TestServer(app, host="127.0.0.1", port=self.port)
        asyncio.run_coroutine_threadsafe(self._server.start_server(), self._loop).result(10)

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _config(handler_port: int, dead_port: int) -> str:
    return (
        f"[server]\nlog_summary_seconds = {SUMMARY_SECONDS}\n"
        f'[auth]\naccess_keys = ["{ACCESS_KEY}", "{SECONDARY_KEY}"]\n'
        "[[hubs.handled.event_handlers]]\n"
        f'url_template = "http://127.0.0.1:{handler_port}/{{hub}}/{{event}}"\n'
        'system_events = ["connect", "connected", "disconnected"]\n'
        "[[hubs.keyed.event_handlers]]\n"
        f'url_template = "http://127.0.0.1:{dead_port}/api/{{event}}?code={FUNCTION_KEY}"\n'
        'system_events = ["connect"]\n'
    )


def _node(tmp: Path, handler: Handler, *args: str) -> Iterator[Node]:
    server = start_server(tmp, list(args), config_toml=_config(handler.port, free_port()))
    try:
        yield Node(server, tmp / "server.log")
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def handler() -> Iterator[Handler]:
    app = Handler()
    app.start()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def debug_node(tmp_path_factory: pytest.TempPathFactory, handler: Handler) -> Iterator[Node]:
    yield from _node(tmp_path_factory.mktemp("debug"), handler, "--log-level", "debug")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, handler: Handler) -> Iterator[Node]:
    """At the default log level."""
    yield from _node(tmp_path_factory.mktemp("info"), handler)


def _counts(summaries: list[tuple[str, str]], pattern: str) -> int:
    """The sum of one count over summary lines (``pattern`` has one group: the number)."""
    total = 0
    for _, text in summaries:
        match = re.search(pattern, text)
        if match:
            total += int(match[1].replace(",", ""))
    return total


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


# --------------------------------------------------------------------------- summaries


async def test_an_idle_node_logs_nothing_after_start(tmp_path: Path, handler: Handler) -> None:
    for idle in _node(tmp_path, handler):
        await asyncio.sleep(SUMMARY_SECONDS * 4)
        records = [line for line in idle.text().splitlines() if RECORD.match(line)]
        assert records == []  # only the start-up printout: no log record, no empty summary


async def test_connections_are_summarized(node: Node) -> None:
    mark = node.mark()
    async with Wire(node.server) as wire:
        clients = [await wire.connect("chat", user=f"u{i}") for i in range(3)]
        await clients[0].ws.close()
        assert (await raw_handshake(node.server, "/client/hubs/chat")).status == 401

        def seen() -> bool:
            found = node.summaries(mark, "connections")
            return (
                _counts(found, r"(\d+) opened") == 3
                and _counts(found, r"(\d+) closed") == 1
                and _counts(found, r"(\d+) refused \(401: ") == 1
            )

        await node.wait_for("3 opened, 1 closed, 1 refused", seen)
        assert node.summaries(mark, "connections")[-1][1].endswith(", 2 open")
    await node.wait_for(
        "0 open", lambda: node.summaries(mark, "connections")[-1][1].endswith(" 0 open")
    )
    assert all(level == "INFO" for level, _ in node.summaries(mark, "connections"))


async def test_rest_errors_are_summarized_not_one_line_each(node: Node) -> None:
    mark = node.mark()
    started = time.monotonic()
    send = f"{node.server.endpoint}/api/hubs/chat/:send?api-version=2024-12-01"
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            async with http.post(send, data=b"x") as resp:
                assert resp.status == 401
        async with Wire(node.server) as wire:
            status, _ = await wire.rest("GET", "/api/hubs/chat/nothing-here")
            assert status == 404
        headers = {"Authorization": "Bearer " + "x" * 128 * 1024}  # past any header limit
        async with http.post(send, headers=headers, data=b"x") as resp:
            assert resp.status == 431

    def seen() -> bool:
        found = node.summaries(mark, "REST")
        return (
            _counts(found, r"401 Unauthorized: (\d+)") == 100
            and _counts(found, r"404 NotFound: (\d+)") == 1
            and _counts(found, r"431 RequestHeaderFieldsTooLarge: (\d+)") == 1
        )

    await node.wait_for("100 x 401, a 404 and a 431", seen)
    intervals = (time.monotonic() - started) / SUMMARY_SECONDS
    assert len(node.summaries(mark, "REST")) <= intervals + 1
    assert len(node.since(mark).splitlines()) <= 3 * (intervals + 1)  # no line per request


async def test_event_handlers_are_summarized(node: Node) -> None:
    mark = node.mark()
    async with Wire(node.server) as wire:
        await wire.connect("handled", user="dave")  # connect, connected
    passed = re.compile(r" INFO hubbub\.upstream: event handler http://\S+/handled/validate passed")
    await node.wait_for("the passed probe", lambda: bool(passed.search(node.since(mark))))

    def delivered() -> bool:  # connect, connected, disconnected
        return _counts(node.summaries(mark, "event handlers"), r"(\d+) events? delivered") == 3

    await node.wait_for("3 events delivered", delivered)
    token = mint_client_token(node.server, "keyed", user="erin")
    refused = await raw_handshake(node.server, f"/client/hubs/keyed?access_token={token}")
    assert refused.status == 500

    def failed() -> bool:
        found = node.summaries(mark, "event handlers")
        return any(
            level == "WARNING"
            and "connect to http://127.0.0.1:" in text
            and "/api/{event}?*** failed abuse protection: 1)" in text
            for level, text in found
        )

    await node.wait_for("the failed connect event", failed)


async def test_a_stopping_node_sums_up_its_last_interval(tmp_path: Path) -> None:
    server = start_server(tmp_path)  # the default interval: 60 s
    try:
        async with Wire(server) as wire:
            for i in range(2):
                await wire.connect("chat", user=f"v{i}")
            stop_server(server)
    finally:
        stop_server(server)
    node = Node(server, tmp_path / "server.log")
    found = node.summaries(0, "connections")
    assert len(found) == 1, node.text()
    assert re.fullmatch(
        r"connections: 2 opened, 2 closed in the last \d\.\d s, 0 open", found[0][1]
    )
