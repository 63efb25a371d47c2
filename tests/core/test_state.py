"""Hub state and node delivery, without sockets: connections with in-memory outlets."""

from __future__ import annotations

import msgspec
import pytest

from hubbub.broker.memory import MemoryBroker
from hubbub.config import Config
from hubbub.core.commands import (
    AddToGroup,
    AddUserToGroup,
    CheckPermission,
    CloseConnections,
    GrantPermission,
    GroupsByFilter,
    Publication,
    RemoveFromGroup,
    RemoveUserFromGroup,
    RevokePermission,
    Target,
)
from hubbub.core.outlet import SequencedFrames, SharedFrames
from hubbub.core.roles import Permission
from hubbub.core.state import Connection, ConnectionSnapshot
from hubbub.node import Node
from hubbub.protocol.codec import JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL
from hubbub.protocol.messages import DataType, Payload
from hubbub.protocol.registry import codec_for
from hubbub.types import ConnectionId, GroupName, HubName, UserId

HUB = HubName("chat")
KEY = "k" * 40


class ListOutlet:
    """Collects frames and close calls."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def share(self, shared: SharedFrames) -> bool:
        return False  # frames arrive one by one through send

    def send_expiring(self, frame: bytes, deadline: float) -> None:
        self.send(frame)

    def share_sequenced(self, frames: SequencedFrames, first: int) -> bool:
        return False

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def texts(self) -> list[bytes]:
        return [f[2:] if f[1] < 126 else f[4:] for f in self.frames]


@pytest.fixture
def node() -> Node:
    return Node(Config(access_keys=(KEY,)), MemoryBroker())


def connect(
    node: Node,
    user: str | None = None,
    groups: tuple[str, ...] = (),
    roles: tuple[str, ...] = (),
    subprotocol: str | None = JSON_SUBPROTOCOL,
) -> tuple[Connection, ListOutlet]:
    outlet = ListOutlet()
    conn = node.connect(
        HUB,
        UserId(user) if user else None,
        roles,
        [GroupName(g) for g in groups],
        codec_for(subprotocol),
        outlet,
    )
    outlet.frames.clear()
    return conn, outlet


def test_membership_is_per_connection(node: Node) -> None:
    """Removing a connection drops its memberships; an empty group disappears."""
    a, _ = connect(node, "u", groups=("g",))
    b, _ = connect(node, "u")
    hub = node.hubs.ensure(HUB)
    assert set(hub.groups[GroupName("g")]) == {a.id}
    assert set(hub.users[UserId("u")]) == {a.id, b.id}
    node.disconnect(a)
    assert "g" not in hub.groups
    assert set(hub.users[UserId("u")]) == {b.id}
    node.disconnect(b)
    assert node.hubs.get(HUB) is None


async def test_add_user_to_group_touches_current_connections_only(node: Node) -> None:
    """A connection the user opens later is not in the group."""
    a, _ = connect(node, "u")
    assert await node.handle_command(AddUserToGroup(HUB, UserId("u"), GroupName("g"))) == 1
    later, _ = connect(node, "u")
    assert a.groups == {"g"} and later.groups == set()
    assert await node.handle_command(AddUserToGroup(HUB, UserId("nobody"), GroupName("g"))) == 0


async def test_remove_user_from_all_groups(node: Node) -> None:
    """Group None removes the user's connections from every group."""
    a, _ = connect(node, "u", groups=("g1", "g2"))
    await node.handle_command(RemoveUserFromGroup(HUB, UserId("u"), None))
    assert a.groups == set()


async def test_connection_group_commands(node: Node) -> None:
    """Add to and remove from a group by connection id; unknown ids match nothing."""
    a, _ = connect(node)
    assert await node.handle_command(AddToGroup(HUB, a.id, GroupName("g"))) == 1
    assert await node.handle_command(AddToGroup(HUB, ConnectionId("x"), GroupName("g"))) == 0
    assert await node.handle_command(RemoveFromGroup(HUB, a.id, None)) == 1
    assert a.groups == set()


async def test_groups_by_filter(node: Node) -> None:
    """``:addToGroups`` with a filter selects by user; without one, every connection."""
    a, _ = connect(node, "alice")
    b, _ = connect(node, "bob")
    await node.handle_command(GroupsByFilter(HUB, (GroupName("g"),), "userId eq 'alice'", add=True))
    assert a.groups == {"g"} and b.groups == set()
    await node.handle_command(GroupsByFilter(HUB, (GroupName("h"),), None, add=True))
    assert b.groups == {"h"}
    await node.handle_command(GroupsByFilter(HUB, (GroupName("h"),), None, add=False))
    assert a.groups == {"g"} and b.groups == set()


async def test_permissions_roles_grants_and_revokes(node: Node) -> None:
    """Roles grant, REST grants add, revokes win over roles and wildcards."""
    a, _ = connect(node, roles=("webpubsub.sendToGroups.chat-*",))
    assert a.can(Permission.SEND_TO_GROUP, "chat-1")
    assert not a.can(Permission.SEND_TO_GROUP, "other")
    await node.handle_command(GrantPermission(HUB, a.id, Permission.SEND_TO_GROUP, "other"))
    assert a.can(Permission.SEND_TO_GROUP, "other")
    await node.handle_command(RevokePermission(HUB, a.id, Permission.SEND_TO_GROUP, "chat-1"))
    assert not a.can(Permission.SEND_TO_GROUP, "chat-1")
    assert await node.handle_query(CheckPermission(HUB, a.id, Permission.SEND_TO_GROUP, "chat-2"))
    assert not await node.handle_query(
        CheckPermission(HUB, a.id, Permission.SEND_TO_GROUP, "other-2")
    )
    assert not await node.handle_query(
        CheckPermission(HUB, ConnectionId("x"), Permission.SEND_TO_GROUP, None)
    )
    await node.handle_command(GrantPermission(HUB, a.id, Permission.JOIN_LEAVE_GROUP, None))
    assert a.has_permission(Permission.JOIN_LEAVE_GROUP, None)
    await node.handle_command(RevokePermission(HUB, a.id, Permission.JOIN_LEAVE_GROUP, None))
    assert not a.can(Permission.JOIN_LEAVE_GROUP, "any")


def test_publication_encoded_once_per_codec(node: Node) -> None:
    """Connections of one codec receive the very same bytes object."""
    outlets = [connect(node, groups=("g",))[1] for _ in range(3)]
    node.handle_publication(
        Publication(HUB, Target.GROUP, "g", Payload(DataType.TEXT, b"hi"), from_group=True)
    )
    frames = [o.frames[0] for o in outlets]
    assert all(f is frames[0] for f in frames)


def test_reliable_sequence_ids_per_connection(node: Node) -> None:
    """Each reliable connection numbers its data messages 1, 2, 3."""
    _, a = connect(node, subprotocol=JSON_RELIABLE_SUBPROTOCOL)
    _, b = connect(node, subprotocol=JSON_RELIABLE_SUBPROTOCOL)
    send = Publication(HUB, Target.HUB, "", Payload(DataType.TEXT, b"x"))
    node.handle_publication(send)
    node.handle_publication(Publication(HUB, Target.CONNECTION, b_id(node, b), send.payload))
    assert [t.endswith(b'"sequenceId":1}') for t in a.texts()] == [True]
    assert b.texts()[1].endswith(b'"sequenceId":2}')


def b_id(node: Node, outlet: ListOutlet) -> str:
    hub = node.hubs.ensure(HUB)
    return next(c.id for c in hub.connections.values() if c.outlet is outlet)


def test_excluded_and_filter(node: Node) -> None:
    """Excluded ids and the filter both skip connections."""
    a, oa = connect(node, "alice")
    _, ob = connect(node, "bob")
    payload = Payload(DataType.TEXT, b"x")
    node.handle_publication(Publication(HUB, Target.HUB, "", payload, excluded=frozenset([a.id])))
    node.handle_publication(Publication(HUB, Target.HUB, "", payload, filter="userId eq 'alice'"))
    assert len(oa.frames) == 1 and len(ob.frames) == 1


async def test_close_sends_disconnected_then_closes(node: Node) -> None:
    """A close command sends the reason as disconnected, closes 1000 and forgets the connection."""
    a, oa = connect(node, "u")
    b, ob = connect(node, "u")
    close = CloseConnections(HUB, Target.USER, "u", "bye", frozenset([b.id]))
    assert await node.handle_command(close) == 1
    assert oa.texts() == [b'{"type":"system","event":"disconnected","message":"bye"}']
    assert oa.closed == (1000, "bye")
    assert ob.closed is None
    assert a.id not in node.hubs.ensure(HUB).connections


@pytest.mark.parametrize("subprotocol", [JSON_SUBPROTOCOL, JSON_RELIABLE_SUBPROTOCOL])
def test_connection_snapshot_round_trips(node: Node, subprotocol: str) -> None:
    """A connection's identity, rights, ackIds and session survive msgpack and restore."""
    a, _ = connect(
        node,
        "u",
        groups=("g2", "g1"),
        roles=("webpubsub.joinLeaveGroup.g1",),
        subprotocol=subprotocol,
    )
    a.state = "opaque"
    a.take_event_id()
    a.grant(Permission.SEND_TO_GROUP, None)
    a.revoke(Permission.JOIN_LEAVE_GROUP, "g1")
    a.grant(Permission.JOIN_LEAVE_GROUP, "x")
    a.remember_ack(7)
    a.remember_ack(3)
    node.handle_publication(Publication(HUB, Target.HUB, "", Payload(DataType.TEXT, b"x")))
    snapshot = a.snapshot()
    assert snapshot.groups == ("g1", "g2") and snapshot.acks == (7, 3)
    assert (snapshot.reliable is not None) == (subprotocol == JSON_RELIABLE_SUBPROTOCOL)
    wire = msgspec.msgpack.encode(snapshot)
    decoded = msgspec.msgpack.decode(wire, type=ConnectionSnapshot)
    assert decoded == snapshot
    b = Connection.restore(decoded, codec_for(subprotocol), ListOutlet())
    assert b.snapshot() == msgspec.structs.replace(snapshot, groups=())  # joined by the node
    assert b.groups == set() and b.ack_seen(3) and b.ack_seen(7) and not b.ack_seen(1)
    for permission in Permission:
        for group in ("g1", "g2", "x", None):
            assert b.has_permission(permission, group) == a.has_permission(permission, group)
    assert b.take_event_id() == a.take_event_id()
    if b.session is not None and a.session is not None:
        assert b.session.attach() == a.session.attach() and len(b.session) == 1
