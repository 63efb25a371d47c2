"""The in-memory engine: one node, no network. The default."""

from __future__ import annotations

from hubbub.broker.base import BrokerHandler, Member
from hubbub.core.commands import Command, Publication, Query
from hubbub.core.state import HubRegistry
from hubbub.errors import BrokerError
from hubbub.types import ConnectionId, GroupName, HubName, UserId

__all__ = ["MemoryBroker", "MemoryPresence"]


class MemoryBroker:
    """Hands every publication and command straight to the one local node, in call order."""

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

    async def publish(self, publication: Publication) -> None:
        self._require().handle_publication(publication)

    def publish_nowait(self, publication: Publication) -> None:
        self._require().handle_publication(publication)

    async def command(self, command: Command) -> int:
        return self._require().handle_command(command)

    async def query(self, query: Query) -> bool:
        return self._require().handle_query(query)


class MemoryPresence:
    """Answers from the local node's hub state, which is the whole truth on one node."""

    def __init__(self, hubs: HubRegistry) -> None:
        self._hubs = hubs

    async def connection_exists(self, hub: HubName, connection_id: ConnectionId) -> bool:
        state = self._hubs.get(hub)
        return state is not None and connection_id in state.connections

    async def user_exists(self, hub: HubName, user_id: UserId) -> bool:
        state = self._hubs.get(hub)
        return state is not None and user_id in state.users

    async def group_exists(self, hub: HubName, group: GroupName) -> bool:
        state = self._hubs.get(hub)
        return state is not None and group in state.groups

    async def group_members(self, hub: HubName, group: GroupName) -> list[Member]:
        state = self._hubs.get(hub)
        if state is None:
            return []
        members = [Member(c.id, c.user_id) for c in state.members(group)]
        members.sort(key=lambda m: m.connection_id)
        return members
