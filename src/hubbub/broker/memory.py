"""The in-memory engine: one node, no network. The default."""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import TYPE_CHECKING

from hubbub.broker.base import BrokerHandler, Interest, Member
from hubbub.core.commands import Command, Publication, Query
from hubbub.core.state import Connection, HubRegistry
from hubbub.errors import BrokerError
from hubbub.types import ConnectionId, GroupName, HubName, UserId

__all__ = ["MemoryBroker", "MemoryPresence"]


class MemoryBroker:
    """Hands every publication, command and query to the one local node, in call order.

    The node publishes everything itself, and a publisher may be handed its own
    publications, so interest filters nothing here: subscriptions are accepted and kept
    nowhere (an index of them would cost memory on every connection with a user, and the
    node's hub state already knows who is interested).
    """

    node_id = "local"

    def __init__(self) -> None:
        self._handler: BrokerHandler | None = None

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler

    async def close(self) -> None:
        self._handler = None

    def _require(self) -> BrokerHandler:
        if self._handler is None:
            raise BrokerError("broker is not started")
        return self._handler

    def subscribe(self, interest: Interest) -> None:
        pass

    def unsubscribe(self, interest: Interest) -> None:
        pass

    async def sync(self) -> None:
        return None

    async def publish(self, publication: Publication) -> None:
        self.publish_nowait(publication)

    def publish_nowait(self, publication: Publication) -> None:
        self._require().handle_publication(publication)

    async def command(self, command: Command) -> int:
        return await self._require().handle_command(command)

    async def query(self, query: Query) -> bool:
        return await self._require().handle_query(query)


class MemoryPresence:
    """Answers from the local node's hub state, which is the whole truth on one node.

    Its writes do nothing: the hub state they describe is already what the reads see (and a
    second index would cost memory on every idle connection).
    """

    def __init__(self, hubs: HubRegistry) -> None:
        self._hubs = hubs

    def add_connection(
        self, hub: HubName, connection_id: ConnectionId, user_id: UserId | None
    ) -> None:
        pass

    def remove_connection(
        self, hub: HubName, connection_id: ConnectionId, user_id: UserId | None
    ) -> None:
        pass

    def join(self, hub: HubName, group: GroupName, connection_id: ConnectionId) -> None:
        pass

    def leave(self, hub: HubName, group: GroupName, connection_id: ConnectionId) -> None:
        pass

    async def connection_exists(self, hub: HubName, connection_id: ConnectionId) -> bool:
        state = self._hubs.get(hub)
        return state is not None and connection_id in state.connections

    async def user_exists(self, hub: HubName, user_id: UserId) -> bool:
        state = self._hubs.get(hub)
        return state is not None and user_id in state.users

    async def group_exists(self, hub: HubName, group: GroupName) -> bool:
        state = self._hubs.get(hub)
        return state is not None and group in state.groups

    async def group_members(
        self, hub: HubName, group: GroupName, after: ConnectionId | None, limit: int
    ) -> list[Member]:
        state = self._hubs.get(hub)
        return _page(state.groups.get(group, {}) if state else {}, after, limit)

    async def hubs(self) -> list[HubName]:
        return sorted(hub.name for hub in self._hubs)

    async def hub_connections(
        self, hub: HubName, after: ConnectionId | None, limit: int
    ) -> list[Member]:
        state = self._hubs.get(hub)
        return _page(state.connections if state else {}, after, limit)

    async def user_connections(self, hub: HubName, user_id: UserId) -> list[Member]:
        state = self._hubs.get(hub)
        connections = state.users.get(user_id, {}) if state else {}
        return _page(connections, None, len(connections))

    async def connection_groups(self, hub: HubName, connection_id: ConnectionId) -> list[GroupName]:
        state = self._hubs.get(hub)
        connection = state.connections.get(connection_id) if state else None
        return sorted(connection.groups) if connection is not None else []


def _page(
    connections: Mapping[ConnectionId, Connection], after: ConnectionId | None, limit: int
) -> list[Member]:
    """Up to ``limit`` of ``connections`` ordered by id, strictly after ``after``."""
    ids = sorted(connections)
    start = 0 if after is None else bisect.bisect_right(ids, after)
    return [Member(i, connections[i].user_id) for i in ids[start : start + max(limit, 0)]]


if TYPE_CHECKING:  # mypy checks that the memory engine fits the interfaces
    from hubbub.broker.base import Broker, Presence

    def _fits(hubs: HubRegistry) -> tuple[Broker, Presence]:
        return MemoryBroker(), MemoryPresence(hubs)
