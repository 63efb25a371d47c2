"""Group-stream messages in delivery (``hubbub.core.fanout.deliver_publication``): fragments
reach every member, the payload-less end of a stream only those with an envelope for it."""

from __future__ import annotations

import orjson

from hubbub.core.commands import Publication, Target
from hubbub.core.fanout import deliver_publication
from hubbub.core.outlet import SequencedFrames, SharedFrames
from hubbub.core.roles import RoleSet
from hubbub.core.state import Connection, HubRegistry
from hubbub.protocol.codec import JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL
from hubbub.protocol.messages import DataType, Payload, StreamInfo
from hubbub.protocol.registry import codec_for
from hubbub.types import ConnectionId, GroupName, HubName

HUB = HubName("h")
G = GroupName("g")


class Outlet:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def share(self, shared: SharedFrames) -> bool:
        return False

    def send_expiring(self, frame: bytes, deadline: float) -> None:
        self.send(frame)

    def share_sequenced(self, frames: SequencedFrames, first: int) -> bool:
        return False

    def close(self, code: int, reason: str) -> None:
        pass


def members(*subprotocols: str) -> tuple[HubRegistry, list[Outlet]]:
    hubs = HubRegistry()
    hub = hubs.ensure(HUB)
    outlets = []
    for i, subprotocol in enumerate(subprotocols):
        outlet = Outlet()
        codec = codec_for(subprotocol)
        connection = Connection(ConnectionId(f"c{i}"), HUB, None, RoleSet(), codec, outlet)
        hub.add(connection)
        hub.join(connection, G)
        outlets.append(outlet)
    return hubs, outlets


def publication(payload: Payload, info: StreamInfo) -> Publication:
    return Publication(HUB, Target.GROUP, G, payload, from_group=True, stream=info)


def body(frame: bytes) -> bytes:
    return frame[2:] if frame[1] < 126 else frame[4:]


def test_plain_members_get_fragments_but_not_the_end_of_a_stream() -> None:
    hubs, (plain, json, reliable) = members("", JSON_SUBPROTOCOL, JSON_RELIABLE_SUBPROTOCOL)
    fragment = publication(Payload(DataType.TEXT, b"A1"), StreamInfo("s", 1))
    end = publication(Payload(DataType.TEXT, b""), StreamInfo("s", 2, True))
    assert deliver_publication(hubs, fragment) == 3
    assert deliver_publication(hubs, end) == 2
    assert [body(f) for f in plain.frames] == [b"A1"]
    stream = {"streamId": "s", "streamSequenceId": 2, "endOfStream": True}
    assert orjson.loads(body(json.frames[1])) == {
        "type": "message",
        "from": "group",
        "group": "g",
        "dataType": "text",
        "data": "",
        "stream": stream,
    }
    last = orjson.loads(body(reliable.frames[1]))
    assert (last["stream"], last["sequenceId"]) == (stream, 2)


def test_the_end_of_a_stream_honours_no_echo() -> None:
    hubs, (publisher, other) = members(JSON_SUBPROTOCOL, JSON_SUBPROTOCOL)
    end = Publication(
        HUB,
        Target.GROUP,
        G,
        Payload(DataType.TEXT, b""),
        from_group=True,
        excluded=frozenset({ConnectionId("c0")}),
        stream=StreamInfo("s", 1, True, "Cancelled", "gone"),
    )
    assert deliver_publication(hubs, end) == 1
    assert publisher.frames == []
    assert orjson.loads(body(other.frames[0]))["stream"]["error"] == {
        "name": "Cancelled",
        "message": "gone",
    }
