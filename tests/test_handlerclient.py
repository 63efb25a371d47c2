"""The event handler HTTP client against raw sockets that answer as written here: framing
(length, chunked, until the end), malformed and oversized answers, kept-alive connections a
handler closes, the per-origin cap, cancellation and the idle sweep."""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yarl

from hubbub import __version__
from hubbub.config import load_config
from hubbub.errors import UpstreamError
from hubbub.handlerclient import (
    MAX_ANSWER_BYTES,
    HandlerClient,
    HandlerClientError,
    header_lines,
)
from hubbub.protocol.cloudevents import EventContext
from hubbub.upstream import HttpUpstream

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"

Script = Callable[[int, bytes], tuple[bytes, bool]]
"""Given the request's number on the server (from 0) and its bytes: the answer and whether to
close the connection after it."""


@dataclass
class RawHandler:
    """A listening socket that reads whole requests (head and Content-Length body) and answers
    each as ``script`` says."""

    script: Script
    server: asyncio.Server | None = None
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    gate: asyncio.Event | None = None
    """When set, an answer waits for it."""

    @property
    def url(self) -> yarl.URL:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return yarl.URL(f"http://127.0.0.1:{port}/hubs/h/api?code=1")

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                number = len(self.requests)
                self.requests.append(request)
                if self.gate is not None:
                    await self.gate.wait()
                answer, close = self.script(number, request)
                writer.write(answer)
                await writer.drain()
                if close:
                    return
        finally:
            self.open_now -= 1
            writer.close()


Start = Callable[[Script], Awaitable[RawHandler]]


@pytest.fixture
async def raw() -> AsyncIterator[Start]:
    made: list[RawHandler] = []

    async def start(script: Script) -> RawHandler:
        handler = RawHandler(script)
        handler.server = await asyncio.start_server(handler.serve, "127.0.0.1", 0)
        made.append(handler)
        return handler

    yield start
    for handler in made:
        assert handler.server is not None
        handler.server.close()


Clients = Callable[..., HandlerClient]
"""Makes a HandlerClient (its keyword arguments), closed after the test."""


@pytest.fixture
async def clients() -> AsyncIterator[Clients]:
    made: list[HandlerClient] = []

    def make(per_origin: int = 256, idle_seconds: float = 30.0) -> HandlerClient:
        client = HandlerClient(per_origin=per_origin, idle_seconds=idle_seconds)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def post(client: HandlerClient, url: yarl.URL, body: bytes = b"hi") -> tuple[int, bytes]:
    answer = await client.request(
        "POST", str(url), header_lines([("Content-Type", "text/plain")]), body
    )
    return answer.status, answer.body


async def test_the_request_on_the_wire_and_a_kept_connection(raw: Start, clients: Clients) -> None:
    handler = await raw(lambda n, r: (OK, False))
    client = clients()
    assert await post(client, handler.url, b"hello") == (200, b"ok")
    assert await post(client, handler.url, b"again") == (200, b"ok")
    assert handler.connections == 1
    first = handler.requests[0]
    port = handler.url.port
    assert port is not None
    assert first.startswith(
        b"POST /hubs/h/api?code=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"User-Agent: hubbub/%s\r\nAccept: */*\r\nContent-Type: text/plain\r\n"
        % (port, __version__.encode())
    )
    assert first.endswith(b"Content-Length: 5\r\n\r\nhello")


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"abcde",
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", b"ok"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nok\r\n0\r\n"
            b"X-Trailer: t\r\n\r\n",
            b"ok",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", b"x"),
    ],
    ids=[
        "chunked",
        "no-content",
        "bare-lf",
        "chunk-size-space-and-trailer",
        "interim-answer-first",
    ],
)
async def test_answer_framings(raw: Start, answer: bytes, body: bytes, clients: Clients) -> None:
    handler = await raw(lambda n, r: (answer, False))
    client = clients()
    for _ in range(2):  # and the connection stays usable
        assert (await post(client, handler.url))[1] == body
    assert handler.connections == 1


async def test_an_answer_ended_by_the_connection(raw: Start, clients: Clients) -> None:
    answer = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    handler = await raw(lambda n, r: (answer, True))
    client = clients()
    assert await post(client, handler.url) == (200, b"until the end")
    assert await post(client, handler.url) == (200, b"until the end")
    assert handler.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 2000 What\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    ],
    ids=["status", "two-lengths", "not-http", "cut-short"],
)
async def test_a_malformed_answer_is_an_error_and_the_next_request_works(
    raw: Start, answer: bytes, clients: Clients
) -> None:
    handler = await raw(lambda n, r: (answer, True) if n == 0 else (OK, False))
    client = clients()
    with pytest.raises(HandlerClientError):
        await post(client, handler.url)
    assert await post(client, handler.url) == (200, b"ok")


async def test_an_oversized_answer_is_refused(raw: Start, clients: Clients) -> None:
    size = MAX_ANSWER_BYTES + 1
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    handler = await raw(lambda n, r: (answer, False))
    client = clients()
    with pytest.raises(HandlerClientError, match="larger than"):
        await post(client, handler.url)


async def test_an_endless_answer_head_is_refused(raw: Start, clients: Clients) -> None:
    answer = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 1_000_000 + b"\r\n\r\n"
    handler = await raw(lambda n, r: (answer, False))
    client = clients()
    with pytest.raises(HandlerClientError, match="head is too large"):
        await post(client, handler.url)


async def test_a_kept_connection_the_handler_closed_is_replaced_without_an_error(
    raw: Start, clients: Clients
) -> None:
    """The handler answers, then closes: the next request finds a dead socket and goes out
    again on a new one, whether or not the close had been seen."""
    handler = await raw(lambda n, r: (OK, True))
    client = clients()
    for _ in range(5):
        assert await post(client, handler.url) == (200, b"ok")
    assert handler.connections == 5
    assert len(handler.requests) == 5


async def test_garbage_after_an_answer_is_not_reused(raw: Start, clients: Clients) -> None:
    handler = await raw(lambda n, r: (OK + b"HTTP/1.1 200 OK\r\n" if n == 0 else OK, False))
    client = clients()
    assert await post(client, handler.url) == (200, b"ok")
    assert await post(client, handler.url) == (200, b"ok")
    assert handler.connections == 2


async def test_at_most_per_origin_connections(raw: Start, clients: Clients) -> None:
    handler = await raw(lambda n, r: (OK, False))
    handler.gate = asyncio.Event()
    client = clients(per_origin=3)
    calls = [asyncio.create_task(post(client, handler.url)) for _ in range(20)]
    await asyncio.sleep(0.2)
    assert len(handler.requests) == 3
    handler.gate.set()
    assert await asyncio.gather(*calls) == [(200, b"ok")] * 20
    assert handler.most_open == 3
    assert handler.connections == 3


async def test_a_cancelled_request_closes_its_connection(raw: Start, clients: Clients) -> None:
    handler = await raw(lambda n, r: (OK, False))
    handler.gate = asyncio.Event()
    client = clients(per_origin=1)
    first = asyncio.create_task(post(client, handler.url))
    waiting = asyncio.create_task(post(client, handler.url))
    await asyncio.sleep(0.1)
    first.cancel()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(asyncio.CancelledError):
        await waiting
    handler.gate.set()
    # The cancelled answer arrives on a closed connection; a new one carries the next.
    assert await post(client, handler.url) == (200, b"ok")
    assert handler.connections == 2


async def test_idle_connections_are_closed(raw: Start, clients: Clients) -> None:
    handler = await raw(lambda n, r: (OK, False))
    client = clients(idle_seconds=0.2)
    assert await post(client, handler.url) == (200, b"ok")
    assert handler.open_now == 1
    await asyncio.sleep(0.6)
    assert handler.open_now == 0
    assert await post(client, handler.url) == (200, b"ok")
    assert handler.connections == 2


async def test_unreachable_and_userinfo(raw: Start, clients: Clients) -> None:
    handler = await raw(lambda n, r: (OK, False))
    client = clients()
    port = handler.url.port
    await post(client, yarl.URL(f"http://us%C3%A9r:p%40ss@127.0.0.1:{port}/x"))
    assert handler.server is not None
    handler.server.close()
    await handler.server.wait_closed()
    await client.close()
    client = HandlerClient()
    with pytest.raises(HandlerClientError, match="cannot connect"):
        await post(client, yarl.URL(f"http://127.0.0.1:{port}/x"))
    with pytest.raises(HandlerClientError, match="not an http"):
        await post(client, yarl.URL("ftp://127.0.0.1/x"))
    expected = base64.b64encode("usér:p@ss".encode()).decode()
    assert f"Authorization: Basic {expected}\r\n".encode() in handler.requests[0]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ce-userId", "a\r\nX-Evil: 1"),
        ("ce-userId", "a\nb"),
        ("ce-userId", "a\0"),
        ("bad name", "v"),
    ],
)
def test_header_lines_refuse_what_would_break_the_head(name: str, value: str) -> None:
    with pytest.raises(ValueError):
        header_lines([(name, value)])


def test_header_lines_are_utf8() -> None:
    assert header_lines([("ce-userId", "usér")]) == "ce-userId: usér\r\n".encode()


PROBE = b"HTTP/1.1 200 OK\r\nWebHook-Allowed-Origin: *\r\nContent-Length: 0\r\n\r\n"


def upstream_of(handler: RawHandler, tmp_path: Path) -> HttpUpstream:
    """An HttpUpstream whose hub ``chat`` sends every user event to ``handler``."""
    path = tmp_path / "hubbub.toml"
    path.write_text(
        '[auth]\naccess_keys = ["' + "K" * 43 + '"]\n'
        "[[hubs.chat.event_handlers]]\n"
        f'url_template = "http://127.0.0.1:{handler.url.port}/{{event}}"\n'
        'user_event_pattern = "*"\n'
    )
    return HttpUpstream(load_config(str(path), env={}))


async def test_a_redirect_is_not_followed(raw: Start, tmp_path: Path) -> None:
    moved = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
    handler = await raw(lambda n, r: (PROBE if r.startswith(b"OPTIONS") else moved, False))
    upstream = upstream_of(handler, tmp_path)
    try:
        found = upstream.handler("chat", "message", False)
        assert found is not None
        context = EventContext("chat", "c1", "alice", None, None, 1)
        with pytest.raises(UpstreamError, match="redirects are not followed") as caught:
            await upstream.invoke(found, context, "message", False, b"x", "text/plain")
        assert caught.value.status == 307
    finally:
        await upstream.close()
    assert [r.split(b" ", 2)[:2] for r in handler.requests] == [
        [b"OPTIONS", b"/validate"],
        [b"POST", b"/message"],
    ]


async def test_an_event_whose_headers_would_break_is_not_sent(raw: Start, tmp_path: Path) -> None:
    """A user id (from a token the app signed) with a line break: the event fails as an
    UpstreamError, and nothing reaches the handler but the abuse-protection probe."""
    handler = await raw(lambda n, r: (PROBE if r.startswith(b"OPTIONS") else OK, False))
    upstream = upstream_of(handler, tmp_path)
    try:
        found = upstream.handler("chat", "message", False)
        assert found is not None
        good = EventContext("chat", "c1", "alice", None, None, 1)
        reply = await upstream.invoke(found, good, "message", False, b"x", "text/plain")
        assert reply.status == 200
        bad = EventContext("chat", "c2", "eve\r\nX-Admin: 1", None, None, 1)
        with pytest.raises(UpstreamError, match="not sendable"):
            await upstream.invoke(found, bad, "message", False, b"x", "text/plain")
    finally:
        await upstream.close()
    assert [r.split(b" ", 1)[0] for r in handler.requests] == [b"OPTIONS", b"POST"]
    assert b"ce-userId: alice\r\n" in handler.requests[1]


async def test_an_answer_ended_by_a_reset_is_an_error(raw: Start) -> None:
    """No length: the body ends with the connection, but a reset is no end."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\npartial-")
        await writer.drain()
        await asyncio.sleep(0.05)
        # Linger 0: the close is a reset (RST), not an end (FIN).
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = HandlerClient()
    try:
        with pytest.raises(HandlerClientError, match="closed the connection"):
            await client.request("POST", f"http://127.0.0.1:{port}/", b"", b"x")
    finally:
        await client.close()
        server.close()


async def test_an_unframed_transfer_coding_is_read_to_the_end(raw: Start, clients: Clients) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nto the end"
    handler = await raw(lambda n, r: (answer, True))
    client = clients()
    assert await post(client, handler.url) == (200, b"to the end")


async def test_endless_trailers_are_refused(raw: Start, clients: Clients) -> None:
    trailers = b"".join(b"X-T%d: aaaaaaaaaa\r\n" % i for i in range(30_000))
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + trailers
    handler = await raw(lambda n, r: (answer, False))
    client = clients()
    with pytest.raises(HandlerClientError, match="head is too large"):
        await post(client, handler.url)


async def test_a_handler_that_stops_reading_gives_its_places_back() -> None:
    """Requests too big for the socket buffers to a handler that never reads: each attempt
    given up frees its place under the cap at once (the connection is aborted, not left
    draining), so the next request still gets a connection."""
    held: list[asyncio.StreamWriter] = []

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(never_read, "127.0.0.1", 0)
    url = yarl.URL(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
    client = HandlerClient(per_origin=2)
    try:
        for _ in range(4):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.request("POST", str(url), b"", b"x" * 8_000_000), 0.2)
        connected = len(held)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.request("POST", str(url), b"", b"hi"), 0.5)
        assert len(held) == connected + 1  # a new connection, not a wait for a place
    finally:
        await client.close()
        for writer in held:
            writer.close()
        server.close()


async def test_waiting_requests_that_give_up_leave_nothing_behind(
    raw: Start, clients: Clients
) -> None:
    handler = await raw(lambda n, r: (OK, False))
    handler.gate = asyncio.Event()
    client = clients(per_origin=1)
    first = asyncio.create_task(post(client, handler.url))
    await asyncio.sleep(0.05)
    for _ in range(50):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(post(client, handler.url), 0.01)
    assert not any(client._waiting.values())
    handler.gate.set()
    assert await first == (200, b"ok")


async def test_close_ends_waiting_requests(raw: Start) -> None:
    handler = await raw(lambda n, r: (OK, False))
    handler.gate = asyncio.Event()
    client = HandlerClient(per_origin=2)
    calls = [asyncio.create_task(post(client, handler.url)) for _ in range(6)]
    await asyncio.sleep(0.1)
    await client.close()
    handler.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, HandlerClientError) for r in results), results
    assert handler.connections == 2


async def test_a_password_alone_is_sent_too(raw: Start, clients: Clients) -> None:
    handler = await raw(lambda n, r: (OK, False))
    client = clients()
    await post(client, yarl.URL(f"http://:secret@127.0.0.1:{handler.url.port}/"))
    expected = base64.b64encode(b":secret").decode()
    assert f"Authorization: Basic {expected}\r\n".encode() in handler.requests[0]
