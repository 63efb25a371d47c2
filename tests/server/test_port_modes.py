"""A port's modes (:class:`hubbub.server.port.Mode`): each transition, and what each mode lets go.

Fakes stand in for the transport, aiohttp's request handler and the stream; the sniffer is
the real one.
"""

from __future__ import annotations

import asyncio

from hubbub.server.port import Mode, Port
from tests.server.test_port_flow import FakeHttp, FakeTransport, StubLane
from tests.server.test_port_hold import FakeStream
from tests.server.test_sniffer import request


class RecordingHttp(FakeHttp):
    """aiohttp's side, recording how its connection ended."""

    def __init__(self) -> None:
        super().__init__()
        self.lost: list[Exception | None] = []
        self.made = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


def mode(port: Port) -> Mode:
    """The port's mode, read afresh (mypy would keep an earlier comparison's narrowing)."""
    return port.mode


def port(lane: bool = False) -> tuple[Port, FakeTransport, RecordingHttp, StubLane]:
    http, stub = RecordingHttp(), StubLane()
    the_port = Port(lambda: http, stub if lane else None)  # type: ignore[arg-type]
    transport = FakeTransport(the_port, 1 << 20)
    the_port.connection_made(transport)
    return the_port, transport, http, stub


def test_with_the_lane_a_port_sniffs_until_a_request_for_aiohttp() -> None:
    p, transport, http, lane = port(lane=True)
    assert mode(p) is Mode.SNIFFING and http.made == 0
    p.data_received(request(b"a"))
    assert mode(p) is Mode.SNIFFING and transport.written == [b"202"]
    p.data_received(request(b"no"))
    assert mode(p) is Mode.HTTP and http.made == 1
    assert len(lane.forgotten) == 1  # the lane lets go of the connection
    assert p.get_protocol() is http


def test_without_the_lane_aiohttp_reads_from_the_start() -> None:
    p, _, http, _ = port()
    assert mode(p) is Mode.HTTP and http.made == 1
    p.data_received(b"GET / HTTP/1.1\r\n")
    assert http.received == [b"GET / HTTP/1.1\r\n"]


def test_holding_then_refused_goes_back_to_http() -> None:
    p, _, http, _ = port()
    p.hold()
    assert mode(p) is Mode.HOLDING
    p.data_received(b"early")
    assert http.received == []
    p.release()
    assert mode(p) is Mode.HTTP and http.received == [b"early"]
    p.release()  # twice is harmless
    assert http.received == [b"early"]


def test_the_hand_over_lets_aiohttp_go() -> None:
    p, transport, http, _ = port()
    p.hold()
    p.data_received(b"frame")
    stream = FakeStream(p)
    assert p.hand_over(stream) is transport
    assert mode(p) is Mode.STREAM and stream.fed == [b"frame"]
    assert http.lost == [None]  # aiohttp sees its connection end
    assert p.get_protocol() is p and p.is_closing()
    p.write(b"late answer from aiohttp")  # dropped: the connection is the stream's
    assert transport.written == []
    p.data_received(b"more")
    assert stream.fed == [b"frame", b"more"] and http.received == []


def test_a_connection_lost_in_each_mode_tells_whoever_reads_it() -> None:
    sniffing, _, http, lane = port(lane=True)
    sniffing.connection_lost(None)
    assert mode(sniffing) is Mode.CLOSED and http.lost == [] and len(lane.forgotten) == 1

    holding, _, http, _ = port()
    holding.hold()
    error = OSError("reset")
    holding.connection_lost(error)
    assert mode(holding) is Mode.CLOSED and http.lost == [error]

    streaming, _, http, _ = port()
    lost: list[bool] = []
    stream = FakeStream(streaming)
    stream.lost = lambda: lost.append(True)  # type: ignore[method-assign]
    streaming.hand_over(stream)
    streaming.connection_lost(None)
    assert mode(streaming) is Mode.CLOSED and lost == [True] and http.lost == [None]
    streaming.data_received(b"after")  # nobody reads any more
    assert stream.fed == []
