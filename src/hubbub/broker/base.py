"""The engine interface: fan-out with interest, commands, queries and presence.

Every send goes through a :class:`Broker`, also on one node: the broker hands each publication
to the :class:`BrokerHandler` of every node that holds an :class:`Interest` in its target, and
the node delivers it to its local connections. A node subscribes to the hub, each user and each
group of its connections while it holds one of them (on the first local connection, member or
user; it unsubscribes on the last). Connection-targeted publications, commands and queries are
routed by the engine (on one node: to the node; in a cluster: presence says which node holds
the connection). Mutations that must reach every node (REST membership, permission and close
operations) travel as commands, each node applies them to its own connections and the broker
sums what they report; a query (a permission check) is answered by the node that holds the
connection. :class:`Presence` is the cluster-wide registry of who is connected where, written
by the node's membership seam and read by the REST and admin operations. The messages
themselves are plain data, in :mod:`hubbub.core.commands`.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from hubbub.core.commands import Command, Publication, Query, Target
from hubbub.types import ConnectionId, GroupName, HubName, UserId

__all__ = ["Broker", "BrokerHandler", "Interest", "Member", "Presence"]


class Interest(msgspec.Struct, frozen=True, gc=False):
    """What a node wants publications for: a hub, one of its users, or one of its groups.

    Connections are no interests: a connection-targeted message goes to the node that holds
    the connection.
    """

    hub: HubName
    target: Target
    """HUB, GROUP or USER."""
    name: str = ""
    """The group or user; ``""`` for the hub."""


class Member(msgspec.Struct, frozen=True, gc=False):
    """A connection as presence reports it."""

    connection_id: ConnectionId
    user_id: UserId | None


class BrokerHandler(Protocol):
    """A node, as the engine sees it."""

    def handle_publication(self, publication: Publication) -> None:
        """Deliver to the local target connections. Synchronous; must not block or raise."""
        ...

    async def handle_command(self, command: Command) -> int:
        """Apply to local connections; return how many it matched, once what the command
        changed is in effect in the engine too (interest and presence: ``Broker.sync``)."""
        ...

    async def handle_query(self, query: Query) -> bool:
        """Answer about a local connection; False when it is not here."""
        ...


class Broker(Protocol):
    """Fan-out by interest, commands and queries across the nodes of a cluster.

    Guarantees:
        - Publications from one publisher reach each interested node in publish order.
        - A node receives publications only for interests it subscribed, plus those to its own
          connections and those it publishes itself (an engine may hand a node its own
          publications at once, without a round trip).
        - After :meth:`sync` returns, a publication from any node reaches every subscription
          made before it, and no longer reaches one unsubscribed before it.
        - :meth:`command` returns after every node that holds a target applied it.
    """

    node_id: str
    """This node's name within the cluster (unique while it runs)."""

    async def start(self, handler: BrokerHandler) -> None:
        """Begin handing publications, commands and queries to ``handler``."""
        ...

    async def close(self) -> None:
        """Stop; later calls are errors."""
        ...

    def subscribe(self, interest: Interest) -> None:
        """Start receiving publications for ``interest``. Ordered, fire-and-forget."""
        ...

    def unsubscribe(self, interest: Interest) -> None:
        """Stop receiving publications for ``interest``. Ordered, fire-and-forget."""
        ...

    async def sync(self) -> None:
        """Return once every subscribe, unsubscribe and presence write requested so far is in
        effect (in memory: at once)."""
        ...

    async def publish(self, publication: Publication) -> None:
        """Fan ``publication`` out to every interested node (fire-and-forget for the caller)."""
        ...

    def publish_nowait(self, publication: Publication) -> None:
        """:meth:`publish` without waiting, in the same order as ``publish`` calls."""
        ...

    async def command(self, command: Command) -> int:
        """Apply ``command`` on every node holding a target; the total count of matches."""
        ...

    async def query(self, query: Query) -> bool:
        """The answer of the node that holds the connection; False when none does."""
        ...


class Presence(Protocol):
    """Who is connected where, across the cluster.

    Writes come only from the node's membership seam; they are synchronous, ordered and
    fire-and-forget (an engine may queue them; :meth:`Broker.sync` waits for them). Reads see
    every write that was synced. Listings are ordered by connection id where they page.
    """

    def add_connection(
        self, hub: HubName, connection_id: ConnectionId, user_id: UserId | None
    ) -> None:
        """A connection of this node opened."""
        ...

    def remove_connection(
        self, hub: HubName, connection_id: ConnectionId, user_id: UserId | None
    ) -> None:
        """A connection of this node closed (it left its groups before)."""
        ...

    def join(self, hub: HubName, group: GroupName, connection_id: ConnectionId) -> None:
        """A connection of this node joined ``group``."""
        ...

    def leave(self, hub: HubName, group: GroupName, connection_id: ConnectionId) -> None:
        """A connection of this node left ``group``."""
        ...

    async def connection_exists(self, hub: HubName, connection_id: ConnectionId) -> bool: ...

    async def user_exists(self, hub: HubName, user_id: UserId) -> bool: ...

    async def group_exists(self, hub: HubName, group: GroupName) -> bool: ...

    async def group_members(
        self, hub: HubName, group: GroupName, after: ConnectionId | None, limit: int
    ) -> list[Member]:
        """Up to ``limit`` members of a group, ordered by connection id, strictly after
        ``after`` (from the first when None): one page of the REST listing."""
        ...

    async def hubs(self) -> list[HubName]:
        """Every hub with a connection, sorted."""
        ...

    async def hub_connections(
        self, hub: HubName, after: ConnectionId | None, limit: int
    ) -> list[Member]:
        """Up to ``limit`` connections of a hub, ordered by id, strictly after ``after``."""
        ...

    async def user_connections(self, hub: HubName, user_id: UserId) -> list[Member]:
        """Every connection of a user, ordered by id."""
        ...

    async def connection_groups(self, hub: HubName, connection_id: ConnectionId) -> list[GroupName]:
        """The groups of a connection, sorted (empty when it does not exist)."""
        ...
