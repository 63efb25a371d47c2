"""The group streams a connection publishes: one pure state machine per connection (§3.6).

A :class:`StreamBook` holds a connection's open streams and answers each stream message with
what to do: acknowledge, publish a fragment, refuse, or end the stream. It keeps no clock of its
own (callers pass ``now``, monotonic seconds) and does no I/O. The node owns the timer that
calls :meth:`StreamBook.expire` at :meth:`StreamBook.next_deadline`.

Rules (client-spec §3.6; choices marked in the wire note):

* A start is acknowledged with ``streamAck{expectedSequenceId: 1}``; an id already open, or one
  too many open streams, is refused with ``streamClosed{BadRequest}``.
* A fragment with the expected sequence id is published and acknowledged with the next one; a
  lower id is a duplicate (acknowledged, not published); a higher id is nacked
  (``InvalidSequenceId``) and the stream stays open. Acks never go backwards.
* A keepalive or any fragment of an open stream resets its idle timer. An invalid fragment
  (incomplete, or data that does not decode) ends the stream: ``streamClosed{BadRequest}`` for
  the publisher, ``Cancelled`` for the receivers; later fragments find no stream.
* ``streamEnd`` sends the terminal message to the group (sequence id = the next expected one,
  ``UserError`` when the publisher gave an error) and ``streamClosed`` to the publisher.
* An idle stream ends with ``IdleTimeout`` for both; a stream whose publisher is gone ends with
  ``Cancelled`` for its receivers; an optional size or lifetime limit ends one with
  ``BadRequest`` for the publisher and ``Cancelled`` for the receivers.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubbub.protocol.messages import (
    Payload,
    StreamAckMessage,
    StreamClosedMessage,
    StreamDataMessage,
    StreamEndMessage,
    StreamInfo,
    StreamNackMessage,
    StreamStartMessage,
)

__all__ = [
    "DEFAULT_IDLE_TIMEOUT_MS",
    "Ending",
    "Fragment",
    "StreamBook",
    "StreamLimits",
    "Terminal",
    "bad_request",
    "forbidden",
]

DEFAULT_IDLE_TIMEOUT_MS = 300_000
"""The service's idle timeout when a start gives none (client-spec §3.6.1.4)."""

CANCELLED = "Cancelled"
IDLE_TIMEOUT = "IdleTimeout"
USER_ERROR = "UserError"


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """How many streams a connection may keep open, and for how long and how much."""

    max_active: int = 100
    max_idle_timeout_ms: int = DEFAULT_IDLE_TIMEOUT_MS
    """Longer idle timeouts asked for are cut to this."""
    max_bytes: int | None = None
    """Most payload bytes of one stream; None for no limit."""
    max_lifetime_ms: int | None = None
    """Longest a stream may stay open; None for no limit (the spec sets none)."""


@dataclass(frozen=True, slots=True)
class Terminal:
    """The last message of a stream, for every receiver in ``group`` (the publisher too unless
    ``no_echo``): an empty payload with ``info.end_of_stream``."""

    group: str
    no_echo: bool
    info: StreamInfo


@dataclass(frozen=True, slots=True)
class Fragment:
    """A fragment to publish to ``group``, then ``ack`` to the publisher."""

    group: str
    no_echo: bool
    payload: Payload
    info: StreamInfo
    ack: StreamAckMessage


@dataclass(frozen=True, slots=True)
class Ending:
    """A stream is over: ``closed`` to the publisher, ``terminal`` to the receivers (None when
    the stream was never open)."""

    closed: StreamClosedMessage
    terminal: Terminal | None


@dataclass(slots=True)
class _Stream:
    stream_id: str
    group: str
    no_echo: bool
    idle_s: float
    started: float
    deadline: float
    expected: int = 1
    size: int = 0


def forbidden(stream_id: str, group: str) -> StreamClosedMessage:
    """The refusal of a start without ``webpubsub.sendToGroup[.group]`` (checked at start)."""
    return StreamClosedMessage(
        stream_id,
        "Forbidden",
        f"The client has no permission to send message to group '{group}'.",
    )


def bad_request(stream_id: str, message: str) -> StreamClosedMessage:
    """``streamClosed{BadRequest}``: an invalid stream message (see ``BadRequestError``)."""
    return StreamClosedMessage(stream_id, "BadRequest", message)


def _not_found(stream_id: str) -> StreamClosedMessage:
    return StreamClosedMessage(stream_id, "StreamNotFound", f"Stream '{stream_id}' is not found.")


class StreamBook:
    """The open streams of one connection."""

    __slots__ = ("_streams", "limits")

    def __init__(self, limits: StreamLimits | None = None) -> None:
        self.limits = limits or StreamLimits()
        self._streams: dict[str, _Stream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._streams

    def start(self, message: StreamStartMessage, now: float) -> StreamAckMessage | Ending:
        """Open a stream; the caller checked the publisher's permission for the group."""
        stream_id = message.stream_id
        if stream_id in self._streams:
            return Ending(bad_request(stream_id, f"Stream '{stream_id}' already exists."), None)
        if len(self._streams) >= self.limits.max_active:
            limit = self.limits.max_active
            text = f"Too many active streams on this connection ({limit})."
            return Ending(bad_request(stream_id, text), None)
        asked = message.idle_timeout_ms or DEFAULT_IDLE_TIMEOUT_MS
        idle_s = min(asked, self.limits.max_idle_timeout_ms) / 1000
        self._streams[stream_id] = _Stream(
            stream_id, message.group, message.no_echo, idle_s, now, now + idle_s
        )
        return StreamAckMessage(stream_id, 1)

    def data(
        self, message: StreamDataMessage, now: float
    ) -> Fragment | StreamAckMessage | StreamNackMessage | Ending | None:
        """A fragment or keepalive; None for an accepted keepalive (nothing to answer)."""
        stream = self._streams.get(message.stream_id)
        if stream is None:
            return Ending(_not_found(message.stream_id), None)
        stream.deadline = now + stream.idle_s
        sequence_id, payload = message.stream_sequence_id, message.payload
        if sequence_id is None or payload is None:
            return None
        if sequence_id < stream.expected:
            return StreamAckMessage(stream.stream_id, stream.expected)
        if sequence_id > stream.expected:
            return StreamNackMessage(
                stream.stream_id,
                stream.expected,
                "InvalidSequenceId",
                f"Expected streamSequenceId {stream.expected}, received {sequence_id}.",
            )
        limit = self.limits.max_bytes
        if limit is not None and stream.size + len(payload.data) > limit:
            return self._end(stream, bad_request(stream.stream_id, _too_big(stream, limit)))
        stream.size += len(payload.data)
        stream.expected += 1
        info = StreamInfo(stream.stream_id, sequence_id)
        ack = StreamAckMessage(stream.stream_id, stream.expected)
        return Fragment(stream.group, stream.no_echo, payload, info, ack)

    def invalid(self, stream_id: str, message: str) -> Ending:
        """An invalid fragment (incomplete, or data that does not decode) ends its stream:
        ``BadRequest`` for the publisher, ``Cancelled`` for the receivers; a stream that is
        not open has no receivers to tell."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return Ending(bad_request(stream_id, message), None)
        return self._end(stream, bad_request(stream_id, message))

    def rewind(self, fragment: Fragment) -> StreamNackMessage:
        """Undo an accepted fragment that could not be published: nack ``TransientError``."""
        stream = self._streams.get(fragment.info.stream_id)
        expected = fragment.info.stream_sequence_id
        if stream is not None and stream.expected == expected + 1:
            stream.expected = expected
            stream.size -= len(fragment.payload.data)
        return StreamNackMessage(
            fragment.info.stream_id,
            expected,
            "TransientError",
            "The fragment could not be published; send it again.",
        )

    def end(self, message: StreamEndMessage) -> Ending:
        """``streamEnd``: the publisher's error, if any, reaches receivers as ``UserError``."""
        stream = self._streams.get(message.stream_id)
        if stream is None:
            return Ending(_not_found(message.stream_id), None)
        reason = message.error
        if reason is None:
            return self._end(stream, StreamClosedMessage(stream.stream_id))
        del self._streams[stream.stream_id]
        info = StreamInfo(
            stream.stream_id,
            stream.expected,
            True,
            USER_ERROR,
            reason.message or "",
            reason.user_error_code,
        )
        return Ending(
            StreamClosedMessage(stream.stream_id), Terminal(stream.group, stream.no_echo, info)
        )

    def expire(self, now: float) -> list[Ending]:
        """End the streams idle past their timeout or open past the lifetime limit."""
        endings: list[Ending] = []
        lifetime = self.limits.max_lifetime_ms
        for stream in list(self._streams.values()):
            if now >= stream.deadline:
                ms = round(stream.idle_s * 1000)
                text = f"Stream '{stream.stream_id}' was idle for more than {ms} ms."
                closed = StreamClosedMessage(stream.stream_id, IDLE_TIMEOUT, text)
                endings.append(self._end(stream, closed, IDLE_TIMEOUT, text))
            elif lifetime is not None and now - stream.started >= lifetime / 1000:
                text = f"Stream '{stream.stream_id}' was open for more than {lifetime} ms."
                endings.append(self._end(stream, bad_request(stream.stream_id, text)))
        return endings

    def next_deadline(self) -> float | None:
        """When :meth:`expire` has something to do next; None without open streams."""
        deadlines = [s.deadline for s in self._streams.values()]
        lifetime = self.limits.max_lifetime_ms
        if lifetime is not None:
            deadlines += [s.started + lifetime / 1000 for s in self._streams.values()]
        return min(deadlines, default=None)

    def cancel_all(self) -> list[Terminal]:
        """The publisher is gone for good: every open stream ends ``Cancelled`` for receivers."""
        terminals = [
            Terminal(
                stream.group,
                stream.no_echo,
                StreamInfo(
                    stream.stream_id,
                    stream.expected,
                    True,
                    CANCELLED,
                    "The publisher of the stream disconnected.",
                ),
            )
            for stream in self._streams.values()
        ]
        self._streams.clear()
        return terminals

    def _end(
        self,
        stream: _Stream,
        closed: StreamClosedMessage,
        error_name: str | None = None,
        error_message: str | None = None,
    ) -> Ending:
        """Drop ``stream``; receivers see ``error_name`` (``Cancelled`` for a publisher error)."""
        del self._streams[stream.stream_id]
        if error_name is None and closed.error_name is not None:
            error_name, error_message = CANCELLED, closed.error_message
        info = StreamInfo(stream.stream_id, stream.expected, True, error_name, error_message)
        return Ending(closed, Terminal(stream.group, stream.no_echo, info))


def _too_big(stream: _Stream, limit: int) -> str:
    return f"Stream '{stream.stream_id}' exceeds {limit} bytes."
