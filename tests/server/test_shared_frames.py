"""Group fan-outs whose frames the members' outlets share (core ``deliver_to_group``).

Real corked outlets over recording transports; the flush is run by hand. What each member's
socket receives must be exactly what it would receive frame by frame: every message it is
due, in publish order, and nothing published to a group it was not in at the time.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator

import pytest

from hubbub.closecodes import CLOSE_POLICY_VIOLATION, REASON_UNACKED_OVERFLOW
from hubbub.core.fanout import deliver, deliver_to_group
from hubbub.core.roles import RoleSet
from hubbub.core.state import Connection, Hub
from hubbub.protocol.codec import (
    JSON_RELIABLE_SUBPROTOCOL,
    JSON_SUBPROTOCOL,
    PROTOBUF_RELIABLE_SUBPROTOCOL,
)
from hubbub.protocol.messages import DataMessage, DataType, Payload
from hubbub.protocol.registry import codec_for
from hubbub.protocol.reliable import ReliableSession
from hubbub.protocol.webpubsub_pb2 import DownstreamMessage
from hubbub.server.writer import CorkedOutlet, Flusher
from hubbub.types import ConnectionId, GroupName, HubName

G, H = GroupName("g"), GroupName("h")


class Recorder(asyncio.Transport):
    """Keeps every write; one entry per system call the outlet would make."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def writelines(self, list_of_data: object) -> None:
        self.writes.append(b"".join(list_of_data))  # type: ignore[arg-type]

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    @property
    def received(self) -> bytes:
        return b"".join(self.writes)


class Node:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.flusher = Flusher(self.loop)
        self.hub = Hub(HubName("hub"))
        self.transports: dict[str, Recorder] = {}

    def connect(self, name: str, *groups: GroupName, subprotocol: str = JSON_SUBPROTOCOL) -> None:
        transport = self.transports[name] = Recorder()
        outlet = CorkedOutlet(transport, self.flusher, 1 << 22, lambda code, reason: None)
        connection = Connection(
            ConnectionId(name), self.hub.name, None, RoleSet(), codec_for(subprotocol), outlet
        )
        self.hub.add(connection)
        for group in groups:
            self.hub.join(connection, group)

    def connection(self, name: str) -> Connection:
        return self.hub.connections[ConnectionId(name)]

    def flush(self) -> None:
        self.flusher._flush()

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def node() -> Iterator[Node]:
    n = Node()
    yield n
    n.close()


def message(text: str, group: GroupName | None = G) -> DataMessage:
    return DataMessage(Payload(DataType.TEXT, text.encode()), group, None)


def frame(text: str, group: GroupName | None = G) -> bytes:
    encoded = codec_for(JSON_SUBPROTOCOL).encode_data(message(text, group)).frame
    assert encoded is not None
    return encoded


def test_consecutive_fan_outs_are_one_write_per_member(node: Node) -> None:
    for name in "abc":
        node.connect(name, G)
    assert [deliver_to_group(node.hub, G, message(t)) for t in ("1", "2", "3")] == [3, 3, 3]
    node.flush()
    for name in "abc":
        assert node.transports[name].writes == [frame("1") + frame("2") + frame("3")]
    # The next period starts over, and still reaches everybody.
    deliver_to_group(node.hub, G, message("4"))
    node.flush()
    assert node.transports["a"].writes[1:] == [frame("4")]


def test_a_frame_to_one_member_keeps_its_place(node: Node) -> None:
    node.connect("a", G)
    node.connect("b", G)
    deliver_to_group(node.hub, G, message("1"))
    node.connection("a").outlet.send(b"direct")
    deliver_to_group(node.hub, G, message("2"))
    node.flush()
    assert node.transports["a"].received == frame("1") + b"direct" + frame("2")
    assert node.transports["b"].received == frame("1") + frame("2")


def test_a_newcomer_gets_only_what_follows_its_join(node: Node) -> None:
    node.connect("a", G)
    deliver_to_group(node.hub, G, message("1"))
    node.connect("late", G)
    deliver_to_group(node.hub, G, message("2"))
    node.flush()
    assert node.transports["a"].received == frame("1") + frame("2")
    assert node.transports["late"].received == frame("2")


def test_a_member_that_left_gets_nothing_after_it(node: Node) -> None:
    node.connect("a", G)
    node.connect("leaver", G)
    deliver_to_group(node.hub, G, message("1"))
    node.hub.leave(node.connection("leaver"), G)
    deliver_to_group(node.hub, G, message("2"))
    node.hub.remove(ConnectionId("a"))
    node.connect("b", G)
    deliver_to_group(node.hub, G, message("3"))
    node.flush()
    assert node.transports["leaver"].received == frame("1")
    assert node.transports["a"].received == frame("1") + frame("2")
    assert node.transports["b"].received == frame("3")


def test_a_member_of_two_groups_gets_both_in_publish_order(node: Node) -> None:
    node.connect("both", G, H)
    node.connect("g-only", G)
    node.connect("h-only", H)
    deliver_to_group(node.hub, G, message("g1"))
    deliver_to_group(node.hub, H, message("h1", H))
    deliver_to_group(node.hub, G, message("g2"))
    deliver_to_group(node.hub, H, message("h2", H))
    node.flush()
    assert node.transports["both"].received == (
        frame("g1") + frame("h1", H) + frame("g2") + frame("h2", H)
    )
    assert node.transports["g-only"].received == frame("g1") + frame("g2")
    assert node.transports["h-only"].received == frame("h1", H) + frame("h2", H)


def test_mixed_codecs_each_get_their_own_frames(node: Node) -> None:
    node.connect("json", G)
    node.connect("reliable", G, subprotocol=JSON_RELIABLE_SUBPROTOCOL)
    node.connect("json2", G)
    for text in ("1", "2"):
        assert deliver_to_group(node.hub, G, message(text)) == 3
    node.flush()
    assert node.transports["json"].received == frame("1") + frame("2")
    assert node.transports["json2"].received == frame("1") + frame("2")
    reliable = node.transports["reliable"].received
    assert b'"sequenceId":1' in reliable and b'"sequenceId":2' in reliable


def test_a_closed_member_gets_nothing_and_the_others_go_on(node: Node) -> None:
    node.connect("a", G)
    node.connect("gone", G)
    deliver_to_group(node.hub, G, message("1"))
    outlet = node.connection("gone").outlet
    assert isinstance(outlet, CorkedOutlet)
    outlet.mark_closed()
    deliver_to_group(node.hub, G, message("2"))
    node.flush()
    assert node.transports["gone"].writes == []
    assert node.transports["a"].received == frame("1") + frame("2")


def test_the_same_bytes_as_a_delivery_one_by_one(node: Node) -> None:
    """deliver_to_group and the general deliver put the same bytes on every socket."""
    for name in ("a", "b"):
        node.connect(name, G)
    deliver_to_group(node.hub, G, message("x"))
    deliver_to_group(node.hub, G, message("y"))
    node.flush()
    shared = node.transports["a"].received
    other = Node()
    try:
        other.connect("a", G)
        members = list(other.hub.groups[G].values())
        deliver(members, message("x"))
        deliver(members, message("y"))
        other.flush()
        assert other.transports["a"].received == shared
    finally:
        other.close()


def test_written_frames_are_not_kept(node: Node) -> None:
    """Once every member wrote them, the shared frames (maybe a big message) are freed."""
    for name in ("a", "b"):
        node.connect(name, G)
    deliver_to_group(node.hub, G, message("big" * 1000))
    ref = node.hub.shared[G][0]
    assert ref() is not None
    node.flush()
    assert ref() is None


# -- reliable members: shared encodings, each member's own sequence ids ---------------------------


def reliable_frame(text: str, sequence_id: int, group: GroupName | None = G) -> bytes:
    """The frame a json.reliable member gets, built by hand (no codec involved)."""
    source = b'"from":"group","group":"%s"' % group.encode() if group else b'"from":"server"'
    body = b'{"type":"message",%s,"dataType":"text","data":"%s","sequenceId":%d}' % (
        source,
        text.encode(),
        sequence_id,
    )
    assert len(body) < 126
    return bytes((0x81, len(body))) + body


def reliable(node: Node, name: str, *groups: GroupName) -> None:
    node.connect(name, *groups, subprotocol=JSON_RELIABLE_SUBPROTOCOL)


def test_reliable_members_get_their_own_ids_in_one_write_per_flush(node: Node) -> None:
    """Members whose ids differ (one got a message alone first) still share the fan-outs; each
    gets exactly its own frames, one write per flush."""
    reliable(node, "a", G)
    reliable(node, "b", G)
    deliver([node.connection("b")], message("alone", None))
    node.flush()
    for text in ("1", "2", "3"):
        deliver_to_group(node.hub, G, message(text))
    node.flush()
    deliver_to_group(node.hub, G, message("4"))
    node.flush()
    a, b = node.transports["a"].writes, node.transports["b"].writes
    assert a == [
        reliable_frame("1", 1) + reliable_frame("2", 2) + reliable_frame("3", 3),
        reliable_frame("4", 4),
    ]
    assert b == [
        reliable_frame("alone", 1, None),
        reliable_frame("1", 2) + reliable_frame("2", 3) + reliable_frame("3", 4),
        reliable_frame("4", 5),
    ]


def test_reliable_ids_run_on_across_groups_and_direct_frames(node: Node) -> None:
    reliable(node, "both", G, H)
    reliable(node, "g-only", G)
    deliver_to_group(node.hub, G, message("g1"))
    deliver_to_group(node.hub, H, message("h1", H))
    node.connection("both").outlet.send(b"direct")
    deliver_to_group(node.hub, G, message("g2"))
    deliver([node.connection("both")], message("u", None))
    deliver_to_group(node.hub, G, message("g3"))
    node.flush()
    assert node.transports["both"].received == (
        reliable_frame("g1", 1)
        + reliable_frame("h1", 2, H)
        + b"direct"
        + reliable_frame("g2", 3)
        + reliable_frame("u", 4, None)
        + reliable_frame("g3", 5)
    )
    assert node.transports["g-only"].received == (
        reliable_frame("g1", 1) + reliable_frame("g2", 2) + reliable_frame("g3", 3)
    )


def test_a_reliable_newcomer_counts_from_one(node: Node) -> None:
    reliable(node, "a", G)
    deliver_to_group(node.hub, G, message("1"))
    reliable(node, "late", G)
    deliver_to_group(node.hub, G, message("2"))
    node.flush()
    assert node.transports["a"].received == reliable_frame("1", 1) + reliable_frame("2", 2)
    assert node.transports["late"].received == reliable_frame("2", 1)


def test_reliable_sessions_keep_and_resend_exactly_what_was_written(node: Node) -> None:
    """What a recovery resends and what a snapshot holds are the bytes the client got."""
    reliable(node, "a", G)
    reliable(node, "b", G)
    deliver([node.connection("a")], message("alone", None))
    for text in ("1", "2"):
        deliver_to_group(node.hub, G, message(text))
    node.flush()
    deliver_to_group(node.hub, G, message("3"))
    node.flush()
    for name in ("a", "b"):
        session = node.connection(name).session
        assert session is not None
        written = node.transports[name].received
        assert b"".join(session.attach()) == written
        assert b"".join(frame for _, frame in session.snapshot().unacked) == written
    session = node.connection("a").session
    assert session is not None
    session.ack(2)
    assert session.attach() == [reliable_frame("2", 3), reliable_frame("3", 4)]


def test_a_reliable_member_over_its_limit_is_closed_and_the_others_go_on(node: Node) -> None:
    reliable(node, "a", G)
    closed: list[tuple[int, str]] = []
    transport = node.transports["small"] = Recorder()
    outlet = CorkedOutlet(transport, node.flusher, 1 << 22, lambda c, r: closed.append((c, r)))
    small = Connection(
        ConnectionId("small"),
        node.hub.name,
        None,
        RoleSet(),
        codec_for(JSON_RELIABLE_SUBPROTOCOL),
        outlet,
        session=ReliableSession(max_messages=3),
    )
    node.hub.add(small)
    node.hub.join(small, G)
    for text in "12345":
        deliver_to_group(node.hub, G, message(text))
    assert closed == [(CLOSE_POLICY_VIOLATION, REASON_UNACKED_OVERFLOW)]
    assert small.close_reason == REASON_UNACKED_OVERFLOW
    node.flush()
    # The fourth message passed the limit: it is the last one the member gets.
    assert transport.received == b"".join(reliable_frame(t, int(t)) for t in "1234")
    assert node.transports["a"].received == b"".join(reliable_frame(t, int(t)) for t in "12345")
    assert node.transports["a"].writes == [node.transports["a"].received]


def test_members_that_cannot_share_do_not_stop_the_others(node: Node) -> None:
    """A json member among reliable ones (or one near its limits) is sent each message alone;
    the others keep adding to the frames they share, in one write each."""
    for name in ("r1", "r2"):
        reliable(node, name, G)
    node.connect("json", G)
    for text in ("1", "2", "3"):
        deliver_to_group(node.hub, G, message(text))
    shared = node.hub.shared[G][0]()
    assert shared is not None and len(shared.datas) == 3  # type: ignore[union-attr]
    node.flush()
    for name in ("r1", "r2"):
        assert node.transports[name].writes == [b"".join(reliable_frame(t, int(t)) for t in "123")]
    assert node.transports["json"].received == frame("1") + frame("2") + frame("3")


def test_reliable_members_keep_one_copy_of_a_message_between_them(node: Node) -> None:
    """Memory: 100 unacknowledged messages to 200 members cost a few bytes per member and
    message, not a frame each (the frames are built when written)."""
    for i in range(200):
        reliable(node, f"m{i}", G)
    deliver_to_group(node.hub, G, message("warm-up"))
    node.flush()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100):
            deliver_to_group(node.hub, G, message("x" * 100))
            if i % 3 == 2:
                node.flush()
        node.flush()
        for transport in node.transports.values():
            transport.writes.clear()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert all(len(node.connection(f"m{i}").session or ()) == 101 for i in range(200))
    assert kept / (200 * 100) < 24  # about 11 (a list slot, the message shared); was 293


def test_protobuf_reliable_members_share_fan_outs_with_their_own_ids(node: Node) -> None:
    for name in ("a", "b"):
        node.connect(name, G, subprotocol=PROTOBUF_RELIABLE_SUBPROTOCOL)
    deliver([node.connection("b")], message("alone", None))
    node.flush()
    for text in ("1", "2"):
        deliver_to_group(node.hub, G, message(text))
    node.flush()
    for name, first in (("a", 1), ("b", 2)):
        (write,) = node.transports[name].writes[-1:]
        got = []
        while write:
            assert write[0] == 0x82 and write[1] < 126
            downstream = DownstreamMessage.FromString(write[2 : 2 + write[1]])
            got.append(
                (downstream.data_message.sequence_id, downstream.data_message.data.text_data)
            )
            write = write[2 + write[1] :]
        assert got == [(first, "1"), (first + 1, "2")]


def test_reliable_frames_built_from_templates_keep_percent_signs_and_cross_digit_counts(
    node: Node,
) -> None:
    """Members whose ids differ get frames formatted from one template of the run: payload
    bytes that look like formats stay as they are, and a run whose ids pass 9 or 99 is right."""
    reliable(node, "a", G)
    reliable(node, "b", G)
    for _ in range(7):
        deliver([node.connection("a")], message("-", None))
    node.flush()
    texts = ("%d", "%%", "%s")
    for text in texts:
        deliver_to_group(node.hub, G, message(text))
    node.flush()
    assert node.transports["a"].writes[-1] == b"".join(
        reliable_frame(t, i) for i, t in enumerate(texts, 8)
    )
    assert node.transports["b"].writes[-1] == b"".join(
        reliable_frame(t, i) for i, t in enumerate(texts, 1)
    )
    for text in texts:
        deliver_to_group(node.hub, G, message(text))
    node.flush()
    assert node.transports["a"].writes[-1] == b"".join(
        reliable_frame(t, i) for i, t in enumerate(texts, 11)
    )
