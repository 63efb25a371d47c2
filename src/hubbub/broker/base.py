"""The engine interface: publications, control commands and presence queries.

Every send goes through a :class:`Broker`, also on one node: the broker hands each publication
to the :class:`BrokerHandler` of every node that may hold a target connection, and the node
delivers it to its local connections. Mutations that must reach every node (REST membership,
permission and close operations) travel as commands; each node applies a command to its own
connections and the broker sums what they report.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from hubbub.core.roles import Permission
from hubbub.protocol.messages import Payload
from hubbub.types import ConnectionId, GroupName, HubName, UserId

__all__ = [
    "AddToGroup",
    "AddUserToGroup",
    "Broker",
    "BrokerHandler",
    "CheckPermission",
    "CloseConnections",
    "Command",
    "GrantPermission",
    "GroupsByFilter",
    "Member",
    "Presence",
    "Publication",
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


@dataclass(frozen=True, slots=True)
class Publication:
    """One message to fan out.

    ``from_group`` marks a group message (``"from":"group"``); otherwise it is from the server.
    ``filter`` is OData text, already validated by the sender.
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


@dataclass(frozen=True, slots=True)
class Member:
    """A connection as presence reports it."""

    connection_id: ConnectionId
    user_id: UserId | None


class BrokerHandler(Protocol):
    """A node, as the broker sees it."""

    def handle_publication(self, publication: Publication) -> None:
        """Deliver to the local target connections. Must not block or raise."""
        ...

    def handle_command(self, command: Command) -> int:
        """Apply to local connections; return how many connections it matched."""
        ...


class Broker(Protocol):
    """Fan-out and commands across the nodes of a cluster.

    Guarantees: publications from one publisher reach each node in publish order; a command
    has been applied on every node when :meth:`command` returns.
    """

    async def start(self, handler: BrokerHandler) -> None:
        """Begin handing publications and commands to ``handler``."""
        ...

    async def close(self) -> None:
        """Stop; later calls are errors."""
        ...

    async def publish(self, publication: Publication) -> None:
        """Fan ``publication`` out to every node (fire-and-forget for the caller)."""
        ...

    async def command(self, command: Command) -> int:
        """Apply ``command`` on every node; return the total count of matched connections."""
        ...


class Presence(Protocol):
    """Who is connected where, across the cluster."""

    async def connection_exists(self, hub: HubName, connection_id: ConnectionId) -> bool: ...

    async def user_exists(self, hub: HubName, user_id: UserId) -> bool: ...

    async def group_exists(self, hub: HubName, group: GroupName) -> bool: ...

    async def group_members(self, hub: HubName, group: GroupName) -> list[Member]:
        """Members of a group ordered by connection id."""
        ...
