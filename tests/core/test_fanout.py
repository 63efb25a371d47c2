"""Delivery encodes each message once per codec per publication (``hubbub.core.fanout``)."""

from __future__ import annotations

from hubbub.core.fanout import deliver, deliver_to_group
from hubbub.core.outlet import SharedFrames
from hubbub.core.roles import RoleSet
from hubbub.core.state import Connection, Hub
from hubbub.protocol.codec import JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL, EncodedData
from hubbub.protocol.messages import (
    ClientMessage,
    DataMessage,
    DataType,
    GroupStateMessage,
    InboundMessage,
    Payload,
    ServiceMessage,
)
from hubbub.protocol.registry import codec_for
from hubbub.protocol.reliable import RUN_BYTES, SequencedFrames
from hubbub.types import ConnectionId, GroupName, HubName

G = GroupName("g")
MESSAGE = DataMessage(Payload(DataType.TEXT, b"hi"), G, None)


class CountingCodec:
    """A real codec that counts its data encodings."""

    def __init__(self, subprotocol: str) -> None:
        self._codec = codec_for(subprotocol)
        self.name = self._codec.name
        self.reliable = self._codec.reliable
        self.plain = self._codec.plain
        self.encoded = 0

    def decode(self, data: bytes, binary: bool) -> ClientMessage:
        return self._codec.decode(data, binary)

    def decode_inbound(self, data: bytes, binary: bool) -> InboundMessage:
        return self._codec.decode_inbound(data, binary)

    def encode(self, message: ServiceMessage) -> bytes | None:
        return self._codec.encode(message)

    def encode_data(self, message: DataMessage) -> EncodedData:
        self.encoded += 1
        return self._codec.encode_data(message)

    def encode_group_state(self, message: GroupStateMessage) -> EncodedData | None:
        return self._codec.encode_group_state(message)


class Outlet:
    def __init__(self, shares: bool) -> None:
        self.shares = shares
        self.frames: list[bytes] = []
        self.shared: list[SharedFrames] = []
        self.sequenced: list[tuple[SequencedFrames, int]] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def share(self, shared: SharedFrames) -> bool:
        if self.shares:
            self.shared.append(shared)
        return self.shares

    def send_expiring(self, frame: bytes, deadline: float) -> None:
        self.send(frame)

    def share_sequenced(self, frames: SequencedFrames, first: int) -> bool:
        if self.shares:
            self.sequenced.append((frames, first))
        return self.shares

    def close(self, code: int, reason: str) -> None:
        pass


def group(*members: tuple[CountingCodec, bool]) -> tuple[Hub, list[Outlet]]:
    hub = Hub(HubName("h"))
    outlets = []
    for i, (codec, shares) in enumerate(members):
        outlet = Outlet(shares)
        connection = Connection(ConnectionId(f"c{i}"), hub.name, None, RoleSet(), codec, outlet)
        hub.add(connection)
        hub.join(connection, G)
        outlets.append(outlet)
    return hub, outlets


def test_a_reliable_group_is_encoded_once() -> None:
    """Members whose frames differ (sequence ids) still share one encoding of the message, and
    the next fan-outs only add to it."""
    reliable = CountingCodec(JSON_RELIABLE_SUBPROTOCOL)
    hub, outlets = group((reliable, True), (reliable, True), (reliable, True))
    assert deliver_to_group(hub, G, MESSAGE) == 3
    assert deliver_to_group(hub, G, MESSAGE) == 3
    assert reliable.encoded == 2
    assert all(o.frames == [] and o.shared == [] and len(o.sequenced) == 1 for o in outlets)
    shares = [o.sequenced[0] for o in outlets]
    assert all(s[0] is shares[0][0] and s[1] == 1 for s in shares)
    frames, first = shares[0]
    assert len(frames.datas) == 2
    joined = frames.joined(first)
    assert b'"sequenceId":1}' in joined and b'"sequenceId":2}' in joined


def test_reliable_members_that_cannot_share_get_their_frames_one_by_one() -> None:
    """... and do not stop the others from sharing."""
    reliable = CountingCodec(JSON_RELIABLE_SUBPROTOCOL)
    hub, outlets = group((reliable, False), (reliable, True))
    deliver_to_group(hub, G, MESSAGE)
    deliver_to_group(hub, G, MESSAGE)
    assert reliable.encoded == 2
    assert b'"sequenceId":1}' in outlets[0].frames[0]
    assert b'"sequenceId":2}' in outlets[0].frames[1]
    # The other goes on sharing: the second message was only added to its frames.
    ((frames, first),) = outlets[1].sequenced
    assert first == 1 and len(frames.datas) == 2


def test_a_group_with_a_reliable_member_is_encoded_once_per_codec() -> None:
    """Members that cannot share the frames get the bytes already made for their codec."""
    json, reliable = CountingCodec(JSON_SUBPROTOCOL), CountingCodec(JSON_RELIABLE_SUBPROTOCOL)
    hub, outlets = group((json, True), (reliable, True), (json, False), (json, True))
    assert deliver_to_group(hub, G, MESSAGE) == 4
    assert (json.encoded, reliable.encoded) == (1, 1)
    assert outlets[2].frames == [outlets[0].shared[0].frames[0]]  # the same frame
    assert b'"sequenceId":1}' in outlets[1].frames[0]


def test_a_reliable_first_member_does_not_encode_the_others_twice() -> None:
    json, reliable = CountingCodec(JSON_SUBPROTOCOL), CountingCodec(JSON_RELIABLE_SUBPROTOCOL)
    hub, outlets = group((reliable, True), (json, True), (json, True))
    assert deliver_to_group(hub, G, MESSAGE) == 3
    assert (json.encoded, reliable.encoded) == (1, 1)
    assert outlets[1].frames[0] is outlets[2].frames[0]


def test_deliver_encodes_once_per_codec() -> None:
    json, reliable = CountingCodec(JSON_SUBPROTOCOL), CountingCodec(JSON_RELIABLE_SUBPROTOCOL)
    hub, _ = group((json, False), (reliable, False), (json, False), (reliable, False))
    assert deliver(hub.members(G), MESSAGE) == 4
    assert (json.encoded, reliable.encoded) == (1, 1)


def test_a_reliable_message_over_a_runs_bytes_is_pushed_to_each_member() -> None:
    reliable = CountingCodec(JSON_RELIABLE_SUBPROTOCOL)
    hub, outlets = group((reliable, True), (reliable, True))
    big = DataMessage(Payload(DataType.TEXT, b"x" * RUN_BYTES), G, None)
    assert deliver_to_group(hub, G, big) == 2
    assert reliable.encoded == 1
    assert all(o.sequenced == [] and o.frames[0].endswith(b'"sequenceId":1}') for o in outlets)
