"""Client messages: one message in, its acks and replies out (client-protocols.md §3, §5, §6).

:class:`ClientHandler` executes what a connection sends: ``ping``, ``sequenceAck``, group
joins and leaves (through the node's membership seam), ``sendToGroup`` (through the engine,
like every send), user events and invocations (through the event handlers), and answers with
acks, ``Duplicate`` for an ackId already processed, pongs, replies and invocation responses.
"""

from __future__ import annotations

import logging

from hubbub.broker.base import Broker
from hubbub.closecodes import CLOSE_NORMAL, REASON_MESSAGE_NOT_HANDLED
from hubbub.core.apply import Membership
from hubbub.core.commands import Publication, Target
from hubbub.core.fanout import deliver, send_message
from hubbub.core.names import validate_group
from hubbub.core.roles import Permission
from hubbub.core.state import Connection
from hubbub.errors import ForbiddenError, OperationError, UpstreamError
from hubbub.events import EventDispatcher
from hubbub.metrics import PUBLICATIONS
from hubbub.protocol.messages import (
    AckMessage,
    CancelInvocationMessage,
    ClientMessage,
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
)

__all__ = ["ClientHandler", "InternalError"]

log = logging.getLogger("hubbub.client")

AckedMessage = JoinGroupMessage | LeaveGroupMessage | SendToGroupMessage | EventMessage


class InternalError(OperationError):
    """A user event that could not be handled: ack ``InternalServerError``."""


class ClientHandler:
    """Executes the messages of every client connection of a node.

    Args:
        membership: the node's membership seam (joins and leaves).
        broker: the engine (group sends; ``sync`` before a join or leave is acknowledged).
        events: the hub's event handlers (user events, invocations, plain messages).
    """

    def __init__(self, membership: Membership, broker: Broker, events: EventDispatcher) -> None:
        self._membership = membership
        self._broker = broker
        self._events = events

    async def handle(self, connection: Connection, message: ClientMessage) -> None:
        """Execute one client message and answer it (ack, pong) as the subprotocol says."""
        if isinstance(message, PingMessage):
            send_message(connection, PongMessage())
            return
        if isinstance(message, EventMessage) and connection.codec.plain:
            await self._plain_message(connection, message)
        elif isinstance(message, InvokeMessage):
            await self._invoke(connection, message)
        elif isinstance(message, CancelInvocationMessage):
            pass  # the handler call already runs; its answer is simply not awaited
        elif isinstance(message, SequenceAckMessage):
            if connection.session is not None:
                connection.session.ack(message.sequence_id)
        else:
            await self._acked(connection, message)

    async def _acked(self, connection: Connection, message: AckedMessage) -> None:
        ack_id = message.ack_id
        if ack_id is not None and connection.ack_seen(ack_id):
            error = f"Message with ack-id: {ack_id} has been processed"
            send_message(connection, AckMessage(ack_id, False, "Duplicate", error))
            return
        try:
            await self._execute(connection, message)
        except OperationError as exc:
            if ack_id is not None:
                send_message(connection, AckMessage(ack_id, False, exc.name, str(exc)))
            return
        if ack_id is not None:
            connection.remember_ack(ack_id)
            send_message(connection, AckMessage(ack_id, True))

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
            PUBLICATIONS.inc()
            await self._broker.publish(
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
        if verb == "join":
            self._membership.join(connection, group)
        else:
            self._membership.leave(connection, group)
        await self._broker.sync()  # the membership is in effect cluster-wide before the ack

    async def _user_event(self, connection: Connection, message: EventMessage) -> None:
        """A subprotocol ``event``: the handler's reply goes back before the ack (§3.2)."""
        try:
            reply = await self._events.user_event(connection, message.event, message.payload)
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
                reply = await self._events.user_event(connection, message.event, message.payload)
            except UpstreamError as exc:
                log.debug("invocation of %r by %s failed: %s", message.event, connection.id, exc)
                response = InvokeResponseMessage(
                    message.invocation_id, False, None, "InternalServerError", str(exc)
                )
            else:
                response = InvokeResponseMessage(message.invocation_id, True, reply)
        send_message(connection, response)

    async def _plain_message(self, connection: Connection, message: EventMessage) -> None:
        """A plain client frame: the ``message`` event; no handler or a failure closes (§6.4)."""
        try:
            reply = await self._events.user_event(connection, "message", message.payload)
        except UpstreamError as exc:
            log.debug("message event of %s not handled: %s", connection.id, exc)
            connection.close_reason = REASON_MESSAGE_NOT_HANDLED
            connection.outlet.close(CLOSE_NORMAL, "")
            return
        if reply is not None:
            deliver((connection,), DataMessage(reply))
