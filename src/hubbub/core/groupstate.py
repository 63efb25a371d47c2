"""Group state: each member connection's own key/value record in a group.

The state belongs to a connection, like its memberships: a connection sets (replaces) or
clears its record in a group it is a member of; members that subscribed to the group's state
get a snapshot of every member's record once, then an update for every change; leaving the
group clears the connection's record there and drops its subscription; a connection that ends
clears all its records. A group with no members has no state.

:class:`GroupStateStore` is the authority on one node for one hub: records, subscriptions,
limits and the ``updatedAt`` clock (Unix milliseconds, strictly increasing, so a client keeps the
newest item). It is free of I/O and of membership (the caller checks that a connection is a
member and has the role); its records are msgspec structs that cross a network unchanged, so the
Redis engine can keep the same records in one hash per group for snapshots across nodes.

Roles: ``webpubsub.setGroupState`` to set, ``webpubsub.getGroupState`` to subscribe, for every
group, or with ``.<group>`` for one (:func:`may_set`, :func:`may_get`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from hubbub.protocol.messages import GroupStateItem, GroupStateSnapshotMessage, StateEntries

__all__ = [
    "GET_GROUP_STATE",
    "SET_GROUP_STATE",
    "GroupStateError",
    "GroupStateLimits",
    "GroupStateRecord",
    "GroupStateStore",
    "may_get",
    "may_set",
]

SET_GROUP_STATE = "webpubsub.setGroupState"
GET_GROUP_STATE = "webpubsub.getGroupState"


def _may(role: str, roles: Iterable[str], group: str) -> bool:
    scoped = role + "." + group
    return any(given == role or given == scoped for given in roles)


def may_set(roles: Iterable[str], group: str) -> bool:
    """True when ``roles`` let a connection set its state in ``group``."""
    return _may(SET_GROUP_STATE, roles, group)


def may_get(roles: Iterable[str], group: str) -> bool:
    """True when ``roles`` let a connection subscribe to the state of ``group``."""
    return _may(GET_GROUP_STATE, roles, group)


@dataclass(frozen=True, slots=True)
class GroupStateLimits:
    """Bounds of one record and of a connection's subscriptions (the service documents none)."""

    max_keys: int = 32
    max_key_length: int = 128
    max_value_length: int = 1024
    max_record_bytes: int = 4096
    """Keys and values of one record together, in UTF-8 bytes."""
    max_subscriptions: int = 100
    """Groups one connection may subscribe to."""
    snapshot_items: int = 200
    """Most items of a snapshot, the first by connection id."""


class GroupStateError(ValueError):
    """A refused operation; ``name`` is the ack error name, ``str(e)`` its message."""

    def __init__(self, message: str, name: str = "BadRequest") -> None:
        super().__init__(message)
        self.name = name


class GroupStateRecord(msgspec.Struct, frozen=True, gc=False):
    """A connection's current state in a group (a cleared one is no record at all)."""

    connection_id: str
    user_id: str | None
    state: StateEntries
    updated_at: int

    def item(self) -> GroupStateItem:
        return GroupStateItem(self.connection_id, self.user_id, self.state, self.updated_at)


class GroupStateStore:
    """Records and subscriptions of one hub's groups on one node."""

    __slots__ = ("_clock", "_owned", "_records", "_subscribed", "_subscriptions", "limits")

    def __init__(self, limits: GroupStateLimits | None = None) -> None:
        self.limits = limits or GroupStateLimits()
        self._records: dict[str, dict[str, GroupStateRecord]] = {}
        self._subscribed: dict[str, set[str]] = {}
        """group -> subscribed connection ids"""
        self._subscriptions: dict[str, set[str]] = {}
        """connection id -> groups it subscribed to"""
        self._owned: dict[str, set[str]] = {}
        """connection id -> groups where it has a record"""
        self._clock = 0

    def _stamp(self, now_ms: int) -> int:
        self._clock = max(now_ms, self._clock + 1)
        return self._clock

    def check(self, state: StateEntries) -> None:
        """Raise :class:`GroupStateError` (``BadRequest``) when ``state`` breaks a limit."""
        limits = self.limits
        if len(state) > limits.max_keys:
            raise GroupStateError(f"The group state has more than {limits.max_keys} keys.")
        size = 0
        for key, value in state:
            if not 0 < len(key) <= limits.max_key_length:
                raise GroupStateError(
                    f"Group state keys must be 1 to {limits.max_key_length} characters long."
                )
            if len(value) > limits.max_value_length:
                raise GroupStateError(
                    f"The group state value of '{key}' is longer than "
                    f"{limits.max_value_length} characters."
                )
            size += len(key.encode()) + len(value.encode())
        if size > limits.max_record_bytes:
            raise GroupStateError(f"The group state exceeds {limits.max_record_bytes} bytes.")

    def set(
        self,
        group: str,
        connection_id: str,
        user_id: str | None,
        state: StateEntries | None,
        now_ms: int,
    ) -> GroupStateItem | None:
        """Replace (or with ``state`` None clear) a member's record.

        Returns:
            The update item for the group's subscribers; None when there was nothing to clear.

        Raises:
            GroupStateError: ``state`` breaks a limit (nothing changes).
        """
        if state is None:
            return self.clear(group, connection_id, now_ms)
        self.check(state)
        record = GroupStateRecord(connection_id, user_id, state, self._stamp(now_ms))
        self._records.setdefault(group, {})[connection_id] = record
        self._owned.setdefault(connection_id, set()).add(group)
        return record.item()

    def clear(self, group: str, connection_id: str, now_ms: int) -> GroupStateItem | None:
        """Clear a record; the update item has no ``state``. None when there was none."""
        records = self._records.get(group)
        record = records.pop(connection_id, None) if records is not None else None
        if record is None:
            return None
        if not records:
            del self._records[group]
        owned = self._owned[connection_id]
        owned.discard(group)
        if not owned:
            del self._owned[connection_id]
        return GroupStateItem(connection_id, record.user_id, None, self._stamp(now_ms))

    def subscribe(self, group: str, connection_id: str) -> GroupStateSnapshotMessage:
        """Subscribe a member (idempotent) and return the snapshot to send it.

        Raises:
            GroupStateError: the connection already subscribed to as many groups as allowed.
        """
        groups = self._subscriptions.setdefault(connection_id, set())
        if group not in groups and len(groups) >= self.limits.max_subscriptions:
            raise GroupStateError(
                f"A connection may subscribe to the state of at most "
                f"{self.limits.max_subscriptions} groups."
            )
        groups.add(group)
        self._subscribed.setdefault(group, set()).add(connection_id)
        return self.snapshot(group)

    def unsubscribe(self, group: str, connection_id: str) -> None:
        """Stop updates to a connection (idempotent)."""
        groups = self._subscriptions.get(connection_id)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._subscriptions[connection_id]
        subscribed = self._subscribed.get(group)
        if subscribed is not None:
            subscribed.discard(connection_id)
            if not subscribed:
                del self._subscribed[group]

    def snapshot(self, group: str) -> GroupStateSnapshotMessage:
        """Every record of the group, at most ``snapshot_items``, by connection id."""
        records = self._records.get(group, {})
        chosen = sorted(records)[: self.limits.snapshot_items]
        return GroupStateSnapshotMessage(group, tuple(records[c].item() for c in chosen))

    def records(self, group: str) -> list[GroupStateRecord]:
        """The group's records on this node (what the engine shares with other nodes)."""
        return list(self._records.get(group, {}).values())

    def subscribers(self, group: str) -> frozenset[str]:
        """The connections to send the group's updates to."""
        return frozenset(self._subscribed.get(group, ()))

    def left(self, group: str, connection_id: str, now_ms: int) -> GroupStateItem | None:
        """A connection left ``group``: its record is cleared, its subscription dropped.

        Returns:
            The update item for the remaining subscribers, None when it had no record.
        """
        self.unsubscribe(group, connection_id)
        return self.clear(group, connection_id, now_ms)

    def ended(self, connection_id: str, now_ms: int) -> list[tuple[str, GroupStateItem]]:
        """A connection ended: every record cleared, every subscription dropped.

        Returns:
            ``(group, update item)`` for each group where it had a record.
        """
        for group in list(self._subscriptions.get(connection_id, ())):
            self.unsubscribe(group, connection_id)
        cleared: list[tuple[str, GroupStateItem]] = []
        for group in sorted(self._owned.get(connection_id, ())):
            item = self.clear(group, connection_id, now_ms)
            if item is not None:
                cleared.append((group, item))
        return cleared
