"""Redis engine: interest-based fan-out and routing between nodes (real redis-server)."""

from __future__ import annotations

import asyncio
import time

import pytest

from hubbub.broker.channels import Interest
from hubbub.core.commands import Publication, Target
from hubbub.protocol.messages import DataType, Payload, StreamInfo
from hubbub.types import ConnectionId
from tests.broker._util import HUB, pub, settle, until
from tests.broker.conftest import StartNode

pytestmark = pytest.mark.redis


async def test_group_publication_reaches_only_interested_nodes_in_order(
    start_node: StartNode,
) -> None:
    """Publications to a group reach the nodes holding a member, once, in publish order."""
    a, b, c = await start_node("a"), await start_node("b"), await start_node("c")
    b.connect(HUB, "b1", groups=["room"])
    c.connect(HUB, "c1", groups=["other"])
    await settle(b, c)
    messages = [f"m{i}".encode() for i in range(300)]
    for i, data in enumerate(messages):
        if i % 2:
            a.broker.publish_nowait(pub(Target.GROUP, "room", data))
        else:
            await a.broker.publish(pub(Target.GROUP, "room", data))
    await until(lambda: len(b.received) == len(messages))
    await a.broker.publish(pub(Target.GROUP, "other", b"x"))  # a marker for c
    await until(lambda: c.received)
    assert b.payloads() == messages
    assert c.payloads() == [b"x"]
    # The publisher delivers to its own members directly and ignores the copy Redis echoes.
    assert a.payloads() == [*messages, b"x"]


async def test_own_members_get_a_publication_once(start_node: StartNode) -> None:
    """A node holding members of the group it publishes to delivers once (no echo)."""
    a, b = await start_node("a"), await start_node("b")
    a.connect(HUB, "a1", groups=["room"])
    b.connect(HUB, "b1", groups=["room"])
    await settle(a, b)
    await a.broker.publish(pub(Target.GROUP, "room", b"hello"))
    # A publisher delivers to its own members before Redis has the publication, so two nodes'
    # publications have no order between them: b publishes once it has a's.
    await until(lambda: len(b.received) == 1)
    await b.broker.publish(pub(Target.GROUP, "room", b"world"))
    await until(lambda: len(a.received) == 2 and len(b.received) == 2)
    # Redis hands each subscriber the publications in one order: an echo of "hello" would have
    # reached a before "world" did, and one of "world" would reach b before "end".
    await a.broker.publish(pub(Target.GROUP, "room", b"end"))
    await until(lambda: len(b.received) >= 3)
    assert a.payloads() == [b"hello", b"world", b"end"]
    assert b.payloads() == [b"hello", b"world", b"end"]


async def test_unsubscribed_node_receives_nothing(start_node: StartNode) -> None:
    """After the last local member leaves (and sync), the node gets no more of the group."""
    a, b = await start_node("a"), await start_node("b")
    conn = b.connect(HUB, "b1", groups=["room"])
    await settle(b)
    await a.broker.publish(pub(Target.GROUP, "room", b"before"))
    await until(lambda: b.received)
    b.leave(conn, "room")
    await settle(b)
    await a.broker.publish(pub(Target.GROUP, "room", b"after"))
    await a.broker.publish(pub(Target.USER, "nobody", b"marker"))
    await a.broker.publish(pub(Target.HUB, "", b"hub marker"))
    await until(lambda: len(b.received) == 2)
    assert b.payloads() == [b"before", b"hub marker"]


async def test_send_to_connection_goes_to_the_owner_only(start_node: StartNode) -> None:
    """A connection-targeted publication reaches the node holding the connection."""
    a, b, c = await start_node("a"), await start_node("b"), await start_node("c")
    b.connect(HUB, "b1")
    c.connect(HUB, "c1")
    a.connect(HUB, "a1")
    await settle(a, b, c)
    for i in range(50):
        a.broker.publish_nowait(pub(Target.CONNECTION, "b1", b"%d" % i))
    await a.broker.publish(pub(Target.CONNECTION, "a1", b"local"))
    await a.broker.publish(pub(Target.CONNECTION, "unknown", b"lost"))
    await c.broker.publish(pub(Target.CONNECTION, "b1", b"from c"))
    await until(lambda: len(b.received) == 51)
    assert b.payloads() == [b"%d" % i for i in range(50)] + [b"from c"]
    assert a.payloads() == [b"local"]
    assert c.received == []


async def test_send_to_user_and_hub(start_node: StartNode) -> None:
    """User sends reach every node holding the user; hub sends every node of the hub."""
    a, b, c = await start_node("a"), await start_node("b"), await start_node("c")
    a.connect(HUB, "a1", user="ann")
    b.connect(HUB, "b1", user="ann")
    c.connect(HUB, "c1", user="bob")
    c.connect("elsewhere", "c2", user="ann")
    await settle(a, b, c)
    await c.broker.publish(pub(Target.USER, "ann", b"to ann"))
    await c.broker.publish(pub(Target.HUB, "", b"to all"))
    await until(lambda: len(a.received) == 2 and len(b.received) == 2)
    assert a.payloads() == b.payloads() == [b"to ann", b"to all"]
    assert c.payloads() == [b"to ann", b"to all"]  # delivered locally (no member matched)


async def test_publication_order_is_kept_across_targets(start_node: StartNode) -> None:
    """One publisher's sends to a connection, its group and its user arrive in order."""
    a, b = await start_node("a"), await start_node("b")
    b.connect(HUB, "b1", user="ann", groups=["room"])
    await settle(b)
    sent = []
    for i in range(200):
        target, name = [(Target.CONNECTION, "b1"), (Target.GROUP, "room"), (Target.USER, "ann")][
            i % 3
        ]
        data = b"%d" % i
        sent.append(data)
        a.broker.publish_nowait(pub(target, name, data))
    await until(lambda: len(b.received) == len(sent))
    assert b.payloads() == sent


async def test_publication_fields_cross_unchanged(start_node: StartNode) -> None:
    """Every field of a publication arrives as it was sent."""
    a, b = await start_node("a"), await start_node("b")
    b.connect(HUB, "b1", groups=["room"])
    await settle(b)
    sent = Publication(
        HUB,
        Target.GROUP,
        "room",
        Payload(DataType.BINARY, bytes(range(256)) * 100, (("trace", "t1"),)),
        from_group=True,
        from_user_id=None,
        excluded=frozenset({ConnectionId("x"), ConnectionId("y")}),
        filter="userId eq 'ann'",
        ttl_seconds=30,
        stream=StreamInfo("s", 4, True, "UserError", "gave up", "E42"),
        expires_at=time.time() + 30,
    )
    await a.broker.publish(sent)
    await until(lambda: b.received)
    assert b.received == [sent]


async def test_plain_pub_sub_when_sharded_is_off(start_node: StartNode) -> None:
    """With ``sharded=False`` (a Redis 6 server) the nodes use PUBLISH/SUBSCRIBE."""
    a = await start_node("a", sharded=False)
    b = await start_node("b", sharded=False)
    assert "plain pub/sub" in a.broker.server
    b.connect(HUB, "b1", groups=["room"])
    await settle(b)
    await a.broker.publish(pub(Target.GROUP, "room", b"hi"))
    await a.broker.publish(pub(Target.CONNECTION, "b1", b"direct"))
    await until(lambda: len(b.received) == 2)
    assert b.payloads() == [b"hi", b"direct"]


async def test_subscribe_then_unsubscribe_in_one_pass(start_node: StartNode) -> None:
    """Interest changes within one pass coalesce; sync waits for the net effect."""
    a, b = await start_node("a"), await start_node("b")
    interest = Interest(HUB, Target.GROUP, "flicker")
    for _ in range(10):
        b.broker.subscribe(interest)
        b.broker.unsubscribe(interest)
    b.broker.subscribe(interest)
    await b.broker.sync()
    await a.broker.publish(pub(Target.GROUP, "flicker", b"on"))
    await until(lambda: b.received)
    b.broker.unsubscribe(interest)
    await b.broker.sync()
    await a.broker.publish(pub(Target.GROUP, "flicker", b"off"))
    await a.broker.publish(pub(Target.HUB, "", b"marker"))  # not subscribed either
    await asyncio.sleep(0.2)
    assert b.payloads() == [b"on"]


async def test_large_publications_cross_in_order(start_node: StartNode) -> None:
    """Publications near the 1 MB message limit, queued back to back, arrive whole and in
    order (batches are bounded in bytes, not only in count)."""
    a, b = await start_node("a"), await start_node("b")
    b.connect(HUB, "b1", groups=["room"])
    await settle(b)
    sent = [bytes([i]) * (1 << 20) for i in range(12)]
    for data in sent:
        a.broker.publish_nowait(pub(Target.GROUP, "room", data))
    await a.broker.publish(pub(Target.GROUP, "room", b"last"))
    await until(lambda: len(b.received) == len(sent) + 1, seconds=10)
    assert b.payloads() == [*sent, b"last"]
