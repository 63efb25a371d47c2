"""Typed messages of the Web PubSub client subprotocols (spec: client-protocols.md §3-5).

Names follow the spec; attributes are snake_case. ``ClientMessage`` is what a client sends,
``ServiceMessage`` what the service sends back. Payloads travel as :class:`Payload`: a data type
and the bytes that represent it, independent of any codec.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgspec

__all__ = [
    "AckMessage",
    "CancelInvocationMessage",
    "ClientMessage",
    "ConnectedMessage",
    "DataMessage",
    "DataType",
    "DisconnectedMessage",
    "EventMessage",
    "InvokeMessage",
    "InvokeResponseMessage",
    "JoinGroupMessage",
    "LeaveGroupMessage",
    "Payload",
    "PingMessage",
    "PongMessage",
    "SendToGroupMessage",
    "SequenceAckMessage",
    "ServiceMessage",
]


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
    ``BINARY`` and a serialized ``google.protobuf.Any`` for ``PROTOBUF``. (A frozen msgspec
    struct: one is made per message, and a frozen dataclass costs ten times as much to build.)
    """

    data_type: DataType
    data: bytes


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
    group: str
    payload: Payload
    ack_id: int | None = None
    no_echo: bool = False


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


# -- service -> client ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AckMessage:
    ack_id: int
    success: bool
    error_name: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class DataMessage:
    """A ``message``: from a group when ``group`` is set, else from the server."""

    payload: Payload
    group: str | None = None
    from_user_id: str | None = None


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


ServiceMessage = (
    AckMessage
    | DataMessage
    | ConnectedMessage
    | DisconnectedMessage
    | PongMessage
    | InvokeResponseMessage
)
