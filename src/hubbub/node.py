"""The node: hub state, the engine and the client connections of one process, glued together.

Client messages arrive here from the WebSocket adapter; publications and commands arrive from the
broker (:class:`hubbub.broker.base.BrokerHandler`). Delivery encodes a message once per codec and
hands the same bytes to every target connection's outlet.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import msgspec
import orjson

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
from hubbub.errors import ForbiddenError, HandshakeError, OperationError, UpstreamError
from hubbub.metrics import (
    CONNECTIONS,
    CONNECTIONS_CLOSED,
    CONNECTIONS_OPENED,
    DELIVERIES,
    PUBLICATIONS,
)
from hubbub.protocol.cloudevents import (
    EventContext,
    connect_body,
    content_type_for,
    data_type_of,
    parse_connect_response,
)
from hubbub.protocol.codec import Codec, EncodedData
from hubbub.protocol.filters import Filter, parse_filter
from hubbub.protocol.messages import (
    AckMessage,
    ClientMessage,
    ConnectedMessage,
    DataMessage,
    DataType,
    DisconnectedMessage,
    EventMessage,
    JoinGroupMessage,
    LeaveGroupMessage,
    Payload,
    PingMessage,
    PongMessage,
    SendToGroupMessage,
    SequenceAckMessage,
    ServiceMessage,
)
from hubbub.protocol.reliable import ReliableBuffer
from hubbub.protocol.tokens import ClientClaims, reconnection_token, verify_reconnection_token
from hubbub.types import ConnectionId, GroupName, HubName, UserId
from hubbub.upstream import Upstream, UpstreamResponse

__all__ = ["ConnectDecision", "ConnectRequest", "Node"]

log = logging.getLogger("hubbub.node")


AckedMessage = JoinGroupMessage | LeaveGroupMessage | SendToGroupMessage | EventMessage


class InternalError(OperationError):
    """A user event that could not be handled: ack ``InternalServerError``."""


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """What the ``connect`` event tells the handler about the handshake."""

    claims: ClientClaims
    query: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    subprotocols: list[str]


@dataclass(frozen=True, slots=True)
class ConnectDecision:
    """Identity of a new connection: the token's, as the ``connect`` handler amended it."""

    user_id: str | None
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    subprotocol: str | None
    state: str | None


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

    def __init__(
        self,
        config: Config,
        broker: Broker,
        upstream: Upstream | None = None,
        hubs: HubRegistry | None = None,
    ) -> None:
        self.config = config
        self.broker = broker
        self.upstream = upstream
        self.hubs = hubs if hubs is not None else HubRegistry()
        self._expiry: dict[ConnectionId, asyncio.TimerHandle] = {}

    @staticmethod
    def new_connection_id() -> ConnectionId:
        """An opaque, URL-safe, unique connection id."""
        return ConnectionId(secrets.token_urlsafe(16))

    async def connect_event(
        self, hub: HubName, connection_id: ConnectionId, request: ConnectRequest
    ) -> ConnectDecision:
        """Ask the hub's ``connect`` handler, if there is one (upstream.md §5.1).

        Raises:
            HandshakeError: the handler refused (its 4xx status) or failed (500).
        """
        claims = request.claims
        decision = ConnectDecision(claims.user_id, claims.roles, claims.groups, None, None)
        handler = self.upstream.handler(hub, "connect", True) if self.upstream else None
        if handler is None or self.upstream is None:
            return decision
        context = EventContext(hub, connection_id, claims.user_id, None, None, 0)
        body = connect_body(claims.claims, request.query, request.headers, request.subprotocols)
        try:
            response = await self.upstream.invoke(
                handler, context, "connect", True, body, "application/json; charset=utf-8"
            )
            answer = parse_connect_response(response.body)
        except UpstreamError as exc:
            status = exc.status if exc.status is not None and 400 <= exc.status < 500 else 500
            raise HandshakeError(f"connect event handler refused: {exc}", status) from exc
        except ValueError as exc:
            raise HandshakeError(f"connect event handler failed: {exc}", 500) from exc
        if answer.subprotocol is not None and answer.subprotocol not in request.subprotocols:
            raise HandshakeError("connect event handler chose a subprotocol not offered", 500)
        return ConnectDecision(
            answer.user_id if answer.user_id is not None else claims.user_id,
            answer.roles if answer.roles is not None else claims.roles,
            answer.groups if answer.groups else claims.groups,
            answer.subprotocol,
            response.connection_state,
        )

    def _context(self, connection: Connection) -> EventContext:
        return EventContext(
            connection.hub,
            connection.id,
            connection.user_id,
            connection.subprotocol,
            connection.state,
            connection.take_event_id(),
        )

    def _notify(self, connection: Connection, event: str, body: bytes) -> None:
        if self.upstream is None:
            return
        handler = self.upstream.handler(connection.hub, event, True)
        if handler is not None:
            self.upstream.notify(handler, self._context(connection), event, body)

    # -- connection lifecycle -----------------------------------------------------------------

    def connect(
        self,
        hub_name: HubName,
        user_id: UserId | None,
        roles: Iterable[str],
        groups: Iterable[GroupName],
        codec: Codec,
        outlet: Outlet,
        *,
        connection_id: ConnectionId | None = None,
        subprotocol: str | None = None,
        state: str | None = None,
    ) -> Connection:
        """Register a connection whose handshake succeeded and greet it with ``connected``."""
        connection_id = connection_id or self.new_connection_id()
        connection = Connection(
            id=connection_id,
            hub=hub_name,
            user_id=user_id,
            roles=RoleSet.parse(roles),
            codec=codec,
            outlet=outlet,
            subprotocol=subprotocol,
            state=state,
            reliable=ReliableBuffer() if codec.reliable else None,
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
        self._notify(connection, "connected", b"{}")
        log.debug("connected %s hub=%s user=%s", connection_id, hub_name, user_id)
        return connection

    # -- reliable sessions (client-protocols.md §4) --------------------------------------------

    def socket_closed(self, connection: Connection, outlet: Outlet, close_code: int | None) -> None:
        """The socket behind ``outlet`` is gone: keep a recoverable session, else end it.

        A session survives a dropped socket when it is reliable, the service did not close it,
        its buffer is within limits and the client did not close with 1000.
        """
        if connection.outlet is not outlet:
            return  # a recovery already moved the session to a newer socket
        recoverable = (
            connection.reliable is not None
            and not connection.reliable.overflowed
            and connection.close_reason is None
            and close_code != CLOSE_NORMAL
            and connection.id in self._hub_connections(connection.hub)
        )
        if not recoverable:
            self.disconnect(connection)
            return
        connection.outlet = _Detached(self, connection)
        loop = asyncio.get_running_loop()
        timeout = self.config.session_timeout_seconds
        self._expiry[connection.id] = loop.call_later(timeout, self._expire, connection)
        log.debug("session %s detached, kept %.0f s", connection.id, timeout)

    def _hub_connections(self, hub: HubName) -> dict[ConnectionId, Connection]:
        state = self.hubs.get(hub)
        return state.connections if state is not None else {}

    def _expire(self, connection: Connection) -> None:
        self._expiry.pop(connection.id, None)
        if isinstance(connection.outlet, _Detached):
            connection.close_reason = connection.close_reason or "Session expired."
            self.disconnect(connection)

    def find_session(self, hub: HubName, connection_id: str, token: str) -> Connection | None:
        """The reliable session a recovery request names, if its token is right."""
        if not verify_reconnection_token(token, self.config.access_keys, connection_id):
            return None
        connection = self._hub_connections(hub).get(ConnectionId(connection_id))
        if connection is None or connection.reliable is None or connection.close_reason:
            return None
        return connection

    def resume(self, connection: Connection, outlet: Outlet) -> None:
        """Move a session to a new socket and resend every unacknowledged frame in order."""
        handle = self._expiry.pop(connection.id, None)
        if handle is not None:
            handle.cancel()
        previous = connection.outlet
        connection.outlet = outlet
        if not isinstance(previous, _Detached):
            previous.close(CLOSE_NORMAL, "replaced by a recovered connection")
        assert connection.reliable is not None
        for frame in connection.reliable.unacked():
            outlet.send(frame)
        log.debug("session %s resumed, %d frames resent", connection.id, len(connection.reliable))

    def disconnect(self, connection: Connection) -> None:
        """End a connection's session; tell the ``disconnected`` handler why."""
        handle = self._expiry.pop(connection.id, None)
        if handle is not None:
            handle.cancel()
        CONNECTIONS.dec()
        CONNECTIONS_CLOSED.inc()
        self._notify(connection, "disconnected", orjson.dumps({"reason": connection.close_reason}))
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
        if isinstance(message, EventMessage) and connection.codec.plain:
            await self._plain_message(connection, message)
        elif isinstance(message, SequenceAckMessage):
            if connection.reliable is not None:
                connection.reliable.ack(message.sequence_id)
        else:
            await self._acked(connection, message)

    async def _acked(self, connection: Connection, message: AckedMessage) -> None:
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

    async def _execute(self, connection: Connection, message: AckedMessage) -> None:
        if isinstance(message, EventMessage):
            await self._user_event(connection, message)
            return
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

    async def _invoke_user_event(
        self, connection: Connection, event: str, payload: Payload | None
    ) -> UpstreamResponse | None:
        """Call the user event handler; None when the hub has none (upstream.md §6)."""
        handler = self.upstream.handler(connection.hub, event, False) if self.upstream else None
        if handler is None or self.upstream is None:
            return None
        data_type = payload.data_type if payload is not None else DataType.BINARY
        body = payload.data if payload is not None else b""
        response = await self.upstream.invoke(
            handler, self._context(connection), event, False, body, content_type_for(data_type)
        )
        if response.connection_state is not None:
            connection.state = response.connection_state
        return response

    async def _user_event(self, connection: Connection, message: EventMessage) -> None:
        """A subprotocol ``event``: the handler's reply goes back before the ack (§3.2)."""
        try:
            response = await self._invoke_user_event(connection, message.event, message.payload)
        except UpstreamError as exc:
            log.info("event %r of %s failed: %s", message.event, connection.id, exc)
            raise InternalError(f"The event handler for event '{message.event}' failed.") from exc
        if response is None:
            raise InternalError(f"No event handler is configured for event '{message.event}'.")
        if response.body:
            reply = Payload(_reply_type(response.content_type, response.body), response.body)
            deliver((connection,), DataMessage(reply))

    async def _plain_message(self, connection: Connection, message: EventMessage) -> None:
        """A plain client frame: the ``message`` event; no handler or a failure closes (§6.4)."""
        try:
            response = await self._invoke_user_event(connection, "message", message.payload)
        except UpstreamError as exc:
            log.info("message event of %s failed: %s", connection.id, exc)
            response = None
        if response is None:
            connection.close_reason = "message event not handled"
            connection.outlet.close(CLOSE_NORMAL, "")
            return
        if response.body:
            data_type = data_type_of(response.content_type) or DataType.BINARY
            deliver((connection,), DataMessage(Payload(data_type, response.body)))

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
            connection.close_reason = command.reason
            _send(connection, DisconnectedMessage(command.reason))
            connection.outlet.close(CLOSE_NORMAL, command.reason)
            hub.remove(connection.id)
        self.hubs.release(hub)
        return len(targets)


class _Detached:
    """The outlet of a session whose socket dropped: frames wait in the reliable buffer."""

    __slots__ = ("_connection", "_node")

    def __init__(self, node: Node, connection: Connection) -> None:
        self._node = node
        self._connection = connection

    def send(self, frame: bytes) -> None:
        pass  # kept by Connection.send_sequenced; other frames are not replayed

    def close(self, code: int, reason: str) -> None:
        self._node.disconnect(self._connection)


def _reply_type(content_type: str | None, body: bytes) -> DataType:
    """The data type of a handler's reply to a subprotocol client (upstream.md §6.2)."""
    data_type = data_type_of(content_type) or DataType.BINARY
    if data_type is DataType.JSON:
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError:
            return DataType.TEXT
    return data_type


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
            connection.send_sequenced(data)
        else:
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
