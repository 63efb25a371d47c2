"""The node's membership seam: every membership change, of every origin, reaches the engine.

A recording engine (the memory engine, with every interest and presence call written to one
log) sits under a real node and service; each test drives one origin and reads the log.
"""

from __future__ import annotations

import asyncio

import pytest

from hubbub.broker.base import Interest
from hubbub.broker.memory import MemoryBroker, MemoryPresence
from hubbub.config import Config
from hubbub.core.commands import Target
from hubbub.core.outlet import SequencedFrames, SharedFrames
from hubbub.core.state import Connection, HubRegistry
from hubbub.node import Node
from hubbub.protocol.codec import JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL
from hubbub.protocol.messages import JoinGroupMessage, LeaveGroupMessage
from hubbub.protocol.registry import codec_for
from hubbub.service import Service
from hubbub.types import ConnectionId, GroupName, HubName, UserId

HUB = HubName("seam")
KEY = "k" * 40
G, H = GroupName("g"), GroupName("h")

Log = list[tuple[str, ...]]


class RecordingBroker(MemoryBroker):
    def __init__(self, log: Log) -> None:
        super().__init__()
        self.log = log

    def subscribe(self, interest: Interest) -> None:
        self.log.append(("subscribe", interest.target.value, interest.name))
        super().subscribe(interest)

    def unsubscribe(self, interest: Interest) -> None:
        self.log.append(("unsubscribe", interest.target.value, interest.name))
        super().unsubscribe(interest)

    async def sync(self) -> None:
        self.log.append(("sync",))


class RecordingPresence(MemoryPresence):
    def __init__(self, hubs: HubRegistry, log: Log) -> None:
        super().__init__(hubs)
        self.log = log

    def add_connection(
        self, hub: HubName, connection_id: ConnectionId, user_id: UserId | None
    ) -> None:
        self.log.append(("add", connection_id, user_id or ""))

    def remove_connection(
        self, hub: HubName, connection_id: ConnectionId, user_id: UserId | None
    ) -> None:
        self.log.append(("remove", connection_id, user_id or ""))

    def join(self, hub: HubName, group: GroupName, connection_id: ConnectionId) -> None:
        self.log.append(("join", group, connection_id))

    def leave(self, hub: HubName, group: GroupName, connection_id: ConnectionId) -> None:
        self.log.append(("leave", group, connection_id))


class LogOutlet:
    """Writes each frame's kind to the engine's log, to show what came before an answer."""

    def __init__(self, log: Log) -> None:
        self.log = log

    def send(self, frame: bytes) -> None:
        if b'"type":"ack"' in frame:
            self.log.append(("ack",))

    def share(self, shared: SharedFrames) -> bool:
        return False

    def send_expiring(self, frame: bytes, deadline: float) -> None:
        self.send(frame)

    def share_sequenced(self, frames: SequencedFrames, first: int) -> bool:
        return False

    def close(self, code: int, reason: str) -> None:
        self.log.append(("close", str(code)))


class Seam:
    def __init__(self) -> None:
        self.log: Log = []
        hubs = HubRegistry()
        self.broker = RecordingBroker(self.log)
        presence = RecordingPresence(hubs, self.log)
        config = Config(access_keys=(KEY,), session_timeout_seconds=0.05)
        self.node = Node(config, self.broker, hubs=hubs, presence=presence)
        self.service = Service(config, self.broker, presence)

    def connect(
        self,
        name: str,
        user: str | None = None,
        groups: tuple[GroupName, ...] = (),
        subprotocol: str = JSON_SUBPROTOCOL,
    ) -> Connection:
        connection = self.node.connect(
            HUB,
            UserId(user) if user else None,
            ("webpubsub.joinLeaveGroup",),
            groups,
            codec_for(subprotocol),
            LogOutlet(self.log),
            connection_id=ConnectionId(name),
        )
        return connection

    def take(self) -> Log:
        log = list(self.log)
        self.log.clear()
        return log


@pytest.fixture
async def seam() -> Seam:
    s = Seam()
    await s.broker.start(s.node)
    return s


async def test_token_and_connect_event_groups(seam: Seam) -> None:
    """The groups a connection opens with (the token's, as the connect handler amended them:
    one parameter of ``Node.connect``) are joined through the seam, after its registration."""
    seam.connect("a", "u", groups=(G, H))
    assert seam.take() == [
        ("add", "a", "u"),
        ("subscribe", "hub", ""),
        ("subscribe", "user", "u"),
        ("join", "g", "a"),
        ("subscribe", "group", "g"),
        ("join", "h", "a"),
        ("subscribe", "group", "h"),
    ]
    seam.connect("b", "u", groups=(G,))
    assert seam.take() == [("add", "b", "u"), ("join", "g", "b")]  # interests held already


async def test_client_join_and_leave(seam: Seam) -> None:
    """A client's joinGroup/leaveGroup tells the engine, and syncs before the ack."""
    a = seam.connect("a")
    seam.take()
    await seam.node.handle_client_message(a, JoinGroupMessage("g", 1))
    assert seam.take() == [("join", "g", "a"), ("subscribe", "group", "g"), ("sync",), ("ack",)]
    await seam.node.handle_client_message(a, LeaveGroupMessage("g", 2))
    assert seam.take() == [("leave", "g", "a"), ("unsubscribe", "group", "g"), ("sync",), ("ack",)]


async def test_rest_connection_group_commands(seam: Seam) -> None:
    """REST add/remove of a connection go through the seam, synced before they answer."""
    seam.connect("a")
    seam.connect("b", groups=(G,))
    seam.take()
    await seam.service.add_connection_to_group(HUB, G, ConnectionId("a"))
    assert seam.take() == [("join", "g", "a"), ("sync",)]
    await seam.service.remove_connection_from_group(HUB, G, ConnectionId("a"))
    await seam.service.remove_connection_from_group(HUB, None, ConnectionId("b"))
    assert seam.take() == [
        ("leave", "g", "a"),
        ("sync",),
        ("leave", "g", "b"),
        ("unsubscribe", "group", "g"),
        ("sync",),
    ]


async def test_rest_user_group_commands(seam: Seam) -> None:
    seam.connect("a", "u")
    seam.connect("b", "u")
    seam.take()
    await seam.service.add_user_to_group(HUB, G, UserId("u"))
    assert seam.take() == [
        ("join", "g", "a"),
        ("subscribe", "group", "g"),
        ("join", "g", "b"),
        ("sync",),
    ]
    await seam.service.remove_user_from_group(HUB, None, UserId("u"))
    assert seam.take() == [
        ("leave", "g", "a"),
        ("leave", "g", "b"),
        ("unsubscribe", "group", "g"),
        ("sync",),
    ]


async def test_rest_groups_by_filter(seam: Seam) -> None:
    seam.connect("a", "alice")
    seam.connect("b", "bob")
    seam.take()
    await seam.service.groups_by_filter(HUB, [G, H], "userId eq 'alice'", add=True)
    assert seam.take() == [
        ("join", "g", "a"),
        ("subscribe", "group", "g"),
        ("join", "h", "a"),
        ("subscribe", "group", "h"),
        ("sync",),
    ]
    await seam.service.groups_by_filter(HUB, [G], None, add=False)
    assert seam.take() == [("leave", "g", "a"), ("unsubscribe", "group", "g"), ("sync",)]


async def test_close_by_rest(seam: Seam) -> None:
    """A REST close leaves the groups, unregisters and drops the interests it held last."""
    seam.connect("a", "u", groups=(G,))
    seam.connect("b", "v")
    seam.take()
    await seam.service.close(HUB, Target.CONNECTION, "a", None)
    assert seam.take() == [
        ("close", "1000"),
        ("leave", "g", "a"),
        ("unsubscribe", "group", "g"),
        ("remove", "a", "u"),
        ("unsubscribe", "user", "u"),
        ("sync",),
    ]
    await seam.service.close(HUB, Target.HUB, "", None)
    assert seam.take() == [
        ("close", "1000"),
        ("remove", "b", "v"),
        ("unsubscribe", "user", "v"),
        ("unsubscribe", "hub", ""),
        ("sync",),
    ]


async def test_socket_close(seam: Seam) -> None:
    """A socket that closes ends a plain connection through the seam, once."""
    a = seam.connect("a", "u", groups=(G,))
    seam.take()
    seam.node.socket_closed(a, a.outlet, 1000)
    seam.node.socket_closed(a, a.outlet, 1000)
    assert seam.take() == [
        ("leave", "g", "a"),
        ("unsubscribe", "group", "g"),
        ("remove", "a", "u"),
        ("unsubscribe", "user", "u"),
        ("unsubscribe", "hub", ""),
    ]


async def test_session_expiry(seam: Seam) -> None:
    """A detached reliable session stays registered, and leaves through the seam on expiry."""
    a = seam.connect("a", groups=(G,), subprotocol=JSON_RELIABLE_SUBPROTOCOL)
    seam.take()
    seam.node.socket_closed(a, a.outlet, 1006)
    assert seam.take() == []
    await asyncio.sleep(0.2)
    assert a.ended and a.close_reason == "Session expired."
    assert seam.take() == [
        ("leave", "g", "a"),
        ("unsubscribe", "group", "g"),
        ("remove", "a", ""),
        ("unsubscribe", "hub", ""),
    ]


async def test_shut_down(seam: Seam) -> None:
    seam.connect("a", groups=(G,))
    seam.take()
    assert seam.node.shut_down() == 1
    assert seam.take() == [
        ("close", "1001"),
        ("leave", "g", "a"),
        ("unsubscribe", "group", "g"),
        ("remove", "a", ""),
        ("unsubscribe", "hub", ""),
    ]


async def test_a_join_after_the_close_changes_nothing(seam: Seam) -> None:
    """A client's join that arrives after a REST close neither joins nor subscribes."""
    a = seam.connect("a")
    await seam.service.close(HUB, Target.CONNECTION, "a", None)
    seam.take()
    await seam.node.handle_client_message(a, JoinGroupMessage("g", 1))
    assert ("join", "g", "a") not in seam.take()
    assert seam.node.hubs.get(HUB) is None
