"""Publications and commands, and how they apply to one node's hub state.

A publication is one message to fan out; a command is a mutation that must reach every node
(REST membership, permission and close operations). Both are plain data so an engine can carry
them between nodes; applying them is synchronous and free of I/O.
"""

from __future__ import annotations

import enum
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from hubbub.closecodes import CLOSE_NORMAL, CLOSE_POLICY_VIOLATION, REASON_UNACKED_OVERFLOW
from hubbub.core.outlet import SharedFrames
from hubbub.core.roles import Permission
from hubbub.core.state import Connection, Hub, HubRegistry
from hubbub.protocol.codec import Codec, EncodedData
from hubbub.protocol.filters import Filter, parse_filter
from hubbub.protocol.messages import DataMessage, DisconnectedMessage, Payload
from hubbub.types import ConnectionId, GroupName, HubName, UserId

__all__ = [
    "AddToGroup",
    "AddUserToGroup",
    "CheckPermission",
    "CloseConnections",
    "Command",
    "GrantPermission",
    "GroupsByFilter",
    "Publication",
    "RemoveFromGroup",
    "RemoveUserFromGroup",
    "RevokePermission",
    "Target",
    "apply_command",
    "deliver",
    "deliver_publication",
    "deliver_to_group",
]


class Target(enum.Enum):
    """Which connections of a hub a publication or command addresses."""

    HUB = "hub"
    GROUP = "group"
    USER = "user"
    CONNECTION = "connection"


class Publication(msgspec.Struct, frozen=True, gc=False):
    """One message to fan out.

    ``from_group`` marks a group message (``"from":"group"``); otherwise it is from the server.
    ``filter`` is OData text, already validated by the sender. (A frozen msgspec struct: one is
    made per publish, and a frozen dataclass costs ten times as much to build.)
    """

    hub: HubName
    target: Target
    name: str
    payload: Payload
    from_group: bool = False
    from_user_id: UserId | None = None
    excluded: frozenset[ConnectionId] = frozenset()
    filter: str | None = None
    ttl_seconds: int = 0


@dataclass(frozen=True, slots=True)
class AddToGroup:
    hub: HubName
    connection_id: ConnectionId
    group: GroupName


@dataclass(frozen=True, slots=True)
class RemoveFromGroup:
    """``group`` None removes the connection from every group."""

    hub: HubName
    connection_id: ConnectionId
    group: GroupName | None


@dataclass(frozen=True, slots=True)
class AddUserToGroup:
    hub: HubName
    user_id: UserId
    group: GroupName


@dataclass(frozen=True, slots=True)
class RemoveUserFromGroup:
    """``group`` None removes the user's connections from every group."""

    hub: HubName
    user_id: UserId
    group: GroupName | None


@dataclass(frozen=True, slots=True)
class GroupsByFilter:
    """``:addToGroups`` / ``:removeFromGroups``: ``filter`` None selects every connection."""

    hub: HubName
    groups: tuple[GroupName, ...]
    filter: str | None
    add: bool


@dataclass(frozen=True, slots=True)
class CloseConnections:
    hub: HubName
    target: Target
    name: str
    reason: str
    excluded: frozenset[ConnectionId] = frozenset()
    code: int = CLOSE_NORMAL


@dataclass(frozen=True, slots=True)
class GrantPermission:
    hub: HubName
    connection_id: ConnectionId
    permission: Permission
    group: str | None


@dataclass(frozen=True, slots=True)
class RevokePermission:
    hub: HubName
    connection_id: ConnectionId
    permission: Permission
    group: str | None


@dataclass(frozen=True, slots=True)
class CheckPermission:
    hub: HubName
    connection_id: ConnectionId
    permission: Permission
    group: str | None


Command = (
    AddToGroup
    | RemoveFromGroup
    | AddUserToGroup
    | RemoveUserFromGroup
    | GroupsByFilter
    | CloseConnections
    | GrantPermission
    | RevokePermission
    | CheckPermission
)


def deliver_publication(hubs: HubRegistry, publication: Publication) -> int:
    """Deliver a publication to the local connections it targets; returns how many."""
    hub = hubs.get(publication.hub)
    if hub is None:
        return 0
    group = publication.name if publication.from_group else None
    message = DataMessage(publication.payload, group, publication.from_user_id)
    if publication.target is Target.GROUP and not publication.excluded and not publication.filter:
        return deliver_to_group(hub, GroupName(publication.name), message)
    targets = _targets(hub, publication.target, publication.name)
    flt = parse_filter(publication.filter) if publication.filter else None
    return deliver(targets, message, publication.excluded, flt)


def deliver_to_group(hub: Hub, name: GroupName, message: DataMessage) -> int:
    """A fan-out to every member of a group; returns how many members it reached.

    When the members' outlets still share the frames of the previous fan-out to this group
    (:class:`~hubbub.core.outlet.SharedFrames`), the new frame is only appended there: the cost
    does not grow with the group. Otherwise every member is visited once and, when all of them
    use one codec whose frames are the same for everybody, they start sharing again.
    """
    members = hub.groups.get(name)
    if not members:
        return 0
    ref = hub.shared.get(name)
    shared = ref() if ref is not None else None
    if shared is not None and shared.open:
        frame = shared.codec.encode_data(message).frame
        assert frame is not None  # codecs whose frames differ per member are never shared
        shared.append(frame)
        return len(members)
    connections = iter(members.values())
    first = next(connections)
    codec = first.codec
    data = codec.encode_data(message)
    frame = data.frame
    if frame is None:
        return deliver(members.values(), message)
    shared = SharedFrames(codec, frame)
    others: list[Connection] = []
    if not first.outlet.share(shared):
        others.append(first)
    for connection in connections:
        if connection.codec is not codec or not connection.outlet.share(shared):
            others.append(connection)
    if others:
        # Not every member can take the shared frames: this fan-out is not shared further.
        shared.open = False
        hub.shared.pop(name, None)
        deliver(others, message)
    else:
        hub.shared[name] = weakref.ref(shared)
    return len(members)


def apply_command(hubs: HubRegistry, command: Command) -> int:
    """Apply a command to the local connections; returns how many it matched."""
    hub = hubs.get(command.hub)
    if hub is None:
        return 0
    if isinstance(command, CloseConnections):
        count = _close(hub, command)
        hubs.release(hub)
        return count
    if isinstance(command, GroupsByFilter):
        return _groups_by_filter(hub, command)
    if isinstance(command, (AddUserToGroup, RemoveUserFromGroup)):
        return _user_groups(hub, command)
    connection = hub.connections.get(command.connection_id)
    if connection is None:
        return 0
    if isinstance(command, AddToGroup):
        hub.join(connection, command.group)
    elif isinstance(command, RemoveFromGroup):
        if command.group is None:
            hub.leave_all(connection)
        else:
            hub.leave(connection, command.group)
    elif isinstance(command, GrantPermission):
        connection.grant(command.permission, command.group)
    elif isinstance(command, RevokePermission):
        connection.revoke(command.permission, command.group)
    elif isinstance(command, CheckPermission):
        return int(connection.has_permission(command.permission, command.group))
    return 1


def _close(hub: Hub, command: CloseConnections) -> int:
    """Send each target ``disconnected`` with the reason, then close it with the command's code."""
    targets = [
        c for c in _targets(hub, command.target, command.name) if c.id not in command.excluded
    ]
    for connection in targets:
        connection.close_reason = command.reason
        frame = connection.codec.encode(DisconnectedMessage(command.reason))
        if frame is not None:
            connection.outlet.send(frame)
        connection.outlet.close(command.code, command.reason)
        hub.remove(connection.id)
    return len(targets)


def _targets(hub: Hub, target: Target, name: str) -> Iterable[Connection]:
    if target is Target.HUB:
        return hub.connections.values()
    if target is Target.GROUP:
        return hub.members(GroupName(name))
    if target is Target.USER:
        return hub.user_connections(UserId(name))
    connection = hub.connections.get(ConnectionId(name))
    return () if connection is None else (connection,)


def deliver(
    targets: Iterable[Connection],
    message: DataMessage,
    excluded: frozenset[ConnectionId] = frozenset(),
    flt: Filter | None = None,
) -> int:
    """The hot path: encode once per codec, write the same bytes to every target.

    Returns:
        The number of connections the message was handed to.
    """
    if excluded or flt is not None:
        targets = [
            c
            for c in targets
            if c.id not in excluded and (flt is None or flt.matches(c.id, c.user_id, c.groups))
        ]
    encoded: dict[Codec, EncodedData] = {}
    last_codec: Codec | None = None
    data: EncodedData | None = None
    frame: bytes | None = None
    count = 0
    for connection in targets:
        codec = connection.codec
        if codec is not last_codec:  # fan-outs are mostly one codec: skip the dict lookup
            last_codec = codec
            data = encoded.get(codec)
            if data is None:
                data = encoded[codec] = codec.encode_data(message)
            frame = data.frame
        if frame is not None:
            connection.outlet.send(frame)
        else:
            assert data is not None
            send_sequenced(connection, data)
        count += 1
    return count


def send_sequenced(connection: Connection, data: EncodedData) -> None:
    """Send a data message with the connection's next ``sequenceId`` and keep it until
    acknowledged; a session past its limits is closed, unrecoverable (§4)."""
    session = connection.session
    assert session is not None  # sequenced codecs are the reliable ones
    sequence_id = session.sequence()
    frame = data.sequenced(sequence_id)
    connection.outlet.send(frame)
    if not session.push(sequence_id, frame) and connection.close_reason is None:
        connection.close_reason = REASON_UNACKED_OVERFLOW
        connection.outlet.close(CLOSE_POLICY_VIOLATION, REASON_UNACKED_OVERFLOW)


def _selected(hub: Hub, text: str | None) -> list[Connection]:
    connections = list(hub.connections.values())
    if not text:
        return connections
    flt = parse_filter(text)
    return [c for c in connections if flt.matches(c.id, c.user_id, c.groups)]


def _groups_by_filter(hub: Hub, command: GroupsByFilter) -> int:
    selected = _selected(hub, command.filter)
    for connection in selected:
        for group in command.groups:
            if command.add:
                hub.join(connection, group)
            else:
                hub.leave(connection, group)
    return len(selected)


def _user_groups(hub: Hub, command: AddUserToGroup | RemoveUserFromGroup) -> int:
    connections = list(hub.user_connections(command.user_id))
    for connection in connections:
        if isinstance(command, AddUserToGroup):
            hub.join(connection, command.group)
        elif command.group is None:
            hub.leave_all(connection)
        else:
            hub.leave(connection, command.group)
    return len(connections)
