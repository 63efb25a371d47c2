"""Messages with a TTL on their way (``hubbub.core.expiring``): dropped on arrival past their
deadline, noted where a reliable session keeps them, not resent once expired."""

from __future__ import annotations

import time

import orjson

from hubbub.core.commands import Publication, Target
from hubbub.core.expiring import attach_live, deliver_expiring, forget_acked, local_deadline
from hubbub.core.fanout import deliver_publication
from hubbub.core.outlet import SequencedFrames, SharedFrames
from hubbub.core.roles import RoleSet
from hubbub.core.state import Connection, HubRegistry
from hubbub.protocol.codec import JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL
from hubbub.protocol.messages import DataType, Payload
from hubbub.protocol.registry import codec_for
from hubbub.types import ConnectionId, GroupName, HubName

HUB = HubName("h")
G = GroupName("g")


class Outlet:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def share(self, shared: SharedFrames) -> bool:
        return False

    def send_expiring(self, frame: bytes, deadline: float) -> None:
        self.send(frame)

    def share_sequenced(self, frames: SequencedFrames, first: int) -> bool:
        return False

    def close(self, code: int, reason: str) -> None:
        pass


def members(*subprotocols: str) -> tuple[HubRegistry, list[Connection]]:
    hubs = HubRegistry()
    hub = hubs.ensure(HUB)
    connections = []
    for i, subprotocol in enumerate(subprotocols):
        connection = Connection(
            ConnectionId(f"c{i}"), HUB, None, RoleSet(), codec_for(subprotocol), Outlet()
        )
        hub.add(connection)
        hub.join(connection, G)
        connections.append(connection)
    return hubs, connections


def publication(text: str, expires_at: float | None) -> Publication:
    payload = Payload(DataType.TEXT, text.encode())
    return Publication(HUB, Target.GROUP, G, payload, from_group=True, expires_at=expires_at)


def texts(frames: list[bytes]) -> list[str]:
    return [orjson.loads(f[2:])["data"] for f in frames]


def test_a_unix_deadline_becomes_a_local_one() -> None:
    assert local_deadline(1000.5, wall_now=1000.0, monotonic_now=7.0) == 7.5


def test_a_publication_past_its_deadline_reaches_nobody() -> None:
    hubs, (plain, reliable) = members(JSON_SUBPROTOCOL, JSON_RELIABLE_SUBPROTOCOL)
    assert deliver_expiring(hubs, publication("late", time.time() - 0.01)) == 0
    assert isinstance(plain.outlet, Outlet) and isinstance(reliable.outlet, Outlet)
    assert plain.outlet.frames == reliable.outlet.frames == []
    assert reliable.session is not None and reliable.session.next_sequence_id == 1


def test_reliable_copies_are_noted_and_forgotten_when_acknowledged() -> None:
    hubs, (plain, reliable) = members(JSON_SUBPROTOCOL, JSON_RELIABLE_SUBPROTOCOL)
    soon = time.time() + 30
    assert deliver_expiring(hubs, publication("a", soon)) == 2
    assert plain.expiring is None
    assert reliable.expiring is not None and list(reliable.expiring) == [1]
    assert reliable.expiring[1] - time.monotonic() > 29
    assert deliver_expiring(hubs, publication("b", soon)) == 2
    forget_acked(reliable, 1)
    assert list(reliable.expiring) == [2]
    forget_acked(reliable, 5)
    assert reliable.expiring is None


def test_a_recovered_session_gets_only_the_live_copies() -> None:
    hubs, (reliable,) = members(JSON_RELIABLE_SUBPROTOCOL)
    session = reliable.session
    assert session is not None
    for text, ttl in (("first", 0.0), ("short", 1.0), ("kept", 0.0), ("long", 100.0)):
        pub = publication(text, time.time() + ttl if ttl else None)
        (deliver_expiring if ttl else deliver_publication)(hubs, pub)
    session.detach(0.0, 30.0)
    later = time.monotonic() + 2
    assert texts(attach_live(reliable, session, later)) == ["first", "kept", "long"]
    assert len(session) == 4  # the expired copy stays until a later id is acknowledged
    session.detach(0.0, 30.0)
    assert texts(attach_live(reliable, session, later)) == ["first", "kept", "long"]


def test_a_session_without_expiring_copies_is_attached_as_it_is() -> None:
    hubs, (reliable,) = members(JSON_RELIABLE_SUBPROTOCOL)
    session = reliable.session
    assert session is not None
    deliver_expiring(hubs, publication("x", time.time() + 30))
    forget_acked(reliable, 0)
    session.detach(0.0, 30.0)
    assert texts(attach_live(reliable, session, time.monotonic())) == ["x"]
