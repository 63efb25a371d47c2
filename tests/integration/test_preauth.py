"""What a client can make the server do before it is authenticated, over raw sockets.

Bounded memory while a ``connect`` event runs (reading pauses), REST bodies with a bad token
refused at the head, a deadline for every request head (``408``), unmasked client frames
closed with 1002 (both of aiohttp's frame readers), and a client that leaves during its connect
event logged as the ordinary event it is. The connect handler is an aiohttp app on a thread of
its own that answers a user's connect only when the test lets it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import ACCESS_KEY, SECONDARY_KEY, Server, free_port, start_server, stop_server
from tests.integration._wire import JSON, ServerLike, mint_client_token, mint_rest_token
from tests.integration.test_port import RawSocket, masked

WAIT = 5.0
HEAD_TIMEOUT = 1.0
"""The node's ``request_head_timeout_seconds`` in this module."""
API = "api-version=2024-12-01"


class ConnectGate:
    """An event handler whose answer to a user's connect waits until the test opens the gate."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen: set[str] = set()
        self._opened: dict[str, asyncio.Event] = {}
        """Per user, on the gate's own loop."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: TestServer | None = None

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
        self._loop.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(headers={"WebHook-Allowed-Origin": "*"})
        user = request.headers.get("ce-userId", "")
        self.seen.add(user)
        await asyncio.wait_for(self._event(user).wait(), 30)
        return web.Response(status=204)

    def _event(self, user: str) -> asyncio.Event:
        return self._opened.setdefault(user, asyncio.Event())

    def open(self, user: str) -> None:
        """Let the connect event of ``user`` be answered (204)."""
        self._loop.call_soon_threadsafe(lambda: self._event(user).set())

    async def wait_seen(self, user: str) -> None:
        deadline = time.monotonic() + WAIT
        while user not in self.seen:
            assert time.monotonic() < deadline, f"no connect event for {user}"
            await asyncio.sleep(0.02)


@dataclass
class Stack:
    server: Server
    gate: ConnectGate
    log: Path


def _config(gate_port: int) -> str:
    return (
        f"[server]\nrequest_head_timeout_seconds = {HEAD_TIMEOUT:g}\n"
        "http_keep_alive_seconds = 60\n"
        f'[auth]\naccess_keys = ["{ACCESS_KEY}", "{SECONDARY_KEY}"]\n'
        "[[hubs.gate.event_handlers]]\n"
        f'url_template = "http://127.0.0.1:{gate_port}/{{hub}}/{{event}}"\n'
        'system_events = ["connect"]\n'
    )


def _start(tmp: Path, gate: ConnectGate, env: dict[str, str]) -> Server:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return start_server(tmp, ["--log-level", "debug"], config_toml=_config(gate.port))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def gate() -> Iterator[ConnectGate]:
    app = ConnectGate()
    app.start()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, gate: ConnectGate) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("preauth")
    server = _start(tmp, gate, {})
    yield Stack(server, gate, tmp / "server.log")
    stop_server(server)


@pytest.fixture(scope="module")
def python_reader(tmp_path_factory: pytest.TempPathFactory, gate: ConnectGate) -> Iterator[Stack]:
    """A node on aiohttp's pure-Python code (frame reader included)."""
    tmp = tmp_path_factory.mktemp("preauth-py")
    server = _start(tmp, gate, {"AIOHTTP_NO_EXTENSIONS": "1"})
    yield Stack(server, gate, tmp / "server.log")
    stop_server(server)


_users = iter(range(1_000_000))


def new_user() -> str:
    return f"u{os.getpid()}x{next(_users)}"


def upgrade_request(server: ServerLike, hub: str, user: str) -> bytes:
    token = mint_client_token(server, hub, user=user)
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /client/hubs/{hub}?access_token={token} HTTP/1.1\r\n"
        f"Host: {server.host}:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {JSON}\r\n\r\n"
    ).encode()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = b""
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), WAIT)
    return int(status_line.split(" ", 2)[1]), headers, body


def log_from(stack: Stack, offset: int) -> str:
    return stack.log.read_bytes()[offset:].decode(errors="replace")


# --------------------------------------------------------------------------- connect event


async def test_what_a_client_sends_during_its_connect_event_is_not_read_past_a_bound(
    stack: Stack,
) -> None:
    """The port pauses reading: what the client pushes waits in the kernel, not in the node.

    The client pushes unsolicited pongs (no answer, nothing to read back) until its socket
    accepts nothing for a second; the kernel's buffers on both ends take a few MB, the node
    keeps at most 64 KiB and one read. Unbounded, the node would read all 256 MiB offered.
    Afterwards nothing is lost: every frame is read, in order, before the next one.
    """
    user = new_user()
    sock = socket.create_connection((stack.server.host, stack.server.port))
    sock.sendall(upgrade_request(stack.server, "gate", user))
    await stack.gate.wait_seen(user)
    sock.setblocking(False)
    block = masked(0xA, b"p" * 125) * 500
    pushed, view, stalled_since = 0, memoryview(block), None
    while pushed < 256 << 20:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            now = time.monotonic()
            stalled_since = stalled_since or now
            if now - stalled_since > 1.0:
                break
            await asyncio.sleep(0.01)
            continue
        stalled_since = None
        pushed += sent
        view = view[sent:] if sent < len(view) else memoryview(block)
    assert pushed < 64 << 20, f"the node read {pushed >> 20} MiB while its connect event ran"
    # The connect goes on, the node reads again, and the socket works.
    stack.gate.open(user)
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(view[: len(view) % len(masked(0xA, b"p" * 125))])  # the pong cut short
    raw = RawSocket(reader, writer)
    try:
        status, _, _ = await read_answer(reader)
        assert status == 101
        assert (await raw.message())["event"] == "connected"
        raw.send({"type": "ping"})
        assert await raw.message() == {"type": "pong"}
    finally:
        raw.close()


async def test_a_client_that_leaves_during_its_connect_event_is_no_error(stack: Stack) -> None:
    offset = stack.log.stat().st_size
    user = new_user()
    _, writer = await asyncio.open_connection(stack.server.host, stack.server.port)
    writer.write(upgrade_request(stack.server, "gate", user))
    await stack.gate.wait_seen(user)
    writer.close()
    await asyncio.sleep(0.2)  # the node sees the socket close while the event is pending
    stack.gate.open(user)
    deadline = time.monotonic() + WAIT
    while "a client left before its upgrade was answered" not in log_from(stack, offset):
        assert time.monotonic() < deadline, log_from(stack, offset)
        await asyncio.sleep(0.05)
    text = log_from(stack, offset)
    assert "Traceback" not in text and " ERROR " not in text, text


# --------------------------------------------------------------------------- REST tokens


def _send_head(server: ServerLike, authorization: str | None, length: int) -> bytes:
    auth = f"Authorization: {authorization}\r\n" if authorization is not None else ""
    return (
        f"POST /api/hubs/h/:send?{API} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n{auth}"
        f"Content-Type: text/plain\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _url(server: ServerLike, path: str) -> str:
    return f"{server.endpoint}{path}?{API}"


@pytest.mark.parametrize("token", ["missing", "garbage", "other-url", "other-key"])
async def test_a_send_with_a_bad_token_is_refused_when_its_head_is_complete(
    stack: Stack, token: str
) -> None:
    server = stack.server
    authorization = {
        "missing": None,
        "garbage": "Bearer not-a-token",
        "other-url": "Bearer " + mint_rest_token(server, _url(server, "/api/hubs/other/:send")),
        "other-key": "Bearer "
        + mint_rest_token(server, _url(server, "/api/hubs/h/:send"), key="k" * 40),
    }[token]
    size = 1 << 20
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(_send_head(server, authorization, size) + b"x" * 1000)
        # The answer comes while nearly all of the body is still unsent.
        status, headers, body = await read_answer(reader)
        assert status == 401
        assert headers["x-ms-error-code"] == "Unauthorized"
        assert json.loads(body)["code"] == "Unauthorized"
        # The rest of the body is read and dropped; the connection goes on.
        writer.write(b"x" * (size - 1000))
        path = "/api/hubs/h/:send"
        good = mint_rest_token(server, _url(server, path))
        writer.write(_send_head(server, f"Bearer {good}", 2) + b"ok")
        status, _, _ = await read_answer(reader)
        assert status == 202
    finally:
        writer.close()


# --------------------------------------------------------------------------- head deadline


PADDED_UPGRADE = (
    b"GET /client/hubs/gate HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"X-Pad: " + b"a" * 200 + b"\r\n\r\n"
)


def _before(server: ServerLike, first: str) -> bytes:
    """The request that goes first on the connection, if any."""
    if first == "aiohttp":
        return b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"
    if first == "lane":
        token = mint_rest_token(server, _url(server, "/api/hubs/h/:send"))
        return _send_head(server, f"Bearer {token}", 2) + b"hi"
    return b""


@pytest.mark.parametrize("first", ["nothing", "aiohttp", "lane"])
async def test_a_request_head_sent_too_slowly_is_answered_408_and_closed(
    stack: Stack, first: str
) -> None:
    """One byte every 0.2 s: the head would take 50 s; the deadline is 1 s from its first byte.

    First on the connection, the head is the lane's to read; after a request aiohttp answered
    it is aiohttp's; after a send the lane answered, the lane's again.
    """
    server = stack.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        before = _before(server, first)
        if before:
            writer.write(before)
            status, _, _ = await read_answer(reader)
            assert status in (200, 202)
        answer = asyncio.ensure_future(read_answer(reader))
        sent = 0
        while not answer.done() and sent < len(PADDED_UPGRADE) - 1:
            writer.write(PADDED_UPGRADE[sent : sent + 1])
            sent += 1
            await asyncio.wait([answer], timeout=0.2)
        assert answer.done(), "the head was still being read after 50 s"
        status, headers, body = answer.result()
        assert status == 408
        assert headers["x-ms-error-code"] == "RequestTimeout"
        assert json.loads(body)["code"] == "RequestTimeout"
        assert sent < 40  # well before the head was complete
        # Closed; a byte of ours that crossed the close may turn the end into a reset.
        try:
            assert await asyncio.wait_for(reader.read(), WAIT) == b""
        except ConnectionResetError:
            pass
    finally:
        writer.close()


async def test_an_idle_connection_is_not_closed_by_the_head_deadline(stack: Stack) -> None:
    """The deadline starts with a head's first byte; idling is the keep-alive time's matter."""
    server = stack.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        await asyncio.sleep(HEAD_TIMEOUT * 2.5)
        writer.write(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_answer(reader))[0] == 200
        await asyncio.sleep(HEAD_TIMEOUT * 2.5)
        for piece in (b"GET /api/he", b"alth HTTP/1.1\r\nHo", b"st: x\r\n\r\n"):
            writer.write(piece)  # in pieces, well within the deadline
            await asyncio.sleep(0.05)
        assert (await read_answer(reader))[0] == 200
    finally:
        writer.close()


async def test_a_connect_event_and_an_upgraded_socket_have_no_head_deadline(
    stack: Stack,
) -> None:
    user = new_user()
    reader, writer = await asyncio.open_connection(stack.server.host, stack.server.port)
    raw = RawSocket(reader, writer)
    try:
        writer.write(upgrade_request(stack.server, "gate", user))
        await stack.gate.wait_seen(user)
        await asyncio.sleep(HEAD_TIMEOUT * 2.5)  # the connect event takes its time
        stack.gate.open(user)
        assert (await read_answer(reader))[0] == 101
        assert (await raw.message())["event"] == "connected"
        await asyncio.sleep(HEAD_TIMEOUT * 2.5)
        raw.send({"type": "ping"})
        assert await raw.message() == {"type": "pong"}
    finally:
        raw.close()


# --------------------------------------------------------------------------- masks


def unmasked(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes((0x80 | opcode, len(payload))) + payload


@pytest.fixture(params=["c-reader", "python-reader"])
def node(request: pytest.FixtureRequest) -> Stack:
    name = "stack" if request.param == "c-reader" else "python_reader"
    stack: Stack = request.getfixturevalue(name)
    return stack


async def _upgraded(stack: Stack) -> RawSocket:
    user = new_user()
    stack.gate.open(user)
    raw = await RawSocket.open(stack.server)
    status, head = await raw.http(upgrade_request(stack.server, "gate", user))
    assert status == 101, head
    assert (await raw.message())["event"] == "connected"
    return raw


async def _closed_1002(raw: RawSocket) -> None:
    opcode, payload = await raw.frame()
    assert (opcode, payload[:2]) == (0x8, (1002).to_bytes(2, "big")), (opcode, payload)


PING = json.dumps({"type": "ping"}).encode()


@pytest.mark.parametrize("opcode", [0x1, 0x9], ids=["text", "ping"])
async def test_an_unmasked_frame_closes_1002_and_is_not_acted_on(node: Stack, opcode: int) -> None:
    raw = await _upgraded(node)
    try:
        raw.writer.write(unmasked(opcode, PING))
        await _closed_1002(raw)  # neither a pong message nor a pong frame came first
    finally:
        raw.close()


async def test_frames_before_the_unmasked_one_are_answered_first(node: Stack) -> None:
    raw = await _upgraded(node)
    try:
        raw.writer.write(masked(0x1, PING) + unmasked(0x1, PING) + masked(0x1, PING))
        assert await raw.message() == {"type": "pong"}
        await _closed_1002(raw)
    finally:
        raw.close()


async def test_an_unmasked_header_split_across_reads(node: Stack) -> None:
    raw = await _upgraded(node)
    try:
        frame = masked(0x1, PING) + unmasked(0x1, PING)
        cut = len(frame) - len(PING) - 1  # right after the unmasked header's first byte
        raw.writer.write(frame[:cut])
        await raw.writer.drain()
        assert await raw.message() == {"type": "pong"}
        raw.writer.write(frame[cut:])
        await _closed_1002(raw)
    finally:
        raw.close()
