"""Golden frames of the newest protobuf messages: group streams, group state, metadata, TTL.

Upstream frames are written out by hand from the field numbers of the service's published
``.proto`` (streaming) and of the known client definition (group state), so they check
``webpubsub.proto`` as well as the codec. Downstream frames are checked by parsing them back.
"""

from __future__ import annotations

import pytest

from hubbub.errors import BadRequestError, ProtocolError
from hubbub.protocol.codec import PROTOBUF_RELIABLE_SUBPROTOCOL, PROTOBUF_SUBPROTOCOL
from hubbub.protocol.messages import (
    DataMessage,
    DataType,
    EventMessage,
    GroupStateItem,
    GroupStateSnapshotMessage,
    GroupStateUpdateMessage,
    Payload,
    SendToGroupMessage,
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
from hubbub.protocol.registry import codec_for
from hubbub.protocol.webpubsub_pb2 import DownstreamMessage
from tests.protocol.test_protobuf_codec import payload_of

PROTOBUF = codec_for(PROTOBUF_SUBPROTOCOL)
RELIABLE = codec_for(PROTOBUF_RELIABLE_SUBPROTOCOL)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # send_to_group_message (1): group "g", no_echo (4), stream (7) {stream_id "s"}
        (b"\x0a\x0a\x0a\x01g\x20\x01\x3a\x03\x0a\x01s", StreamStartMessage("g", "s", None, True)),
        # ... with idle_timeout_ms (2) 15000 = 0x98 0x75
        (
            b"\x0a\x0b\x0a\x01g\x3a\x06\x0a\x01s\x10\x98\x75",
            StreamStartMessage("g", "s", 15000),
        ),
        # stream_data_message (13): stream_id "s", stream_sequence_id (2) 1, data text "hi"
        (
            b"\x6a\x0b\x0a\x01s\x10\x01\x1a\x04\x0a\x02hi",
            StreamDataMessage("s", 1, Payload(DataType.TEXT, b"hi")),
        ),
        # ... binary_data (2) 01 02
        (
            b"\x6a\x0b\x0a\x01s\x10\x02\x1a\x04\x12\x02\x01\x02",
            StreamDataMessage("s", 2, Payload(DataType.BINARY, b"\x01\x02")),
        ),
        # keepalive: stream_id only
        (b"\x6a\x03\x0a\x01s", StreamDataMessage("s")),
        # stream_end_message (14)
        (b"\x72\x03\x0a\x01s", StreamEndMessage("s")),
        # ... error (2) {message (1) "m", user_error_code (2) "c"}
        (
            b"\x72\x0b\x0a\x01s\x12\x06\x0a\x01m\x12\x01c",
            StreamEndMessage("s", StreamEndError("m", "c")),
        ),
        (b"\x72\x05\x0a\x01s\x12\x00", StreamEndMessage("s", StreamEndError())),
        # set_group_state_message (15, tag 0x7a): group, ack_id 1, state {entries {k: v}}
        (
            b"\x7a\x0f\x0a\x01g\x10\x01\x1a\x08\x0a\x06\x0a\x01k\x12\x01v",
            SetGroupStateMessage("g", (("k", "v"),), 1),
        ),
        # ... without state: clear
        (b"\x7a\x05\x0a\x01g\x10\x02", SetGroupStateMessage("g", None, 2)),
        # ... with an empty state: set to nothing
        (b"\x7a\x05\x0a\x01g\x1a\x00", SetGroupStateMessage("g", ())),
        # subscribe (16) and unsubscribe (17): two-byte tags 0x82 0x01 and 0x8a 0x01
        (b"\x82\x01\x05\x0a\x01g\x10\x03", SubscribeGroupStateMessage("g", 3)),
        (b"\x8a\x01\x03\x0a\x01g", UnsubscribeGroupStateMessage("g")),
        # event with metadata only
        (
            b"\x2a\x0b\x0a\x01e\x22\x06\x0a\x01k\x12\x01v",
            EventMessage("e", Payload(DataType.TEXT, b"", (("k", "v"),))),
        ),
    ],
)
def test_decode_inbound(data: bytes, message: object) -> None:
    """Upstream stream and group-state bytes decode to their typed messages."""
    assert PROTOBUF.decode_inbound(data, binary=True) == message
    assert RELIABLE.decode_inbound(data, binary=True) == message


@pytest.mark.parametrize(
    ("data", "stream_id"),
    [
        # a stream start with data
        (b"\x0a\x0e\x0a\x01g\x1a\x04\x0a\x02hi\x3a\x03\x0a\x01s", "s"),
        # an empty stream id
        (b"\x0a\x05\x0a\x01g\x3a\x00", ""),
        # idle_timeout_ms 0
        (b"\x0a\x0a\x0a\x01g\x3a\x05\x0a\x01s\x10\x00", "s"),
        # a sequence id without data, data without a sequence id
        (b"\x6a\x05\x0a\x01s\x10\x01", "s"),
        (b"\x6a\x09\x0a\x01s\x1a\x04\x0a\x02hi", "s"),
        # json_data that is not JSON
        (b"\x6a\x0a\x0a\x01s\x10\x01\x1a\x03\x22\x01{", "s"),
    ],
)
def test_invalid_stream_messages_are_refused_for_the_stream(data: bytes, stream_id: str) -> None:
    """An invalid stream message is a BadRequest for its stream."""
    with pytest.raises(BadRequestError) as info:
        PROTOBUF.decode_inbound(data, binary=True)
    assert info.value.stream_id == stream_id


def test_ttl_above_300_is_a_bad_request_ack() -> None:
    """ttl_seconds (5) 301 is refused with an ack; 0 means no expiry."""
    with pytest.raises(BadRequestError) as info:
        PROTOBUF.decode_inbound(b"\x0a\x0c\x0a\x01g\x10\x07\x1a\x02\x0a\x00\x28\xad\x02", True)
    assert info.value.ack_id == 7
    assert PROTOBUF.decode_inbound(b"\x0a\x09\x0a\x01g\x1a\x02\x0a\x00\x28\x00", True) == (
        SendToGroupMessage("g", Payload(DataType.TEXT, b""))
    )


def test_invalid_metadata_is_a_bad_request_ack() -> None:
    """A metadata key that is not an HTTP token is refused with an ack."""
    with pytest.raises(BadRequestError) as info:
        PROTOBUF.decode_inbound(
            b"\x0a\x13\x0a\x01g\x10\x08\x1a\x02\x0a\x00\x32\x08\x0a\x03a b\x12\x01v", True
        )
    assert info.value.ack_id == 8


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x08\x0a\x01g\x3a\x03\x0a\x01s",
        b"\x6a\x03\x0a\x01s",
        b"\x7a\x03\x0a\x01g",
        b"\x0a\x05\x0a\x01g\x3a\x00",
    ],
)
def test_decode_refuses_what_the_handler_does_not_execute(data: bytes) -> None:
    """``decode`` keeps returning ClientMessage only: the other frames close with 1007."""
    with pytest.raises(ProtocolError) as info:
        PROTOBUF.decode(data, binary=True)
    assert info.value.close_code == 1007


def _down(frame: bytes | None) -> DownstreamMessage:
    assert frame is not None
    return DownstreamMessage.FromString(payload_of(frame))


def test_encode_stream_answers() -> None:
    """streamAck (6), streamNack (7) and streamClosed (8) with and without error."""
    assert _down(PROTOBUF.encode(StreamAckMessage("s", 3))).SerializeToString() == (
        b"\x32\x05\x0a\x01s\x10\x03"
    )
    nack = _down(PROTOBUF.encode(StreamNackMessage("s", 2, "InvalidSequenceId", "m")))
    assert nack.SerializeToString() == (
        b"\x3a\x1b\x0a\x01s\x12\x11InvalidSequenceId\x1a\x01m\x20\x02"
    )
    closed = _down(PROTOBUF.encode(StreamClosedMessage("s")))
    assert closed.SerializeToString() == b"\x42\x03\x0a\x01s"
    failed = _down(PROTOBUF.encode(StreamClosedMessage("s", "StreamNotFound", "gone")))
    assert failed.SerializeToString() == (
        b"\x42\x1b\x0a\x01s\x12\x16\x0a\x0eStreamNotFound\x12\x04gone"
    )


def test_encode_stream_info_and_metadata() -> None:
    """``DataMessage.metadata`` (5) and ``DataMessage.stream`` (6) reach protobuf clients."""
    message = DataMessage(
        Payload(DataType.TEXT, b"", (("k", "v"),)),
        "g",
        "u",
        StreamInfo("s", 4, True, "UserError", "m", "c"),
    )
    data = _down(PROTOBUF.encode_data(message).frame).data_message
    assert data.WhichOneof("_group") == "group"
    assert data.data.WhichOneof("data") == "text_data" and data.data.text_data == ""
    assert dict(data.metadata) == {"k": "v"}
    assert (data.stream.stream_id, data.stream.stream_sequence_id) == ("s", 4)
    assert data.stream.end_of_stream
    assert (data.stream.error.name, data.stream.error.message) == ("UserError", "m")
    assert data.stream.error.user_error_code == "c"
    plain = _down(PROTOBUF.encode_data(DataMessage(Payload(DataType.TEXT, b"x"))).frame)
    assert not plain.data_message.HasField("stream") and not plain.data_message.metadata


def test_reliable_splice_with_metadata_and_stream() -> None:
    """The appended sequence_id reads back with the later fields intact."""
    message = DataMessage(
        Payload(DataType.BINARY, b"\x01", (("a", "b"),)), "g", None, StreamInfo("s", 1)
    )
    expected = _down(PROTOBUF.encode_data(message).frame)
    expected.data_message.sequence_id = 300
    assert _down(RELIABLE.encode_data(message).sequenced(300)) == expected


ITEMS = (
    GroupStateItem("c1", "alice", (("activity", "typing"),), 1741652400000),
    GroupStateItem("c2", None, None, 1741652405000),
)


@pytest.mark.parametrize(
    ("message", "member"),
    [
        (GroupStateSnapshotMessage("room", ITEMS), "group_state_snapshot_message"),
        (GroupStateUpdateMessage("room", ITEMS), "group_state_update_message"),
    ],
)
def test_encode_group_state(
    message: GroupStateSnapshotMessage | GroupStateUpdateMessage, member: str
) -> None:
    """Snapshots (10) and updates (9): items with or without user id and state."""
    down = _down(PROTOBUF.encode_group_state(message).frame)
    assert down.WhichOneof("message") == member
    body = getattr(down, member)
    assert body.group == "room"
    first, second = body.items
    assert (first.connection_id, first.user_id, first.updated_at) == ("c1", "alice", 1741652400000)
    assert dict(first.state.entries) == {"activity": "typing"}
    assert not second.HasField("user_id") and not second.HasField("state")
    assert not body.HasField("sequence_id")
    sequenced = _down(RELIABLE.encode_group_state(message).sequenced(77))
    body.sequence_id = 77
    assert getattr(sequenced, member) == body
