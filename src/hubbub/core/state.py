"""Hub state: connections, users, groups and permissions (rest-api.md §4.6, §7).

Membership lives on connections: a group exists while it has a member, a user while it has a
connection. Everything here is synchronous and free of I/O; the node owns the instances.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from hubbub.core.outlet import Outlet, SequencedFrames, SharedFrames
from hubbub.core.roles import Permission, RoleSet
from hubbub.protocol.acks import AckIds
from hubbub.protocol.codec import Codec
from hubbub.protocol.reliable import ReliableSession, ReliableSnapshot
from hubbub.types import ConnectionId, GroupName, HubName, UserId

__all__ = ["Connection", "ConnectionSnapshot", "Hub", "HubRegistry"]

K = TypeVar("K", bound=str)

_Rights = tuple[tuple[Permission, tuple[str | None, ...]], ...]


class ConnectionSnapshot(msgspec.Struct, frozen=True):
    """A connection's whole identity and session as plain data, for another node to take over.

    ``groups`` are the memberships to restore; the node that takes the connection over joins
    them through its membership seam (:meth:`Connection.restore` leaves them out).
    """

    id: ConnectionId
    hub: HubName
    user_id: UserId | None
    roles: tuple[str, ...]
    """As the token or the connect handler gave them."""
    groups: tuple[GroupName, ...]
    subprotocol: str | None
    state: str | None
    next_event_id: int
    grants: _Rights = ()
    revokes: _Rights = ()
    reliable: ReliableSnapshot | None = None
    acks: tuple[int, ...] = ()
    close_reason: str | None = None


@dataclass(eq=False, slots=True)
class Connection:
    """One client connection and everything the service knows about it."""

    id: ConnectionId
    hub: HubName
    user_id: UserId | None
    roles: RoleSet
    codec: Codec
    outlet: Outlet
    groups: set[GroupName] = field(default_factory=set)
    subprotocol: str | None = None
    state: str | None = None
    """Opaque connection state set by event handlers (``ce-connectionState``)."""
    close_reason: str | None = None
    """Why the service closed this connection, once it decided to."""
    ended: bool = False
    """The connection is over: no socket, no recovery (its session, if any, is ended too)."""
    session: ReliableSession | None = None
    """Sequence ids and unacknowledged frames; made for the reliable subprotocols only."""
    next_event_id: int = 1
    expiring: dict[int, float] | None = None
    """Sequence id -> monotonic deadline of the kept frames of messages with a TTL (the
    reliable session keeps the frames; :mod:`hubbub.core.expiring`). None while there are none."""
    # Allocated on first use: most connections never need them (memory per idle connection).
    _acks: AckIds | None = None
    _grants: dict[Permission, set[str | None]] | None = None
    _revokes: dict[Permission, set[str | None]] | None = None

    def __post_init__(self) -> None:
        if self.session is None and self.codec.reliable:
            self.session = ReliableSession()

    def can(self, permission: Permission, group: str) -> bool:
        """True when this connection may join/leave or send to ``group`` (§7)."""
        if self._revokes is not None:
            revoked = self._revokes.get(permission)
            if revoked and (None in revoked or group in revoked):
                return False
        if self._grants is not None:
            granted = self._grants.get(permission)
            if granted and (None in granted or group in granted):
                return True
        return self.roles.allows(permission, group)

    def has_permission(self, permission: Permission, group: str | None) -> bool:
        """The REST check: ``group`` None asks for the permission on every group."""
        if group is not None:
            return self.can(permission, group)
        if None in (self._revokes or {}).get(permission, ()):
            return False
        if None in (self._grants or {}).get(permission, ()):
            return True
        return self.roles.allows_all(permission)

    def grant(self, permission: Permission, group: str | None) -> None:
        """Grant at run time; ``group`` None grants it on every group."""
        if self._grants is None:
            self._grants = {}
        self._grants.setdefault(permission, set()).add(group)
        revoked = (self._revokes or {}).get(permission)
        if revoked:
            if group is None:
                revoked.clear()
            else:
                revoked.discard(group)

    def revoke(self, permission: Permission, group: str | None) -> None:
        """Revoke at run time; a revoke wins over roles, also over wildcard roles."""
        granted = (self._grants or {}).get(permission)
        if granted:
            if group is None:
                granted.clear()
            else:
                granted.discard(group)
        if self._revokes is None:
            self._revokes = {}
        self._revokes.setdefault(permission, set()).add(group)

    def ack_seen(self, ack_id: int) -> bool:
        """True when ``ack_id`` was already processed successfully (§3.3 ``Duplicate``)."""
        return self._acks is not None and self._acks.seen(ack_id)

    def remember_ack(self, ack_id: int) -> None:
        """Remember a successful ``ack_id`` (see :class:`~hubbub.protocol.acks.AckIds`)."""
        acks = self._acks
        if acks is None:
            acks = self._acks = AckIds()
        acks.remember(ack_id)

    def take_event_id(self) -> int:
        """The next CloudEvents ``ce-id`` of this connection (``connect`` had 0)."""
        event_id = self.next_event_id
        self.next_event_id = event_id + 1
        return event_id

    def snapshot(self, *, frames: bool = True) -> ConnectionSnapshot:
        """Everything about this connection but its socket and codec, as plain data
        (``frames=False``: its session without the unacked frames)."""
        return ConnectionSnapshot(
            self.id,
            self.hub,
            self.user_id,
            self.roles.raw,
            tuple(sorted(self.groups)),
            self.subprotocol,
            self.state,
            self.next_event_id,
            _rights(self._grants),
            _rights(self._revokes),
            self.session.snapshot(frames=frames) if self.session is not None else None,
            tuple(self._acks.snapshot()) if self._acks is not None else (),
            self.close_reason,
        )

    @classmethod
    def restore(cls, snapshot: ConnectionSnapshot, codec: Codec, outlet: Outlet) -> Connection:
        """The connection a snapshot describes, on ``outlet``, in no group yet (see above)."""
        reliable = snapshot.reliable
        return cls(
            id=snapshot.id,
            hub=snapshot.hub,
            user_id=snapshot.user_id,
            roles=RoleSet.parse(snapshot.roles),
            codec=codec,
            outlet=outlet,
            subprotocol=snapshot.subprotocol,
            state=snapshot.state,
            close_reason=snapshot.close_reason,
            session=ReliableSession.restore(reliable) if reliable is not None else None,
            next_event_id=snapshot.next_event_id,
            _acks=AckIds(snapshot.acks) if snapshot.acks else None,
            _grants={p: set(g) for p, g in snapshot.grants} if snapshot.grants else None,
            _revokes={p: set(g) for p, g in snapshot.revokes} if snapshot.revokes else None,
        )


def _rights(rights: dict[Permission, set[str | None]] | None) -> _Rights:
    """Grants or revokes in a stable order (None, for every group, first)."""
    if not rights:
        return ()
    return tuple(
        (permission, tuple(sorted(groups, key=lambda g: (g is not None, g or ""))))
        for permission, groups in sorted(rights.items(), key=lambda item: item[0].value)
    )


class Hub:
    """The connections of one hub, indexed by id, group and user."""

    __slots__ = ("connections", "groups", "name", "shared", "users")

    def __init__(self, name: HubName) -> None:
        self.name = name
        self.connections: dict[ConnectionId, Connection] = {}
        self.groups: dict[GroupName, dict[ConnectionId, Connection]] = {}
        self.users: dict[UserId, dict[ConnectionId, Connection]] = {}
        self.shared: dict[
            GroupName,
            tuple[weakref.ref[SharedFrames | SequencedFrames], list[Connection]],
        ] = {}
        """Per group, the frames its members' outlets share in this flush period, and the
        members that do not share them (sent each message one by one). Weak: once every member
        has written them, nothing keeps them (a group's last message may be big)."""

    def add(self, connection: Connection) -> None:
        """Register a connection that completed its handshake."""
        self.connections[connection.id] = connection
        if connection.user_id is not None:
            self.users.setdefault(connection.user_id, {})[connection.id] = connection

    def remove(self, connection_id: ConnectionId) -> Connection | None:
        """Forget a connection and its memberships; None when it was not here."""
        connection = self.connections.pop(connection_id, None)
        if connection is None:
            return None
        self.leave_all(connection)
        if connection.user_id is not None:
            _discard(self.users, connection.user_id, connection_id)
        return connection

    def join(self, connection: Connection, group: GroupName) -> bool:
        """Add to a group; False when already a member."""
        if group in connection.groups:
            return False
        connection.groups.add(group)
        self.groups.setdefault(group, {})[connection.id] = connection
        self.shared.pop(group, None)  # the newcomer has not queued what the others share
        return True

    def leave(self, connection: Connection, group: GroupName) -> bool:
        """Remove from a group; False when not a member."""
        if group not in connection.groups:
            return False
        connection.groups.discard(group)
        _discard(self.groups, group, connection.id)
        self.shared.pop(group, None)
        return True

    def leave_all(self, connection: Connection) -> int:
        """Remove from every group; returns how many it left."""
        groups = list(connection.groups)
        for group in groups:
            self.leave(connection, group)
        return len(groups)

    def members(self, group: GroupName) -> Iterable[Connection]:
        """The current members of a group (empty when the group does not exist)."""
        return self.groups.get(group, {}).values()

    def user_connections(self, user_id: UserId) -> Iterable[Connection]:
        """The current connections of a user."""
        return self.users.get(user_id, {}).values()

    def is_empty(self) -> bool:
        return not self.connections


def _discard(index: dict[K, dict[ConnectionId, Connection]], key: K, connection_id: str) -> None:
    members = index.get(key)
    if members is not None:
        members.pop(ConnectionId(connection_id), None)
        if not members:
            del index[key]


class HubRegistry:
    """Hubs of one node, created on first use and dropped when their last connection leaves."""

    __slots__ = ("_hubs",)

    def __init__(self) -> None:
        self._hubs: dict[HubName, Hub] = {}

    def get(self, name: HubName) -> Hub | None:
        return self._hubs.get(name)

    def ensure(self, name: HubName) -> Hub:
        hub = self._hubs.get(name)
        if hub is None:
            hub = self._hubs[name] = Hub(name)
        return hub

    def release(self, hub: Hub) -> None:
        """Drop ``hub`` if it has no connections left."""
        if hub.is_empty() and self._hubs.get(hub.name) is hub:
            del self._hubs[hub.name]

    def __iter__(self) -> Iterator[Hub]:
        return iter(list(self._hubs.values()))

    def connection_count(self) -> int:
        return sum(len(h.connections) for h in self._hubs.values())
