"""Applying commands and queries to the connections of one node (rest-api.md §4).

Every command finds its local targets in the hub state and changes them; membership changes
go through a :class:`Membership` (the node's seam, which also tells the engine), never straight
to the hub. Synchronous and free of I/O: the node awaits whatever the engine needs afterwards.
"""

from __future__ import annotations

from typing import Protocol

from hubbub.core.commands import (
    AddToGroup,
    AddUserToGroup,
    CloseConnections,
    Command,
    GrantPermission,
    GroupsByFilter,
    Query,
    RemoveFromGroup,
    RemoveUserFromGroup,
    RevokePermission,
)
from hubbub.core.fanout import send_message, targets
from hubbub.core.state import Connection, Hub, HubRegistry
from hubbub.protocol.filters import parse_filter
from hubbub.protocol.messages import DisconnectedMessage
from hubbub.types import GroupName

__all__ = ["Membership", "apply_command", "apply_query"]


class Membership(Protocol):
    """The one way membership changes: the node implements it (``hubbub.node.Node``)."""

    def join(self, connection: Connection, group: GroupName) -> bool:
        """Add a registered connection to a group; False when it was a member already."""
        ...

    def leave(self, connection: Connection, group: GroupName) -> bool:
        """Remove a connection from a group; False when it was not a member."""
        ...

    def unregister(self, connection: Connection) -> None:
        """Forget a connection: it leaves every group and its hub (again: nothing happens)."""
        ...


def apply_command(hubs: HubRegistry, membership: Membership, command: Command) -> int:
    """Apply a command to the local connections; returns how many it matched."""
    hub = hubs.get(command.hub)
    if hub is None:
        return 0
    if isinstance(command, CloseConnections):
        return _close(hub, membership, command)
    if isinstance(command, GroupsByFilter):
        return _groups_by_filter(hub, membership, command)
    if isinstance(command, (AddUserToGroup, RemoveUserFromGroup)):
        return _user_groups(hub, membership, command)
    connection = hub.connections.get(command.connection_id)
    if connection is None:
        return 0
    if isinstance(command, AddToGroup):
        membership.join(connection, command.group)
    elif isinstance(command, RemoveFromGroup):
        _leave(membership, connection, command.group)
    elif isinstance(command, GrantPermission):
        connection.grant(command.permission, command.group)
    elif isinstance(command, RevokePermission):
        connection.revoke(command.permission, command.group)
    return 1


def apply_query(hubs: HubRegistry, query: Query) -> bool:
    """Answer a query about a local connection; False when the connection is not here."""
    hub = hubs.get(query.hub)
    connection = hub.connections.get(query.connection_id) if hub is not None else None
    if connection is None:
        return False
    return connection.has_permission(query.permission, query.group)


def _leave(membership: Membership, connection: Connection, group: GroupName | None) -> None:
    """Leave one group, or every group when ``group`` is None."""
    if group is not None:
        membership.leave(connection, group)
        return
    for name in list(connection.groups):
        membership.leave(connection, name)


def _close(hub: Hub, membership: Membership, command: CloseConnections) -> int:
    """Send each target ``disconnected`` with the reason, then close it with the command's code."""
    closing = [
        c for c in targets(hub, command.target, command.name) if c.id not in command.excluded
    ]
    disconnected = DisconnectedMessage(command.reason)
    for connection in closing:
        connection.close_reason = command.reason
        send_message(connection, disconnected)
        connection.outlet.close(command.code, command.reason)
        membership.unregister(connection)
    return len(closing)


def _groups_by_filter(hub: Hub, membership: Membership, command: GroupsByFilter) -> int:
    selected = list(hub.connections.values())
    if command.filter:
        flt = parse_filter(command.filter)
        selected = [c for c in selected if flt.matches(c.id, c.user_id, c.groups)]
    for connection in selected:
        for group in command.groups:
            if command.add:
                membership.join(connection, group)
            else:
                membership.leave(connection, group)
    return len(selected)


def _user_groups(
    hub: Hub, membership: Membership, command: AddUserToGroup | RemoveUserFromGroup
) -> int:
    connections = list(hub.user_connections(command.user_id))
    for connection in connections:
        if isinstance(command, AddUserToGroup):
            membership.join(connection, command.group)
        else:
            _leave(membership, connection, command.group)
    return len(connections)
