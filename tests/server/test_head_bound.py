"""The bound on a whole request head counts heads only: bodies of any size, pipelined requests
and heads split across many reads are served as before. An in-process aiohttp server with the
node's runner; the client writes raw bytes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from hubbub.server.limits import MAX_HEAD_BYTES, Runner


async def echo_length(request: web.Request) -> web.Response:
    return web.Response(text=str(len(await request.read())))


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/", echo_length)
    runner = Runner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    yield server.sockets[0].getsockname()[1]
    await runner.cleanup()


def post(body: bytes, extra: str = "") -> bytes:
    return (
        f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def exchange(port: int, data: bytes, step: int, answers: int) -> list[bytes]:
    """Write ``data`` in pieces of ``step`` bytes; read ``answers`` answers' bodies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(0, len(data), step):
            writer.write(data[i : i + step])
            await writer.drain()
        bodies = []
        for _ in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status = head.split(b" ")[1]
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            bodies.append(status + b" " + await reader.readexactly(length))
        return bodies
    finally:
        writer.close()


@pytest.mark.parametrize("step", [1000, 65536, 1 << 20])
async def test_a_body_larger_than_the_head_bound_is_no_head(port: int, step: int) -> None:
    body = b"x" * (3 * MAX_HEAD_BYTES)
    assert await exchange(port, post(body), step, 1) == [b"200 %d" % len(body)]


@pytest.mark.parametrize("step", [999, 65536, 1 << 20])
async def test_pipelined_requests_with_large_bodies(port: int, step: int) -> None:
    big = b"y" * (2 * MAX_HEAD_BYTES)
    data = post(big) + post(b"small") + post(big) + post(b"")
    answers = await exchange(port, data, step, 4)
    assert answers == [b"200 %d" % len(big), b"200 5", b"200 %d" % len(big), b"200 0"]


def head_of(length: int, body: bytes) -> bytes:
    """A request whose head is ``length`` bytes long, followed by ``body``."""
    short = len(post(body, "X-A: \r\nX-B: \r\n")) - len(body)
    filler = length - short
    return post(body, f"X-A: {'a' * (filler // 2)}\r\nX-B: {'b' * (filler - filler // 2)}\r\n")


STEPS = [100, 4093, 65536, 1 << 20]


@pytest.mark.parametrize("step", STEPS)
async def test_a_head_at_the_bound_is_read_however_it_is_split(port: int, step: int) -> None:
    data = head_of(MAX_HEAD_BYTES, b"ok") + post(b"x" * MAX_HEAD_BYTES)
    assert await exchange(port, data, step, 2) == [b"200 2", b"200 %d" % MAX_HEAD_BYTES]


@pytest.mark.parametrize("step", STEPS)
async def test_a_head_over_the_bound_is_refused_431(port: int, step: int) -> None:
    data = head_of(MAX_HEAD_BYTES + 1, b"no")
    [answer] = await exchange(port, data, step, 1)
    assert answer.startswith(b'431 {"code":"RequestHeaderFieldsTooLarge"'), answer
