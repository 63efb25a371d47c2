"""Publications, commands and queries: plain data that crosses a network unchanged.

A publication is one message to fan out; a command is a mutation that must reach every node
(REST membership, permission and close operations); a query is a question the node holding a
connection answers (a permission check). All are frozen msgspec structs; commands and queries
are tagged unions, so ``msgspec.msgpack.encode`` and ``decode(..., type=Command)`` carry them
between nodes. Nothing here does anything: delivery is :mod:`hubbub.core.fanout`, applying a
command :mod:`hubbub.core.apply`.
"""

from __future__ import annotations

import enum

import msgspec

from hubbub.closecodes import CLOSE_NORMAL
from hubbub.core.roles import Permission
from hubbub.protocol.messages import Payload, StreamInfo
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
    "Query",
    "RemoveFromGroup",
    "RemoveUserFromGroup",
    "RevokePermission",
    "Target",
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
    ``filter`` is OData text, already validated by the sender. ``stream`` places a group
    message in a group stream. ``expires_at`` is the message's deadline in wall-clock seconds
    (Unix time, so it means the same on every node; None: it never expires); each node turns it
    into its own monotonic clock on receipt. (A frozen msgspec struct: one is made per publish,
    and a frozen dataclass costs ten times as much to build.)
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
    stream: StreamInfo | None = None
    expires_at: float | None = None


# -- commands: applied on every node that holds a target, counts summed -----------------------


class AddToGroup(msgspec.Struct, frozen=True, tag="addToGroup"):
    hub: HubName
    connection_id: ConnectionId
    group: GroupName


class RemoveFromGroup(msgspec.Struct, frozen=True, tag="removeFromGroup"):
    """``group`` None removes the connection from every group."""

    hub: HubName
    connection_id: ConnectionId
    group: GroupName | None


class AddUserToGroup(msgspec.Struct, frozen=True, tag="addUserToGroup"):
    hub: HubName
    user_id: UserId
    group: GroupName


class RemoveUserFromGroup(msgspec.Struct, frozen=True, tag="removeUserFromGroup"):
    """``group`` None removes the user's connections from every group."""

    hub: HubName
    user_id: UserId
    group: GroupName | None


class GroupsByFilter(msgspec.Struct, frozen=True, tag="groupsByFilter"):
    """``:addToGroups`` / ``:removeFromGroups``: ``filter`` None selects every connection."""

    hub: HubName
    groups: tuple[GroupName, ...]
    filter: str | None
    add: bool


class CloseConnections(msgspec.Struct, frozen=True, tag="closeConnections"):
    hub: HubName
    target: Target
    name: str
    reason: str
    excluded: frozenset[ConnectionId] = frozenset()
    code: int = CLOSE_NORMAL


class GrantPermission(msgspec.Struct, frozen=True, tag="grantPermission"):
    hub: HubName
    connection_id: ConnectionId
    permission: Permission
    group: str | None


class RevokePermission(msgspec.Struct, frozen=True, tag="revokePermission"):
    hub: HubName
    connection_id: ConnectionId
    permission: Permission
    group: str | None


# -- queries: answered by the node that holds the connection ----------------------------------


class CheckPermission(msgspec.Struct, frozen=True, tag="checkPermission"):
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
)
Query = CheckPermission
