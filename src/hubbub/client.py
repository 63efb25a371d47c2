"""Client messages: one message in, its acks and replies out (client-protocols.md §3, §5, §6).

:class:`ClientHandler` executes what a connection sends: ``ping``, ``sequenceAck``, group
joins and leaves (through the node's membership seam), ``sendToGroup`` (through the engine,
like every send), user events and invocations (through the event handlers), group streams
(:mod:`hubbub.streaming`) and group state (:mod:`hubbub.groupstates`), and answers with acks,
``Duplicate`` for an ackId already processed, pongs, replies, invocation responses and stream
answers. Invocations of one connection run side by side (a ``cancelInvocation`` ends one, and
its late answer is dropped); everything else runs in the order the connection sent it.

The node tells it about every membership change (:meth:`ClientHandler.joined`,
:meth:`ClientHandler.left`) and about the end of a connection (:meth:`ClientHandler.ending`):
group state follows memberships, group presence events go upstream, and an ending connection's
streams and pending invocations end with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hubbub.broker.base import Broker
from hubbub.closecodes import CLOSE_NORMAL, REASON_MESSAGE_NOT_HANDLED
from hubbub.core.apply import Membership
from hubbub.core.commands import Publication, Target
from hubbub.core.expiring import forget_acked
from hubbub.core.fanout import deliver, send_message
from hubbub.core.invocations import InvocationBook
from hubbub.core.names import validate_group
from hubbub.core.roles import Permission
from hubbub.core.state import Connection, HubRegistry
from hubbub.core.streams import bad_request
from hubbub.errors import (
    BadRequestError,
    ForbiddenError,
    InvalidFragmentError,
    OperationError,
    UpstreamError,
)
from hubbub.events import EventDispatcher
from hubbub.groupstates import AfterAck, GroupStateRequest, GroupStates
from hubbub.metrics import PUBLICATIONS
from hubbub.protocol.messages import (
    AckMessage,
    CancelInvocationMessage,
    DataMessage,
    EventMessage,
    InboundMessage,
    InvokeMessage,
    InvokeResponseMessage,
    JoinGroupMessage,
    LeaveGroupMessage,
    PingMessage,
    PongMessage,
    SendToGroupMessage,
    SequenceAckMessage,
    SetGroupStateMessage,
    StreamDataMessage,
    StreamEndMessage,
    StreamStartMessage,
    SubscribeGroupStateMessage,
    UnsubscribeGroupStateMessage,
)
from hubbub.streaming import GroupStreams
from hubbub.types import GroupName

__all__ = ["ClientHandler", "InternalError"]

log = logging.getLogger("hubbub.client")

AckedMessage = (
    JoinGroupMessage | LeaveGroupMessage | SendToGroupMessage | EventMessage | GroupStateRequest
)
_GROUP_STATE = (SetGroupStateMessage, SubscribeGroupStateMessage, UnsubscribeGroupStateMessage)
_ACKED = (JoinGroupMessage, LeaveGroupMessage, SendToGroupMessage, EventMessage, *_GROUP_STATE)


class InternalError(OperationError):
    """A user event that could not be handled: ack ``InternalServerError``."""


@dataclass(eq=False, slots=True)
class _Invocations:
    """A connection's pending invocations and the tasks that call the handler for them."""

    book: InvocationBook = field(default_factory=InvocationBook)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)


class ClientHandler:
    """Executes the messages of every client connection of a node.

    Args:
        membership: the node's membership seam (joins and leaves).
        broker: the engine (group sends; ``sync`` before a join or leave is acknowledged).
        events: the hub's event handlers (user events, invocations, plain messages).
    """

    def __init__(
        self, membership: Membership, broker: Broker, events: EventDispatcher, hubs: HubRegistry
    ) -> None:
        self._membership = membership
        self._broker = broker
        self._events = events
        self.streams = GroupStreams(broker)
        self.states = GroupStates(hubs)
        self._invocations: dict[Connection, _Invocations] = {}
        """Only connections with pending invocations are here."""
        self.on_sequence_ack: Callable[[Connection, int], None] | None = None
        """Told every ``sequenceAck`` of a reliable session (a replica drops what it covers)."""
        self.on_ack_remembered: Callable[[Connection], None] | None = None
        """Told when a connection remembers the ``ackId`` of a message it executed."""

    async def handle_frame(self, connection: Connection, data: bytes, binary: bool) -> None:
        """Decode one client frame and execute it.

        An invalid stream message is refused with ``streamClosed{BadRequest}``; the connection
        stays open. An invalid fragment also ends the stream it addresses.

        Raises:
            ProtocolError: the frame breaks the subprotocol (the caller closes the connection).
            OperationError: the message failed; the caller acks ``ack_id`` with the error.
        """
        try:
            message = connection.codec.decode_inbound(data, binary)
        except InvalidFragmentError as exc:
            await self.streams.invalid(connection, exc.stream_id, str(exc))
            return
        except BadRequestError as exc:
            if exc.stream_id is None:
                raise
            send_message(connection, bad_request(exc.stream_id, str(exc)))
            return
        await self.handle(connection, message)

    async def handle(self, connection: Connection, message: InboundMessage) -> None:
        """Execute one client message and answer it (ack, pong) as the subprotocol says."""
        if isinstance(message, PingMessage):
            send_message(connection, PongMessage())
            return
        if isinstance(message, EventMessage) and connection.codec.plain:
            await self._plain_message(connection, message)
        elif isinstance(message, _ACKED):
            await self._acked(connection, message)
        elif isinstance(message, SequenceAckMessage):
            if connection.session is not None:
                connection.session.ack(message.sequence_id)
                forget_acked(connection, message.sequence_id)
                if self.on_sequence_ack is not None:
                    self.on_sequence_ack(connection, message.sequence_id)
        elif isinstance(message, StreamDataMessage):
            await self.streams.data(connection, message)
        elif isinstance(message, StreamStartMessage):
            await self.streams.start(connection, message)
        elif isinstance(message, StreamEndMessage):
            await self.streams.end(connection, message)
        elif isinstance(message, InvokeMessage):
            self._invoke(connection, message)
        elif isinstance(message, CancelInvocationMessage):
            self._cancel_invocation(connection, message.invocation_id)
        # else a ClientInvokeResponseMessage: the service sends clients no invocations, so
        # nothing waits for an answer

    # -- what the node tells: membership changes and the end of a connection -----------------

    def joined(self, connection: Connection, group: GroupName) -> None:
        """``connection`` became a member of ``group`` (any origin)."""
        self._events.group_presence(connection, "joined", group)

    def left(self, connection: Connection, group: GroupName) -> None:
        """``connection`` is no longer a member of ``group`` (any origin)."""
        self.states.left(connection, group)
        if not connection.ended:  # an ending connection's leaves were announced by ending()
            self._events.group_presence(connection, "left", group)

    def ending(self, connection: Connection) -> None:
        """``connection`` is over (before ``disconnected`` goes upstream and before it leaves its
        groups): its streams end, its pending invocations are dropped, its group state is
        cleared, and each group it was in gets a ``left`` event."""
        self.streams.ended(connection)
        pending = self._invocations.pop(connection, None)
        if pending is not None:
            pending.book.clear()
            for task in pending.tasks.values():
                task.cancel()
        self.states.ended(connection)
        for group in sorted(connection.groups):
            self._events.group_presence(connection, "left", group)

    async def _acked(self, connection: Connection, message: AckedMessage) -> None:
        ack_id = message.ack_id
        if ack_id is not None and connection.ack_seen(ack_id):
            error = f"Message with ack-id: {ack_id} has been processed"
            send_message(connection, AckMessage(ack_id, False, "Duplicate", error))
            return
        try:
            after_ack = await self._execute(connection, message)
        except OperationError as exc:
            if ack_id is not None:
                send_message(connection, AckMessage(ack_id, False, exc.name, str(exc)))
            return
        if ack_id is not None:
            connection.remember_ack(ack_id)
            if self.on_ack_remembered is not None:
                self.on_ack_remembered(connection)
            send_message(connection, AckMessage(ack_id, True))
        if after_ack is not None:
            after_ack()

    async def _execute(self, connection: Connection, message: AckedMessage) -> AfterAck | None:
        """Execute an acknowledged message; returns what to send once it is acknowledged."""
        if isinstance(message, EventMessage):
            await self._user_event(connection, message)
            return None
        if isinstance(message, _GROUP_STATE):
            return self.states.execute(connection, message)
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
                    expires_at=time.time() + message.ttl_seconds if message.ttl_seconds else None,
                )
            )
            return None
        verb = "join" if isinstance(message, JoinGroupMessage) else "leave"
        if not connection.can(Permission.JOIN_LEAVE_GROUP, group):
            raise ForbiddenError(f"The client has no permission to {verb} group '{group}'.")
        if verb == "join":
            self._membership.join(connection, group)
        else:
            self._membership.leave(connection, group)
        await self._broker.sync()  # the membership is in effect cluster-wide before the ack
        return None

    async def _user_event(self, connection: Connection, message: EventMessage) -> None:
        """A subprotocol ``event``: the handler's reply goes back before the ack (§3.2)."""
        try:
            reply = await self._events.user_event(connection, message.event, message.payload)
        except UpstreamError as exc:
            log.debug("event %r of %s not handled: %s", message.event, connection.id, exc)
            raise InternalError(str(exc)) from exc
        if reply is not None:
            deliver((connection,), DataMessage(reply))

    def _invoke(self, connection: Connection, message: InvokeMessage) -> None:
        """Start an invocation beside the connection's others; its answer comes when it comes."""
        pending = self._invocations.get(connection)
        if pending is None:
            pending = self._invocations[connection] = _Invocations()
        started = pending.book.start(message.invocation_id)
        if isinstance(started, InvokeResponseMessage):
            send_message(connection, started)  # too many pending
            return
        if not started:
            return  # already pending: the first call answers it
        task = asyncio.get_running_loop().create_task(
            self._run_invocation(connection, message, pending)
        )
        pending.tasks[message.invocation_id] = task

    def _cancel_invocation(self, connection: Connection, invocation_id: str) -> None:
        """``cancelInvocation``: the pending call ends, nothing answers it; unknown: ignored."""
        pending = self._invocations.get(connection)
        if pending is None or not pending.book.cancel(invocation_id):
            return
        task = pending.tasks.pop(invocation_id, None)
        if task is not None:
            task.cancel()
        self._forget_if_idle(connection, pending)

    async def _run_invocation(
        self, connection: Connection, message: InvokeMessage, pending: _Invocations
    ) -> None:
        try:
            response = await self._invocation_response(connection, message)
        except Exception:
            log.error("invocation %r of %s failed", message.event, connection.id, exc_info=True)
            response = InvokeResponseMessage(
                message.invocation_id, False, None, "InternalServerError", "internal error"
            )
        finally:
            pending.tasks.pop(message.invocation_id, None)
        if pending.book.finish(message.invocation_id):
            send_message(connection, response)
        self._forget_if_idle(connection, pending)

    def _forget_if_idle(self, connection: Connection, pending: _Invocations) -> None:
        if not pending.book and self._invocations.get(connection) is pending:
            del self._invocations[connection]

    async def _invocation_response(
        self, connection: Connection, message: InvokeMessage
    ) -> InvokeResponseMessage:
        """An invocation: the ``event`` handler's reply comes back as ``invokeResponse``."""
        if message.target != "event":
            error = f"Invocation target '{message.target}' is not supported."
            return InvokeResponseMessage(message.invocation_id, False, None, "BadRequest", error)
        try:
            reply = await self._events.user_event(connection, message.event, message.payload)
        except UpstreamError as exc:
            log.debug("invocation of %r by %s failed: %s", message.event, connection.id, exc)
            return InvokeResponseMessage(
                message.invocation_id, False, None, "InternalServerError", str(exc)
            )
        return InvokeResponseMessage(message.invocation_id, True, reply)

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
