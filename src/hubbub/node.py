"""The node: hub state, the engine and the client connections of one process, glued together.

Client messages arrive here from the WebSocket adapter; publications and commands arrive from the
broker (:class:`hubbub.broker.base.BrokerHandler`). Delivery encodes a message once per codec and
hands the same bytes to every target connection's outlet.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from functools import lru_cache

from hubbub.broker.base import (
    AddToGroup,
    AddUserToGroup,
    Broker,
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
from hubbub.closecodes import CLOSE_NORMAL
from hubbub.config import Config
from hubbub.core.names import validate_group
from hubbub.core.roles import Permission, RoleSet
from hubbub.core.state import Connection, Hub, HubRegistry, Outlet
from hubbub.errors import ForbiddenError, OperationError
from hubbub.metrics import (
    CONNECTIONS,
    CONNECTIONS_CLOSED,
    CONNECTIONS_OPENED,
    DELIVERIES,
    PUBLICATIONS,
)
from hubbub.protocol.codec import Codec, EncodedData
from hubbub.protocol.filters import Filter, parse_filter
from hubbub.protocol.messages import (
    AckMessage,
    ClientMessage,
    ConnectedMessage,
    DataMessage,
    DisconnectedMessage,
    EventMessage,
    JoinGroupMessage,
    LeaveGroupMessage,
    PingMessage,
    PongMessage,
    SendToGroupMessage,
    ServiceMessage,
)
from hubbub.protocol.tokens import reconnection_token
from hubbub.types import ConnectionId, GroupName, HubName, UserId

__all__ = ["Node"]

log = logging.getLogger("hubbub.node")


@lru_cache(maxsize=256)
def compiled_filter(text: str) -> Filter:
    """Filters repeat across publishes; compile each text once."""
    return parse_filter(text)


def _send(connection: Connection, message: ServiceMessage) -> None:
    frame = connection.codec.encode(message)
    if frame is not None:
        connection.outlet.send(frame)


class Node:
    """One process's share of the service."""

    def __init__(self, config: Config, broker: Broker, hubs: HubRegistry | None = None) -> None:
        self.config = config
        self.broker = broker
        self.hubs = hubs if hubs is not None else HubRegistry()

    # -- connection lifecycle -----------------------------------------------------------------

    def connect(
        self,
        hub_name: HubName,
        user_id: UserId | None,
        roles: Iterable[str],
        groups: Iterable[GroupName],
        codec: Codec,
        outlet: Outlet,
    ) -> Connection:
        """Register a connection whose handshake succeeded and greet it with ``connected``."""
        connection_id = ConnectionId(secrets.token_urlsafe(16))
        connection = Connection(
            id=connection_id,
            hub=hub_name,
            user_id=user_id,
            roles=RoleSet.parse(roles),
            codec=codec,
            outlet=outlet,
        )
        hub = self.hubs.ensure(hub_name)
        hub.add(connection)
        for group in groups:
            hub.join(connection, group)
        token = None
        if codec.reliable:
            token = reconnection_token(self.config.access_keys[0], connection_id)
        _send(connection, ConnectedMessage(connection_id, user_id, token))
        CONNECTIONS.inc()
        CONNECTIONS_OPENED.inc()
        log.debug("connected %s hub=%s user=%s", connection_id, hub_name, user_id)
        return connection

    def disconnect(self, connection: Connection) -> None:
        """Forget a connection whose socket is gone."""
        CONNECTIONS.dec()
        CONNECTIONS_CLOSED.inc()
        hub = self.hubs.get(connection.hub)
        if hub is not None and hub.remove(connection.id) is not None:
            self.hubs.release(hub)
            log.debug("disconnected %s hub=%s", connection.id, connection.hub)

    # -- client messages ----------------------------------------------------------------------

    async def handle_client_message(self, connection: Connection, message: ClientMessage) -> None:
        """Execute one client message and answer it (ack, pong) as the subprotocol says."""
        if isinstance(message, PingMessage):
            _send(connection, PongMessage())
            return
        if isinstance(message, (JoinGroupMessage, LeaveGroupMessage, SendToGroupMessage)):
            await self._acked(connection, message)
        elif isinstance(message, EventMessage):
            self._user_event(connection, message)
        # SequenceAckMessage: nothing is buffered for recovery yet (reliable sessions issue).

    async def _acked(
        self,
        connection: Connection,
        message: JoinGroupMessage | LeaveGroupMessage | SendToGroupMessage,
    ) -> None:
        ack_id = message.ack_id
        if ack_id is not None and connection.ack_seen(ack_id):
            error = f"Message with ack-id: {ack_id} has been processed"
            _send(connection, AckMessage(ack_id, False, "Duplicate", error))
            return
        try:
            await self._execute(connection, message)
        except OperationError as exc:
            if ack_id is not None:
                _send(connection, AckMessage(ack_id, False, exc.name, str(exc)))
            return
        if ack_id is not None:
            connection.remember_ack(ack_id)
            _send(connection, AckMessage(ack_id, True))

    async def _execute(
        self,
        connection: Connection,
        message: JoinGroupMessage | LeaveGroupMessage | SendToGroupMessage,
    ) -> None:
        group = validate_group(message.group)
        if isinstance(message, SendToGroupMessage):
            if not connection.can(Permission.SEND_TO_GROUP, group):
                raise ForbiddenError(
                    f"The client has no permission to send message to group '{group}'."
                )
            excluded = frozenset((connection.id,)) if message.no_echo else frozenset()
            await self.broker.publish(
                Publication(
                    connection.hub,
                    Target.GROUP,
                    group,
                    message.payload,
                    from_group=True,
                    from_user_id=connection.user_id,
                    excluded=excluded,
                )
            )
            return
        verb = "join" if isinstance(message, JoinGroupMessage) else "leave"
        if not connection.can(Permission.JOIN_LEAVE_GROUP, group):
            raise ForbiddenError(f"The client has no permission to {verb} group '{group}'.")
        hub = self.hubs.ensure(connection.hub)
        if verb == "join":
            hub.join(connection, group)
        else:
            hub.leave(connection, group)

    def _user_event(self, connection: Connection, message: EventMessage) -> None:
        """User events need an event handler; this hub has none (upstream.md §6.4)."""
        if connection.codec.plain:
            connection.outlet.close(CLOSE_NORMAL, "")
            return
        if message.ack_id is not None:
            error = f"No event handler is configured for event '{message.event}'."
            _send(connection, AckMessage(message.ack_id, False, "InternalServerError", error))

    # -- BrokerHandler: publications ----------------------------------------------------------

    def handle_publication(self, publication: Publication) -> None:
        """Deliver a publication to the local connections it targets."""
        hub = self.hubs.get(publication.hub)
        if hub is None:
            return
        targets = _targets(hub, publication.target, publication.name)
        group = publication.name if publication.from_group else None
        message = DataMessage(publication.payload, group, publication.from_user_id)
        flt = compiled_filter(publication.filter) if publication.filter else None
        PUBLICATIONS.inc()
        DELIVERIES.inc(deliver(targets, message, publication.excluded, flt))

    # -- BrokerHandler: commands --------------------------------------------------------------

    def handle_command(self, command: Command) -> int:
        """Apply a cluster-wide command to the local connections."""
        hub = self.hubs.get(command.hub)
        if hub is None:
            return 0
        if isinstance(command, CloseConnections):
            return self._close(hub, command)
        if isinstance(command, GroupsByFilter):
            return _groups_by_filter(hub, command)
        if isinstance(command, (AddUserToGroup, RemoveUserFromGroup)):
            return _user_groups(hub, command)
        connection = hub.connections.get(command.connection_id)
        if connection is None:
            return 0
        if isinstance(command, AddToGroup):
            hub.join(connection, command.group)
        elif isinstance(command, RemoveFromGroup):
            if command.group is None:
                hub.leave_all(connection)
            else:
                hub.leave(connection, command.group)
        elif isinstance(command, GrantPermission):
            connection.grant(command.permission, command.group)
        elif isinstance(command, RevokePermission):
            connection.revoke(command.permission, command.group)
        elif isinstance(command, CheckPermission):
            return int(connection.has_permission(command.permission, command.group))
        return 1

    def _close(self, hub: Hub, command: CloseConnections) -> int:
        targets = [
            c for c in _targets(hub, command.target, command.name) if c.id not in command.excluded
        ]
        for connection in targets:
            _send(connection, DisconnectedMessage(command.reason))
            connection.outlet.close(CLOSE_NORMAL, command.reason)
            hub.remove(connection.id)
        self.hubs.release(hub)
        return len(targets)


def _targets(hub: Hub, target: Target, name: str) -> Iterable[Connection]:
    if target is Target.HUB:
        return hub.connections.values()
    if target is Target.GROUP:
        return hub.members(GroupName(name))
    if target is Target.USER:
        return hub.user_connections(UserId(name))
    connection = hub.connections.get(ConnectionId(name))
    return () if connection is None else (connection,)


def deliver(
    targets: Iterable[Connection],
    message: DataMessage,
    excluded: frozenset[ConnectionId] = frozenset(),
    flt: Filter | None = None,
) -> int:
    """The hot path: encode once per codec, write the same bytes to every target.

    Returns:
        The number of connections the message was handed to.
    """
    encoded: dict[Codec, EncodedData] = {}
    count = 0
    for connection in targets:
        if excluded and connection.id in excluded:
            continue
        if flt is not None and not flt.matches(
            connection.id, connection.user_id, connection.groups
        ):
            continue
        codec = connection.codec
        data = encoded.get(codec)
        if data is None:
            data = encoded[codec] = codec.encode_data(message)
        frame = data.frame
        if frame is None:
            frame = data.sequenced(connection.take_sequence_id())
        connection.outlet.send(frame)
        count += 1
    return count


def _selected(hub: Hub, text: str | None) -> list[Connection]:
    connections = list(hub.connections.values())
    if not text:
        return connections
    flt = compiled_filter(text)
    return [c for c in connections if flt.matches(c.id, c.user_id, c.groups)]


def _groups_by_filter(hub: Hub, command: GroupsByFilter) -> int:
    selected = _selected(hub, command.filter)
    for connection in selected:
        for group in command.groups:
            if command.add:
                hub.join(connection, group)
            else:
                hub.leave(connection, group)
    return len(selected)


def _user_groups(hub: Hub, command: AddUserToGroup | RemoveUserFromGroup) -> int:
    connections = list(hub.user_connections(command.user_id))
    for connection in connections:
        if isinstance(command, AddUserToGroup):
            hub.join(connection, command.group)
        elif command.group is None:
            hub.leave_all(connection)
        else:
            hub.leave(connection, command.group)
    return len(connections)
