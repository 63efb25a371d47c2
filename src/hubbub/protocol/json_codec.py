"""``json.webpubsub.azure.v1`` and ``json.reliable.webpubsub.azure.v1`` (client-protocols.md §3-4).

Inbound frames are decoded by msgspec into typed structs, with ``data`` kept raw until its
``dataType`` says how to read it. Outbound frames are compact JSON with the service's field
order (§3.2: ``type``, ``from``, ``group``, ``fromUserId``, ``dataType``, ``data``,
``sequenceId``), which some SDK tests compare as exact strings; ``metadata`` and ``stream`` come
after ``data``, ``sequenceId`` stays last so the reliable codec can splice it in.

Group streams (client-spec §3.6): a ``sendToGroup`` with ``stream`` and no data starts one,
``streamData`` carries fragments (with only ``streamId`` it is a keepalive), ``streamEnd`` ends
it; the service answers ``streamAck``, ``streamNack`` and ``streamClosed``. Group state:
``setGroupState``, ``subscribeGroupState``, ``unsubscribeGroupState`` from clients,
``groupStateSnapshot`` and ``groupStateUpdate`` to them.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal, NoReturn

import msgspec
import orjson

from hubbub.errors import BadRequestError, InvalidFragmentError, ProtocolError
from hubbub.protocol.codec import EncodedData, executable
from hubbub.protocol.frames import OP_TEXT, frame
from hubbub.protocol.messages import (
    AckMessage,
    CancelInvocationMessage,
    ClientInvokeResponseMessage,
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
    InvokeMessage,
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

__all__ = ["CLOSE_INVALID_DATA", "CLOSE_UNSUPPORTED_DATA", "MAX_TTL_SECONDS", "JsonCodec"]

CLOSE_UNSUPPORTED_DATA = 1003
"""A binary frame on a JSON subprotocol."""
CLOSE_INVALID_DATA = 1007
"""A frame that is not a valid message of the subprotocol."""
MAX_TTL_SECONDS = 300
"""Longest ``ttlSeconds`` of a client ``sendToGroup`` (as REST ``messageTtlSeconds``)."""

UInt64 = Annotated[int, msgspec.Meta(ge=0)]
DataTypeName = Literal["json", "text", "binary", "protobuf"]


class _Join(msgspec.Struct, tag_field="type", tag="joinGroup"):
    group: str
    ackId: UInt64 | None = None


class _Leave(msgspec.Struct, tag_field="type", tag="leaveGroup"):
    group: str
    ackId: UInt64 | None = None


class _StreamStart(msgspec.Struct):
    streamId: str
    idleTimeoutMs: int | None = None


class _SendToGroup(msgspec.Struct, tag_field="type", tag="sendToGroup"):
    group: str
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    ackId: UInt64 | None = None
    noEcho: bool = False
    dataType: DataTypeName = "json"
    metadata: dict[str, str] | None = None
    ttlSeconds: int | None = None
    stream: _StreamStart | None = None


class _Event(msgspec.Struct, tag_field="type", tag="event"):
    event: str
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    ackId: UInt64 | None = None
    dataType: DataTypeName = "json"
    metadata: dict[str, str] | None = None


class _Invoke(msgspec.Struct, tag_field="type", tag="invoke"):
    invocationId: str
    event: str
    target: str = "event"
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    dataType: DataTypeName = "json"


class _CancelInvocation(msgspec.Struct, tag_field="type", tag="cancelInvocation"):
    invocationId: str


class _Error(msgspec.Struct):
    name: str = ""
    message: str = ""


class _InvokeResponse(msgspec.Struct, tag_field="type", tag="invokeResponse"):
    invocationId: str
    success: bool = False
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    dataType: DataTypeName = "json"
    error: _Error | None = None


class _Ping(msgspec.Struct, tag_field="type", tag="ping"):
    pass


class _SequenceAck(msgspec.Struct, tag_field="type", tag="sequenceAck"):
    sequenceId: UInt64


class _StreamData(msgspec.Struct, tag_field="type", tag="streamData"):
    streamId: str
    streamSequenceId: UInt64 | None = None
    dataType: DataTypeName | None = None
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class _StreamEndReason(msgspec.Struct):
    message: str | None = None
    userErrorCode: str | None = None


class _StreamEnd(msgspec.Struct, tag_field="type", tag="streamEnd"):
    streamId: str
    error: _StreamEndReason | None = None


class _SetGroupState(msgspec.Struct, tag_field="type", tag="setGroupState"):
    group: str
    state: dict[str, str] | None = None
    ackId: UInt64 | None = None


class _SubscribeGroupState(msgspec.Struct, tag_field="type", tag="subscribeGroupState"):
    group: str
    ackId: UInt64 | None = None


class _UnsubscribeGroupState(msgspec.Struct, tag_field="type", tag="unsubscribeGroupState"):
    group: str
    ackId: UInt64 | None = None


_Inbound = (
    _Join
    | _Leave
    | _SendToGroup
    | _Event
    | _Ping
    | _SequenceAck
    | _Invoke
    | _CancelInvocation
    | _InvokeResponse
    | _StreamData
    | _StreamEnd
    | _SetGroupState
    | _SubscribeGroupState
    | _UnsubscribeGroupState
)
_decoder = msgspec.json.Decoder(_Inbound)
_str_decoder = msgspec.json.Decoder(str)


def _bad_request(message: str, ack_id: int | None = None, stream_id: str | None = None) -> NoReturn:
    error = BadRequestError(message)
    error.ack_id = ack_id
    error.stream_id = stream_id
    raise error


def _invalid_fragment(message: str, stream_id: str) -> NoReturn:
    raise InvalidFragmentError(message, stream_id)


def _payload(
    data_type: DataTypeName,
    raw: msgspec.Raw,
    ack_id: int | None,
    metadata: Metadata | None = None,
    stream_id: str | None = None,
) -> Payload:
    """Read ``data`` according to ``dataType`` (§3.1)."""
    kind = DataType(data_type)
    if kind is DataType.JSON:
        return Payload(kind, bytes(raw), metadata)
    try:
        text = _str_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"data must be a string for dataType {data_type}", 1007) from exc
    if kind is DataType.TEXT:
        return Payload(kind, text.encode(), metadata)
    try:
        return Payload(kind, base64.b64decode(text, validate=True), metadata)
    except (binascii.Error, ValueError):
        text = f"data is not valid base64 for dataType {data_type}"
        if stream_id is not None:  # a fragment's data
            _invalid_fragment(text, stream_id)
        _bad_request(text, ack_id)


def _metadata(given: dict[str, str] | None, ack_id: int | None) -> Metadata | None:
    if not given:
        return None
    try:
        return validate_metadata(given.items())
    except MetadataError as exc:
        _bad_request(str(exc), ack_id)


def _ttl(seconds: int | None, ack_id: int | None) -> int | None:
    """``ttlSeconds`` 1-300; 0 or absent means the message never expires."""
    if seconds is None or seconds == 0:
        return None
    if not 0 < seconds <= MAX_TTL_SECONDS:
        _bad_request(f"ttlSeconds must be between 0 and {MAX_TTL_SECONDS}", ack_id)
    return seconds


def _send_to_group(struct: _SendToGroup) -> InboundMessage:
    if struct.stream is not None:
        return _stream_start(struct, struct.stream)
    if not struct.data:
        raise ProtocolError("sendToGroup needs data or stream", CLOSE_INVALID_DATA)
    metadata = _metadata(struct.metadata, struct.ackId)
    payload = _payload(struct.dataType, struct.data, struct.ackId, metadata)
    ttl = _ttl(struct.ttlSeconds, struct.ackId)
    return SendToGroupMessage(struct.group, payload, struct.ackId, struct.noEcho, ttl)


def _stream_start(struct: _SendToGroup, stream: _StreamStart) -> StreamStartMessage:
    """A stream start carries no data (§3.6.1); a bad one is refused with ``streamClosed``."""
    stream_id = stream.streamId
    if not stream_id:
        _bad_request("The stream id must not be empty.", stream_id=stream_id)
    if struct.data:
        _bad_request("A stream start must not carry data.", stream_id=stream_id)
    if stream.idleTimeoutMs is not None and stream.idleTimeoutMs <= 0:
        _bad_request("The idle timeout must be greater than 0.", stream_id=stream_id)
    return StreamStartMessage(
        struct.group, stream_id, stream.idleTimeoutMs, struct.noEcho, struct.ackId
    )


def _stream_data(struct: _StreamData) -> StreamDataMessage:
    """A fragment needs its sequence id, data type and data; none of them is a keepalive."""
    has_data = bool(struct.data)
    if struct.streamSequenceId is None and not has_data and struct.dataType is None:
        return StreamDataMessage(struct.streamId)
    if struct.streamSequenceId is None or not has_data or struct.dataType is None:
        _invalid_fragment(
            "A stream fragment needs streamSequenceId, dataType and data.", struct.streamId
        )
    payload = _payload(struct.dataType, struct.data, None, stream_id=struct.streamId)
    return StreamDataMessage(struct.streamId, struct.streamSequenceId, payload)


def _event(struct: _Event) -> EventMessage:
    metadata = _metadata(struct.metadata, struct.ackId)
    if struct.data:
        payload: Payload | None = _payload(struct.dataType, struct.data, struct.ackId, metadata)
    elif metadata is not None:
        # An event may carry metadata alone; its data is then empty text.
        payload = Payload(DataType.TEXT, b"", metadata)
    else:
        payload = None
    return EventMessage(struct.event, payload, struct.ackId)


def _set_group_state(struct: _SetGroupState) -> SetGroupStateMessage:
    state = None if struct.state is None else tuple(struct.state.items())
    return SetGroupStateMessage(struct.group, state, struct.ackId)


def _invoke_response(struct: _InvokeResponse) -> ClientInvokeResponseMessage:
    payload = _payload(struct.dataType, struct.data, None) if struct.data else None
    error = struct.error
    return ClientInvokeResponseMessage(
        struct.invocationId,
        struct.success,
        payload,
        error.name if error is not None else None,
        error.message if error is not None else None,
    )


def _message(struct: _Inbound) -> InboundMessage:
    if isinstance(struct, _SendToGroup):
        return _send_to_group(struct)
    if isinstance(struct, _StreamData):
        return _stream_data(struct)
    if isinstance(struct, _Join):
        return JoinGroupMessage(struct.group, struct.ackId)
    if isinstance(struct, _Leave):
        return LeaveGroupMessage(struct.group, struct.ackId)
    if isinstance(struct, _Event):
        return _event(struct)
    if isinstance(struct, _SequenceAck):
        return SequenceAckMessage(struct.sequenceId)
    if isinstance(struct, _Invoke):
        invoke_payload = _payload(struct.dataType, struct.data, None) if struct.data else None
        return InvokeMessage(struct.invocationId, struct.event, invoke_payload, struct.target)
    if isinstance(struct, _CancelInvocation):
        return CancelInvocationMessage(struct.invocationId)
    if isinstance(struct, _StreamEnd):
        reason = struct.error
        error = None if reason is None else StreamEndError(reason.message, reason.userErrorCode)
        return StreamEndMessage(struct.streamId, error)
    if isinstance(struct, _SetGroupState):
        return _set_group_state(struct)
    if isinstance(struct, _SubscribeGroupState):
        return SubscribeGroupStateMessage(struct.group, struct.ackId)
    if isinstance(struct, _UnsubscribeGroupState):
        return UnsubscribeGroupStateMessage(struct.group, struct.ackId)
    if isinstance(struct, _InvokeResponse):
        return _invoke_response(struct)
    return PingMessage()


def _json_data(payload: Payload) -> bytes:
    """The ``"dataType":...,"data":...[,"metadata":{...}]`` members of a data message."""
    kind = payload.data_type
    if kind is DataType.JSON:
        # Payloads keep the JSON text as sent; the subprotocol embeds it compact (§3.2).
        compact: bytes = msgspec.json.format(payload.data, indent=-1)
        members = b'"dataType":"json","data":' + compact
    elif kind is DataType.TEXT:
        text: bytes = orjson.dumps(payload.data.decode("utf-8", "replace"))
        members = b'"dataType":"text","data":' + text
    else:
        name: str = kind.value
        encoded = base64.b64encode(payload.data)
        members = b'"dataType":"' + name.encode() + b'","data":"' + encoded + b'"'
    if payload.metadata:
        members += b',"metadata":' + orjson.dumps(dict(payload.metadata))
    return members


def _json_stream(info: StreamInfo) -> bytes:
    """The ``"stream":{...}`` member of a group message that belongs to a stream (§3.6.5)."""
    fields: dict[str, object] = {
        "streamId": info.stream_id,
        "streamSequenceId": info.stream_sequence_id,
    }
    if info.end_of_stream:
        fields["endOfStream"] = True
    if info.error_name is not None:
        error: dict[str, str] = {"name": info.error_name, "message": info.error_message or ""}
        if info.user_error_code is not None:
            error["userErrorCode"] = info.user_error_code
        fields["error"] = error
    return b',"stream":' + orjson.dumps(fields)


def _json_state_item(item: GroupStateItem) -> dict[str, object]:
    fields: dict[str, object] = {"connectionId": item.connection_id}
    if item.user_id is not None:
        fields["userId"] = item.user_id
    if item.state is not None:
        fields["state"] = dict(item.state)
    fields["updatedAt"] = item.updated_at
    return fields


class JsonCodec:
    """The JSON subprotocols; ``reliable`` adds ``sequenceId`` and the reconnection token."""

    plain = False

    def __init__(self, name: str, *, reliable: bool) -> None:
        self.name = name
        self.reliable = reliable

    def decode(self, data: bytes, binary: bool) -> ClientMessage:
        """Decode one text frame into a message the handler executes (see ``Codec.decode``)."""
        return executable(self.decode_inbound, data, binary)

    def decode_inbound(self, data: bytes, binary: bool) -> InboundMessage:
        """Decode one text frame.

        Raises:
            ProtocolError: a binary frame (1003), or invalid JSON, an unknown ``type`` or a
                missing or mistyped field (1007).
            BadRequestError: ``data`` that is not valid for its ``dataType``, invalid metadata
                or ``ttlSeconds`` (``ack_id`` set), or an invalid stream message (``stream_id``
                set: answered with ``streamClosed``).
        """
        if binary:
            raise ProtocolError("binary frames are not supported by " + self.name, 1003)
        try:
            struct = _decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"invalid message: {exc}", CLOSE_INVALID_DATA) from exc
        return _message(struct)

    def encode(self, message: ServiceMessage) -> bytes | None:
        """Encode an ack, system message, pong or stream answer as a complete text frame."""
        if isinstance(message, DataMessage):
            raise TypeError("data messages go through encode_data")
        if isinstance(message, GroupStateSnapshotMessage | GroupStateUpdateMessage):
            raise TypeError("group state messages go through encode_group_state")
        return frame(OP_TEXT, _encode_control(message, self.reliable))

    def encode_data(self, message: DataMessage) -> EncodedData:
        """Encode a ``message`` once; reliable codecs leave it open for ``sequenceId``."""
        if message.group is None:
            head = b'{"type":"message","from":"server",'
        else:
            head = b'{"type":"message","from":"group","group":' + orjson.dumps(message.group) + b","
            if message.from_user_id is not None:
                head += b'"fromUserId":' + orjson.dumps(message.from_user_id) + b","
        body = head + _json_data(message.payload)
        if message.stream is not None:
            body += _json_stream(message.stream)
        return self._open(body)

    def encode_group_state(self, message: GroupStateMessage) -> EncodedData:
        """Encode a group-state snapshot or update once; sequenced like data on reliable ones."""
        kind = "groupStateSnapshot" if isinstance(message, GroupStateSnapshotMessage) else None
        fields = {
            "type": kind or "groupStateUpdate",
            "group": message.group,
            "items": [_json_state_item(item) for item in message.items],
        }
        return self._open(orjson.dumps(fields)[:-1])

    def _open(self, body: bytes) -> EncodedData:
        """``body`` is a JSON object without its closing brace."""
        if self.reliable:
            return EncodedData(OP_TEXT, prefix=body)
        return EncodedData(OP_TEXT, frame(OP_TEXT, body + b"}"))


def _encode_control(message: ServiceMessage, reliable: bool) -> bytes:
    if isinstance(message, AckMessage):
        if message.success:
            return b'{"type":"ack","ackId":%d,"success":true}' % message.ack_id
        error = orjson.dumps({"name": message.error_name, "message": message.error_message or ""})
        return b'{"type":"ack","ackId":%d,"success":false,"error":%s}' % (message.ack_id, error)
    if isinstance(message, ConnectedMessage):
        fields: dict[str, object] = {
            "type": "system",
            "event": "connected",
            "userId": message.user_id,
            "connectionId": message.connection_id,
        }
        if reliable and message.reconnection_token is not None:
            fields["reconnectionToken"] = message.reconnection_token
        return orjson.dumps(fields)
    if isinstance(message, DisconnectedMessage):
        return orjson.dumps({"type": "system", "event": "disconnected", "message": message.reason})
    if isinstance(message, PongMessage):
        return b'{"type":"pong"}'
    if isinstance(message, InvokeResponseMessage):
        return _encode_invoke_response(message)
    if isinstance(message, StreamAckMessage | StreamNackMessage | StreamClosedMessage):
        return _encode_stream_answer(message)
    raise TypeError(f"not a control message: {message!r}")


def _encode_invoke_response(message: InvokeResponseMessage) -> bytes:
    head = b'{"type":"invokeResponse","invocationId":' + orjson.dumps(message.invocation_id)
    if not message.success:
        error = orjson.dumps({"name": message.error_name, "message": message.error_message})
        return head + b',"success":false,"error":' + error + b"}"
    if message.payload is None:
        return head + b',"success":true}'
    return head + b',"success":true,' + _json_data(message.payload) + b"}"


def _encode_stream_answer(
    message: StreamAckMessage | StreamNackMessage | StreamClosedMessage,
) -> bytes:
    """``streamAck``, ``streamNack`` and ``streamClosed`` in the docs' field order."""
    if isinstance(message, StreamAckMessage):
        return orjson.dumps(
            {
                "type": "streamAck",
                "streamId": message.stream_id,
                "expectedSequenceId": message.expected_sequence_id,
            }
        )
    if isinstance(message, StreamNackMessage):
        return orjson.dumps(
            {
                "type": "streamNack",
                "streamId": message.stream_id,
                "expectedSequenceId": message.expected_sequence_id,
                "name": message.name,
                "message": message.message,
            }
        )
    fields: dict[str, object] = {"type": "streamClosed", "streamId": message.stream_id}
    if message.error_name is not None:
        fields["error"] = {"name": message.error_name, "message": message.error_message or ""}
    return orjson.dumps(fields)
