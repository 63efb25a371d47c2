"""The engine contract (``hubbub.broker.base``), run over every engine.

Each engine factory builds the nodes of one cluster over that engine: one node for the memory
engine, several for engines that span processes. The tests go through nodes (connections with
in-memory outlets), so they hold for an engine whose presence is the hub state itself, and they
watch what each node's :class:`BrokerHandler` side receives, so an engine that hands every node
everything fails them. To run the suite over another engine, add its factory to
:data:`FACTORIES`.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from hubbub.broker.base import Broker, BrokerHandler, Interest, Member, Presence
from hubbub.broker.memory import MemoryBroker, MemoryPresence
from hubbub.config import Config
from hubbub.core.commands import (
    AddUserToGroup,
    CheckPermission,
    CloseConnections,
    Publication,
    RemoveFromGroup,
    Target,
)
from hubbub.core.outlet import SequencedFrames, SharedFrames
from hubbub.core.roles import Permission
from hubbub.core.state import Connection, HubRegistry
from hubbub.node import Node
from hubbub.protocol.codec import JSON_SUBPROTOCOL
from hubbub.protocol.messages import DataType, Payload
from hubbub.protocol.registry import codec_for
from hubbub.types import ConnectionId, GroupName, HubName, UserId
from tests.broker._redis_factory import RedisEngineFactory, redis_engines

__all__ = ["redis_engines"]  # the Redis engine's fixture, used by its factory

HUB = HubName("contract")
MARKER_HUB = HubName("marker")
KEY = "k" * 40
G = GroupName("g")
WAIT_SECONDS = 5.0


class RecordingNode(Node):
    """A node that remembers every publication its engine handed it."""

    def __init__(self, broker: Broker, presence: Presence, hubs: HubRegistry) -> None:
        super().__init__(Config(access_keys=(KEY,)), broker, hubs=hubs, presence=presence)
        self.received: list[Publication] = []

    def handle_publication(self, publication: Publication) -> None:
        self.received.append(publication)
        super().handle_publication(publication)


MakeNode = Callable[[Broker, Presence, HubRegistry], RecordingNode]
EngineFactory = Callable[
    [pytest.FixtureRequest, MakeNode], AbstractAsyncContextManager[list[RecordingNode]]
]
"""``factory(request, make_node)``: the started nodes of one cluster (``request`` gives the
factory the fixtures it needs, such as a redis-server)."""


@asynccontextmanager
async def memory_engine(
    request: pytest.FixtureRequest, make_node: MakeNode
) -> AsyncIterator[list[RecordingNode]]:
    """One node: the memory engine holds no other."""
    hubs = HubRegistry()
    broker = MemoryBroker()
    node = make_node(broker, MemoryPresence(hubs), hubs)
    await broker.start(node)
    try:
        yield [node]
    finally:
        await broker.close()


@asynccontextmanager
async def redis_engine(
    request: pytest.FixtureRequest, make_node: MakeNode
) -> AsyncIterator[list[RecordingNode]]:
    """Three nodes sharing one fresh redis-server (their engines closed by the fixture)."""
    engines: RedisEngineFactory = request.getfixturevalue("redis_engines")
    nodes = []
    for node_id in ("a", "b", "c"):
        broker, presence = engines(node_id)
        node = make_node(broker, presence, HubRegistry())
        await broker.start(node)
        nodes.append(node)
    yield nodes


FACTORIES: dict[str, EngineFactory] = {"memory": memory_engine, "redis": redis_engine}
ENGINES = [
    pytest.param("memory"),
    pytest.param("redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> EngineFactory:
    """The factory of one engine; a redis-server for the Redis engine is started here."""
    factory = FACTORIES[request.param]
    if factory is redis_engine:
        request.getfixturevalue("redis_engines")
    return factory


@pytest.fixture
async def nodes(
    engine: EngineFactory, request: pytest.FixtureRequest
) -> AsyncIterator[list[RecordingNode]]:
    async with engine(request, RecordingNode) as cluster:
        yield cluster


class ListOutlet:
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

    def data(self) -> list[bytes]:
        """The payloads of the data messages received (text data only)."""
        texts = [f[2:] if f[1] < 126 else f[4:] for f in self.frames]
        return [t.split(b'"data":"')[1].split(b'"')[0] for t in texts if b'"data":"' in t]


def connect(
    node: Node,
    connection_id: str | None = None,
    user: str | None = None,
    groups: tuple[str, ...] = (),
    roles: tuple[str, ...] = (),
    hub: HubName = HUB,
) -> tuple[Connection, ListOutlet]:
    outlet = ListOutlet()
    connection = node.connect(
        hub,
        UserId(user) if user else None,
        roles,
        [GroupName(g) for g in groups],
        codec_for(JSON_SUBPROTOCOL),
        outlet,
        connection_id=ConnectionId(connection_id) if connection_id else None,
    )
    outlet.frames.clear()
    return connection, outlet


def text(target: Target, name: str, data: str) -> Publication:
    payload = Payload(DataType.TEXT, data.encode())
    return Publication(HUB, target, name, payload, from_group=target is Target.GROUP)


async def eventually(check: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not within the wait"
        await asyncio.sleep(0.01)


async def sync_all(nodes: list[RecordingNode]) -> None:
    for node in nodes:
        await node.broker.sync()


async def flushed(nodes: list[RecordingNode]) -> None:
    """Publish a marker from the last node to a connection (of a hub of its own) on every
    node and wait for them all: what the last node published before has reached every node
    by then (publish order)."""
    outlets = []
    for node in nodes:
        connection, outlet = connect(node, hub=MARKER_HUB)
        await node.broker.sync()
        await nodes[-1].broker.publish(
            Publication(MARKER_HUB, Target.CONNECTION, connection.id, Payload(DataType.TEXT, b"m"))
        )
        outlets.append(outlet)
    await eventually(lambda: all(outlet.data() == [b"m"] for outlet in outlets))


def bystanders(nodes: list[RecordingNode]) -> list[RecordingNode]:
    """Every node but the publisher (``nodes[-1]``), which may be handed what it publishes:
    an engine may deliver a node's own publications to it at once (none on one node)."""
    return nodes[:-1]


def received(node: RecordingNode, target: Target, name: str) -> list[Publication]:
    return [p for p in node.received if p.target is target and p.name == name]


# -- interface ---------------------------------------------------------------------------------


def _members(protocol: type) -> Iterator[str]:
    for name, value in vars(protocol).items():
        if not name.startswith("_") and callable(value):
            yield name


def assert_fits(implementation: object, protocol: type) -> None:
    """``implementation`` has every member of ``protocol``, with the same signature (names,
    kinds, defaults, resolved annotations) and the same async-ness; attributes exist with
    their declared type."""
    for name, hint in typing.get_type_hints(protocol).items():
        assert hasattr(implementation, name), f"missing attribute {name}"
        assert isinstance(getattr(implementation, name), hint), f"{name} is not a {hint}"
    for name in _members(protocol):
        wanted = getattr(protocol, name)
        found = getattr(implementation, name, None)
        assert callable(found), f"missing method {name}"
        assert inspect.iscoroutinefunction(found) == inspect.iscoroutinefunction(wanted), (
            f"{name}: async-ness differs"
        )
        wanted_sig = inspect.signature(wanted)
        found_sig = inspect.signature(inspect.getattr_static(type(implementation), name))
        assert [(p.name, p.kind, p.default) for p in wanted_sig.parameters.values()] == [
            (p.name, p.kind, p.default) for p in found_sig.parameters.values()
        ], f"{name}: parameters differ: {found_sig} is not {wanted_sig}"
        assert typing.get_type_hints(found) == typing.get_type_hints(wanted), (
            f"{name}: annotations differ: {found_sig} is not {wanted_sig}"
        )


def test_engine_implementations_fit_the_interfaces(nodes: list[RecordingNode]) -> None:
    """Each engine's broker and presence fit Broker and Presence; the node fits BrokerHandler."""
    for node in nodes:
        assert_fits(node.broker, Broker)
        assert_fits(node.presence, Presence)
        assert_fits(node, BrokerHandler)


def test_the_fit_check_refuses_a_misfit() -> None:
    """A wrong parameter name, a sync method for an async one, a missing method: each refused."""

    class WrongName(MemoryBroker):
        def subscribe(self, what: Interest) -> None:
            pass

    class NotAsync(MemoryBroker):
        def sync(self) -> None:  # type: ignore[override]
            pass

    class WrongType(MemoryBroker):
        def unsubscribe(self, interest: str) -> None:  # type: ignore[override]
            pass

    class Missing:
        node_id = "x"

    for misfit in (WrongName(), NotAsync(), WrongType(), Missing()):
        with pytest.raises(AssertionError):
            assert_fits(misfit, Broker)


# -- fan-out by interest -----------------------------------------------------------------------


async def test_a_subscribed_group_receives_publications_in_order(
    nodes: list[RecordingNode],
) -> None:
    """Publications from one publisher reach an interested node in publish order."""
    _, outlet = connect(nodes[0], groups=("g",))
    await sync_all(nodes)
    publisher = nodes[-1].broker
    for i in range(20):
        if i % 2:
            publisher.publish_nowait(text(Target.GROUP, G, f"m{i}"))
        else:
            await publisher.publish(text(Target.GROUP, G, f"m{i}"))
    await eventually(lambda: len(outlet.data()) == 20)
    assert outlet.data() == [f"m{i}".encode() for i in range(20)]


async def test_an_unsubscribed_group_receives_nothing(nodes: list[RecordingNode]) -> None:
    """After the last member left (and a sync), no other node is handed the group's
    publications."""
    connection, outlet = connect(nodes[0], groups=("g",))
    assert nodes[0].leave(connection, G)
    await sync_all(nodes)
    await nodes[-1].broker.publish(text(Target.GROUP, G, "late"))
    await flushed(nodes)
    assert outlet.data() == []
    assert all(not received(node, Target.GROUP, G) for node in bystanders(nodes))


async def test_a_publication_for_nobody_reaches_no_node(nodes: list[RecordingNode]) -> None:
    """A group, a user and a hub nobody holds: no other node's handler is called for them."""
    connect(nodes[0])
    await sync_all(nodes)
    publisher = nodes[-1].broker
    await publisher.publish(text(Target.GROUP, "nobody", "x"))
    await publisher.publish(text(Target.USER, "nobody", "x"))
    other = Publication(HubName("other"), Target.HUB, "", Payload(DataType.TEXT, b"x"))
    await publisher.publish(other)
    await flushed(nodes)
    for node in bystanders(nodes):
        assert not received(node, Target.GROUP, "nobody")
        assert not received(node, Target.USER, "nobody")
        assert not [p for p in node.received if p.hub == "other"]


async def test_hub_and_user_interest_follow_the_connections(nodes: list[RecordingNode]) -> None:
    """A user's and a hub's publications reach a node while it holds one of their
    connections, and no longer once the last one closed."""
    first, outlet = connect(nodes[0], user="u")
    second, _ = connect(nodes[0], user="u")
    await sync_all(nodes)
    await nodes[-1].broker.publish(text(Target.USER, "u", "to-user"))
    await nodes[-1].broker.publish(text(Target.HUB, "", "to-hub"))
    await eventually(lambda: outlet.data() == [b"to-user", b"to-hub"])
    nodes[0].disconnect(first)
    nodes[0].disconnect(second)
    await sync_all(nodes)
    await nodes[-1].broker.publish(text(Target.USER, "u", "gone"))
    await nodes[-1].broker.publish(text(Target.HUB, "", "gone"))
    await flushed(nodes)
    assert outlet.data() == [b"to-user", b"to-hub"]
    for node in bystanders(nodes):
        assert [p for p in node.received if p.payload.data == b"gone"] == []


async def test_a_connection_publication_reaches_only_its_node(nodes: list[RecordingNode]) -> None:
    """Connection-targeted publications are routed to the node that holds the connection."""
    connection, outlet = connect(nodes[0])
    await sync_all(nodes)
    await nodes[-1].broker.publish(text(Target.CONNECTION, connection.id, "direct"))
    await eventually(lambda: outlet.data() == [b"direct"])
    for node in nodes[1:]:
        assert not received(node, Target.CONNECTION, connection.id)


# -- commands and queries ----------------------------------------------------------------------


async def test_a_command_is_applied_everywhere_and_its_counts_summed(
    nodes: list[RecordingNode],
) -> None:
    """One connection of the user per node: the count is the sum, applied when it returns."""
    connections = [connect(node, user="u")[0] for node in nodes]
    await sync_all(nodes)
    count = await nodes[-1].broker.command(AddUserToGroup(HUB, UserId("u"), G))
    assert count == len(nodes)
    assert all(c.groups == {G} for c in connections)
    for node in nodes:
        assert await node.presence.group_exists(HUB, G)
    assert await nodes[-1].broker.command(AddUserToGroup(HUB, UserId("nobody"), G)) == 0


async def test_a_command_changes_interest_before_it_returns(nodes: list[RecordingNode]) -> None:
    """After a REST remove returns, the node is no longer handed the group's publications."""
    connection, outlet = connect(nodes[0], groups=("g",))
    await sync_all(nodes)
    assert await nodes[-1].broker.command(RemoveFromGroup(HUB, connection.id, G)) == 1
    await nodes[-1].broker.publish(text(Target.GROUP, G, "late"))
    await flushed(nodes)
    assert outlet.data() == []
    assert all(not received(node, Target.GROUP, G) for node in bystanders(nodes))


async def test_a_close_command_unregisters_everywhere(nodes: list[RecordingNode]) -> None:
    connections = [connect(node, user="u", groups=("g",))[0] for node in nodes]
    await sync_all(nodes)
    close = CloseConnections(HUB, Target.USER, "u", "bye")
    assert await nodes[-1].broker.command(close) == len(nodes)
    for node in nodes:
        assert not await node.presence.user_exists(HUB, UserId("u"))
        assert not await node.presence.group_exists(HUB, G)
    assert all(c.close_reason == "bye" for c in connections)


async def test_a_query_is_answered_by_the_node_holding_the_connection(
    nodes: list[RecordingNode],
) -> None:
    allowed, _ = connect(nodes[0], roles=("webpubsub.sendToGroup.g",))
    await sync_all(nodes)
    broker = nodes[-1].broker
    assert await broker.query(CheckPermission(HUB, allowed.id, Permission.SEND_TO_GROUP, "g"))
    assert not await broker.query(CheckPermission(HUB, allowed.id, Permission.SEND_TO_GROUP, "h"))
    missing = CheckPermission(HUB, ConnectionId("nobody"), Permission.SEND_TO_GROUP, None)
    assert not await broker.query(missing)


# -- presence ----------------------------------------------------------------------------------


async def test_presence_reads_see_synced_writes(nodes: list[RecordingNode]) -> None:
    """Every node's presence sees a connection, its user and group after a sync, and not
    after it closed."""
    connection, _ = connect(nodes[0], user="u", groups=("g",))
    await sync_all(nodes)
    for node in nodes:
        presence = node.presence
        assert await presence.connection_exists(HUB, connection.id)
        assert await presence.user_exists(HUB, UserId("u"))
        assert await presence.group_exists(HUB, G)
        assert not await presence.connection_exists(HUB, ConnectionId("nobody"))
        assert not await presence.group_exists(HUB, GroupName("nobody"))
    nodes[0].disconnect(connection)
    await sync_all(nodes)
    for node in nodes:
        assert not await node.presence.connection_exists(HUB, connection.id)
        assert not await node.presence.user_exists(HUB, UserId("u"))
        assert not await node.presence.group_exists(HUB, G)


async def test_group_members_page_in_connection_id_order(nodes: list[RecordingNode]) -> None:
    """Pages hold ``limit`` members ordered by id, strictly after ``after``."""
    ids = ["c5", "c1", "c4", "c2", "c3"]
    for i, connection_id in enumerate(ids):
        connect(nodes[i % len(nodes)], connection_id, user=f"u{connection_id[-1]}", groups=("g",))
    connect(nodes[0], "c0")  # not a member
    await sync_all(nodes)
    presence = nodes[-1].presence
    first = await presence.group_members(HUB, G, None, 2)
    assert first == [
        Member(ConnectionId("c1"), UserId("u1")),
        Member(ConnectionId("c2"), UserId("u2")),
    ]
    rest = await presence.group_members(HUB, G, first[-1].connection_id, 10)
    assert [m.connection_id for m in rest] == ["c3", "c4", "c5"]
    assert [
        m.connection_id for m in await presence.group_members(HUB, G, ConnectionId("c2x"), 1)
    ] == ["c3"]
    assert await presence.group_members(HUB, G, ConnectionId("c5"), 10) == []
    assert await presence.group_members(HUB, GroupName("nobody"), None, 10) == []


async def test_listings(nodes: list[RecordingNode]) -> None:
    """Hubs, a hub's connections (paged), a user's connections and a connection's groups."""
    a, _ = connect(nodes[0], "a", user="u", groups=("g2", "g1"))
    connect(nodes[-1], "b", user="u")
    connect(nodes[0], "c")
    await sync_all(nodes)
    presence = nodes[-1].presence
    assert HUB in await presence.hubs()
    assert [m.connection_id for m in await presence.hub_connections(HUB, None, 2)] == ["a", "b"]
    assert [m.connection_id for m in await presence.hub_connections(HUB, ConnectionId("b"), 2)] == [
        "c"
    ]
    assert [m.connection_id for m in await presence.user_connections(HUB, UserId("u"))] == [
        "a",
        "b",
    ]
    assert await presence.user_connections(HUB, UserId("nobody")) == []
    assert await presence.connection_groups(HUB, a.id) == ["g1", "g2"]
    assert await presence.connection_groups(HUB, ConnectionId("nobody")) == []
    for node in nodes:
        hub = node.hubs.get(HUB)
        for connection in list(hub.connections.values()) if hub else ():
            node.disconnect(connection)
    await sync_all(nodes)
    assert HUB not in await presence.hubs()
