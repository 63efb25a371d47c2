"""``protobuf.webpubsub.azure.v1`` and ``protobuf.reliable.webpubsub.azure.v1`` (§5-6).

Every frame is a binary WebSocket frame holding one serialized message: ``UpstreamMessage`` from
the client, ``DownstreamMessage`` from the service (see ``webpubsub.proto``). The data type of a
payload is the ``MessageData`` member that is set.

The reliable codec gives each connection its own ``sequence_id``. A data message (or a
group-state message) is serialized once without it; per connection,
:meth:`_ProtobufSequenced.sequenced` appends the ``sequence_id`` field to that body and rebuilds
only the two length prefixes around it (the ``DownstreamMessage`` member and the WebSocket
header). Protobuf parsers accept fields in any order, so an appended field 4 after ``metadata``
(5) and ``stream`` (6) reads the same as a serialized one.

Streaming (``stream_data_message``, ``stream_end_message``, ``StreamInfo`` and the stream
answers) and group state follow ``webpubsub.proto``.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from google.protobuf.message import DecodeError

from hubbub.errors import BadRequestError, InvalidFragmentError, ProtocolError
from hubbub.protocol.codec import EncodedData, executable
from hubbub.protocol.frames import OP_BINARY, frame, frame_header
from hubbub.protocol.json_codec import CLOSE_INVALID_DATA, CLOSE_UNSUPPORTED_DATA, MAX_TTL_SECONDS
from hubbub.protocol.messages import (
    AckMessage,
    ClientMessage,
    ConnectedMessage,
    DataMessage,
    DataType,
    DisconnectedMessage,
    EventMessage,
    GroupStateItem,
    GroupStateMessage,
    GroupStateSnapshotMessage,
    GroupStateUpdateMessage,
    InboundMessage,
    InvokeResponseMessage,
    JoinGroupMessage,
    LeaveGroupMessage,
    Metadata,
    Payload,
    PingMessage,
    PongMessage,
    SendToGroupMessage,
    SequenceAckMessage,
    ServiceMessage,
    SetGroupStateMessage,
    StreamAckMessage,
    StreamClosedMessage,
    StreamDataMessage,
    StreamEndError,
    StreamEndMessage,
    StreamInfo,
    StreamNackMessage,
    StreamStartMessage,
    SubscribeGroupStateMessage,
    UnsubscribeGroupStateMessage,
)
from hubbub.protocol.metadata import MetadataError, validate_metadata
from hubbub.protocol.webpubsub_pb2 import (
    DownstreamMessage,
    GroupStateItem as PbGroupStateItem,
    MessageData,
    UpstreamMessage,
)

__all__ = ["ProtobufCodec"]

_DATA_MESSAGE_TAG = b"\x12"
"""``DownstreamMessage.data_message``: field 2, length-delimited."""
_SEQUENCE_ID_TAG = b"\x20"
"""``DataMessage.sequence_id``: field 4, varint."""
_STATE_UPDATE_TAG = b"\x4a"
"""``DownstreamMessage.group_state_update_message``: field 9, length-delimited."""
_STATE_SNAPSHOT_TAG = b"\x52"
"""``DownstreamMessage.group_state_snapshot_message``: field 10, length-delimited."""
_STATE_SEQUENCE_ID_TAG = b"\x18"
"""``GroupStateUpdateMessage.sequence_id`` / ``GroupStateSnapshotMessage.sequence_id``: field 3."""
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
    """A message serialized once, completed per connection with its ``sequence_id``.

    ``prefix`` holds the serialized inner message (``DataMessage``, or a group-state message)
    without ``sequence_id``; ``sequenced`` appends that field and wraps the result in its
    ``DownstreamMessage`` member.
    """

    __slots__ = ("member_tag", "sequence_tag")

    def __init__(
        self,
        body: bytes,
        member_tag: bytes = _DATA_MESSAGE_TAG,
        sequence_tag: bytes = _SEQUENCE_ID_TAG,
    ) -> None:
        super().__init__(OP_BINARY, None, body)
        self.member_tag = member_tag
        self.sequence_tag = sequence_tag

    def sequenced(self, sequence_id: int) -> bytes:
        """Return the binary frame of the ``DownstreamMessage`` carrying ``sequence_id``.

        Args:
            sequence_id: this connection's sequence id, a uint64.

        Returns:
            The complete WebSocket frame.
        """
        body = self.prefix
        tail = self.sequence_tag + _varint(sequence_id)
        size = len(body) + len(tail)
        head = self.member_tag + _varint(size)
        return b"".join((frame_header(OP_BINARY, len(head) + size), head, body, tail))

    def template(self, digits: int) -> None:
        """None: a varint has no %-format; frames are built one by one."""
        return None


def _invalid(reason: str) -> ProtocolError:
    return ProtocolError(reason, CLOSE_INVALID_DATA)


def _bad_request(
    message: str, ack_id: int | None = None, stream_id: str | None = None
) -> BadRequestError:
    error = BadRequestError(message)
    error.ack_id = ack_id
    error.stream_id = stream_id
    return error


def _payload(
    data: MessageData,
    ack_id: int | None,
    metadata: Metadata | None = None,
    stream_id: str | None = None,
) -> Payload | None:
    """Read a ``MessageData``; None when no member is set.

    Raises:
        BadRequestError: ``json_data`` that is not valid JSON.
    """
    kind = data.WhichOneof("data")
    if kind == "text_data":
        return Payload(DataType.TEXT, data.text_data.encode(), metadata)
    if kind == "binary_data":
        return Payload(DataType.BINARY, data.binary_data, metadata)
    if kind == "protobuf_data":
        return Payload(DataType.PROTOBUF, data.protobuf_data.SerializeToString(), metadata)
    if kind == "json_data":
        text = data.json_data.encode()
        try:
            msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            if stream_id is not None:  # a fragment's data
                raise InvalidFragmentError("json_data is not valid JSON", stream_id) from exc
            raise _bad_request("json_data is not valid JSON", ack_id) from exc
        return Payload(DataType.JSON, text, metadata)
    return None


def _metadata(given: Mapping[str, str], ack_id: int | None) -> Metadata | None:
    if not given:
        return None
    try:
        return validate_metadata(given.items())
    except MetadataError as exc:
        raise _bad_request(str(exc), ack_id) from exc


def _send_to_group(send: UpstreamMessage.SendToGroupMessage) -> InboundMessage:
    ack_id = send.ack_id if send.HasField("ack_id") else None
    if send.HasField("stream"):
        return _stream_start(send, ack_id)
    metadata = _metadata(send.metadata, ack_id)
    payload = _payload(send.data, ack_id, metadata) if send.HasField("data") else None
    if payload is None:
        raise _invalid("send_to_group_message has no data")
    ttl = send.ttl_seconds if send.HasField("ttl_seconds") else 0
    if ttl > MAX_TTL_SECONDS:
        raise _bad_request(f"ttl_seconds must be between 0 and {MAX_TTL_SECONDS}", ack_id)
    return SendToGroupMessage(send.group, payload, ack_id, send.no_echo, ttl or None)


def _stream_start(send: UpstreamMessage.SendToGroupMessage, ack_id: int | None) -> InboundMessage:
    """A stream start has ``stream`` and no data (client-spec §3.6.1)."""
    stream = send.stream
    stream_id = stream.stream_id
    if not stream_id:
        raise _bad_request("The stream id must not be empty.", stream_id=stream_id)
    if send.HasField("data"):
        raise _bad_request("A stream start must not carry data.", stream_id=stream_id)
    idle = stream.idle_timeout_ms if stream.HasField("idle_timeout_ms") else None
    if idle == 0:
        raise _bad_request("The idle timeout must be greater than 0.", stream_id=stream_id)
    return StreamStartMessage(send.group, stream_id, idle, send.no_echo, ack_id)


def _stream_data(message: UpstreamMessage.StreamDataMessage) -> StreamDataMessage:
    stream_id = message.stream_id
    has_sequence = message.HasField("stream_sequence_id")
    payload = _payload(message.data, None, stream_id=stream_id)
    if not has_sequence and payload is None:
        return StreamDataMessage(stream_id)
    if not has_sequence or payload is None:
        raise InvalidFragmentError(
            "A stream fragment needs stream_sequence_id and data.", stream_id
        )
    return StreamDataMessage(stream_id, message.stream_sequence_id, payload)


def _stream_end(message: UpstreamMessage.StreamEndMessage) -> StreamEndMessage:
    if not message.HasField("error"):
        return StreamEndMessage(message.stream_id)
    reason = message.error
    return StreamEndMessage(
        message.stream_id,
        StreamEndError(
            reason.message if reason.HasField("message") else None,
            reason.user_error_code if reason.HasField("user_error_code") else None,
        ),
    )


def _event(event: UpstreamMessage.EventMessage) -> EventMessage:
    ack_id = event.ack_id if event.HasField("ack_id") else None
    metadata = _metadata(event.metadata, ack_id)
    payload = _payload(event.data, ack_id, metadata) if event.HasField("data") else None
    if payload is None and metadata is not None:
        payload = Payload(DataType.TEXT, b"", metadata)
    return EventMessage(event.event, payload, ack_id)


def _set_group_state(message: UpstreamMessage.SetGroupStateMessage) -> SetGroupStateMessage:
    ack_id = message.ack_id if message.HasField("ack_id") else None
    state = tuple(message.state.entries.items()) if message.HasField("state") else None
    return SetGroupStateMessage(message.group, state, ack_id)


def _message(upstream: UpstreamMessage) -> InboundMessage:
    """Turn a parsed ``UpstreamMessage`` into its typed message."""
    kind = upstream.WhichOneof("message")
    if kind == "send_to_group_message":
        return _send_to_group(upstream.send_to_group_message)
    if kind == "stream_data_message":
        return _stream_data(upstream.stream_data_message)
    if kind == "event_message":
        return _event(upstream.event_message)
    if kind == "stream_end_message":
        return _stream_end(upstream.stream_end_message)
    if kind in _GROUP_STATE_REQUESTS:
        return _group_state_request(upstream, kind)
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


_GROUP_STATE_REQUESTS = frozenset(
    ("set_group_state_message", "subscribe_group_state_message", "unsubscribe_group_state_message")
)


def _group_state_request(upstream: UpstreamMessage, kind: str) -> InboundMessage:
    if kind == "set_group_state_message":
        return _set_group_state(upstream.set_group_state_message)
    request = getattr(upstream, kind)
    ack_id = request.ack_id if request.HasField("ack_id") else None
    if kind == "subscribe_group_state_message":
        return SubscribeGroupStateMessage(request.group, ack_id)
    return UnsubscribeGroupStateMessage(request.group, ack_id)


def _fill_stream(info: StreamInfo, stream: DownstreamMessage.DataMessage) -> None:
    """Set ``DataMessage.stream`` (field 6)."""
    target = stream.stream
    target.stream_id = info.stream_id
    target.stream_sequence_id = info.stream_sequence_id
    if info.end_of_stream:
        target.end_of_stream = True
    if info.error_name is not None:
        target.error.name = info.error_name
        target.error.message = info.error_message or ""
        target.error.user_error_code = info.user_error_code or ""
        target.error.SetInParent()


def _fill_state_item(item: GroupStateItem, target: PbGroupStateItem) -> None:
    target.connection_id = item.connection_id
    if item.user_id is not None:
        target.user_id = item.user_id
    if item.state is not None:
        target.state.SetInParent()
        target.state.entries.update(item.state)
    target.updated_at = item.updated_at


def _fill_stream_answer(
    message: StreamAckMessage | StreamNackMessage | StreamClosedMessage, down: DownstreamMessage
) -> None:
    if isinstance(message, StreamAckMessage):
        ack = down.stream_ack_message
        ack.SetInParent()
        ack.stream_id = message.stream_id
        ack.expected_sequence_id = message.expected_sequence_id
    elif isinstance(message, StreamNackMessage):
        nack = down.stream_nack_message
        nack.SetInParent()
        nack.stream_id = message.stream_id
        nack.name = message.name
        nack.message = message.message
        nack.expected_sequence_id = message.expected_sequence_id
    else:
        closed = down.stream_closed_message
        closed.SetInParent()
        closed.stream_id = message.stream_id
        if message.error_name is not None:
            closed.error.name = message.error_name
            closed.error.message = message.error_message or ""
            closed.error.SetInParent()


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
    elif isinstance(message, StreamAckMessage | StreamNackMessage | StreamClosedMessage):
        _fill_stream_answer(message, down)
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
        """Decode one binary frame into a message the handler executes (``Codec.decode``)."""
        return executable(self.decode_inbound, data, binary)

    def decode_inbound(self, data: bytes, binary: bool) -> InboundMessage:
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
        if isinstance(message, GroupStateSnapshotMessage | GroupStateUpdateMessage):
            raise TypeError("group state messages go through encode_group_state")
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
        payload = message.payload
        _fill(body.data, payload)
        if payload.metadata:
            body.metadata.update(payload.metadata)
        if message.stream is not None:
            _fill_stream(message.stream, body)
        return self._open(body.SerializeToString(), _DATA_MESSAGE_TAG, _SEQUENCE_ID_TAG)

    def encode_group_state(self, message: GroupStateMessage) -> EncodedData:
        """Encode a group-state snapshot or update once (``sequence_id`` on reliable ones).

        Args:
            message: the snapshot or update.

        Returns:
            A complete frame, or for the reliable codec a body awaiting its ``sequence_id``.
        """
        body: DownstreamMessage.GroupStateUpdateMessage | (
            DownstreamMessage.GroupStateSnapshotMessage
        )
        if isinstance(message, GroupStateSnapshotMessage):
            body, tag = DownstreamMessage.GroupStateSnapshotMessage(), _STATE_SNAPSHOT_TAG
        else:
            body, tag = DownstreamMessage.GroupStateUpdateMessage(), _STATE_UPDATE_TAG
        body.group = message.group
        for item in message.items:
            _fill_state_item(item, body.items.add())
        return self._open(body.SerializeToString(), tag, _STATE_SEQUENCE_ID_TAG)

    def _open(self, serialized: bytes, member_tag: bytes, sequence_tag: bytes) -> EncodedData:
        if self.reliable:
            return _ProtobufSequenced(serialized, member_tag, sequence_tag)
        wrapped = member_tag + _varint(len(serialized)) + serialized
        return EncodedData(OP_BINARY, frame(OP_BINARY, wrapped))
