"""A stand-in for the node, as the Redis engine sees it: local connections and their groups,
membership changes told to the engine, commands and queries applied locally.

It does what the node's membership seam will do (subscribe on the first local member,
unsubscribe on the last, presence writes, ``sync()`` before answering a command), so the
engine is tested the way the node will drive it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from hubbub.broker.channels import Interest
from hubbub.broker.redis import Holding, RedisBroker
from hubbub.core.commands import (
    AddToGroup,
    AddUserToGroup,
    CheckPermission,
    CloseConnections,
    Command,
    GrantPermission,
    GroupsByFilter,
    Publication,
    RemoveFromGroup,
    RemoveUserFromGroup,
    RevokePermission,
    Target,
)
from hubbub.core.roles import Permission
from hubbub.types import ConnectionId, GroupName, HubName, UserId


@dataclass
class FakeConnection:
    hub: HubName
    id: ConnectionId
    user_id: UserId | None
    groups: set[GroupName] = field(default_factory=set)
    grants: set[tuple[Permission, str | None]] = field(default_factory=set)
    closed: str | None = None


class FakeNode:
    """Local connections of one node; records what reaches it."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.presence = broker.presence
        self.connections: dict[tuple[HubName, ConnectionId], FakeConnection] = {}
        self.received: list[Publication] = []
        self.commands: list[Command] = []
        self.disowned_ids: list[ConnectionId] = []
        self.sessions: dict[tuple[HubName, ConnectionId], bytes] = {}
        self._counts: dict[Interest, int] = {}

    # -- the membership seam ------------------------------------------------------------------

    def _interest_up(self, interest: Interest) -> None:
        count = self._counts.get(interest, 0)
        self._counts[interest] = count + 1
        if count == 0:
            self.broker.subscribe(interest)

    def _interest_down(self, interest: Interest) -> None:
        count = self._counts[interest] - 1
        if count:
            self._counts[interest] = count
        else:
            del self._counts[interest]
            self.broker.unsubscribe(interest)

    def connect(
        self, hub: str, cid: str, user: str | None = None, groups: Iterable[str] = ()
    ) -> FakeConnection:
        connection = FakeConnection(HubName(hub), ConnectionId(cid), UserId(user) if user else None)
        self.connections[(connection.hub, connection.id)] = connection
        self.presence.add_connection(connection.hub, connection.id, connection.user_id)
        self._interest_up(Interest(connection.hub, Target.HUB))
        if connection.user_id is not None:
            self._interest_up(Interest(connection.hub, Target.USER, connection.user_id))
        for group in groups:
            self.join(connection, GroupName(group))
        return connection

    def join(self, connection: FakeConnection, group: str) -> bool:
        if group in connection.groups:
            return False
        connection.groups.add(GroupName(group))
        self.presence.join(connection.hub, GroupName(group), connection.id)
        self._interest_up(Interest(connection.hub, Target.GROUP, group))
        return True

    def leave(self, connection: FakeConnection, group: str) -> bool:
        if group not in connection.groups:
            return False
        connection.groups.discard(GroupName(group))
        self.presence.leave(connection.hub, GroupName(group), connection.id)
        self._interest_down(Interest(connection.hub, Target.GROUP, group))
        return True

    def disconnect(self, connection: FakeConnection) -> None:
        for group in sorted(connection.groups):
            self.leave(connection, group)
        del self.connections[(connection.hub, connection.id)]
        self.presence.remove_connection(connection.hub, connection.id, connection.user_id)
        self._interest_down(Interest(connection.hub, Target.HUB))
        if connection.user_id is not None:
            self._interest_down(Interest(connection.hub, Target.USER, connection.user_id))

    def get(self, hub: str, cid: str) -> FakeConnection:
        return self.connections[(HubName(hub), ConnectionId(cid))]

    # -- BrokerHandler ------------------------------------------------------------------------

    def handle_publication(self, publication: Publication) -> None:
        self.received.append(publication)

    def payloads(self) -> list[bytes]:
        return [p.payload.data for p in self.received]

    def _hub(self, hub: HubName) -> Iterator[FakeConnection]:
        return (c for (h, _), c in list(self.connections.items()) if h == hub)

    async def handle_command(self, command: Command) -> int:
        self.commands.append(command)
        count = self._apply(command)
        await self.broker.sync()
        return count

    def _apply(self, command: Command) -> int:
        hub = command.hub
        if isinstance(command, (AddUserToGroup, RemoveUserFromGroup)):
            matched = [c for c in self._hub(hub) if c.user_id == command.user_id]
            for c in matched:
                if isinstance(command, AddUserToGroup):
                    self.join(c, command.group)
                elif command.group is None:
                    for g in sorted(c.groups):
                        self.leave(c, g)
                else:
                    self.leave(c, command.group)
            return len(matched)
        if isinstance(command, GroupsByFilter):
            matched = list(self._hub(hub))  # no filter parsing in the fake: every connection
            for c in matched:
                for g in command.groups:
                    (self.join if command.add else self.leave)(c, g)
            return len(matched)
        if isinstance(command, CloseConnections):
            matched = [
                c
                for c in self._hub(hub)
                if _targets(c, command.target, command.name) and c.id not in command.excluded
            ]
            for c in matched:
                c.closed = command.reason
                self.disconnect(c)
            return len(matched)
        assert not isinstance(command, CheckPermission)
        connection = self.connections.get((hub, command.connection_id))
        if connection is None:
            return 0
        if isinstance(command, AddToGroup):
            self.join(connection, command.group)
        elif isinstance(command, RemoveFromGroup):
            for g in sorted(connection.groups) if command.group is None else [command.group]:
                self.leave(connection, g)
        elif isinstance(command, GrantPermission):
            connection.grants.add((command.permission, command.group))
        elif isinstance(command, RevokePermission):
            connection.grants.discard((command.permission, command.group))
        return 1

    async def handle_query(self, query: CheckPermission) -> bool:
        connection = self.connections.get((query.hub, query.connection_id))
        return connection is not None and (query.permission, query.group) in connection.grants

    # -- ClusterMember ------------------------------------------------------------------------

    def holds(self, hub: HubName, connection_id: ConnectionId) -> bool:
        return (hub, connection_id) in self.connections

    def inventory(self) -> Iterable[Holding]:
        return [
            Holding(c.hub, c.id, c.user_id, sorted(c.groups)) for c in self.connections.values()
        ]

    def disowned(self, hub: HubName, connection_id: ConnectionId) -> None:
        self.disowned_ids.append(connection_id)
        connection = self.connections.pop((hub, connection_id), None)
        if connection is not None:  # forget it locally; the registry entry is not ours
            for group in connection.groups:
                self._interest_down(Interest(hub, Target.GROUP, group))
            self._interest_down(Interest(hub, Target.HUB))
            if connection.user_id is not None:
                self._interest_down(Interest(hub, Target.USER, connection.user_id))

    # -- SessionOwner -------------------------------------------------------------------------

    async def hand_over(self, hub: HubName, connection_id: ConnectionId) -> bytes | None:
        snapshot = self.sessions.pop((hub, connection_id), None)
        connection = self.connections.get((hub, connection_id))
        if snapshot is None or connection is None:
            return None
        self.disconnect(connection)
        await self.broker.sync()
        return snapshot


def _targets(connection: FakeConnection, target: Target, name: str) -> bool:
    if target is Target.HUB:
        return True
    if target is Target.GROUP:
        return name in connection.groups
    if target is Target.USER:
        return connection.user_id == name
    return connection.id == name
