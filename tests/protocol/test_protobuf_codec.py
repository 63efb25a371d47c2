"""Golden frames of the protobuf subprotocols (client-protocols.md §5-6).

The expected bytes are written out by hand from the spec's field numbers, so they check the
``.proto`` as well as the codec.
"""

from __future__ import annotations

import base64

import pytest
from google.protobuf import any_pb2, wrappers_pb2

from hubbub.errors import BadRequestError, ProtocolError
from hubbub.protocol.codec import (
    JSON_SUBPROTOCOL,
    KNOWN_SUBPROTOCOLS,
    PROTOBUF_RELIABLE_SUBPROTOCOL,
    PROTOBUF_SUBPROTOCOL,
)
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
    ServiceMessage,
)
from hubbub.protocol.protobuf_codec import ProtobufCodec
from hubbub.protocol.registry import codec_for
from hubbub.protocol.webpubsub_pb2 import DownstreamMessage, MessageData, UpstreamMessage

PROTOBUF = codec_for(PROTOBUF_SUBPROTOCOL)
RELIABLE = codec_for(PROTOBUF_RELIABLE_SUBPROTOCOL)
JSON = codec_for(JSON_SUBPROTOCOL)

STRING_VALUE_URL = b"type.googleapis.com/google.protobuf.StringValue"
ANY_HI = b"\x0a\x2f" + STRING_VALUE_URL + b"\x12\x04\x0a\x02hi"
"""A serialized ``google.protobuf.Any`` packing ``StringValue("hi")``."""


def payload_of(frame: bytes, first: int = 0x82) -> bytes:
    """Check the header of an unmasked server frame (binary by default) and strip it."""
    assert frame[0] == first
    length = frame[1] & 0x7F
    offset = 2 if length < 126 else 4 if length == 126 else 10
    size = length if length < 126 else int.from_bytes(frame[2:offset])
    assert len(frame) - offset == size
    return frame[offset:]


def test_registry_and_subprotocols() -> None:
    """Both names are negotiable and map to codecs with the right reliability."""
    assert PROTOBUF_SUBPROTOCOL in KNOWN_SUBPROTOCOLS
    assert PROTOBUF_RELIABLE_SUBPROTOCOL in KNOWN_SUBPROTOCOLS
    assert isinstance(PROTOBUF, ProtobufCodec) and isinstance(RELIABLE, ProtobufCodec)
    assert (PROTOBUF.name, PROTOBUF.reliable) == (PROTOBUF_SUBPROTOCOL, False)
    assert (RELIABLE.name, RELIABLE.reliable) == (PROTOBUF_RELIABLE_SUBPROTOCOL, True)
    assert not PROTOBUF.plain and not RELIABLE.plain


def test_any_fixture() -> None:
    """The hand-written Any is what the protobuf runtime packs."""
    packed = any_pb2.Any()
    packed.Pack(wrappers_pb2.StringValue(value="hi"))
    assert packed.SerializeToString() == ANY_HI


# -- client -> service ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x32\x04\x0a\x02g1", JoinGroupMessage("g1")),
        (b"\x32\x06\x0a\x02g1\x10\x01", JoinGroupMessage("g1", 1)),
        (b"\x32\x06\x0a\x02g1\x10\x00", JoinGroupMessage("g1", 0)),
        (b"\x3a\x06\x0a\x02g1\x10\x02", LeaveGroupMessage("g1", 2)),
        (b"\x3a\x04\x0a\x02g1", LeaveGroupMessage("g1")),
        (
            b"\x0a\x0d\x0a\x01g\x10\x03\x1a\x04\x0a\x02hi\x20\x01",
            SendToGroupMessage("g", Payload(DataType.TEXT, b"hi"), 3, True),
        ),
        (
            b"\x0a\x07\x0a\x01g\x1a\x02\x0a\x00",
            SendToGroupMessage("g", Payload(DataType.TEXT, b"")),
        ),
        (
            b"\x0a\x0a\x0a\x01g\x1a\x05\x12\x03\x01\x02\x03",
            SendToGroupMessage("g", Payload(DataType.BINARY, b"\x01\x02\x03")),
        ),
        (
            b"\x0a\x3e\x0a\x01g\x1a\x39\x1a\x37" + ANY_HI,
            SendToGroupMessage("g", Payload(DataType.PROTOBUF, ANY_HI)),
        ),
        (
            b'\x0a\x0e\x0a\x01g\x1a\x09\x22\x07{"a":1}',
            SendToGroupMessage("g", Payload(DataType.JSON, b'{"a":1}')),
        ),
        (
            # ttl_seconds 10 and metadata {"k": "v"} travel with the message.
            b"\x0a\x13\x0a\x01g\x1a\x04\x0a\x02hi\x28\x0a\x32\x06\x0a\x01k\x12\x01v",
            SendToGroupMessage("g", Payload(DataType.TEXT, b"hi", (("k", "v"),)), ttl_seconds=10),
        ),
        (
            b"\x2a\x0b\x0a\x01e\x12\x04\x0a\x02hi\x18\x09",
            EventMessage("e", Payload(DataType.TEXT, b"hi"), 9),
        ),
        (b"\x2a\x03\x0a\x01e", EventMessage("e", None)),
        (b"\x2a\x05\x0a\x01e\x12\x00", EventMessage("e", None)),
        (
            b"\x2a\x11\x0a\x01e\x12\x04\x12\x02\x00\xff\x22\x06\x0a\x01k\x12\x01v",
            EventMessage("e", Payload(DataType.BINARY, b"\x00\xff", (("k", "v"),))),
        ),
        (
            b"\x2a\x09\x0a\x01e\x12\x04\x22\x02[]",
            EventMessage("e", Payload(DataType.JSON, b"[]")),
        ),
        (b"\x42\x02\x08\x05", SequenceAckMessage(5)),
        (b"\x42\x0b\x08" + b"\xff" * 9 + b"\x01", SequenceAckMessage(2**64 - 1)),
        (b"\x42\x00", SequenceAckMessage(0)),
        (b"\x4a\x00", PingMessage()),
        (b"\x78\x01\x4a\x00", PingMessage()),
    ],
)
def test_decode(data: bytes, message: object) -> None:
    """Golden upstream bytes decode to their typed messages, on both codecs."""
    assert PROTOBUF.decode(data, binary=True) == message
    assert RELIABLE.decode(data, binary=True) == message


def test_decode_built_message() -> None:
    """A message built with the generated classes decodes the same as the golden bytes."""
    upstream = UpstreamMessage(
        send_to_group_message=UpstreamMessage.SendToGroupMessage(
            group="room", ack_id=2**64 - 1, data=MessageData(binary_data=b"\x00"), no_echo=True
        )
    )
    assert PROTOBUF.decode(upstream.SerializeToString(), binary=True) == SendToGroupMessage(
        "room", Payload(DataType.BINARY, b"\x00"), 2**64 - 1, True
    )


def test_text_frame_closes_1003() -> None:
    """A text frame on a protobuf subprotocol is refused with 1003."""
    for codec in (PROTOBUF, RELIABLE):
        with pytest.raises(ProtocolError) as info:
            codec.decode(b"\x4a\x00", binary=False)
        assert info.value.close_code == 1003


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff", id="bad-wire-type"),
        pytest.param(b"\x0a\x05ab", id="truncated"),
        pytest.param(b"\x32\x02\x0a\x05", id="truncated-inner"),
        pytest.param(b"\x32\x03\x0a\x01\xff", id="invalid-utf8"),
        pytest.param(b"\x80", id="truncated-tag"),
        pytest.param(b"", id="empty-oneof"),
        pytest.param(b"\x78\x01", id="unknown-field-only"),
        pytest.param(b"\x12\x00", id="unknown-member-2"),
        pytest.param(b"\x0a\x03\x0a\x01g", id="send-without-data"),
        pytest.param(b"\x0a\x05\x0a\x01g\x1a\x00", id="send-with-empty-data"),
    ],
)
def test_decode_invalid_closes_1007(data: bytes) -> None:
    """Unparsable bytes, an empty oneof or data-less sendToGroup close with 1007."""
    with pytest.raises(ProtocolError) as info:
        PROTOBUF.decode(data, binary=True)
    assert info.value.close_code == 1007


def test_invalid_json_data_is_bad_request_with_ack_id() -> None:
    """json_data that is not JSON is answered with a BadRequest ack, not a close."""
    with pytest.raises(BadRequestError) as info:
        PROTOBUF.decode(b"\x0a\x0b\x0a\x01g\x10\x04\x1a\x04\x22\x02{x", binary=True)
    assert info.value.ack_id == 4


# -- service -> client ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "data"),
    [
        (AckMessage(1, True), b"\x0a\x04\x08\x01\x10\x01"),
        (AckMessage(0, True), b"\x0a\x02\x10\x01"),
        (
            AckMessage(1, False, "Forbidden", "no"),
            b"\x0a\x13\x08\x01\x1a\x0f\x0a\x09Forbidden\x12\x02no",
        ),
        (AckMessage(2, False, "Duplicate"), b"\x0a\x0f\x08\x02\x1a\x0b\x0a\x09Duplicate"),
        (ConnectedMessage("abc", None, "tok"), b"\x1a\x07\x0a\x05\x0a\x03abc"),
        (ConnectedMessage("abc", "u1"), b"\x1a\x0b\x0a\x09\x0a\x03abc\x12\x02u1"),
        (
            DisconnectedMessage("Service reload"),
            b"\x1a\x12\x12\x10\x12\x0eService reload",
        ),
        (DisconnectedMessage(""), b"\x1a\x02\x12\x00"),
        (PongMessage(), b"\x22\x00"),
    ],
)
def test_encode_control(message: ServiceMessage, data: bytes) -> None:
    """Acks, system messages and pong are binary frames of golden DownstreamMessages."""
    frame = PROTOBUF.encode(message)
    assert frame is not None
    assert payload_of(frame) == data


def test_reliable_connected_carries_token() -> None:
    """Only the reliable codec sends reconnection_token."""
    frame = RELIABLE.encode(ConnectedMessage("abc", "u1", "tok"))
    assert frame is not None
    assert payload_of(frame) == b"\x1a\x10\x0a\x0e\x0a\x03abc\x12\x02u1\x1a\x03tok"
    decoded = DownstreamMessage.FromString(payload_of(frame))
    assert decoded.system_message.connected_message.reconnection_token == "tok"
    untokened = RELIABLE.encode(ConnectedMessage("abc", "u1"))
    assert untokened is not None
    assert payload_of(untokened) == b"\x1a\x0b\x0a\x09\x0a\x03abc\x12\x02u1"


def test_encode_rejects_data_messages() -> None:
    """Data messages go through encode_data."""
    with pytest.raises(TypeError):
        PROTOBUF.encode(DataMessage(Payload(DataType.TEXT, b"x")))


@pytest.mark.parametrize(
    ("message", "data"),
    [
        (
            DataMessage(Payload(DataType.TEXT, b"Hi there!")),
            b"\x12\x15\x0a\x06server\x1a\x0b\x0a\x09Hi there!",
        ),
        (
            # JSON goes out as text_data; protobuf has no fromUserId.
            DataMessage(Payload(DataType.JSON, b'{"hello":"world"}'), "group1", "user1"),
            b'\x12\x24\x0a\x05group\x12\x06group1\x1a\x13\x0a\x11{"hello":"world"}',
        ),
        (
            DataMessage(Payload(DataType.BINARY, b"\x05\x01\x01")),
            b"\x12\x0f\x0a\x06server\x1a\x05\x12\x03\x05\x01\x01",
        ),
        (
            DataMessage(Payload(DataType.PROTOBUF, ANY_HI)),
            b"\x12\x43\x0a\x06server\x1a\x39\x1a\x37" + ANY_HI,
        ),
        (
            DataMessage(Payload(DataType.PROTOBUF, b"")),
            b"\x12\x0c\x0a\x06server\x1a\x02\x1a\x00",
        ),
        (
            # Bytes that are no Any go out as binary_data.
            DataMessage(Payload(DataType.PROTOBUF, b"\xff")),
            b"\x12\x0d\x0a\x06server\x1a\x03\x12\x01\xff",
        ),
        (
            DataMessage(Payload(DataType.TEXT, b""), ""),
            b"\x12\x0d\x0a\x05group\x12\x00\x1a\x02\x0a\x00",
        ),
    ],
)
def test_encode_data(message: DataMessage, data: bytes) -> None:
    """Data messages are complete golden frames on the unreliable codec."""
    encoded = PROTOBUF.encode_data(message)
    assert encoded.frame is not None
    assert payload_of(encoded.frame) == data


def test_encode_any_unpacks() -> None:
    """A protobuf subscriber receives the Any itself."""
    encoded = PROTOBUF.encode_data(DataMessage(Payload(DataType.PROTOBUF, ANY_HI), "g"))
    assert encoded.frame is not None
    down = DownstreamMessage.FromString(payload_of(encoded.frame))
    assert getattr(down.data_message, "from") == "group"
    assert down.data_message.group == "g"
    value = wrappers_pb2.StringValue()
    assert down.data_message.data.protobuf_data.Unpack(value)
    assert value.value == "hi"


def test_reliable_golden() -> None:
    """The reliable codec leaves the frame to build per connection; sequence_id is field 4."""
    encoded = RELIABLE.encode_data(DataMessage(Payload(DataType.BINARY, b"hello world")))
    assert encoded.frame is None
    body = b"\x0a\x06server\x1a\x0d\x12\x0bhello world"
    assert payload_of(encoded.sequenced(7)) == b"\x12\x19" + body + b"\x20\x07"
    assert payload_of(encoded.sequenced(300)) == b"\x12\x1a" + body + b"\x20\xac\x02"


@pytest.mark.parametrize(
    "sequence_id", [1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**32, 2**63, 2**64 - 1]
)
@pytest.mark.parametrize(
    "message",
    [
        DataMessage(Payload(DataType.TEXT, b"hi")),
        DataMessage(Payload(DataType.JSON, b'{"a": 1}'), "group1", "user1"),
        DataMessage(Payload(DataType.PROTOBUF, ANY_HI), "g"),
        DataMessage(Payload(DataType.BINARY, b"\x00" * 120)),
        DataMessage(Payload(DataType.BINARY, b"\x01" * 16370), "g"),
        DataMessage(Payload(DataType.BINARY, b"\x02" * 70000)),
    ],
    ids=["text", "json-group", "protobuf", "near-126", "3-byte-length", "64-bit-header"],
)
def test_reliable_splice_matches_full_serialization(message: DataMessage, sequence_id: int) -> None:
    """Spliced frames equal a full serialization with sequence_id set, byte for byte."""
    encoded = RELIABLE.encode_data(message)
    unsequenced = PROTOBUF.encode_data(message)
    assert encoded.frame is None and unsequenced.frame is not None
    expected = DownstreamMessage.FromString(payload_of(unsequenced.frame))
    expected.data_message.sequence_id = sequence_id
    spliced = payload_of(encoded.sequenced(sequence_id))
    assert DownstreamMessage.FromString(spliced) == expected
    assert spliced == expected.SerializeToString()
    assert encoded.sequenced(sequence_id) == encoded.sequenced(sequence_id)


# -- across subprotocols --------------------------------------------------------------------


def _protobuf_data(payload: Payload) -> MessageData:
    encoded = PROTOBUF.encode_data(DataMessage(payload, "g"))
    assert encoded.frame is not None
    return DownstreamMessage.FromString(payload_of(encoded.frame)).data_message.data


def _json_frame(payload: Payload) -> bytes:
    encoded = JSON.encode_data(DataMessage(payload))
    assert encoded.frame is not None
    return payload_of(encoded.frame, 0x81)


def test_json_publisher_to_protobuf_subscriber() -> None:
    """json -> text_data (as sent), text -> text_data, binary -> binary_data, protobuf -> Any."""
    cases = {
        b'{"type":"sendToGroup","group":"g","data":{"a": 1}}': ("text_data", '{"a": 1}'),
        b'{"type":"sendToGroup","group":"g","dataType":"text","data":"hi"}': ("text_data", "hi"),
        b'{"type":"sendToGroup","group":"g","dataType":"binary","data":"AAE="}': (
            "binary_data",
            b"\x00\x01",
        ),
    }
    for text, (member, value) in cases.items():
        message = JSON.decode(text, binary=False)
        assert isinstance(message, SendToGroupMessage)
        data = _protobuf_data(message.payload)
        assert data.WhichOneof("data") == member
        assert getattr(data, member) == value
    any_text = b'"dataType":"protobuf","data":"' + base64.b64encode(ANY_HI) + b'"'
    message = JSON.decode(b'{"type":"sendToGroup","group":"g",' + any_text + b"}", binary=False)
    assert isinstance(message, SendToGroupMessage)
    data = _protobuf_data(message.payload)
    assert data.WhichOneof("data") == "protobuf_data"
    assert data.protobuf_data.SerializeToString() == ANY_HI


@pytest.mark.parametrize(
    ("member", "upstream", "json_frame", "plain_frame"),
    [
        (
            "text",
            b"\x0a\x07\x0a\x01g\x1a\x02\x0a\x00",
            b'{"type":"message","from":"server","dataType":"text","data":""}',
            b"\x81\x00",
        ),
        (
            "json",
            b'\x0a\x0f\x0a\x01g\x1a\x0a\x22\x08{"a": 1}',
            b'{"type":"message","from":"server","dataType":"json","data":{"a":1}}',
            b'\x81\x08{"a": 1}',
        ),
        (
            "binary",
            b"\x0a\x09\x0a\x01g\x1a\x04\x12\x02\x00\x01",
            b'{"type":"message","from":"server","dataType":"binary","data":"AAE="}',
            b"\x82\x02\x00\x01",
        ),
        (
            "protobuf",
            b"\x0a\x3e\x0a\x01g\x1a\x39\x1a\x37" + ANY_HI,
            b'{"type":"message","from":"server","dataType":"protobuf","data":"'
            + base64.b64encode(ANY_HI)
            + b'"}',
            b"\x82\x37" + ANY_HI,
        ),
    ],
)
def test_protobuf_publisher_to_json_and_plain_subscribers(
    member: str, upstream: bytes, json_frame: bytes, plain_frame: bytes
) -> None:
    """Each MessageData member reaches JSON and plain clients as the matrix in §6 says."""
    message = PROTOBUF.decode(upstream, binary=True)
    assert isinstance(message, SendToGroupMessage)
    assert message.payload.data_type is DataType(member)
    assert _json_frame(message.payload) == json_frame
    plain = codec_for(None).encode_data(DataMessage(message.payload))
    assert plain.frame == plain_frame
