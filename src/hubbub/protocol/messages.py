"""Typed messages of the Web PubSub client subprotocols (spec: client-protocols.md §3-5).

Names follow the spec; attributes are snake_case. ``ClientMessage`` is what a client sends,
``ServiceMessage`` what the service sends back. Payloads travel as :class:`Payload`: a data type,
the bytes that represent it and the message's metadata, independent of any codec.

Group streams (client-spec §3.6) and group state (the newest SDKs) have messages of their own;
their wire forms are described in ``json_codec`` and ``webpubsub.proto``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgspec

__all__ = [
    "BEYOND_CLIENT_MESSAGE",
    "AckMessage",
    "CancelInvocationMessage",
    "ClientInvokeResponseMessage",
    "ClientMessage",
    "ConnectedMessage",
    "DataMessage",
    "DataType",
    "DisconnectedMessage",
    "EventMessage",
    "GroupStateItem",
    "GroupStateMessage",
    "GroupStateSnapshotMessage",
    "GroupStateUpdateMessage",
    "InboundMessage",
    "InvokeMessage",
    "InvokeResponseMessage",
    "JoinGroupMessage",
    "LeaveGroupMessage",
    "Metadata",
    "Payload",
    "PingMessage",
    "PongMessage",
    "SendToGroupMessage",
    "SequenceAckMessage",
    "ServiceMessage",
    "SetGroupStateMessage",
    "StateEntries",
    "StreamAckMessage",
    "StreamClosedMessage",
    "StreamDataMessage",
    "StreamEndError",
    "StreamEndMessage",
    "StreamInfo",
    "StreamNackMessage",
    "StreamStartMessage",
    "SubscribeGroupStateMessage",
    "UnsubscribeGroupStateMessage",
]

Metadata = tuple[tuple[str, str], ...]
"""Message metadata: ``(key, value)`` pairs in the order given, keys unique (hashable, and
encodable by msgspec as it stands)."""

StateEntries = tuple[tuple[str, str], ...]
"""A connection's state in a group: ``(key, value)`` pairs in the order given, keys unique."""


class DataType(enum.Enum):
    """How ``data`` is represented (client-protocols.md §3.1, §6)."""

    JSON = "json"
    TEXT = "text"
    BINARY = "binary"
    PROTOBUF = "protobuf"

    @property
    def is_textual(self) -> bool:
        """True when plain WebSocket clients receive it as a text frame."""
        return self is DataType.JSON or self is DataType.TEXT


class Payload(msgspec.Struct, frozen=True, gc=False):
    """Message data, independent of the wire format.

    ``data`` holds UTF-8 JSON text for ``JSON``, UTF-8 text for ``TEXT``, raw bytes for
    ``BINARY`` and a serialized ``google.protobuf.Any`` for ``PROTOBUF``. ``metadata`` travels
    with the data to every subprotocol client and event handler (None when there is none). (A
    frozen msgspec struct: one is made per message, and a frozen dataclass costs ten times as
    much to build.)
    """

    data_type: DataType
    data: bytes
    metadata: Metadata | None = None


# -- client -> service ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinGroupMessage:
    group: str
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class LeaveGroupMessage:
    group: str
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class SendToGroupMessage:
    """A publication to a group; ``ttl_seconds`` (1-300) bounds how long a copy may wait."""

    group: str
    payload: Payload
    ack_id: int | None = None
    no_echo: bool = False
    ttl_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class EventMessage:
    event: str
    payload: Payload | None
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class InvokeMessage:
    """A request to the ``event`` handler that expects its answer (preview, §3.5)."""

    invocation_id: str
    event: str
    payload: Payload | None
    target: str = "event"


@dataclass(frozen=True, slots=True)
class CancelInvocationMessage:
    invocation_id: str


@dataclass(frozen=True, slots=True)
class ClientInvokeResponseMessage:
    """A client's answer to an invocation the service sent it (the service sends none yet)."""

    invocation_id: str
    success: bool
    payload: Payload | None = None
    error_name: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class StreamStartMessage:
    """A ``sendToGroup`` with ``stream`` and no data: opens a group stream (spec §3.6.1)."""

    group: str
    stream_id: str
    idle_timeout_ms: int | None = None
    no_echo: bool = False
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class StreamDataMessage:
    """A stream fragment, or with neither sequence id nor payload a keepalive (§3.6.2)."""

    stream_id: str
    stream_sequence_id: int | None = None
    payload: Payload | None = None

    @property
    def keepalive(self) -> bool:
        """True for a keepalive, which keeps the stream open and is never delivered."""
        return self.payload is None


@dataclass(frozen=True, slots=True)
class StreamEndError:
    """The application's reason for ending a stream; subscribers see it as ``UserError``."""

    message: str | None = None
    user_error_code: str | None = None


@dataclass(frozen=True, slots=True)
class StreamEndMessage:
    stream_id: str
    error: StreamEndError | None = None


@dataclass(frozen=True, slots=True)
class SetGroupStateMessage:
    """Set this connection's state in a group; ``state`` None clears it."""

    group: str
    state: StateEntries | None
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class SubscribeGroupStateMessage:
    group: str
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class UnsubscribeGroupStateMessage:
    group: str
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class PingMessage:
    pass


@dataclass(frozen=True, slots=True)
class SequenceAckMessage:
    sequence_id: int


ClientMessage = (
    JoinGroupMessage
    | LeaveGroupMessage
    | SendToGroupMessage
    | EventMessage
    | PingMessage
    | SequenceAckMessage
    | InvokeMessage
    | CancelInvocationMessage
)
"""The messages a connection's handler executes."""

InboundMessage = (
    ClientMessage
    | ClientInvokeResponseMessage
    | StreamStartMessage
    | StreamDataMessage
    | StreamEndMessage
    | SetGroupStateMessage
    | SubscribeGroupStateMessage
    | UnsubscribeGroupStateMessage
)
"""Every message a client may send: :data:`ClientMessage`, group streams, group state and
answers to invocations."""

BEYOND_CLIENT_MESSAGE: tuple[type, ...] = (
    ClientInvokeResponseMessage,
    StreamStartMessage,
    StreamDataMessage,
    StreamEndMessage,
    SetGroupStateMessage,
    SubscribeGroupStateMessage,
    UnsubscribeGroupStateMessage,
)
"""The members of :data:`InboundMessage` that are not :data:`ClientMessage`."""


# -- service -> client ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AckMessage:
    ack_id: int
    success: bool
    error_name: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """Where a group message sits in a stream (§3.6.5); ``error_name`` only on the last one."""

    stream_id: str
    stream_sequence_id: int
    end_of_stream: bool = False
    error_name: str | None = None
    error_message: str | None = None
    user_error_code: str | None = None


@dataclass(frozen=True, slots=True)
class DataMessage:
    """A ``message``: from a group when ``group`` is set, else from the server."""

    payload: Payload
    group: str | None = None
    from_user_id: str | None = None
    stream: StreamInfo | None = None


@dataclass(frozen=True, slots=True)
class ConnectedMessage:
    connection_id: str
    user_id: str | None
    reconnection_token: str | None = None


@dataclass(frozen=True, slots=True)
class DisconnectedMessage:
    reason: str


@dataclass(frozen=True, slots=True)
class PongMessage:
    pass


@dataclass(frozen=True, slots=True)
class InvokeResponseMessage:
    """The answer to an :class:`InvokeMessage`: the handler's reply, or an error."""

    invocation_id: str
    success: bool
    payload: Payload | None = None
    error_name: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class StreamAckMessage:
    """Every fragment below ``expected_sequence_id`` is accepted (§3.6.4)."""

    stream_id: str
    expected_sequence_id: int


@dataclass(frozen=True, slots=True)
class StreamNackMessage:
    """A retriable stream error: ``InvalidSequenceId`` or ``TransientError`` (§3.6.4)."""

    stream_id: str
    expected_sequence_id: int
    name: str
    message: str


@dataclass(frozen=True, slots=True)
class StreamClosedMessage:
    """The stream is over for its publisher; ``error_name`` None for a normal end (§3.6.4)."""

    stream_id: str
    error_name: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class GroupStateItem:
    """One connection's state in a group; ``state`` None once cleared."""

    connection_id: str
    user_id: str | None
    state: StateEntries | None
    updated_at: int
    """Unix epoch milliseconds, increasing with every change of the connection's state."""


@dataclass(frozen=True, slots=True)
class GroupStateSnapshotMessage:
    """Every member's state, sent once after ``subscribeGroupState`` succeeds."""

    group: str
    items: tuple[GroupStateItem, ...]


@dataclass(frozen=True, slots=True)
class GroupStateUpdateMessage:
    """The states that changed, pushed to the subscribed members of the group."""

    group: str
    items: tuple[GroupStateItem, ...]


GroupStateMessage = GroupStateSnapshotMessage | GroupStateUpdateMessage
"""Group-state messages: sequenced on the reliable subprotocols, like data messages."""

ServiceMessage = (
    AckMessage
    | DataMessage
    | ConnectedMessage
    | DisconnectedMessage
    | PongMessage
    | InvokeResponseMessage
    | StreamAckMessage
    | StreamNackMessage
    | StreamClosedMessage
    | GroupStateSnapshotMessage
    | GroupStateUpdateMessage
)
