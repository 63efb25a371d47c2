"""The engine interface: publications, control commands and presence queries.

Every send goes through a :class:`Broker`, also on one node: the broker hands each publication
to the :class:`BrokerHandler` of every node that may hold a target connection, and the node
delivers it to its local connections. Mutations that must reach every node (REST membership,
permission and close operations) travel as commands; each node applies a command to its own
connections and the broker sums what they report. The messages themselves are defined in
:mod:`hubbub.core.commands`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from hubbub.core.commands import Command, Publication, Query
from hubbub.types import ConnectionId, GroupName, HubName, UserId

__all__ = ["Broker", "BrokerHandler", "Member", "Presence"]


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

    def handle_query(self, query: Query) -> bool:
        """Answer about a local connection; False when it is not here."""
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

    def publish_nowait(self, publication: Publication) -> None:
        """:meth:`publish` without waiting, in the same order as ``publish`` calls."""
        ...

    async def command(self, command: Command) -> int:
        """Apply ``command`` on every node; return the total count of matched connections."""
        ...

    async def query(self, query: Query) -> bool:
        """The answer of the node that holds the connection; False when none does."""
        ...


class Presence(Protocol):
    """Who is connected where, across the cluster."""

    async def connection_exists(self, hub: HubName, connection_id: ConnectionId) -> bool: ...

    async def user_exists(self, hub: HubName, user_id: UserId) -> bool: ...

    async def group_exists(self, hub: HubName, group: GroupName) -> bool: ...

    async def group_members(self, hub: HubName, group: GroupName) -> list[Member]:
        """Members of a group ordered by connection id."""
        ...
