"""One client message in, its acks and replies out (``hubbub.client.ClientHandler``)."""

from __future__ import annotations

import orjson
import pytest

from hubbub.broker.memory import MemoryBroker
from hubbub.config import Config
from hubbub.core.commands import Publication, Target
from hubbub.core.outlet import SequencedFrames, SharedFrames
from hubbub.core.state import Connection
from hubbub.node import Node
from hubbub.protocol.codec import JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL
from hubbub.protocol.messages import (
    DataType,
    JoinGroupMessage,
    LeaveGroupMessage,
    Payload,
    PingMessage,
    SendToGroupMessage,
    SequenceAckMessage,
)
from hubbub.protocol.registry import codec_for
from hubbub.types import GroupName, HubName

HUB = HubName("client")
ROLES = ("webpubsub.joinLeaveGroup.g", "webpubsub.sendToGroup.g")


class JsonOutlet:
    def __init__(self) -> None:
        self.messages: list[dict[str, object]] = []

    def send(self, frame: bytes) -> None:
        self.messages.append(orjson.loads(frame[2:] if frame[1] < 126 else frame[4:]))

    def share(self, shared: SharedFrames) -> bool:
        return False

    def send_expiring(self, frame: bytes, deadline: float) -> None:
        self.send(frame)

    def share_sequenced(self, frames: SequencedFrames, first: int) -> bool:
        return False

    def close(self, code: int, reason: str) -> None:
        pass


class Publishing(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[Publication] = []

    async def publish(self, publication: Publication) -> None:
        self.published.append(publication)
        await super().publish(publication)


@pytest.fixture
async def node() -> Node:
    node = Node(Config(access_keys=("k" * 40,)), Publishing())
    await node.broker.start(node)
    return node


def connect(node: Node, subprotocol: str = JSON_SUBPROTOCOL) -> tuple[Connection, JsonOutlet]:
    outlet = JsonOutlet()
    connection = node.connect(HUB, None, ROLES, (), codec_for(subprotocol), outlet)
    outlet.messages.clear()
    return connection, outlet


async def test_ping_is_answered_with_pong(node: Node) -> None:
    connection, outlet = connect(node)
    await node.client.handle(connection, PingMessage())
    assert outlet.messages == [{"type": "pong"}]


async def test_join_acks_and_a_repeated_ack_id_is_a_duplicate(node: Node) -> None:
    """The first join with an ackId succeeds; the same ackId again is refused as Duplicate."""
    connection, outlet = connect(node)
    await node.client.handle(connection, JoinGroupMessage("g", 7))
    await node.client.handle(connection, LeaveGroupMessage("g", 7))
    assert connection.groups == {"g"}
    assert outlet.messages[0] == {"type": "ack", "ackId": 7, "success": True}
    assert outlet.messages[1]["error"] == {
        "name": "Duplicate",
        "message": "Message with ack-id: 7 has been processed",
    }


async def test_a_forbidden_join_is_refused_in_its_ack(node: Node) -> None:
    connection, outlet = connect(node)
    await node.client.handle(connection, JoinGroupMessage("other", 1))
    assert connection.groups == set()
    error = outlet.messages[0]["error"]
    assert isinstance(error, dict) and error["name"] == "Forbidden"
    await node.client.handle(connection, JoinGroupMessage("other", 1))  # a failure is no Duplicate
    assert outlet.messages[1]["error"] == error


async def test_send_to_group_goes_through_the_engine(node: Node) -> None:
    """A group send is published to the engine, which hands it back for delivery."""
    sender, sender_outlet = connect(node)
    member, member_outlet = connect(node)
    node.join(member, GroupName("g"))
    payload = Payload(DataType.TEXT, b"hi")
    await node.client.handle(sender, SendToGroupMessage("g", payload, 3, no_echo=True))
    broker = node.broker
    assert isinstance(broker, Publishing)
    assert [(p.name, p.excluded, p.from_group) for p in broker.published] == [
        ("g", frozenset([sender.id]), True)
    ]
    assert sender_outlet.messages == [{"type": "ack", "ackId": 3, "success": True}]
    assert member_outlet.messages[0]["data"] == "hi"


async def test_sequence_ack_acknowledges_the_session(node: Node) -> None:
    connection, _ = connect(node, JSON_RELIABLE_SUBPROTOCOL)
    node.join(connection, GroupName("g"))
    for _ in range(3):
        await node.broker.publish(
            Publication(HUB, Target.GROUP, "g", Payload(DataType.TEXT, b"x"), True)
        )
    assert connection.session is not None and len(connection.session) == 3
    await node.client.handle(connection, SequenceAckMessage(2))
    assert len(connection.session) == 1
