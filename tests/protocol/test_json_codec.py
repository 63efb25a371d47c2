"""Golden frames of the JSON subprotocols (client-protocols.md §3.2 examples)."""

from __future__ import annotations

import pytest

from hubbub.errors import BadRequestError, ProtocolError
from hubbub.protocol.codec import JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL
from hubbub.protocol.frames import frame_header
from hubbub.protocol.messages import (
    AckMessage,
    ConnectedMessage,
    DataMessage,
    DataType,
    DisconnectedMessage,
    EventMessage,
    JoinGroupMessage,
    LeaveGroupMessage,
    Payload,
    PingMessage,
    PongMessage,
    SendToGroupMessage,
    SequenceAckMessage,
)
from hubbub.protocol.registry import codec_for

JSON = codec_for(JSON_SUBPROTOCOL)
RELIABLE = codec_for(JSON_RELIABLE_SUBPROTOCOL)


def payload_of(frame: bytes) -> bytes:
    """Strip the (unmasked) WebSocket header of a server frame."""
    length = frame[1] & 0x7F
    offset = 2 if length < 126 else 4 if length == 126 else 10
    return frame[offset:]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'{"type":"joinGroup","group":"g1"}', JoinGroupMessage("g1")),
        (b'{"type":"joinGroup","group":"g1","ackId":1}', JoinGroupMessage("g1", 1)),
        (b'{"type":"leaveGroup","group":"g1","ackId":2}', LeaveGroupMessage("g1", 2)),
        (
            b'{"type":"sendToGroup","group":"g","ackId":3,"noEcho":true,'
            b'"dataType":"text","data":"hi"}',
            SendToGroupMessage("g", Payload(DataType.TEXT, b"hi"), 3, True),
        ),
        (
            b'{"type":"sendToGroup","group":"g","data":{"a": [1, 2]}}',
            SendToGroupMessage("g", Payload(DataType.JSON, b'{"a": [1, 2]}')),
        ),
        (
            b'{"type":"sendToGroup","group":"g","dataType":"binary","data":"aGVsbG8="}',
            SendToGroupMessage("g", Payload(DataType.BINARY, b"hello")),
        ),
        (
            b'{"type":"event","event":"e","dataType":"json","data":1,"ackId":9}',
            EventMessage("e", Payload(DataType.JSON, b"1"), 9),
        ),
        (b'{"type":"event","event":"e"}', EventMessage("e", None)),
        (b'{"type":"ping"}', PingMessage()),
        (b'{"type":"sequenceAck","sequenceId":5}', SequenceAckMessage(5)),
        (
            b'{"type":"joinGroup","group":"g","ackId":18446744073709551615}',
            JoinGroupMessage("g", 2**64 - 1),
        ),
        (b'{"group":"g","type":"joinGroup","unknown":1}', JoinGroupMessage("g")),
    ],
)
def test_decode(text: bytes, message: object) -> None:
    """Client frames decode to their typed messages; unknown fields are ignored."""
    assert JSON.decode(text, binary=False) == message


@pytest.mark.parametrize(
    "text",
    [
        b"{",
        b"[]",
        b'{"type":"nope"}',
        b'{"group":"g"}',
        b'{"type":"joinGroup"}',
        b'{"type":"joinGroup","group":1}',
        b'{"type":"joinGroup","group":"g","ackId":-1}',
        b'{"type":"joinGroup","group":"g","ackId":1.5}',
        b'{"type":"sendToGroup","group":"g"}',
        b'{"type":"sendToGroup","group":"g","dataType":"xml","data":"x"}',
        b'{"type":"sendToGroup","group":"g","dataType":"text","data":1}',
        b'{"type":"sequenceAck"}',
    ],
)
def test_decode_invalid_closes_1007(text: bytes) -> None:
    """Malformed frames are protocol errors with close code 1007."""
    with pytest.raises(ProtocolError) as info:
        JSON.decode(text, binary=False)
    assert info.value.close_code == 1007


def test_binary_frame_closes_1003() -> None:
    """A binary frame on a JSON subprotocol is refused with 1003."""
    with pytest.raises(ProtocolError) as info:
        JSON.decode(b'{"type":"ping"}', binary=True)
    assert info.value.close_code == 1003


def test_bad_base64_is_bad_request_with_ack_id() -> None:
    """Invalid base64 is answered with a BadRequest ack, not a close."""
    with pytest.raises(BadRequestError) as info:
        JSON.decode(
            b'{"type":"sendToGroup","group":"g","ackId":4,"dataType":"binary","data":"!!"}', False
        )
    assert info.value.ack_id == 4


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (AckMessage(1, True), b'{"type":"ack","ackId":1,"success":true}'),
        (
            AckMessage(1, False, "Forbidden", "no"),
            b'{"type":"ack","ackId":1,"success":false,"error":{"name":"Forbidden","message":"no"}}',
        ),
        (
            ConnectedMessage("abc", None, "tok"),
            b'{"type":"system","event":"connected","userId":null,"connectionId":"abc"}',
        ),
        (
            DisconnectedMessage("Service reload"),
            b'{"type":"system","event":"disconnected","message":"Service reload"}',
        ),
        (PongMessage(), b'{"type":"pong"}'),
    ],
)
def test_encode_control(message: object, text: bytes) -> None:
    """Acks, system messages and pong are compact, in the service's field order."""
    frame = JSON.encode(message)  # type: ignore[arg-type]
    assert frame is not None
    assert frame[:1] == b"\x81"
    assert payload_of(frame) == text


def test_reliable_connected_carries_token() -> None:
    """The reliable subprotocol adds reconnectionToken to connected."""
    frame = RELIABLE.encode(ConnectedMessage("abc", "u1", "tok"))
    assert frame is not None
    assert payload_of(frame) == (
        b'{"type":"system","event":"connected","userId":"u1","connectionId":"abc",'
        b'"reconnectionToken":"tok"}'
    )


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (
            DataMessage(Payload(DataType.JSON, b'{"message": "Hello world!"}')),
            b'{"type":"message","from":"server","dataType":"json",'
            b'"data":{"message":"Hello world!"}}',
        ),
        (
            DataMessage(Payload(DataType.TEXT, b"Hi there!")),
            b'{"type":"message","from":"server","dataType":"text","data":"Hi there!"}',
        ),
        (
            DataMessage(Payload(DataType.BINARY, b"\x05\x01\x01")),
            b'{"type":"message","from":"server","dataType":"binary","data":"BQEB"}',
        ),
        (
            DataMessage(Payload(DataType.JSON, b'{"hello":"world"}'), "group1", "user1"),
            b'{"type":"message","from":"group","group":"group1","fromUserId":"user1",'
            b'"dataType":"json","data":{"hello":"world"}}',
        ),
        (
            DataMessage(Payload(DataType.TEXT, b"x"), "g"),
            b'{"type":"message","from":"group","group":"g","dataType":"text","data":"x"}',
        ),
    ],
)
def test_encode_data(message: DataMessage, text: bytes) -> None:
    """Data messages match the spec's examples byte for byte."""
    encoded = JSON.encode_data(message)
    assert encoded.frame is not None
    assert payload_of(encoded.frame) == text


def test_reliable_splices_sequence_id() -> None:
    """One encoding serves every connection; each gets its own sequenceId appended last."""
    encoded = RELIABLE.encode_data(DataMessage(Payload(DataType.BINARY, b"hello world"), None))
    assert encoded.frame is None
    expected = b'{"type":"message","from":"server","dataType":"binary","data":"aGVsbG8gd29ybGQ=",'
    assert payload_of(encoded.sequenced(7)) == expected + b'"sequenceId":7}'
    assert payload_of(encoded.sequenced(123456)) == expected + b'"sequenceId":123456}'


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_frame_header_lengths(size: int) -> None:
    """Headers use the 7-bit, 16-bit and 64-bit length forms at the RFC 6455 boundaries."""
    header = frame_header(0x1, size)
    assert header[0] == 0x81
    if size < 126:
        assert header[1] == size and len(header) == 2
    elif size < 65536:
        assert header[1] == 126 and int.from_bytes(header[2:4]) == size
    else:
        assert header[1] == 127 and int.from_bytes(header[2:10]) == size


def test_plain_codec() -> None:
    """Plain clients: frames become message events; data goes out bare; no acks."""
    plain = codec_for(None)
    assert plain.decode(b"hi", binary=False) == EventMessage(
        "message", Payload(DataType.TEXT, b"hi")
    )
    assert plain.decode(b"\x00", binary=True) == EventMessage(
        "message", Payload(DataType.BINARY, b"\x00")
    )
    assert plain.encode(AckMessage(1, True)) is None
    text = plain.encode_data(DataMessage(Payload(DataType.JSON, b'{"a": 1}')))
    assert text.frame == b"\x81\x08" + b'{"a": 1}'
    binary = plain.encode_data(DataMessage(Payload(DataType.BINARY, b"\x01\x02")))
    assert binary.frame == b"\x82\x02\x01\x02"
    assert codec_for("custom.protocol") is plain


def test_invoke_round_trip() -> None:
    """invoke decodes with its payload; invokeResponse encodes success and failure."""
    from hubbub.protocol.messages import InvokeMessage, InvokeResponseMessage

    message = JSON.decode(
        b'{"type":"invoke","invocationId":"1","target":"event","event":"order",'
        b'"dataType":"text","data":"hi"}',
        binary=False,
    )
    assert message == InvokeMessage("1", "order", Payload(DataType.TEXT, b"hi"), "event")
    ok = JSON.encode(InvokeResponseMessage("1", True, Payload(DataType.JSON, b'{"a": 1}')))
    assert ok is not None and payload_of(ok) == (
        b'{"type":"invokeResponse","invocationId":"1","success":true,"dataType":"json",'
        b'"data":{"a":1}}'
    )
    failed = JSON.encode(InvokeResponseMessage("2", False, None, "InternalServerError", "no"))
    assert failed is not None and payload_of(failed) == (
        b'{"type":"invokeResponse","invocationId":"2","success":false,'
        b'"error":{"name":"InternalServerError","message":"no"}}'
    )
