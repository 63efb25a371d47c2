"""Plain WebSocket clients: no subprotocol, no envelope (client-protocols.md §2).

Every inbound frame is the ``message`` user event. Outbound, only data reaches the client: text
and JSON as text frames, binary and protobuf as binary frames; acks and system messages are
never sent.
"""

from __future__ import annotations

from hubbub.protocol.codec import EncodedData
from hubbub.protocol.frames import OP_BINARY, OP_TEXT, frame
from hubbub.protocol.messages import (
    ClientMessage,
    DataMessage,
    DataType,
    EventMessage,
    GroupStateMessage,
    InboundMessage,
    Payload,
    ServiceMessage,
)

__all__ = ["SimpleCodec"]


class SimpleCodec:
    """The codec of plain WebSocket clients."""

    name = ""
    reliable = False
    plain = True

    def decode(self, data: bytes, binary: bool) -> ClientMessage:
        """Wrap a frame as the ``message`` user event."""
        data_type = DataType.BINARY if binary else DataType.TEXT
        return EventMessage("message", Payload(data_type, data))

    def decode_inbound(self, data: bytes, binary: bool) -> InboundMessage:
        """Every frame is the ``message`` user event."""
        return self.decode(data, binary)

    def encode(self, message: ServiceMessage) -> bytes | None:
        """Plain clients receive no acks or system messages."""
        return None

    def encode_data(self, message: DataMessage) -> EncodedData:
        """The data itself, as a text or binary frame."""
        payload = message.payload
        opcode = OP_TEXT if payload.data_type.is_textual else OP_BINARY
        return EncodedData(opcode, frame(opcode, payload.data))

    def encode_group_state(self, message: GroupStateMessage) -> EncodedData | None:
        """Plain clients have no group state."""
        return None
