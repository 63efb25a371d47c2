"""``json.webpubsub.azure.v1`` and ``json.reliable.webpubsub.azure.v1`` (client-protocols.md §3-4).

Inbound frames are decoded by msgspec into typed structs, with ``data`` kept raw until its
``dataType`` says how to read it. Outbound frames are compact JSON with the service's field
order (§3.2: ``type``, ``from``, ``group``, ``fromUserId``, ``dataType``, ``data``,
``sequenceId``), which some SDK tests compare as exact strings.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

import msgspec
import orjson

from hubbub.errors import BadRequestError, ProtocolError
from hubbub.protocol.codec import EncodedData
from hubbub.protocol.frames import OP_TEXT, frame
from hubbub.protocol.messages import (
    AckMessage,
    CancelInvocationMessage,
    ClientMessage,
    ConnectedMessage,
    DataMessage,
    DataType,
    DisconnectedMessage,
    EventMessage,
    InvokeMessage,
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

__all__ = ["CLOSE_INVALID_DATA", "CLOSE_UNSUPPORTED_DATA", "JsonCodec"]

CLOSE_UNSUPPORTED_DATA = 1003
"""A binary frame on a JSON subprotocol."""
CLOSE_INVALID_DATA = 1007
"""A frame that is not a valid message of the subprotocol."""

UInt64 = Annotated[int, msgspec.Meta(ge=0)]
DataTypeName = Literal["json", "text", "binary", "protobuf"]


class _Join(msgspec.Struct, tag_field="type", tag="joinGroup"):
    group: str
    ackId: UInt64 | None = None


class _Leave(msgspec.Struct, tag_field="type", tag="leaveGroup"):
    group: str
    ackId: UInt64 | None = None


class _SendToGroup(msgspec.Struct, tag_field="type", tag="sendToGroup"):
    group: str
    data: msgspec.Raw
    ackId: UInt64 | None = None
    noEcho: bool = False
    dataType: DataTypeName = "json"


class _Event(msgspec.Struct, tag_field="type", tag="event"):
    event: str
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    ackId: UInt64 | None = None
    dataType: DataTypeName = "json"


class _Invoke(msgspec.Struct, tag_field="type", tag="invoke"):
    invocationId: str
    event: str
    target: str = "event"
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    dataType: DataTypeName = "json"


class _CancelInvocation(msgspec.Struct, tag_field="type", tag="cancelInvocation"):
    invocationId: str


class _Ping(msgspec.Struct, tag_field="type", tag="ping"):
    pass


class _SequenceAck(msgspec.Struct, tag_field="type", tag="sequenceAck"):
    sequenceId: UInt64


_Inbound = (
    _Join | _Leave | _SendToGroup | _Event | _Ping | _SequenceAck | _Invoke | _CancelInvocation
)
_decoder = msgspec.json.Decoder(_Inbound)
_str_decoder = msgspec.json.Decoder(str)


def _payload(data_type: DataTypeName, raw: msgspec.Raw, ack_id: int | None) -> Payload:
    """Read ``data`` according to ``dataType`` (§3.1)."""
    kind = DataType(data_type)
    if kind is DataType.JSON:
        return Payload(kind, bytes(raw))
    try:
        text = _str_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"data must be a string for dataType {data_type}", 1007) from exc
    if kind is DataType.TEXT:
        return Payload(kind, text.encode())
    try:
        return Payload(kind, base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError) as exc:
        error = BadRequestError(f"data is not valid base64 for dataType {data_type}")
        error.ack_id = ack_id
        raise error from exc


def _message(struct: _Inbound) -> ClientMessage:
    if isinstance(struct, _SendToGroup):
        payload = _payload(struct.dataType, struct.data, struct.ackId)
        return SendToGroupMessage(struct.group, payload, struct.ackId, struct.noEcho)
    if isinstance(struct, _Join):
        return JoinGroupMessage(struct.group, struct.ackId)
    if isinstance(struct, _Leave):
        return LeaveGroupMessage(struct.group, struct.ackId)
    if isinstance(struct, _Event):
        event_payload = (
            _payload(struct.dataType, struct.data, struct.ackId) if struct.data else None
        )
        return EventMessage(struct.event, event_payload, struct.ackId)
    if isinstance(struct, _SequenceAck):
        return SequenceAckMessage(struct.sequenceId)
    if isinstance(struct, _Invoke):
        invoke_payload = _payload(struct.dataType, struct.data, None) if struct.data else None
        return InvokeMessage(struct.invocationId, struct.event, invoke_payload, struct.target)
    if isinstance(struct, _CancelInvocation):
        return CancelInvocationMessage(struct.invocationId)
    return PingMessage()


def _json_data(payload: Payload) -> bytes:
    """The ``"dataType":...,"data":...`` members of a data message."""
    kind = payload.data_type
    if kind is DataType.JSON:
        # Payloads keep the JSON text as sent; the subprotocol embeds it compact (§3.2).
        compact: bytes = msgspec.json.format(payload.data, indent=-1)
        return b'"dataType":"json","data":' + compact
    if kind is DataType.TEXT:
        text: bytes = orjson.dumps(payload.data.decode("utf-8", "replace"))
        return b'"dataType":"text","data":' + text
    name: str = kind.value
    encoded = base64.b64encode(payload.data)
    return b'"dataType":"' + name.encode() + b'","data":"' + encoded + b'"'


class JsonCodec:
    """The JSON subprotocols; ``reliable`` adds ``sequenceId`` and the reconnection token."""

    plain = False

    def __init__(self, name: str, *, reliable: bool) -> None:
        self.name = name
        self.reliable = reliable

    def decode(self, data: bytes, binary: bool) -> ClientMessage:
        """Decode one text frame.

        Raises:
            ProtocolError: a binary frame (1003), or invalid JSON, an unknown ``type`` or a
                missing or mistyped field (1007).
            BadRequestError: ``data`` that is not valid for its ``dataType``.
        """
        if binary:
            raise ProtocolError("binary frames are not supported by " + self.name, 1003)
        try:
            struct = _decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"invalid message: {exc}", CLOSE_INVALID_DATA) from exc
        return _message(struct)

    def encode(self, message: ServiceMessage) -> bytes | None:
        """Encode an ack, system message or pong as a complete text frame."""
        if isinstance(message, DataMessage):
            raise TypeError("data messages go through encode_data")
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
        head = b'{"type":"invokeResponse","invocationId":' + orjson.dumps(message.invocation_id)
        if not message.success:
            error = orjson.dumps({"name": message.error_name, "message": message.error_message})
            return head + b',"success":false,"error":' + error + b"}"
        if message.payload is None:
            return head + b',"success":true}'
        return head + b',"success":true,' + _json_data(message.payload) + b"}"
    raise TypeError(f"not a control message: {message!r}")
