"""A port's reading while an upgrade waits for its connect event, and its request-head deadlines.

The bytes held for the upgrade are bounded: past :data:`HOLD_BYTES` the port stops reading;
the pause ends when the upgrade is decided, unless the new reader (or aiohttp) asked for one
of its own meanwhile. Fakes stand in for the transport and aiohttp's request handler.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hubbub.config import load_config
from hubbub.errors import ConfigError
from hubbub.limits import HOLD_BYTES
from hubbub.server.port import Port, RequestHeads
from tests.server.test_port_flow import FakeHttp, FakeTransport


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
    port = Port(lambda: http)  # type: ignore[arg-type]
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


class HeadPort:
    """A port as the deadlines see it."""

    def __init__(self, reading: bool = True) -> None:
        self.reading = reading
        self.timed_out: list[float] = []

    def is_reading(self) -> bool:
        return self.reading

    def head_timed_out(self, timeout: float) -> None:
        self.timed_out.append(timeout)


async def test_a_head_not_complete_in_time_times_out_and_a_complete_one_does_not() -> None:
    heads = RequestHeads(0.05)
    slow, quick, idle = HeadPort(), HeadPort(), HeadPort()
    heads.started(slow)  # type: ignore[arg-type]
    heads.started(quick)  # type: ignore[arg-type]
    heads.complete(quick)  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    assert slow.timed_out == [0.05] and quick.timed_out == [] and idle.timed_out == []
    heads.close()


async def test_a_later_byte_of_the_same_head_does_not_restart_its_time() -> None:
    heads = RequestHeads(0.1)
    port = HeadPort()
    for _ in range(50):  # a byte every 0.02 s: 1 s in all, if nothing stopped it
        if port.timed_out:
            break  # the connection is closed
        heads.started(port)  # type: ignore[arg-type]
        await asyncio.sleep(0.02)
    assert port.timed_out == [0.1]
    heads.close()


async def test_while_the_server_does_not_read_a_head_has_no_deadline() -> None:
    heads = RequestHeads(0.05)
    port = HeadPort(reading=False)  # paused: the client does not read its answers
    heads.started(port)  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    assert port.timed_out == []
    port.reading = True
    await asyncio.sleep(0.2)
    assert port.timed_out == [0.05]
    heads.close()


@pytest.mark.parametrize("value", [0, -1, "15", True])
def test_the_head_timeout_setting_is_a_positive_number(tmp_path: Any, value: object) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f"[server]\nrequest_head_timeout_seconds = {_toml(value)}\n")
    with pytest.raises(ConfigError, match=r"server\.request_head_timeout_seconds"):
        load_config(str(path), env={})


def test_the_head_timeout_setting_defaults_to_15_seconds(tmp_path: Any) -> None:
    assert load_config(None, env={}).request_head_timeout_seconds == 15
    path = tmp_path / "ok.toml"
    path.write_text("[server]\nrequest_head_timeout_seconds = 2.5\n")
    assert load_config(str(path), env={}).request_head_timeout_seconds == 2.5


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, str) else str(value)
