"""Group streams on a node: each connection's :class:`~hubbub.core.streams.StreamBook`, its
idle timer, and the publications of fragments and stream ends (client-spec §3.6).

A stream is published like ``sendToGroup``, through the engine: every fragment as a group
message with ``stream``, the end as one more with ``endOfStream`` and no payload, to whoever is
a member of the group at the time. The publisher's permission (``sendToGroup``) is checked once,
at the start. A fragment is published before its ``streamAck`` goes out, the end before its
``streamClosed``, so a publisher that saw the answer knows the receivers' copies are on their
way. A connection's streams outlive a dropped reliable socket (their timers run on, and the
answers to the publisher are lost with the socket, as any non-data frame); they end, with
``Cancelled`` for the receivers, when the connection ends.
"""

from __future__ import annotations

import asyncio
import logging

from hubbub.broker.base import Broker
from hubbub.core.commands import Publication, Target
from hubbub.core.fanout import send_message
from hubbub.core.names import validate_group
from hubbub.core.roles import Permission
from hubbub.core.state import Connection
from hubbub.core.streams import (
    Ending,
    Fragment,
    StreamBook,
    StreamLimits,
    Terminal,
    bad_request,
    forbidden,
)
from hubbub.errors import BadRequestError, BrokerError
from hubbub.metrics import PUBLICATIONS
from hubbub.protocol.messages import (
    DataType,
    Payload,
    StreamDataMessage,
    StreamEndMessage,
    StreamStartMessage,
)

__all__ = ["GroupStreams"]

log = logging.getLogger("hubbub.streaming")

_NO_PAYLOAD = Payload(DataType.TEXT, b"")
"""The payload of a stream's last message (wire note: JS drops a message without dataType)."""


class GroupStreams:
    """The open group streams of every connection of a node.

    Args:
        broker: the engine the fragments and ends are published through.
        limits: per-connection limits of :class:`~hubbub.core.streams.StreamBook`.
    """

    def __init__(self, broker: Broker, limits: StreamLimits | None = None) -> None:
        self._broker = broker
        self._limits = limits
        self._books: dict[Connection, StreamBook] = {}
        """Only connections with open streams have a book."""
        self._timers: dict[Connection, asyncio.TimerHandle] = {}

    def open_streams(self, connection: Connection) -> int:
        book = self._books.get(connection)
        return len(book) if book is not None else 0

    async def start(self, connection: Connection, message: StreamStartMessage) -> None:
        """A ``sendToGroup`` with ``stream``: ``streamAck{1}``, or ``streamClosed`` refusing it."""
        try:
            group = validate_group(message.group)
        except BadRequestError as exc:
            send_message(connection, bad_request(message.stream_id, str(exc)))
            return
        if not connection.can(Permission.SEND_TO_GROUP, group):
            send_message(connection, forbidden(message.stream_id, group))
            return
        book = self._books.get(connection)
        if book is None:
            book = self._books[connection] = StreamBook(self._limits)
        answer = book.start(message, asyncio.get_running_loop().time())
        if isinstance(answer, Ending):
            send_message(connection, answer.closed)  # refused: the stream never opened
        else:
            send_message(connection, answer)
        self._schedule(connection)

    async def data(self, connection: Connection, message: StreamDataMessage) -> None:
        """A fragment (published, then acknowledged), a keepalive (no answer), or a refusal."""
        book = self._books.get(connection) or StreamBook(self._limits)
        answer = book.data(message, asyncio.get_running_loop().time())
        if isinstance(answer, Fragment):
            try:
                await self._publish(connection, answer.group, answer.no_echo, answer)
            except BrokerError as exc:
                log.debug("stream fragment of %s not published: %s", connection.id, exc)
                send_message(connection, book.rewind(answer))
            else:
                send_message(connection, answer.ack)
        elif isinstance(answer, Ending):
            await self._end(connection, answer)
        elif answer is not None:
            send_message(connection, answer)
        self._schedule(connection)

    async def invalid(self, connection: Connection, stream_id: str, message: str) -> None:
        """An invalid fragment: its stream ends at once (receivers get ``Cancelled``), and the
        publisher gets ``streamClosed{BadRequest}``."""
        book = self._books.get(connection) or StreamBook(self._limits)
        await self._end(connection, book.invalid(stream_id, message))
        self._schedule(connection)

    async def end(self, connection: Connection, message: StreamEndMessage) -> None:
        """``streamEnd``: the last message to the receivers, then ``streamClosed``."""
        book = self._books.get(connection) or StreamBook(self._limits)
        await self._end(connection, book.end(message))
        self._schedule(connection)

    def ended(self, connection: Connection) -> None:
        """The connection is over: its open streams end ``Cancelled`` for their receivers."""
        timer = self._timers.pop(connection, None)
        if timer is not None:
            timer.cancel()
        book = self._books.pop(connection, None)
        if book is None:
            return
        for terminal in book.cancel_all():
            self._publish_nowait(connection, terminal)

    # -- internals ----------------------------------------------------------------------------

    async def _end(self, connection: Connection, ending: Ending) -> None:
        terminal = ending.terminal
        if terminal is not None:
            try:
                await self._publish(connection, terminal.group, terminal.no_echo, terminal)
            except BrokerError as exc:
                log.debug("end of stream of %s not published: %s", connection.id, exc)
        send_message(connection, ending.closed)

    async def _publish(
        self, connection: Connection, group: str, no_echo: bool, part: Fragment | Terminal
    ) -> None:
        await self._broker.publish(_publication(connection, group, no_echo, part))

    def _publish_nowait(self, connection: Connection, terminal: Terminal) -> None:
        try:
            self._broker.publish_nowait(
                _publication(connection, terminal.group, terminal.no_echo, terminal)
            )
        except BrokerError as exc:
            log.debug("end of stream of %s not published: %s", connection.id, exc)

    def _schedule(self, connection: Connection) -> None:
        """(Re)arm the connection's timer for its next stream deadline; forget an empty book."""
        timer = self._timers.pop(connection, None)
        if timer is not None:
            timer.cancel()
        book = self._books.get(connection)
        deadline = book.next_deadline() if book is not None else None
        if deadline is None:
            self._books.pop(connection, None)
            return
        loop = asyncio.get_running_loop()
        self._timers[connection] = loop.call_at(deadline, self._expire, connection, deadline)

    def _expire(self, connection: Connection, deadline: float) -> None:
        self._timers.pop(connection, None)
        book = self._books.get(connection)
        if book is None:
            return
        # A timer may fire up to the loop's clock resolution early: count it as on time.
        now = max(asyncio.get_running_loop().time(), deadline)
        for ending in book.expire(now):
            if ending.terminal is not None:
                self._publish_nowait(connection, ending.terminal)
            send_message(connection, ending.closed)
        self._schedule(connection)


def _publication(
    connection: Connection, group: str, no_echo: bool, part: Fragment | Terminal
) -> Publication:
    PUBLICATIONS.inc()
    return Publication(
        connection.hub,
        Target.GROUP,
        group,
        part.payload if isinstance(part, Fragment) else _NO_PAYLOAD,
        from_group=True,
        from_user_id=connection.user_id,
        excluded=frozenset((connection.id,)) if no_echo else frozenset(),
        stream=part.info,
    )
