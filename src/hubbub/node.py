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

import orjson

from hubbub.broker.base import Broker
from hubbub.closecodes import CLOSE_GOING_AWAY, CLOSE_NORMAL, REASON_SERVICE_RELOAD
from hubbub.config import Config
from hubbub.core.commands import (
    CloseConnections,
    Command,
    Publication,
    Target,
    apply_command,
    deliver,
    deliver_publication,
)
from hubbub.core.names import validate_group
from hubbub.core.roles import Permission, RoleSet
from hubbub.core.state import Connection, HubRegistry, Outlet, SharedFrames
from hubbub.errors import ForbiddenError, OperationError, UpstreamError
from hubbub.events import ConnectDecision, ConnectRequest, EventDispatcher
from hubbub.metrics import (
    CONNECTIONS,
    CONNECTIONS_CLOSED,
    CONNECTIONS_OPENED,
    DELIVERIES,
    PUBLICATIONS,
)
from hubbub.protocol.codec import Codec
from hubbub.protocol.messages import (
    AckMessage,
    CancelInvocationMessage,
    ClientMessage,
    ConnectedMessage,
    DataMessage,
    EventMessage,
    InvokeMessage,
    InvokeResponseMessage,
    JoinGroupMessage,
    LeaveGroupMessage,
    PingMessage,
    PongMessage,
    SendToGroupMessage,
    SequenceAckMessage,
    ServiceMessage,
)
from hubbub.protocol.reliable import ReliableBuffer
from hubbub.protocol.tokens import reconnection_token, verify_reconnection_token
from hubbub.types import ConnectionId, GroupName, HubName, UserId
from hubbub.upstream import Upstream

__all__ = ["Node"]

log = logging.getLogger("hubbub.node")


AckedMessage = JoinGroupMessage | LeaveGroupMessage | SendToGroupMessage | EventMessage


class InternalError(OperationError):
    """A user event that could not be handled: ack ``InternalServerError``."""


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
        self.events = EventDispatcher(upstream)
        self.hubs = hubs if hubs is not None else HubRegistry()
        self._expiry: dict[ConnectionId, asyncio.TimerHandle] = {}

    @staticmethod
    def new_connection_id() -> ConnectionId:
        """An opaque, URL-safe, unique connection id."""
        return ConnectionId(secrets.token_urlsafe(16))

    async def connect_event(
        self, hub: HubName, connection_id: ConnectionId, request: ConnectRequest
    ) -> ConnectDecision:
        """Run the hub's ``connect`` event, if it has a handler for it (upstream.md §5.1).

        Raises:
            HandshakeError: the handler refused (its 4xx status) or failed (500).
        """
        return await self.events.connect(hub, connection_id, request)

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
        self.events.notify(connection, "connected", b"{}")
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
        """End a connection's session, once; tell the ``disconnected`` handler why."""
        if connection.ended:
            return
        connection.ended = True
        handle = self._expiry.pop(connection.id, None)
        if handle is not None:
            handle.cancel()
        CONNECTIONS.dec()
        CONNECTIONS_CLOSED.inc()
        self.events.notify(
            connection, "disconnected", orjson.dumps({"reason": connection.close_reason})
        )
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
        elif isinstance(message, InvokeMessage):
            await self._invoke(connection, message)
        elif isinstance(message, CancelInvocationMessage):
            pass  # the handler call already runs; its answer is simply not awaited
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

    async def _user_event(self, connection: Connection, message: EventMessage) -> None:
        """A subprotocol ``event``: the handler's reply goes back before the ack (§3.2)."""
        try:
            reply = await self.events.user_event(connection, message.event, message.payload)
        except UpstreamError as exc:
            log.debug("event %r of %s not handled: %s", message.event, connection.id, exc)
            raise InternalError(str(exc)) from exc
        if reply is not None:
            deliver((connection,), DataMessage(reply))

    async def _invoke(self, connection: Connection, message: InvokeMessage) -> None:
        """An invocation: the ``event`` handler's reply comes back as ``invokeResponse``."""
        response: InvokeResponseMessage
        if message.target != "event":
            error = f"Invocation target '{message.target}' is not supported."
            response = InvokeResponseMessage(
                message.invocation_id, False, None, "BadRequest", error
            )
        else:
            try:
                reply = await self.events.user_event(connection, message.event, message.payload)
            except UpstreamError as exc:
                log.debug("invocation of %r by %s failed: %s", message.event, connection.id, exc)
                response = InvokeResponseMessage(
                    message.invocation_id, False, None, "InternalServerError", str(exc)
                )
            else:
                response = InvokeResponseMessage(message.invocation_id, True, reply)
        _send(connection, response)

    async def _plain_message(self, connection: Connection, message: EventMessage) -> None:
        """A plain client frame: the ``message`` event; no handler or a failure closes (§6.4)."""
        try:
            reply = await self.events.user_event(connection, "message", message.payload)
        except UpstreamError as exc:
            log.debug("message event of %s not handled: %s", connection.id, exc)
            connection.close_reason = "message event not handled"
            connection.outlet.close(CLOSE_NORMAL, "")
            return
        if reply is not None:
            deliver((connection,), DataMessage(reply))

    # -- BrokerHandler: publications ----------------------------------------------------------

    def handle_publication(self, publication: Publication) -> None:
        """Deliver a publication to the local connections it targets."""
        PUBLICATIONS.inc()
        DELIVERIES.inc(deliver_publication(self.hubs, publication))

    def shut_down(self) -> int:
        """Close every connection of this node, which is stopping; returns how many.

        Each gets ``disconnected`` with Azure's maintenance reason, then a 1001 close: the SDKs
        reconnect (reliable ones first try to recover, which a restarted node refuses with 1008).
        Sessions waiting for a recovery end too.
        """
        count = 0
        for hub in self.hubs:
            count += apply_command(
                self.hubs,
                CloseConnections(
                    hub.name, Target.HUB, "", REASON_SERVICE_RELOAD, code=CLOSE_GOING_AWAY
                ),
            )
        return count

    # -- BrokerHandler: commands --------------------------------------------------------------

    def handle_command(self, command: Command) -> int:
        """Apply a cluster-wide command to the local connections."""
        return apply_command(self.hubs, command)


class _Detached:
    """The outlet of a session whose socket dropped: frames wait in the reliable buffer."""

    __slots__ = ("_connection", "_node")

    def __init__(self, node: Node, connection: Connection) -> None:
        self._node = node
        self._connection = connection

    def send(self, frame: bytes) -> None:
        pass  # kept by Connection.send_sequenced; other frames are not replayed

    def share(self, shared: SharedFrames) -> bool:
        return False  # a reliable session's frames are its own (sequence ids)

    def close(self, code: int, reason: str) -> None:
        # Deferred: this may be called from inside a fan-out over the session's groups.
        asyncio.get_running_loop().call_soon(self._node.disconnect, self._connection)
