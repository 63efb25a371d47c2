"""Golden frames of the newest JSON messages: group streams, group state, metadata, TTL.

The client frames are the shapes ``@azure/web-pubsub-client`` 1.1.0 writes and the subprotocol
reference shows; the service frames are the reference's formats in hubbub's field order.
"""

from __future__ import annotations

import pytest

from hubbub.errors import BadRequestError, ProtocolError
from hubbub.protocol.codec import JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL
from hubbub.protocol.messages import (
    ClientInvokeResponseMessage,
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
from tests.protocol.test_json_codec import payload_of

JSON = codec_for(JSON_SUBPROTOCOL)
RELIABLE = codec_for(JSON_RELIABLE_SUBPROTOCOL)
TEXT_HI = Payload(DataType.TEXT, b"hi")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            # What openGroupStream sends by default: a UUID, noEcho false, no idle timeout.
            b'{"type":"sendToGroup","group":"room","noEcho":false,'
            b'"stream":{"streamId":"1f0c8e4e-5b1a-4d55-9a1e-0d6c3f2b7a10"}}',
            StreamStartMessage("room", "1f0c8e4e-5b1a-4d55-9a1e-0d6c3f2b7a10"),
        ),
        (
            b'{"type":"sendToGroup","group":"room","noEcho":true,'
            b'"stream":{"streamId":"s1","idleTimeoutMs":15000}}',
            StreamStartMessage("room", "s1", 15000, True),
        ),
        (
            b'{"type":"streamData","streamId":"s1","streamSequenceId":1,"dataType":"text",'
            b'"data":"hi"}',
            StreamDataMessage("s1", 1, TEXT_HI),
        ),
        (
            b'{"type":"streamData","streamId":"s1","streamSequenceId":2,"dataType":"json",'
            b'"data":{"n":2}}',
            StreamDataMessage("s1", 2, Payload(DataType.JSON, b'{"n":2}')),
        ),
        (
            b'{"type":"streamData","streamId":"s1","streamSequenceId":3,"dataType":"binary",'
            b'"data":"CQgHBg=="}',
            StreamDataMessage("s1", 3, Payload(DataType.BINARY, b"\t\x08\x07\x06")),
        ),
        (b'{"type":"streamData","streamId":"s1"}', StreamDataMessage("s1")),
        (b'{"type":"streamEnd","streamId":"s1"}', StreamEndMessage("s1")),
        (
            b'{"type":"streamEnd","streamId":"s1","error":{"message":"gave up",'
            b'"userErrorCode":"E42"}}',
            StreamEndMessage("s1", StreamEndError("gave up", "E42")),
        ),
        (
            b'{"type":"streamEnd","streamId":"s1","error":{}}',
            StreamEndMessage("s1", StreamEndError()),
        ),
        (
            b'{"type":"setGroupState","group":"chat-room","state":{"activity":"typing"},"ackId":1}',
            SetGroupStateMessage("chat-room", (("activity", "typing"),), 1),
        ),
        (
            b'{"type":"setGroupState","group":"chat-room","ackId":2}',
            SetGroupStateMessage("chat-room", None, 2),
        ),
        (
            b'{"type":"setGroupState","group":"chat-room","state":{}}',
            SetGroupStateMessage("chat-room", ()),
        ),
        (
            b'{"type":"subscribeGroupState","group":"chat-room","ackId":3}',
            SubscribeGroupStateMessage("chat-room", 3),
        ),
        (
            b'{"type":"unsubscribeGroupState","group":"chat-room","ackId":4}',
            UnsubscribeGroupStateMessage("chat-room", 4),
        ),
        (
            b'{"type":"invokeResponse","invocationId":"7","success":true,"dataType":"text",'
            b'"data":"ok"}',
            ClientInvokeResponseMessage("7", True, Payload(DataType.TEXT, b"ok")),
        ),
        (
            b'{"type":"invokeResponse","invocationId":"8","success":false,'
            b'"error":{"name":"Nope","message":"no"}}',
            ClientInvokeResponseMessage("8", False, None, "Nope", "no"),
        ),
        (
            b'{"type":"sendToGroup","group":"g","dataType":"text","data":"hi",'
            b'"metadata":{"trace":"abc","Kind":"x"},"ttlSeconds":30,"ackId":5}',
            SendToGroupMessage(
                "g",
                Payload(DataType.TEXT, b"hi", (("trace", "abc"), ("Kind", "x"))),
                5,
                ttl_seconds=30,
            ),
        ),
        (
            b'{"type":"sendToGroup","group":"g","data":1,"ttlSeconds":0}',
            SendToGroupMessage("g", Payload(DataType.JSON, b"1")),
        ),
        (
            b'{"type":"event","event":"e","metadata":{"k":"v"}}',
            EventMessage("e", Payload(DataType.TEXT, b"", (("k", "v"),))),
        ),
    ],
)
def test_decode_inbound(text: bytes, message: object) -> None:
    """Stream, group-state and metadata frames decode to their typed messages."""
    assert JSON.decode_inbound(text, binary=False) == message
    assert RELIABLE.decode_inbound(text, binary=False) == message


@pytest.mark.parametrize(
    ("text", "stream_id"),
    [
        (b'{"type":"sendToGroup","group":"g","stream":{"streamId":"s","data":1},"data":1}', "s"),
        (b'{"type":"sendToGroup","group":"g","stream":{"streamId":""}}', ""),
        (b'{"type":"sendToGroup","group":"g","stream":{"streamId":"s","idleTimeoutMs":0}}', "s"),
        (b'{"type":"streamData","streamId":"s","streamSequenceId":1}', "s"),
        (b'{"type":"streamData","streamId":"s","dataType":"text","data":"x"}', "s"),
        (
            b'{"type":"streamData","streamId":"s","streamSequenceId":1,"dataType":"binary",'
            b'"data":"!!"}',
            "s",
        ),
    ],
)
def test_invalid_stream_messages_are_refused_for_the_stream(text: bytes, stream_id: str) -> None:
    """An invalid stream message is a BadRequest for its stream (answered with streamClosed)."""
    with pytest.raises(BadRequestError) as info:
        JSON.decode_inbound(text, binary=False)
    assert info.value.stream_id == stream_id
    assert info.value.ack_id is None


@pytest.mark.parametrize(
    "text",
    [
        b'{"type":"sendToGroup","group":"g","data":1,"ttlSeconds":301,"ackId":6}',
        b'{"type":"sendToGroup","group":"g","data":1,"ttlSeconds":-1,"ackId":6}',
        b'{"type":"sendToGroup","group":"g","data":1,"metadata":{"a b":"v"},"ackId":6}',
        b'{"type":"sendToGroup","group":"g","data":1,"metadata":{"k":"\\u00e9"},"ackId":6}',
        b'{"type":"event","event":"e","metadata":{"k":"' + b"v" * 1025 + b'"},"ackId":6}',
    ],
)
def test_invalid_ttl_or_metadata_is_a_bad_request_ack(text: bytes) -> None:
    """ttlSeconds outside 0-300 and metadata breaking its rules are answered with an ack."""
    with pytest.raises(BadRequestError) as info:
        JSON.decode_inbound(text, binary=False)
    assert info.value.ack_id == 6


@pytest.mark.parametrize(
    "text",
    [
        b'{"type":"setGroupState","group":"g","state":{"k":1}}',
        b'{"type":"setGroupState","group":"g","state":"typing"}',
        b'{"type":"subscribeGroupState"}',
        b'{"type":"streamData"}',
        b'{"type":"streamEnd","streamId":"s","error":"x"}',
        b'{"type":"sendToGroup","group":"g","metadata":{"k":"v"}}',
    ],
)
def test_malformed_new_frames_close_1007(text: bytes) -> None:
    """Frames of the new types that break their shape are protocol errors, as any other."""
    with pytest.raises(ProtocolError) as info:
        JSON.decode_inbound(text, binary=False)
    assert info.value.close_code == 1007


@pytest.mark.parametrize(
    "text",
    [
        b'{"type":"sendToGroup","group":"g","stream":{"streamId":"s"}}',
        b'{"type":"sendToGroup","group":"g","stream":{"streamId":""}}',
        b'{"type":"streamData","streamId":"s"}',
        b'{"type":"setGroupState","group":"g"}',
        b'{"type":"invokeResponse","invocationId":"1","success":true}',
    ],
)
def test_decode_refuses_what_the_handler_does_not_execute(text: bytes) -> None:
    """``decode`` keeps returning ClientMessage only: the other frames close with 1007."""
    with pytest.raises(ProtocolError) as info:
        JSON.decode(text, binary=False)
    assert info.value.close_code == 1007


@pytest.mark.parametrize(
    ("message", "text"),
    [
        (StreamAckMessage("s1", 1), b'{"type":"streamAck","streamId":"s1","expectedSequenceId":1}'),
        (
            StreamNackMessage("s1", 2, "InvalidSequenceId", "Expected 2, received 4."),
            b'{"type":"streamNack","streamId":"s1","expectedSequenceId":2,'
            b'"name":"InvalidSequenceId","message":"Expected 2, received 4."}',
        ),
        (StreamClosedMessage("s1"), b'{"type":"streamClosed","streamId":"s1"}'),
        (
            StreamClosedMessage("s1", "IdleTimeout", "Stream 's1' was idle."),
            b'{"type":"streamClosed","streamId":"s1","error":{"name":"IdleTimeout",'
            b'"message":"Stream \'s1\' was idle."}}',
        ),
    ],
)
def test_encode_stream_answers(message: object, text: bytes) -> None:
    """streamAck, streamNack and streamClosed are text frames in the reference's field order."""
    for codec in (JSON, RELIABLE):
        frame = codec.encode(message)  # type: ignore[arg-type]
        assert frame is not None
        assert payload_of(frame) == text


def test_encode_stream_fragment_and_terminal_message() -> None:
    """Fragments carry ``stream`` after the data; the terminal one ends it, with its error."""
    fragment = DataMessage(TEXT_HI, "g", "alice", StreamInfo("s1", 1))
    assert payload_of(JSON.encode_data(fragment).frame or b"") == (
        b'{"type":"message","from":"group","group":"g","fromUserId":"alice","dataType":"text",'
        b'"data":"hi","stream":{"streamId":"s1","streamSequenceId":1}}'
    )
    end = DataMessage(
        Payload(DataType.TEXT, b""),
        "g",
        "alice",
        StreamInfo("s1", 3, True, "UserError", "gave up", "E42"),
    )
    assert payload_of(JSON.encode_data(end).frame or b"") == (
        b'{"type":"message","from":"group","group":"g","fromUserId":"alice","dataType":"text",'
        b'"data":"","stream":{"streamId":"s1","streamSequenceId":3,"endOfStream":true,'
        b'"error":{"name":"UserError","message":"gave up","userErrorCode":"E42"}}}'
    )
    timeout = DataMessage(
        Payload(DataType.TEXT, b""), "g", None, StreamInfo("s1", 2, True, "IdleTimeout", "idle")
    )
    assert b'"error":{"name":"IdleTimeout","message":"idle"}}}' in (
        JSON.encode_data(timeout).frame or b""
    )


def test_reliable_stream_fragment_puts_sequence_id_last() -> None:
    """The connection's sequenceId follows ``stream`` (it is independent of the stream's)."""
    fragment = DataMessage(TEXT_HI, "g", None, StreamInfo("s1", 5))
    assert payload_of(RELIABLE.encode_data(fragment).sequenced(42)) == (
        b'{"type":"message","from":"group","group":"g","dataType":"text","data":"hi",'
        b'"stream":{"streamId":"s1","streamSequenceId":5},"sequenceId":42}'
    )


def test_encode_metadata_after_data() -> None:
    """Metadata reaches JSON clients after ``data``, before ``stream`` and ``sequenceId``."""
    message = DataMessage(Payload(DataType.JSON, b'{"a": 1}', (("trace", "t1"),)))
    assert payload_of(JSON.encode_data(message).frame or b"") == (
        b'{"type":"message","from":"server","dataType":"json","data":{"a":1},'
        b'"metadata":{"trace":"t1"}}'
    )
    streamed = DataMessage(
        Payload(DataType.TEXT, b"x", (("k", "v"),)), "g", None, StreamInfo("s", 1)
    )
    assert payload_of(RELIABLE.encode_data(streamed).sequenced(1)) == (
        b'{"type":"message","from":"group","group":"g","dataType":"text","data":"x",'
        b'"metadata":{"k":"v"},"stream":{"streamId":"s","streamSequenceId":1},"sequenceId":1}'
    )


SNAPSHOT = GroupStateSnapshotMessage(
    "chat-room",
    (
        GroupStateItem("conn-a1", "alice", (("activity", "typing"),), 1741652400000),
        GroupStateItem("conn-b1", None, (("hand", "raised"),), 1741652380000),
    ),
)
UPDATE = GroupStateUpdateMessage(
    "chat-room", (GroupStateItem("conn-a1", "alice", None, 1741652405000),)
)


def test_encode_group_state() -> None:
    """Snapshots and updates: ``userId`` absent when anonymous, ``state`` absent when cleared."""
    assert payload_of(JSON.encode_group_state(SNAPSHOT).frame or b"") == (
        b'{"type":"groupStateSnapshot","group":"chat-room","items":['
        b'{"connectionId":"conn-a1","userId":"alice","state":{"activity":"typing"},'
        b'"updatedAt":1741652400000},'
        b'{"connectionId":"conn-b1","state":{"hand":"raised"},"updatedAt":1741652380000}]}'
    )
    assert payload_of(JSON.encode_group_state(UPDATE).frame or b"") == (
        b'{"type":"groupStateUpdate","group":"chat-room","items":['
        b'{"connectionId":"conn-a1","userId":"alice","updatedAt":1741652405000}]}'
    )
    empty = GroupStateSnapshotMessage("empty-room", ())
    assert payload_of(JSON.encode_group_state(empty).frame or b"") == (
        b'{"type":"groupStateSnapshot","group":"empty-room","items":[]}'
    )


def test_reliable_group_state_is_sequenced() -> None:
    """On the reliable subprotocol group-state messages carry the connection's sequenceId."""
    encoded = RELIABLE.encode_group_state(UPDATE)
    assert encoded.frame is None
    assert payload_of(encoded.sequenced(9)) == (
        b'{"type":"groupStateUpdate","group":"chat-room","items":['
        b'{"connectionId":"conn-a1","userId":"alice","updatedAt":1741652405000}],"sequenceId":9}'
    )


def test_group_state_and_data_go_through_their_own_encoders() -> None:
    """``encode`` is for control messages only."""
    with pytest.raises(TypeError):
        JSON.encode(SNAPSHOT)
    with pytest.raises(TypeError):
        JSON.encode(DataMessage(TEXT_HI))
