"""A port's reading while an upgrade waits for its connect event.

The bytes held for the upgrade are bounded: past :data:`HOLD_BYTES` the port stops reading;
the pause ends when the upgrade is decided, unless the new reader (or aiohttp) asked for one
of its own meanwhile. Fakes stand in for the transport and aiohttp's request handler.
"""

from __future__ import annotations

from test_port_flow import FakeHttp, FakeTransport

from hubbub.server.port import HOLD_BYTES, Port


class FakeStream:
    """The WebSocket reader as the port sees it; pauses reading when told to, like its queue."""

    def __init__(self, port: Port, pause_after: int | None = None) -> None:
        self.port = port
        self.fed: list[bytes] = []
        self.pause_after = pause_after

    def feed(self, data: bytes) -> None:
        self.fed.append(data)
        if self.pause_after is not None and sum(map(len, self.fed)) >= self.pause_after:
            self.port.pause_reading()

    def lost(self) -> None:
        pass


def _port() -> tuple[Port, FakeTransport, FakeHttp]:
    http = FakeHttp()
    port = Port(lambda: http)  # type: ignore[arg-type, return-value]
    transport = FakeTransport(port, 1 << 20)
    port.connection_made(transport)
    return port, transport, http


def test_held_bytes_pause_reading_at_the_bound() -> None:
    port, transport, _ = _port()
    port.hold()
    port.data_received(b"x" * (HOLD_BYTES - 1))
    assert transport.reading
    port.data_received(b"x")
    assert not transport.reading


def test_the_hand_over_feeds_what_was_held_and_reads_again() -> None:
    port, transport, http = _port()
    port.hold()
    chunks = [b"a" * 40_000, b"b" * 40_000]
    for chunk in chunks:
        port.data_received(chunk)
    assert not transport.reading
    stream = FakeStream(port)
    port.hand_over(stream)
    assert stream.fed == chunks and transport.reading
    assert http.received == []


def test_a_pause_the_reader_asks_for_during_the_hand_over_stays() -> None:
    port, transport, _ = _port()
    port.hold()
    port.data_received(b"a" * HOLD_BYTES)
    stream = FakeStream(port, pause_after=1)
    port.hand_over(stream)
    assert not transport.reading  # the reader's queue is full: its pause, not the hold's
    port.resume_reading()
    assert transport.reading


def test_a_refused_upgrade_gives_aiohttp_what_was_held_and_reads_again() -> None:
    port, transport, http = _port()
    port.hold()
    port.data_received(b"a" * HOLD_BYTES)
    port.release()
    assert http.received == [b"a" * HOLD_BYTES] and transport.reading


def test_aiohttp_pausing_and_resuming_during_the_hold_does_not_end_its_pause() -> None:
    port, transport, _ = _port()
    port.hold()
    port.data_received(b"a" * HOLD_BYTES)
    port.pause_reading()
    port.resume_reading()
    assert not transport.reading  # still held past the bound
    port.release()
    assert transport.reading
