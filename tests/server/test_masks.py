"""Client frames without a mask (RFC 6455 §5.1): found in any split of the stream, then 1002.

:class:`MaskCheck` reads frame headers only; the socket feeds aiohttp's frame reader what comes
before the first unmasked frame and then fails the reader's queue. Both of aiohttp's readers
(the C one and the pure-Python one) must hand out the frames before it, then the error.
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

import aiohttp._websocket.reader_c as reader_c
import pytest
from aiohttp import WSCloseCode, WSMsgType
from aiohttp._websocket import reader_py

from hubbub.server import socket
from hubbub.server.socket import MaskCheck


def frame(opcode: int, payload: bytes, *, mask: bool = True, fin: bool = True) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask else 0
    if n < 126:
        head = bytes((first, bit | n))
    elif n < 65536:
        head = bytes((first, bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, bit | 127)) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


MASKED = [
    frame(0x1, b""),
    frame(0x1, b"a" * 125),
    frame(0x2, b"b" * 126),
    frame(0x9, b"ping"),
    frame(0x1, b"c" * 65535),
    frame(0x2, b"d" * 65536),
    frame(0x1, b"first half ", fin=False),
    frame(0x0, b"second half"),
    frame(0xA, b""),
]
GOOD = b"".join(MASKED)


def split(data: bytes, step: int) -> list[bytes]:
    return [data[i : i + step] for i in range(0, len(data), step)]


def first_unmasked(chunks: list[bytes]) -> int:
    """The stream offset MaskCheck reports, or -1."""
    check, offset = MaskCheck(), 0
    for chunk in chunks:
        cut = check.unmasked(chunk)
        if cut >= 0:
            return offset + cut
        offset += len(chunk)
    return -1


@pytest.mark.parametrize("step", [1, 2, 3, 7, 13, 1000, 70000, len(GOOD)])
def test_masked_frames_pass_in_any_split(step: int) -> None:
    assert first_unmasked(split(GOOD, step)) == -1


@pytest.mark.parametrize("length", [0, 5, 125, 126, 300, 65536])
@pytest.mark.parametrize("step", [1, 2, 3, 5, 11, 4096])
def test_the_first_unmasked_frame_is_found_in_any_split(length: int, step: int) -> None:
    bad = frame(0x1, b"x" * length, mask=False)
    at = first_unmasked(split(GOOD + bad + GOOD, step))
    # The header's second byte decides: when a read ends right after the first byte, that
    # byte was passed on already, and the cut is the start of the next read.
    alone = (len(GOOD) + 1) % step == 0
    assert at == len(GOOD) + (1 if alone else 0)


def test_an_unmasked_header_cut_after_its_first_byte_is_found_in_the_next_read() -> None:
    bad = frame(0x1, b"hi", mask=False)
    check = MaskCheck()
    assert check.unmasked(GOOD + bad[:1]) == -1
    assert check.unmasked(bad[1:]) == 0


def test_a_payload_that_looks_like_an_unmasked_header_is_not_read_as_one() -> None:
    payload = bytes((0x81, 0x05)) * 100  # unmasked headers, as payload bytes
    key = b"\x00\x00\x00\x00"  # a zero mask keeps them visible on the wire
    data = bytes((0x82, 0x80 | 126)) + struct.pack("!H", len(payload)) + key + payload
    assert first_unmasked(split(data * 3, 7)) == -1


class FakePort:
    """What the socket's read pause and hand-over need of a port."""

    def __init__(self) -> None:
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def hand_over(self, stream: Any) -> Any:
        return FakeTransport()


class FakeTransport:
    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        pass

    def abort(self) -> None:
        pass


class Recorder:
    """The socket's handler, outlet and owner at once: records what reaches each."""

    name = "c"

    def __init__(self) -> None:
        self.got: list[tuple[WSMsgType, bytes]] = []
        self.sent: list[bytes] = []
        self.closes: list[int] = []
        self.done = asyncio.Event()

    async def message(self, payload: bytes, binary: bool) -> None:
        self.got.append((WSMsgType.BINARY if binary else WSMsgType.TEXT, payload))

    def closed(self, code: int | None) -> None:
        self.done.set()

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self, code: int, reason: str) -> None:
        self.closes.append(code)
        self.done.set()

    def abort(self) -> None:
        self.done.set()

    def mark_closed(self) -> None:
        pass

    def ended(self, socket: Any) -> None:
        pass


@pytest.fixture(params=["c", "python"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Which of aiohttp's readers the socket uses."""
    module = reader_c if request.param == "c" else reader_py
    monkeypatch.setattr(socket, "WebSocketReader", module.WebSocketReader)
    monkeypatch.setattr(socket, "WebSocketDataQueue", module.WebSocketDataQueue)
    return str(request.param)


def upgraded() -> tuple[socket.UpgradedSocket, Recorder]:
    loop = asyncio.get_running_loop()
    ws = socket.UpgradedSocket(FakePort(), 20.0, 1024 * 1024, loop)  # type: ignore[arg-type]
    recorder = Recorder()
    ws.outlet = recorder  # type: ignore[assignment]
    ws.start(recorder, recorder)  # type: ignore[arg-type]
    return ws, recorder


@pytest.mark.parametrize("step", [1, 9, 4096, 1 << 20])
async def test_frames_before_an_unmasked_one_are_read_then_the_reader_fails_1002(
    reader: str, step: int
) -> None:
    ws, got = upgraded()
    before = [frame(0x1, b"one"), frame(0x2, b"two" * 50_000), frame(0x9, b"")]
    after = frame(0x1, b"never read")
    for chunk in split(b"".join(before) + frame(0x1, b"bad", mask=False) + after, step):
        ws.feed(chunk)
    await asyncio.wait_for(got.done.wait(), 5)
    assert [kind for kind, _ in got.got] == [WSMsgType.TEXT, WSMsgType.BINARY]
    assert got.got[1][1] == b"two" * 50_000
    assert got.sent == [b"\x8a\x00"]  # the ping's pong
    assert got.closes == [WSCloseCode.PROTOCOL_ERROR]


async def test_a_full_queue_still_hands_out_every_frame_before_the_unmasked_one(
    reader: str,
) -> None:
    # Far more than the socket keeps before it pauses reading: every one is handled, in order.
    ws, got = upgraded()
    messages = [b"%d" % i * 500 for i in range(2000)]
    ws.feed(b"".join(frame(0x1, m) for m in messages) + frame(0x1, b"bad", mask=False))
    await asyncio.wait_for(got.done.wait(), 5)
    assert [data for _, data in got.got] == messages
    assert got.closes == [WSCloseCode.PROTOCOL_ERROR]
