"""Group state on a node: ``setGroupState``, ``subscribeGroupState``, ``unsubscribeGroupState``
and what membership changes do to them (the rules: :mod:`hubbub.core.groupstate`).

One :class:`~hubbub.core.groupstate.GroupStateStore` per hub holds the records and
subscriptions of this node's connections. Setting and subscribing need membership of the group
and the role (``webpubsub.setGroupState[.<group>]``, ``webpubsub.getGroupState[.<group>]``),
else the ack is ``Forbidden``. A subscriber gets its ack, then one snapshot; then an update for
every change of a member's record, its own included. Leaving a group (any origin) clears the
connection's record there and drops its subscription; a connection that ends clears them all; a
reliable session that lost its socket keeps them. On the reliable subprotocols snapshots and
updates carry sequence ids like data messages, so a recovered session gets the ones it missed.

On one node this store sees every member. In a cluster the records also belong in the engine
(one Redis hash per group, written by the node holding the connection) so that a snapshot sees
the members of every node, and updates travel as group publications (wire note §2.4); the
store's records are msgspec structs for that reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from hubbub.core.fanout import send_sequenced
from hubbub.core.groupstate import GroupStateError, GroupStateStore, may_get, may_set
from hubbub.core.names import validate_group
from hubbub.core.state import Connection, HubRegistry
from hubbub.errors import BadRequestError, ForbiddenError, OperationError
from hubbub.protocol.codec import Codec, EncodedData
from hubbub.protocol.messages import (
    GroupStateItem,
    GroupStateMessage,
    GroupStateUpdateMessage,
    SetGroupStateMessage,
    SubscribeGroupStateMessage,
    UnsubscribeGroupStateMessage,
)
from hubbub.types import ConnectionId, GroupName, HubName

__all__ = ["GroupStateRequest", "GroupStates", "send_group_state"]

GroupStateRequest = SetGroupStateMessage | SubscribeGroupStateMessage | UnsubscribeGroupStateMessage
"""The client messages of group state; each is acknowledged like a group operation."""

AfterAck = Callable[[], None]


def _now_ms() -> int:
    return int(time.time() * 1000)


class GroupStates:
    """The group state of every hub of a node.

    Args:
        hubs: the node's hub state (to find the subscribers' connections).
    """

    def __init__(self, hubs: HubRegistry) -> None:
        self._hubs = hubs
        self._stores: dict[HubName, GroupStateStore] = {}

    def store(self, hub: HubName) -> GroupStateStore:
        store = self._stores.get(hub)
        if store is None:
            store = self._stores[hub] = GroupStateStore()
        return store

    def execute(self, connection: Connection, message: GroupStateRequest) -> AfterAck | None:
        """Apply a request; returns what to send once it is acknowledged.

        Raises:
            OperationError: the ack's error (``Forbidden``, ``BadRequest``); nothing changed.
        """
        group = validate_group(message.group)
        if isinstance(message, UnsubscribeGroupStateMessage):
            store = self._stores.get(connection.hub)
            if store is not None:
                store.unsubscribe(group, connection.id)
                self._release(connection.hub, store)
            return None
        if group not in connection.groups:
            raise ForbiddenError(f"The client is not a member of group '{group}'.")
        roles = connection.roles.raw
        store = self.store(connection.hub)
        try:
            if isinstance(message, SetGroupStateMessage):
                if not may_set(roles, group):
                    raise ForbiddenError(
                        f"The client has no permission to set the state of group '{group}'."
                    )
                item = store.set(group, connection.id, connection.user_id, message.state, _now_ms())
                return None if item is None else lambda: self._update(connection.hub, group, item)
            if not may_get(roles, group):
                raise ForbiddenError(
                    f"The client has no permission to get the state of group '{group}'."
                )
            snapshot = store.subscribe(group, connection.id)
        except GroupStateError as exc:
            raise _operation_error(exc) from exc
        return lambda: send_group_state((connection,), snapshot)

    def left(self, connection: Connection, group: GroupName) -> None:
        """A connection left a group: its record there is cleared, its subscription dropped."""
        store = self._stores.get(connection.hub)
        if store is None:
            return
        item = store.left(group, connection.id, _now_ms())
        if item is not None:
            self._update(connection.hub, group, item)
        self._release(connection.hub, store)

    def ended(self, connection: Connection) -> None:
        """A connection ended: every record of it is cleared, every subscription dropped."""
        store = self._stores.get(connection.hub)
        if store is None:
            return
        for group, item in store.ended(connection.id, _now_ms()):
            self._update(connection.hub, group, item)
        self._release(connection.hub, store)

    def _release(self, hub: HubName, store: GroupStateStore) -> None:
        """Forget a hub's store once nothing is in it.

        Its ``updatedAt`` clock goes with it; a new store starts from the wall clock again,
        which only a record set within the same millisecond as the last one could notice.
        """
        if store.is_empty() and self._stores.get(hub) is store:
            del self._stores[hub]

    def _update(self, hub_name: HubName, group: str, item: GroupStateItem) -> None:
        store = self._stores.get(hub_name)
        hub = self._hubs.get(hub_name)
        if store is None or hub is None:
            return
        subscribers = [
            connection
            for connection_id in sorted(store.subscribers(group))
            if (connection := hub.connections.get(ConnectionId(connection_id))) is not None
        ]
        if subscribers:
            send_group_state(subscribers, GroupStateUpdateMessage(group, (item,)))


def send_group_state(targets: Iterable[Connection], message: GroupStateMessage) -> None:
    """Send a snapshot or update, encoded once per codec; sequenced on reliable sessions."""
    encoded: dict[Codec, EncodedData | None] = {}
    for connection in targets:
        codec = connection.codec
        if codec not in encoded:
            encoded[codec] = codec.encode_group_state(message)
        data = encoded[codec]
        if data is None:
            continue  # plain clients have no group state
        if data.frame is not None:
            connection.outlet.send(data.frame)
        else:
            send_sequenced(connection, data)


def _operation_error(exc: GroupStateError) -> OperationError:
    error = BadRequestError(str(exc))
    error.name = exc.name
    return error
