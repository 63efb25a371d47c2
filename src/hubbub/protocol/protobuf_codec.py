"""``protobuf.webpubsub.azure.v1`` and ``protobuf.reliable.webpubsub.azure.v1`` (§5-6).

Every frame is a binary WebSocket frame holding one serialized message: ``UpstreamMessage`` from
the client, ``DownstreamMessage`` from the service (see ``webpubsub.proto``). The data type of a
payload is the ``MessageData`` member that is set.

The reliable codec gives each connection its own ``sequence_id``. A data message is serialized
once without it; per connection, :meth:`_ProtobufSequenced.sequenced` appends the ``sequence_id``
field to that body and rebuilds only the two length prefixes around it (``data_message`` and the
WebSocket header).
"""

from __future__ import annotations

import msgspec
from google.protobuf.message import DecodeError

from hubbub.errors import BadRequestError, ProtocolError
from hubbub.protocol.codec import EncodedData
from hubbub.protocol.frames import OP_BINARY, frame, frame_header
from hubbub.protocol.json_codec import CLOSE_INVALID_DATA, CLOSE_UNSUPPORTED_DATA
from hubbub.protocol.messages import (
    AckMessage,
    ClientMessage,
    ConnectedMessage,
    DataMessage,
    DataType,
    DisconnectedMessage,
    EventMessage,
    InvokeResponseMessage,
    JoinGroupMessage,
    LeaveGroupMessage,
    Payload,
    PingMessage,
    PongMessage,
    SendToGroupMessage,
    SequenceAckMessage,
    ServiceMessage,
)
from hubbub.protocol.webpubsub_pb2 import DownstreamMessage, MessageData, UpstreamMessage

__all__ = ["ProtobufCodec"]

_DATA_MESSAGE_TAG = b"\x12"
"""``DownstreamMessage.data_message``: field 2, length-delimited."""
_SEQUENCE_ID_TAG = b"\x20"
"""``DataMessage.sequence_id``: field 4, varint."""
_PARSE_ERRORS = (DecodeError, UnicodeDecodeError)
"""What parsing raises: the pure-Python runtime reports invalid UTF-8 as UnicodeDecodeError."""
_VARINT_1 = [bytes((n,)) for n in range(0x80)]


def _varint(value: int) -> bytes:
    """Return ``value`` (0 <= value < 2**64) as a protobuf base-128 varint."""
    if value < 0x80:
        return _VARINT_1[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0x200000:
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _ProtobufSequenced(EncodedData):
    """A data message serialized once, completed per connection with its ``sequence_id``.

    ``prefix`` holds the serialized ``DataMessage`` without ``sequence_id``. Its fields are
    numbered 1-3, so appending field 4 gives the same bytes as serializing with it set.
    """

    __slots__ = ()

    def __init__(self, body: bytes) -> None:
        super().__init__(OP_BINARY, None, body)

    def sequenced(self, sequence_id: int) -> bytes:
        """Return the binary frame of the ``DownstreamMessage`` carrying ``sequence_id``.

        Args:
            sequence_id: this connection's sequence id, a uint64.

        Returns:
            The complete WebSocket frame.
        """
        body = self.prefix
        tail = _SEQUENCE_ID_TAG + _varint(sequence_id)
        size = len(body) + len(tail)
        head = _DATA_MESSAGE_TAG + _varint(size)
        return b"".join((frame_header(OP_BINARY, len(head) + size), head, body, tail))


def _invalid(reason: str) -> ProtocolError:
    return ProtocolError(reason, CLOSE_INVALID_DATA)


def _payload(data: MessageData, ack_id: int | None) -> Payload | None:
    """Read a ``MessageData``; None when no member is set.

    Raises:
        BadRequestError: ``json_data`` that is not valid JSON.
    """
    kind = data.WhichOneof("data")
    if kind == "text_data":
        return Payload(DataType.TEXT, data.text_data.encode())
    if kind == "binary_data":
        return Payload(DataType.BINARY, data.binary_data)
    if kind == "protobuf_data":
        return Payload(DataType.PROTOBUF, data.protobuf_data.SerializeToString())
    if kind == "json_data":
        text = data.json_data.encode()
        try:
            msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            error = BadRequestError("json_data is not valid JSON")
            error.ack_id = ack_id
            raise error from exc
        return Payload(DataType.JSON, text)
    return None


def _message(upstream: UpstreamMessage) -> ClientMessage:
    """Turn a parsed ``UpstreamMessage`` into its typed message."""
    kind = upstream.WhichOneof("message")
    if kind == "send_to_group_message":
        send = upstream.send_to_group_message
        ack_id = send.ack_id if send.HasField("ack_id") else None
        payload = _payload(send.data, ack_id) if send.HasField("data") else None
        if payload is None:
            raise _invalid("send_to_group_message has no data")
        return SendToGroupMessage(send.group, payload, ack_id, send.no_echo)
    if kind == "event_message":
        event = upstream.event_message
        ack_id = event.ack_id if event.HasField("ack_id") else None
        payload = _payload(event.data, ack_id) if event.HasField("data") else None
        return EventMessage(event.event, payload, ack_id)
    if kind == "join_group_message":
        join = upstream.join_group_message
        return JoinGroupMessage(join.group, join.ack_id if join.HasField("ack_id") else None)
    if kind == "leave_group_message":
        leave = upstream.leave_group_message
        return LeaveGroupMessage(leave.group, leave.ack_id if leave.HasField("ack_id") else None)
    if kind == "sequence_ack_message":
        return SequenceAckMessage(upstream.sequence_ack_message.sequence_id)
    if kind == "ping_message":
        return PingMessage()
    raise _invalid("UpstreamMessage has no known message set")


def _fill(data: MessageData, payload: Payload) -> None:
    """Set the ``MessageData`` member of a payload's data type (§6)."""
    kind = payload.data_type
    if kind is DataType.BINARY:
        data.binary_data = payload.data
    elif kind is DataType.PROTOBUF:
        any_data = data.protobuf_data
        any_data.SetInParent()
        try:
            any_data.ParseFromString(payload.data)
        except _PARSE_ERRORS:
            # Bytes published as protobuf that are not an Any (a lenient JSON client, a REST body)
            # would make the whole frame unreadable; they go out as binary instead.
            data.binary_data = payload.data
    else:
        # JSON goes out as text_data rather than json_data: every protobuf client reads
        # text_data, older ones know nothing else (§5.4 recommends it for compatibility).
        data.text_data = payload.data.decode("utf-8", "replace")


def _downstream(message: ServiceMessage, reliable: bool) -> DownstreamMessage:
    """Build the ``DownstreamMessage`` of an ack, system message or pong."""
    down = DownstreamMessage()
    if isinstance(message, AckMessage):
        ack = down.ack_message
        ack.SetInParent()
        ack.ack_id = message.ack_id
        ack.success = message.success
        if not message.success:
            ack.error.name = message.error_name or ""
            ack.error.message = message.error_message or ""
            ack.error.SetInParent()
    elif isinstance(message, ConnectedMessage):
        connected = down.system_message.connected_message
        connected.SetInParent()
        connected.connection_id = message.connection_id
        if message.user_id is not None:
            connected.user_id = message.user_id
        if reliable and message.reconnection_token is not None:
            connected.reconnection_token = message.reconnection_token
    elif isinstance(message, DisconnectedMessage):
        disconnected = down.system_message.disconnected_message
        disconnected.SetInParent()
        disconnected.reason = message.reason
    elif isinstance(message, PongMessage):
        down.pong_message.SetInParent()
    else:
        raise TypeError(f"not a control message: {message!r}")
    return down


class ProtobufCodec:
    """The protobuf subprotocols; ``reliable`` adds ``sequence_id`` and the reconnection token.

    Attributes:
        name: the subprotocol name.
        reliable: True for ``protobuf.reliable.webpubsub.azure.v1``.
        plain: always False.
    """

    plain = False

    def __init__(self, name: str, *, reliable: bool) -> None:
        self.name = name
        self.reliable = reliable

    def decode(self, data: bytes, binary: bool) -> ClientMessage:
        """Decode one binary frame holding an ``UpstreamMessage``.

        Args:
            data: the frame's payload.
            binary: True for a binary frame.

        Returns:
            The typed client message.

        Raises:
            ProtocolError: a text frame (1003); bytes that are not an ``UpstreamMessage``, no known
                message set, or a ``send_to_group_message`` without data (1007).
            BadRequestError: ``json_data`` that is not valid JSON.
        """
        if not binary:
            raise ProtocolError(
                "text frames are not supported by " + self.name, CLOSE_UNSUPPORTED_DATA
            )
        upstream = UpstreamMessage()
        try:
            upstream.ParseFromString(data)
        except _PARSE_ERRORS as exc:
            raise _invalid(f"invalid message: {exc}") from exc
        return _message(upstream)

    def encode(self, message: ServiceMessage) -> bytes | None:
        """Encode an ack, system message or pong as a complete binary frame.

        Args:
            message: any service message but a data message.

        Returns:
            The frame.

        Raises:
            TypeError: a data message, which goes through :meth:`encode_data`.
        """
        if isinstance(message, DataMessage):
            raise TypeError("data messages go through encode_data")
        if isinstance(message, InvokeResponseMessage):
            return None  # the protobuf subprotocols have no invocations
        return frame(OP_BINARY, _downstream(message, self.reliable).SerializeToString())

    def encode_data(self, message: DataMessage) -> EncodedData:
        """Encode a data message once.

        Group messages say ``from`` "group" and name the group, others say "server"; protobuf
        has no field for ``from_user_id``.

        Args:
            message: the data message.

        Returns:
            A complete frame, or for the reliable codec a body awaiting its ``sequence_id``.
        """
        body = DownstreamMessage.DataMessage()
        if message.group is None:
            setattr(body, "from", "server")
        else:
            setattr(body, "from", "group")
            body.group = message.group
        _fill(body.data, message.payload)
        serialized = body.SerializeToString()
        if self.reliable:
            return _ProtobufSequenced(serialized)
        wrapped = _DATA_MESSAGE_TAG + _varint(len(serialized)) + serialized
        return EncodedData(OP_BINARY, frame(OP_BINARY, wrapped))
