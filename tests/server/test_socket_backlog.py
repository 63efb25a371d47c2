"""An upgraded socket's reading without sockets: an idle socket holds no task, messages reach the
handler in order from a task that ends once the socket is idle, the close handshake ends it."""

from __future__ import annotations

import asyncio
import struct

from aiohttp import WSMsgType

from hubbub.server import socket
from tests.server.test_masks import FakePort, Recorder, frame


class Slow(Recorder):
    """A handler that takes a loop pass or two per message."""

    async def message(self, payload: bytes, binary: bool) -> None:
        await asyncio.sleep(0)
        await super().message(payload, binary)


def started(handler: Recorder) -> socket.UpgradedSocket:
    loop = asyncio.get_running_loop()
    ws = socket.UpgradedSocket(FakePort(), 20.0, 1 << 20, loop)  # type: ignore[arg-type]
    ws.outlet = handler  # type: ignore[assignment]
    ws.start(handler, handler)  # type: ignore[arg-type]
    return ws


async def test_an_idle_socket_has_no_task_and_a_ping_is_answered_without_one() -> None:
    handler = Recorder()
    ws = started(handler)
    ws.feed(frame(0x9, b"hi"))
    assert ws._task is None and ws._backlog is None
    assert handler.sent == [b"\x8a\x02hi"]
    ws.feed(frame(0xA, b""))  # a pong: a sign of life only
    assert ws._task is None and handler.sent == [b"\x8a\x02hi"]


async def test_messages_reach_the_handler_in_order_from_a_task_that_ends_when_idle() -> None:
    handler = Slow()
    ws = started(handler)
    ws.feed(frame(0x1, b"one") + frame(0x9, b"") + frame(0x2, b"two"))
    assert ws._task is not None
    ws.feed(frame(0x1, b"three"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert handler.got == [
        (WSMsgType.TEXT, b"one"),
        (WSMsgType.BINARY, b"two"),
        (WSMsgType.TEXT, b"three"),
    ]
    assert handler.sent == [b"\x8a\x00"]  # the ping, answered in its turn
    assert ws._task is not None and ws._backlog is None  # a socket in use keeps its task
    ws.ping(b"p")  # a keep-alive tick, the client heard from within the interval
    await asyncio.sleep(0)
    assert ws._task is not None
    ws.last_seen -= ws.interval  # silent for a whole interval
    ws.ping(b"p")
    for _ in range(3):
        await asyncio.sleep(0)
    assert ws._task is None and ws._backlog is None  # idle: no task
    ws.feed(frame(0x1, b"four"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert handler.got[-1] == (WSMsgType.TEXT, b"four")


async def test_the_clients_close_is_answered_and_ends_the_socket() -> None:
    handler = Recorder()
    ws = started(handler)
    ws.feed(frame(0x1, b"last") + frame(0x8, struct.pack("!H", 1000)))
    await asyncio.wait_for(handler.done.wait(), 5)
    assert handler.got == [(WSMsgType.TEXT, b"last")]
    assert handler.closes == [1000] and ws.close_code == 1000


async def test_messages_before_start_wait_for_the_handler() -> None:
    loop = asyncio.get_running_loop()
    ws = socket.UpgradedSocket(FakePort(), 20.0, 1 << 20, loop)  # type: ignore[arg-type]
    handler = Recorder()
    ws.outlet = handler  # type: ignore[assignment]
    ws.feed(frame(0x1, b"early") + frame(0x9, b""))
    assert handler.got == [] and handler.sent == []
    ws.start(handler, handler)  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.sleep(0)
    assert handler.got == [(WSMsgType.TEXT, b"early")]
    assert handler.sent == [b"\x8a\x00"]


async def test_a_socket_not_to_be_read_ends_with_the_clients_close() -> None:
    loop = asyncio.get_running_loop()
    ws = socket.UpgradedSocket(FakePort(), 20.0, 1 << 20, loop)  # type: ignore[arg-type]
    handler = Recorder()
    ws.outlet = handler  # type: ignore[assignment]
    ws.close(1008, "no")
    ws.start(handler, None)  # type: ignore[arg-type]
    ws.feed(frame(0x1, b"ignored"))
    assert ws._state is socket._DRAINING
    ws.feed(frame(0x8, struct.pack("!H", 1000)))
    assert ws._state is socket._ENDED
    assert handler.got == []


async def test_the_end_of_the_stream_ends_an_idle_socket() -> None:
    handler = Recorder()
    ws = started(handler)
    ws.lost()
    assert handler.done.is_set() and ws._state is socket._ENDED
