"""The cluster-wide registry on Redis: who is connected where, and the reads behind Presence.

Keys (``{p}`` the prefix; ``{m}`` a node incarnation ``node/epoch``)::

    {p}:nodes                  zset  m -> expiry (ms, Redis clock)    live incarnations
    {p}:reaping                set   m                                incarnations to clean up
    {p}:epoch:{node}           str   the node's current epoch         fences late writes
    {p}:held:{m}               set   "hub\\0cid"                        what an incarnation holds
    {p}:hubs                   zset  hub (score 0)                    hubs with a connection
    {p}:owner:{hub}            hash  cid -> "m" or "m\\0user"          holder and user
    {p}:conns:{hub}            zset  cid (score 0, lex order)         a hub's connections
    {p}:user:{hub}:{user}      zset  cid                              a user's connections
    {p}:group:{hub}:{group}    zset  cid                              a group's members
    {p}:groups:{hub}:{cid}     set   group                            a connection's groups

Sorted sets with equal scores are ordered by member, so a page of a group is one
``ZRANGEBYLEX (after + LIMIT 0 n`` plus an ``HMGET`` of the users (one script, one round
trip), in connection id order as on one node. Empty sets vanish by themselves, so
``EXISTS`` answers "user exists" and "group exists".

Every write names the incarnation that makes it and applies only to connections that
incarnation holds (a connection handed to another node is not removed by its old holder's
late cleanup); a batch from an epoch the node has left is refused whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol

from hubbub.broker.base import Member
from hubbub.broker.channels import Names
from hubbub.broker.redis_scripts import SCRIPTS, Script
from hubbub.types import ConnectionId, GroupName, HubName, UserId

__all__ = ["EngineCore", "Holding", "RedisPresence", "inventory_ops", "user_arg"]

PAGE_LIMIT = 1000
"""Most connections one listing read returns; longer listings take several reads."""

OPS_PER_BATCH = 256
"""Most registry operations in one script call (bounds the time Redis spends in it)."""


class Holding(NamedTuple):
    """A connection a node holds, as it re-announces it after an outage."""

    hub: HubName
    connection_id: ConnectionId
    user_id: UserId | None
    groups: Iterable[GroupName]


class EngineCore(Protocol):
    """What presence and sessions need from the engine (the broker implements it)."""

    names: Names

    def registry_write(self, op: str, hub: HubName, a: str, b: str) -> None:
        """Queue a registry operation (dropped while the engine is disconnected)."""
        ...

    def session_write(self, op: str, hub: HubName, cid: str, a: bytes | str, b: bytes) -> None:
        """Queue a session-store operation (dropped while the engine is disconnected)."""
        ...

    def session_ops(self, args: list[str | bytes], size: int) -> None:
        """Queue session operations given as the ``sessions`` script's arguments."""
        ...

    async def run_script(self, script: Script, *args: str | int) -> object: ...

    async def run_command(self, *args: str | int) -> object: ...

    def holds(self, hub: HubName, connection_id: ConnectionId) -> bool:
        """True when this node holds the connection (answers without Redis)."""
        ...


def user_arg(user_id: UserId | None) -> str:
    return "" if user_id is None else "=" + user_id


def _user(value: bytes) -> UserId | None:
    return None if not value else UserId(value[1:].decode())


def inventory_ops(holdings: Iterable[Holding]) -> Iterable[tuple[str, HubName, str, str]]:
    """The operations that re-register what a node holds (``A``: unless taken meanwhile)."""
    for holding in holdings:
        yield ("A", holding.hub, holding.connection_id, user_arg(holding.user_id))
        for group in holding.groups:
            yield ("j", holding.hub, group, holding.connection_id)


class RedisPresence:
    """Presence on Redis: writes are queued in order (``broker.sync()`` waits for them),
    reads ask Redis and raise :class:`~hubbub.errors.ClusterUnavailableError` while the
    engine is not connected.

    The registry lags the nodes by the time it takes a write to reach Redis; a killed node's
    connections stay listed until its incarnation expires and is reaped (see
    :mod:`hubbub.broker.redis`).
    """

    def __init__(self, core: EngineCore) -> None:
        self._core = core
        self._names = core.names

    # -- writes (fire-and-forget, ordered) ---------------------------------------------------

    def add_connection(
        self, hub: HubName, connection_id: ConnectionId, user_id: UserId | None
    ) -> None:
        self._core.registry_write("a", hub, connection_id, user_arg(user_id))

    def remove_connection(
        self, hub: HubName, connection_id: ConnectionId, user_id: UserId | None
    ) -> None:
        """Removes the connection from its groups too (its user id is in the registry)."""
        self._core.registry_write("r", hub, connection_id, "")

    def join(self, hub: HubName, group: GroupName, connection_id: ConnectionId) -> None:
        self._core.registry_write("j", hub, group, connection_id)

    def leave(self, hub: HubName, group: GroupName, connection_id: ConnectionId) -> None:
        self._core.registry_write("l", hub, group, connection_id)

    # -- reads --------------------------------------------------------------------------------

    async def connection_exists(self, hub: HubName, connection_id: ConnectionId) -> bool:
        """True at once for a connection of this node; otherwise the registry says."""
        if self._core.holds(hub, connection_id):
            return True
        reply = await self._core.run_command("HEXISTS", self._names.owners(hub), connection_id)
        return bool(reply)

    async def user_exists(self, hub: HubName, user_id: UserId) -> bool:
        return bool(await self._core.run_command("EXISTS", self._names.user(hub, user_id)))

    async def group_exists(self, hub: HubName, group: GroupName) -> bool:
        return bool(await self._core.run_command("EXISTS", self._names.group(hub, group)))

    async def group_members(
        self, hub: HubName, group: GroupName, after: ConnectionId | None, limit: int
    ) -> list[Member]:
        """Members ordered by connection id, strictly after ``after``, at most ``limit``."""
        return await self._page(self._names.group(hub, group), hub, after, limit)

    async def hubs(self) -> list[HubName]:
        """Hubs with at least one connection, in name order."""
        reply = await self._core.run_command("ZRANGE", self._names.hubs, 0, -1)
        assert isinstance(reply, list)
        return [HubName(h.decode()) for h in reply]

    async def hub_connections(
        self, hub: HubName, after: ConnectionId | None, limit: int
    ) -> list[Member]:
        return await self._page(self._names.connections(hub), hub, after, limit)

    async def user_connections(self, hub: HubName, user_id: UserId) -> list[Member]:
        return await self._page(self._names.user(hub, user_id), hub, None, 1 << 30)

    async def connection_groups(self, hub: HubName, connection_id: ConnectionId) -> list[GroupName]:
        key = self._names.connection_groups(hub, connection_id)
        reply = await self._core.run_command("SMEMBERS", key)
        assert isinstance(reply, (list, set))
        return sorted(GroupName(g.decode()) for g in reply)

    async def connection_user(self, hub: HubName, connection_id: ConnectionId) -> UserId | None:
        """The user of a registered connection (None: no user, or no such connection)."""
        reply = await self._core.run_command("HGET", self._names.owners(hub), connection_id)
        if not isinstance(reply, bytes) or b"\0" not in reply:
            return None
        return UserId(reply.split(b"\0", 1)[1].decode())

    async def owner(self, hub: HubName, connection_id: ConnectionId) -> str | None:
        """The id of the node holding a connection, or None."""
        reply = await self._core.run_script(SCRIPTS.owner, hub, connection_id)
        return reply.decode() if isinstance(reply, bytes) else None

    async def _page(
        self, key: str, hub: HubName, after: ConnectionId | None, limit: int
    ) -> list[Member]:
        members: list[Member] = []
        owners = self._names.owners(hub)
        while limit > 0:
            size = min(limit, PAGE_LIMIT)
            reply = await self._core.run_script(SCRIPTS.page, key, owners, after or "", size)
            assert isinstance(reply, list)
            pairs = zip(reply[::2], reply[1::2], strict=True)
            page = [Member(ConnectionId(c.decode()), _user(u)) for c, u in pairs]
            members.extend(page)
            if len(page) < size:
                break
            limit -= size
            after = page[-1].connection_id
        return members
