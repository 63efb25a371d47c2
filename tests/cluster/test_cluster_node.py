"""Nodes of one process on the Redis engine: a reliable session handed over between them with
its groups, permissions and unacked frames, and what the replica of a session holds."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from hubbub.broker.redis import RedisBroker
from hubbub.config import Config
from hubbub.core.commands import GrantPermission, Publication, Target
from hubbub.core.outlet import SequencedFrames, SharedFrames
from hubbub.core.roles import Permission
from hubbub.node import RESTORE_SKIP, Node, _replica_snapshot
from hubbub.protocol.codec import (
    JSON_RELIABLE_SUBPROTOCOL,
    JSON_SUBPROTOCOL,
    PROTOBUF_RELIABLE_SUBPROTOCOL,
)
from hubbub.protocol.messages import DataType, Payload
from hubbub.protocol.registry import codec_for
from hubbub.protocol.tokens import reconnection_token
from hubbub.types import ConnectionId, GroupName, HubName, UserId
from tests._redis import RedisServer
from tests.broker.conftest import FAST
from tests.broker.test_contract import eventually

pytestmark = pytest.mark.redis

HUB = HubName("nodes")
KEY = "k" * 40
CID = ConnectionId("c1")


class Outlet:
    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def send_expiring(self, frame: bytes, deadline: float) -> None:
        self.frames.append(frame)

    def share(self, shared: SharedFrames) -> bool:
        return False

    def share_sequenced(self, frames: SequencedFrames, first: int) -> bool:
        return False

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def data(self) -> list[tuple[int, str]]:
        """(sequenceId, data) of every message frame, from the WebSocket frames written."""
        out: list[tuple[int, str]] = []
        for message in _messages(b"".join(self.frames)):
            if message.get("type") == "message":
                out.append((int(str(message["sequenceId"])), str(message["data"])))
        return out


class SharingOutlet(Outlet):
    """Takes the shared frames of group fan-outs (as a socket's writer does)."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[tuple[SequencedFrames, int]] = []

    def share_sequenced(self, frames: SequencedFrames, first: int) -> bool:
        self.runs.append((frames, first))
        return True

    def shared_bytes(self) -> bytes:
        return b"".join(frames.joined(first) for frames, first in self.runs)


def _messages(data: bytes) -> list[dict[str, object]]:
    """The JSON of each unmasked server-to-client WebSocket frame in ``data``."""
    out = []
    while data:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4]), 4
        elif length == 127:
            length, start = int.from_bytes(data[2:10]), 10
        out.append(json.loads(data[start : start + length]))
        data = data[start + length :]
    return out


async def _start(redis_server: RedisServer, names: str, replication: bool) -> list[Node]:
    config = Config(access_keys=(KEY,), redis_url=redis_server.url, session_replication=replication)
    started = []
    for name in names:
        broker = RedisBroker(dataclasses.replace(FAST, url=redis_server.url, node_id=name))
        node = Node(config, broker, cluster=broker)
        await broker.start(node)
        started.append(node)
    return started


@pytest.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[tuple[Node, Node]]:
    started = await _start(redis_server, "ab", True)
    yield started[0], started[1]
    for node in started:
        await node.broker.close()


@pytest.fixture(params=[False, True], ids=["plain", "replicated"])
async def three_nodes(
    redis_server: RedisServer, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Node, Node, Node]]:
    started = await _start(redis_server, "abc", request.param)
    yield started[0], started[1], started[2]
    for node in started:
        await node.broker.close()


def _publish(node: Node, text: str) -> None:
    payload = Payload(DataType.TEXT, text.encode())
    node.handle_publication(Publication(HUB, Target.USER, "u", payload))


async def test_a_session_moves_to_another_node(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    outlet = Outlet()
    connection = a.connect(
        HUB,
        UserId("u"),
        (),
        [GroupName("g")],
        codec_for(JSON_RELIABLE_SUBPROTOCOL),
        outlet,
        connection_id=CID,
        subprotocol=JSON_RELIABLE_SUBPROTOCOL,
    )
    await a.handle_command(GrantPermission(HUB, CID, Permission.SEND_TO_GROUP, "g"))
    for i in range(1, 4):
        _publish(a, f"m{i}")
    assert [d for _, d in outlet.data()] == ["m1", "m2", "m3"]
    a.socket_closed(connection, outlet, 1006)
    _publish(a, "m4")  # kept by the detached session
    await a.broker.sync()
    token = reconnection_token(KEY, CID)
    assert await b.recover_session(HUB, "c1", "wrong") is None
    moved = await b.recover_session(HUB, "c1", token)
    assert moved is not None and moved is not connection
    assert not a.holds(HUB, CID) and b.holds(HUB, CID)
    assert moved.user_id == "u" and moved.groups == {"g"}
    assert moved.can(Permission.SEND_TO_GROUP, "g")
    new = Outlet()
    b.resume(moved, new)
    assert new.data() == [(1, "m1"), (2, "m2"), (3, "m3"), (4, "m4")]
    _publish(b, "m5")
    assert new.data()[-1] == (5, "m5")
    assert await b.presence.connection_exists(HUB, CID)
    assert await a.presence.group_members(HUB, GroupName("g"), None, 10) == (
        await b.presence.group_members(HUB, GroupName("g"), None, 10)
    )


async def test_the_replica_holds_what_a_restore_needs(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    outlet = Outlet()
    a.connect(
        HUB,
        UserId("u"),
        (),
        [GroupName("g")],
        codec_for(JSON_RELIABLE_SUBPROTOCOL),
        outlet,
        connection_id=CID,
        subprotocol=JSON_RELIABLE_SUBPROTOCOL,
    )
    for i in range(1, 6):
        _publish(a, f"m{i}")
    connection = a.hubs.get(HUB).connections[CID]  # type: ignore[union-attr]
    a.client.on_sequence_ack(connection, 3)  # type: ignore[misc]
    await a.broker.sync()
    assert b.cluster is not None
    replica = await b.cluster.sessions.take(HUB, CID)
    assert replica is not None
    snapshot = _replica_snapshot(replica)
    assert snapshot is not None and snapshot.groups == ("g",) and snapshot.user_id == "u"
    assert snapshot.reliable is not None
    assert [seq for seq, _ in snapshot.reliable.unacked] == [4, 5]
    assert snapshot.reliable.next_sequence_id == 6 + RESTORE_SKIP


@pytest.mark.parametrize("subprotocol", [JSON_RELIABLE_SUBPROTOCOL, PROTOBUF_RELIABLE_SUBPROTOCOL])
async def test_a_shared_group_fan_out_is_replicated_as_its_members_got_it(
    nodes: tuple[Node, Node], subprotocol: str
) -> None:
    """Members sharing a group's fan-out (one replica write per message for all of them):
    each replica holds the very frames its member got, under its own sequence ids."""
    a, b = nodes
    outlets = {ConnectionId(f"s{i}"): SharingOutlet() for i in (1, 2)}
    for cid, outlet in outlets.items():
        a.connect(
            HUB,
            UserId(cid),
            (),
            [GroupName("g")],
            codec_for(subprotocol),
            outlet,
            connection_id=cid,
            subprotocol=subprotocol,
        )
    payload = Payload(DataType.TEXT, b"solo")
    a.handle_publication(Publication(HUB, Target.USER, "s2", payload))  # s2 is one ahead
    for i in range(1, 5):
        payload = Payload(DataType.TEXT, f"m{i}".encode())
        a.handle_publication(Publication(HUB, Target.GROUP, "g", payload))
    await a.broker.sync()
    assert b.cluster is not None
    for cid, outlet in outlets.items():
        assert len(outlet.runs) == 1  # the four fan-outs were shared
        replica = await b.cluster.sessions.take(HUB, cid)
        assert replica is not None
        first = 2 if cid == "s2" else 1
        shared = [(seq, frame) for seq, frame in replica.frames if seq >= first]
        assert [seq for seq, _ in shared] == list(range(first, first + 4))
        assert b"".join(frame for _, frame in shared) == outlet.shared_bytes()


async def test_a_disowned_connection_is_closed_without_telling_the_registry(
    nodes: tuple[Node, Node],
) -> None:
    """What the engine says another node took over while this one was cut off: closed here,
    no ``disconnected`` event, and the registry entry (the other node's) left alone."""
    a, _ = nodes
    outlet = Outlet()
    a.connect(
        HUB,
        UserId("u"),
        (),
        [GroupName("g")],
        codec_for(JSON_RELIABLE_SUBPROTOCOL),
        outlet,
        connection_id=CID,
        subprotocol=JSON_RELIABLE_SUBPROTOCOL,
    )
    await a.broker.sync()
    assert [h.connection_id for h in a.inventory()] == [CID]
    a.disowned(HUB, CID)
    await a.broker.sync()
    assert not a.holds(HUB, CID) and a.inventory() == []
    assert outlet.closed is not None and outlet.closed[0] == 1000
    assert await a.presence.connection_exists(HUB, CID)  # not removed by this node


def _texts(outlet: Outlet) -> list[str]:
    return [
        str(m["data"]) for m in _messages(b"".join(outlet.frames)) if m.get("type") == "message"
    ]


async def test_what_is_sent_during_a_hand_over_reaches_the_session_once_in_order(
    three_nodes: tuple[Node, Node, Node],
) -> None:
    """Publications to the session's user, groups and hub from any node while its owner (a)
    hands it over to b: those a had are in its snapshot, those it had not reach it on b; none
    is lost, none comes twice, and b's other connections get each once."""
    a, b, c = three_nodes
    group = GroupName("g")
    outlet = Outlet()
    connection = a.connect(
        HUB,
        UserId("u"),
        (),
        [group],
        codec_for(JSON_RELIABLE_SUBPROTOCOL),
        outlet,
        connection_id=CID,
        subprotocol=JSON_RELIABLE_SUBPROTOCOL,
    )
    other = Outlet()  # a member of the group on b all along
    b.connect(HUB, UserId("v"), (), [group], codec_for(JSON_SUBPROTOCOL), other)
    await a.broker.sync()
    await b.broker.sync()

    def send(node: Node, target: Target, name: str, text: str) -> Awaitable[None]:
        payload = Payload(DataType.TEXT, text.encode())
        from_group = target is Target.GROUP
        return node.broker.publish(Publication(HUB, target, name, payload, from_group))

    def kept_by_a(count: int) -> Callable[[], bool]:
        session = connection.session
        assert session is not None
        return lambda: len(session.snapshot().unacked) >= count

    await send(c, Target.USER, "u", "m1")
    await eventually(kept_by_a(1))
    a.socket_closed(connection, outlet, 1006)
    listened = b.broker.sync
    give_up = a.hand_over

    async def listening() -> None:
        """b's first sync of the take: b listens, a is not asked yet."""
        await listened()
        b.broker.sync = listened  # type: ignore[method-assign]
        await send(c, Target.GROUP, group, "before")  # a has it, and b keeps it too
        await eventually(kept_by_a(2))

    async def interleaved(hub: HubName, connection_id: ConnectionId) -> bytes | None:
        snapshot = await give_up(hub, connection_id)  # a no longer serves it, nor listens for it
        # Now, before a's answer leaves: reaches neither unless b listens already.
        await send(c, Target.USER, "u", "during-user")
        await send(c, Target.GROUP, group, "during-group")
        await send(c, Target.HUB, "", "during-hub")
        await send(b, Target.GROUP, group, "from-b")
        await send(a, Target.USER, "u", "from-a")
        return snapshot

    b.broker.sync = listening  # type: ignore[method-assign]
    a.hand_over = interleaved  # type: ignore[method-assign]
    moved = await b.recover_session(HUB, "c1", reconnection_token(KEY, CID))
    assert moved is not None and b.holds(HUB, CID) and not a.holds(HUB, CID)
    new = Outlet()
    b.resume(moved, new)
    expected = ["m1", "before", "during-user", "during-group", "during-hub", "from-b", "from-a"]
    assert new.data() == list(enumerate(expected, 1))
    # b's own publication reaches b's member at once, before the others: each once.
    assert sorted(_texts(other)) == ["before", "during-group", "during-hub", "from-b"]
    await send(c, Target.GROUP, group, "after")
    await eventually(lambda: len(new.data()) == len(expected) + 1)
    assert new.data()[-1] == (len(expected) + 1, "after")
    await eventually(lambda: _texts(other)[-1:] == ["after"])
    assert b.cluster is not None and not b.cluster._watches
