"""Flow control of a port whose requests the fast lane answers, and its hand-over to aiohttp.

A client that pipelines sends without reading the answers fills the transport's buffer; the
port then stops reading from it. When a request the lane does not take arrives while the buffer
is still full, aiohttp takes the connection over and must learn that writing is paused (it gets
the matching resume later), and reading must go on for it. Fakes stand in for the transport
and aiohttp's request handler; the sniffer is the real one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hubbub.server.fastlane import Sniffer
from hubbub.server.port import Port
from tests.server.test_sniffer import request


class StubLane:
    """Answers every send whose body is not ``no`` with ``202``."""

    def __init__(self) -> None:
        self.forgotten: list[Sniffer] = []

    def sniffer(self, write: Any, close: Any, peer: str | None = None) -> Sniffer:
        return Sniffer(self, write, close, peer)  # type: ignore[arg-type]

    def forget(self, sniffer: Sniffer) -> None:
        self.forgotten.append(sniffer)

    def admit(self, url: bytes, headers: dict[bytes, bytes], *args: object) -> object:
        return url

    def send(self, admitted: object, body: bytes) -> bytes | None:
        return None if body == b"no" else b"202"


class FakeHttp(asyncio.Protocol):
    """aiohttp's request handler as the port sees it; resume without pause fails like aiohttp."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.paused = False

    def data_received(self, data: bytes) -> None:
        self.received.append(data)

    def pause_writing(self) -> None:
        assert not self.paused
        self.paused = True

    def resume_writing(self) -> None:
        assert self.paused, "resume_writing without pause_writing"
        self.paused = False


class FakeTransport(asyncio.Transport):
    """Pauses its protocol's writing once more than ``high`` bytes are unsent, like uvloop."""

    def __init__(self, protocol: Port, high: int) -> None:
        super().__init__()
        self.protocol = protocol
        self.high = high
        self.unsent = 0
        self.written: list[bytes] = []
        self.writing_paused = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))
        self.unsent += len(data)
        if self.unsent > self.high and not self.writing_paused:
            self.writing_paused = True
            self.protocol.pause_writing()

    def drain(self) -> None:
        """The client read everything."""
        self.unsent = 0
        if self.writing_paused:
            self.writing_paused = False
            self.protocol.resume_writing()

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def _port(high: int) -> tuple[Port, FakeTransport, FakeHttp, StubLane]:
    http, lane = FakeHttp(), StubLane()
    port = Port(lambda: http, lane)  # type: ignore[arg-type]
    transport = FakeTransport(port, high)
    port.connection_made(transport)
    return port, transport, http, lane


def test_answers_nobody_reads_pause_reading_until_they_are_read() -> None:
    port, transport, http, _ = _port(high=4)
    port.data_received(request(b"a") + request(b"b") + request(b"c"))
    assert transport.written == [b"202202202"]  # the answers to one read, in one write
    assert not transport.reading
    transport.drain()
    assert transport.reading
    assert http.received == []  # aiohttp never saw this connection


def test_a_pause_during_the_lane_carries_over_to_aiohttp() -> None:
    port, transport, http, lane = _port(high=4)
    handed = request(b"no") + request(b"after")
    port.data_received(request(b"a") + request(b"b") + handed)
    assert transport.written == [b"202202"]
    assert http.received == [handed]
    assert http.paused  # aiohttp knows its writes must wait for the buffer to drain
    assert transport.reading  # reading is aiohttp's to pause from now on
    assert len(lane.forgotten) == 1
    transport.drain()
    assert not http.paused  # the resume matched aiohttp's pause
    port.data_received(request(b"later"))
    assert http.received == [handed, request(b"later")]


def test_no_pause_no_resume_at_the_hand_over() -> None:
    port, transport, http, _ = _port(high=1 << 20)
    port.data_received(request(b"a") + request(b"no"))
    assert http.received == [request(b"no")]
    assert not http.paused
    assert transport.reading
