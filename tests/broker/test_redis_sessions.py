"""Redis engine: replicated reliable sessions and their hand-over (real redis-server)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from hubbub.broker.redis import SessionTransfer
from hubbub.broker.redis_sessions import ReplicatedSession
from hubbub.core.commands import Target
from hubbub.protocol.codec import JSON_RELIABLE_SUBPROTOCOL
from hubbub.protocol.messages import DataMessage, DataType, Payload
from hubbub.protocol.registry import codec_for
from hubbub.types import ConnectionId, HubName
from tests._redis import RedisServer
from tests.broker._util import HUB, pub, settle, until
from tests.broker.conftest import StartNode
from tests.broker.test_redis_faults import start_process_node

pytestmark = pytest.mark.redis

S1 = ConnectionId("s1")


async def test_replica_keeps_the_unacked_frames_in_order(start_node: StartNode) -> None:
    """Frames pushed per delivery, trimmed per ack; a take reads and deletes the session."""
    a, b = await start_node("a"), await start_node("b")
    store = a.broker.sessions
    store.save(HUB, S1, b"meta-1")
    for seq in range(1, 11):
        store.push(HUB, S1, seq, b"frame %d" % seq)
    store.acked(HUB, S1, 6)
    store.save(HUB, S1, b"meta-2")  # rewritten when the connection's state changes
    await settle(a)
    taken = await b.broker.sessions.take(HUB, S1)
    assert taken == ReplicatedSession(
        b"meta-2", [(s, b"frame %d" % s) for s in range(7, 11)], last_sequence_id=10
    )
    assert await b.broker.sessions.take(HUB, S1) is None  # only one node can restore it


async def test_replica_writes_do_not_queue_on_the_publication_writer(
    start_node: StartNode,
) -> None:
    """Session writes have a writer (and a Redis connection) of their own: a publication
    queued after a burst of them goes out without waiting for them."""
    a = await start_node("a")
    main, replicas = a.broker._writer, a.broker._replica_writer
    before = main.last
    for seq in range(1, 501):
        a.broker.sessions.push(HUB, S1, seq, b"f" * 1000)
    assert main.last == before and replicas.queued_bytes >= 500 * 1000
    await settle(a)
    assert main.last == before


async def test_a_shared_message_is_written_once_for_its_members(start_node: StartNode) -> None:
    """One operation per message for the members sharing a fan-out; each member's frames are
    rebuilt with its own sequence ids, after and among the ones pushed one by one."""
    a, b = await start_node("a"), await start_node("b")
    store = a.broker.sessions
    codec = codec_for(JSON_RELIABLE_SUBPROTOCOL)
    datas = [codec.encode_data(DataMessage(Payload(DataType.TEXT, b"m%d" % i))) for i in (0, 1)]
    members = [("s1", 1), ("s2", 5)]
    store.save(HUB, S1, b"meta-1")
    store.save(HUB, ConnectionId("s2"), b"meta-2")
    for offset, data in enumerate(datas):
        store.push_shared(HUB, data, members, offset)
    store.push(HUB, S1, 3, b"alone")
    await settle(a)
    one = await b.broker.sessions.take(HUB, S1)
    two = await b.broker.sessions.take(HUB, ConnectionId("s2"))
    assert one is not None and two is not None
    assert one.frames == [(1, datas[0].sequenced(1)), (2, datas[1].sequenced(2)), (3, b"alone")]
    assert two.frames == [(5, datas[0].sequenced(5)), (6, datas[1].sequenced(6))]
    assert two.last_sequence_id == 6


async def test_replica_expiry_follows_detach_and_attach(
    start_node: StartNode, redis_server: RedisServer
) -> None:
    """A detached session's keys expire after the session timeout; reattached, they do not."""
    a = await start_node("a")
    store = a.broker.sessions
    store.save(HUB, S1, b"meta")
    store.push(HUB, S1, 1, b"f")
    store.detached(HUB, S1, 30_000)
    await settle(a)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        keys = [f"hubbub:session:{HUB}:s1", f"hubbub:frames:{HUB}:s1"]
        assert all(0 < t <= 30_000 for t in [await admin.pttl(k) for k in keys])
        store.attached(HUB, S1)
        await settle(a)
        assert [await admin.pttl(k) for k in keys] == [-1, -1]
        store.drop(HUB, S1)
        await settle(a)
        assert await admin.exists(*keys) == 0
    finally:
        await admin.aclose()


async def test_live_owner_hands_the_session_over(start_node: StartNode) -> None:
    """take_session asks the node holding the connection, which gives its snapshot up."""
    a, b, c = await start_node("a"), await start_node("b"), await start_node("c")
    conn = b.connect(HUB, "s1", user="ann", groups=["room"])
    b.sessions[(conn.hub, conn.id)] = b"b's snapshot of s1"
    await settle(b)
    transfer = await a.broker.take_session(HUB, S1)
    assert transfer == SessionTransfer(snapshot=b"b's snapshot of s1")
    assert not b.holds(HUB, S1)
    assert not await c.presence.connection_exists(HUB, S1)  # b let go before answering
    # Asked again: nobody holds it any more, and there is no replica.
    assert await a.broker.take_session(HUB, S1) == SessionTransfer()


async def test_owner_refusing_gives_nothing(start_node: StartNode) -> None:
    """A live owner without such a session answers None: no replica is used."""
    a, b = await start_node("a"), await start_node("b")
    b.connect(HUB, "s1")
    a.broker.sessions.save(HUB, S1, b"stale replica")
    await settle(a, b)
    assert await a.broker.take_session(HUB, S1) == SessionTransfer()
    assert b.holds(HUB, S1)


async def test_killed_owner_session_is_restored_from_the_replica(
    start_node: StartNode, redis_server: RedisServer
) -> None:
    """kill -9 of the owner: nobody answers on its channel, the replica is taken instead."""
    a = await start_node("a")
    proc = start_process_node(redis_server, "victim", 2)
    try:
        proc.kill()
        proc.wait()
        cid = ConnectionId("victim-0")
        assert await a.presence.owner(HUB, cid) == "victim"  # not reaped yet
        transfer = await a.broker.take_session(HUB, cid)
        assert transfer == SessionTransfer(
            replica=ReplicatedSession(b"snapshot-victim", [(2, b"frame2"), (3, b"frame3")], 3)
        )
    finally:
        proc.kill()
        proc.wait()


async def test_reaped_owner_session_stays_restorable(
    start_node: StartNode, redis_server: RedisServer
) -> None:
    """After the dead owner is reaped, its replicated sessions expire after the session
    timeout instead of at once, and can still be restored meanwhile."""
    a = await start_node("a", session_timeout_seconds=60)
    proc = start_process_node(redis_server, "victim", 1)
    proc.kill()
    proc.wait()
    await until(lambda: a.broker.stats.reaped >= 1, seconds=6)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        assert 0 < await admin.pttl(f"hubbub:session:{HUB}:victim-0") <= 60_000
    finally:
        await admin.aclose()
    transfer = await a.broker.take_session(HubName(HUB), ConnectionId("victim-0"))
    assert transfer.replica is not None and transfer.replica.snapshot == b"snapshot-victim"


async def test_no_replica_when_replication_is_off(
    start_node: StartNode, redis_server: RedisServer
) -> None:
    """With replicate_sessions off, a dead owner's session is not restored."""
    a = await start_node("a", replicate_sessions=False)
    proc = start_process_node(redis_server, "victim", 1)
    proc.kill()
    proc.wait()
    assert await a.broker.take_session(HUB, ConnectionId("victim-0")) == SessionTransfer()


async def test_slow_owner_keeps_its_session(start_node: StartNode) -> None:
    """An owner that does not answer in time is not bypassed through the replica: the
    result is empty, so there are never two live copies of one session."""
    a = await start_node("a", request_timeout_seconds=0.3)
    b = await start_node("b")
    b.connect(HUB, "s1")
    a.broker.sessions.save(HUB, S1, b"replica")
    await settle(a, b)
    answered = asyncio.Event()

    async def slow(hub: HubName, connection_id: ConnectionId) -> bytes | None:
        await asyncio.sleep(1.0)
        answered.set()
        return b"too late"

    b.hand_over = slow  # type: ignore[method-assign]
    assert await a.broker.take_session(HUB, S1) == SessionTransfer()
    await answered.wait()
    assert (await a.broker.sessions.take(HUB, S1)) is not None  # the replica was left alone


async def test_replica_knows_the_last_sequence_id_when_all_is_acked(
    start_node: StartNode,
) -> None:
    """Every frame acked: the take still tells the last sequence id (the next one follows)."""
    a, b = await start_node("a"), await start_node("b")
    store = a.broker.sessions
    store.save(HUB, S1, b"meta")
    for seq in range(1, 4):
        store.push(HUB, S1, seq, b"f")
    store.acked(HUB, S1, 3)
    await settle(a)
    assert await b.broker.sessions.take(HUB, S1) == ReplicatedSession(b"meta", [], 3)


async def test_a_failing_replica_link_does_not_take_the_engine_down(
    start_node: StartNode, redis_server: RedisServer
) -> None:
    """The replica connection cut (as when replication cannot keep up and a batch times out):
    the replica writes queued are dropped and counted, a new connection carries the next ones,
    and the engine stays ready (no outage: publications go on between the nodes)."""
    a, b = await start_node("a"), await start_node("b")
    b.connect(HUB, "b1", groups=["room"])
    store = a.broker.sessions
    store.save(HUB, S1, b"meta-1")
    await settle(a, b)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        (rep,) = [c["id"] for c in await admin.client_list() if c["name"] == "hubbub:a:rep"]
        assert await admin.client_kill_filter(_id=rep) == 1
        store.push(HUB, S1, 1, b"lost with the link")  # meets the cut connection
        await until(lambda: a.broker.stats.replica_drops >= 1)
        assert a.broker.ready and a.broker.stats.outages == 0
        store.save(HUB, S1, b"meta-2")
        store.push(HUB, S1, 2, b"frame 2")
        await settle(a, b)
        names = [c["name"] for c in await admin.client_list()]
        assert names.count("hubbub:a:rep") == 1
    finally:
        await admin.aclose()
    await a.broker.publish(pub(Target.GROUP, "room", b"still one cluster"))
    await until(lambda: b.payloads() == [b"still one cluster"])
    taken = await b.broker.sessions.take(HUB, S1)
    assert taken is not None and taken.snapshot == b"meta-2"
    assert (2, b"frame 2") in taken.frames
