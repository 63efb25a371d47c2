"""Messages with a TTL on a connected socket whose client is behind (``CorkedOutlet``).

A real corked outlet over a transport whose unsent buffer the test fills and drains: a message
with a TTL that finds unsent bytes waits in the outlet, with what comes after it, and is
dropped once its deadline passes; never written late, never reordered.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from hubbub.closecodes import CLOSE_SLOW_CLIENT
from hubbub.core.commands import Publication, Target
from hubbub.core.expiring import deliver_expiring
from hubbub.core.roles import RoleSet
from hubbub.core.state import Connection, HubRegistry
from hubbub.protocol.codec import JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL
from hubbub.protocol.messages import DataType, Payload
from hubbub.protocol.registry import codec_for
from hubbub.server.writer import HOLD_POLL_SECONDS, CorkedOutlet, Flusher
from hubbub.types import ConnectionId, GroupName, HubName

LIMIT = 1 << 16


class SlowTransport(asyncio.Transport):
    """Writes go to ``unsent`` while the client is behind, else straight to ``received``."""

    def __init__(self) -> None:
        super().__init__()
        self.unsent = b""
        self.received = b""
        self.behind = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.behind or self.unsent:
            self.unsent += bytes(data)
        else:
            self.received += bytes(data)

    def writelines(self, list_of_data: object) -> None:
        for data in list_of_data:  # type: ignore[attr-defined]
            self.write(data)

    def drain(self) -> None:
        """The client reads everything unsent, and keeps up from now on."""
        self.received += self.unsent
        self.unsent = b""
        self.behind = False

    def is_closing(self) -> bool:
        return self.aborted

    def get_write_buffer_size(self) -> int:
        return len(self.unsent)

    def abort(self) -> None:
        self.aborted = True


class Setup:
    def __init__(self) -> None:
        self.transport = SlowTransport()
        self.flusher = Flusher(asyncio.get_running_loop())
        self.closes: list[int] = []
        self.outlet = CorkedOutlet(
            self.transport, self.flusher, LIMIT, lambda code, reason: self.closes.append(code)
        )

    def behind(self, backlog: bytes = b"[backlog]") -> None:
        self.transport.behind = True
        self.transport.write(backlog)

    async def settle(self, seconds: float = 0.0) -> None:
        await asyncio.sleep(seconds)
        await asyncio.sleep(HOLD_POLL_SECONDS * 3)


async def test_a_client_that_keeps_up_gets_it_at_once() -> None:
    s = Setup()
    s.outlet.send_expiring(b"[ttl]", time.monotonic() + 10)
    s.outlet.flush()
    assert s.transport.received == b"[ttl]"


async def test_a_message_past_its_deadline_is_dropped_and_the_rest_kept_in_order() -> None:
    s = Setup()
    s.behind()
    s.outlet.send(b"[a]")
    s.outlet.send_expiring(b"[short]", time.monotonic() + 0.05)
    s.outlet.send(b"[b]")
    s.outlet.send_expiring(b"[long]", time.monotonic() + 10)
    s.outlet.send(b"[c]")
    await s.settle(0.1)
    assert s.transport.unsent == b"[backlog]"  # the rest ([a] too, queued before) waits
    s.transport.drain()
    await s.settle()
    assert s.transport.received == b"[backlog][a][b][long][c]"


async def test_a_message_within_its_deadline_is_written_once_the_client_catches_up() -> None:
    s = Setup()
    s.behind()
    s.outlet.send_expiring(b"[ttl]", time.monotonic() + 10)
    s.outlet.send(b"[after]")
    await s.settle()
    s.transport.drain()
    await s.settle()
    assert s.transport.received == b"[backlog][ttl][after]"
    s.outlet.send(b"[later]")  # holding is over: straight through
    s.outlet.flush()
    assert s.transport.received.endswith(b"[later]")


async def test_a_close_writes_the_live_held_frames_first() -> None:
    s = Setup()
    s.behind()
    s.outlet.send_expiring(b"[gone]", time.monotonic() + 0.01)
    s.outlet.send_expiring(b"[kept]", time.monotonic() + 10)
    await asyncio.sleep(0.03)
    s.outlet.close(1000, "bye")
    assert s.transport.unsent == b"[backlog][kept]"
    assert s.closes == [1000]


async def test_held_frames_count_toward_the_slow_client_bound() -> None:
    s = Setup()
    s.behind()
    s.outlet.send_expiring(b"x" * LIMIT, time.monotonic() + 10)
    assert s.closes == [CLOSE_SLOW_CLIENT]
    assert s.outlet.closed


@pytest.mark.parametrize("subprotocol", [JSON_SUBPROTOCOL, JSON_RELIABLE_SUBPROTOCOL])
async def test_a_rest_message_with_a_ttl_is_not_written_late(subprotocol: str) -> None:
    s = Setup()
    hubs = HubRegistry()
    hub = hubs.ensure(HubName("h"))
    codec = codec_for(subprotocol)
    connection = Connection(ConnectionId("c"), hub.name, None, RoleSet(), codec, s.outlet)
    hub.add(connection)
    hub.join(connection, GroupName("g"))
    s.behind()

    def publish(text: str, ttl: float) -> None:
        payload = Payload(DataType.TEXT, text.encode())
        expires_at = time.time() + ttl
        publication = Publication(
            hub.name, Target.GROUP, "g", payload, from_group=True, expires_at=expires_at
        )
        assert deliver_expiring(hubs, publication) == 1

    publish("short", 0.05)
    publish("long", 10)
    await s.settle(0.1)
    s.transport.drain()
    await s.settle()
    received = s.transport.received.decode("latin-1")  # WebSocket frame headers
    assert "short" not in received and "long" in received
    if codec.reliable:
        assert connection.expiring is not None and sorted(connection.expiring) == [1, 2]
