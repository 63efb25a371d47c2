"""Redis engine: node death, Redis restarts, pauses and cut connections (real redis-server)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time

import pytest
import redis.asyncio as aioredis

from hubbub.broker.redis import EngineState
from hubbub.core.commands import (
    AddToGroup,
    AddUserToGroup,
    CheckPermission,
    GrantPermission,
    Target,
)
from hubbub.core.roles import Permission
from hubbub.errors import ClusterUnavailableError
from hubbub.types import ConnectionId, GroupName, UserId
from tests._redis import RedisServer
from tests.broker._util import HUB, pub, settle, until
from tests.broker.conftest import StartNode

pytestmark = pytest.mark.redis

ROOM = GroupName("room")


def start_process_node(server: RedisServer, node_id: str, count: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tests.broker._node_process", server.url, node_id, HUB, str(count)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()  # the node prints nothing after "ready"
    if line.strip() != b"ready":
        proc.kill()
        raise RuntimeError(f"node process did not start: {line!r}")
    return proc


async def test_killed_node_leaves_the_registry_within_the_bound(
    start_node: StartNode, redis_server: RedisServer
) -> None:
    """kill -9 of a node: its connections, users and group entries vanish after the TTL."""
    a = await start_node("a")
    a.connect(HUB, "a-0", groups=["room"])
    await settle(a)
    proc = start_process_node(redis_server, "victim", 50)
    try:
        p = a.presence
        assert await p.connection_exists(HUB, ConnectionId("victim-7"))
        assert len(await p.group_members(HUB, ROOM, None, 100)) == 51
        proc.kill()
        proc.wait()
        killed = time.monotonic()
        # TTL 1 s + a heartbeat of 0.2 s: allow a loaded machine five times that.
        await until(lambda: a.broker.stats.reaped >= 1, seconds=6.0)
        elapsed = time.monotonic() - killed
        assert elapsed >= 0.5  # not before the node's time ran out
        assert not await p.connection_exists(HUB, ConnectionId("victim-7"))
        assert not await p.user_exists(HUB, UserId("u3"))
        assert [m.connection_id for m in await p.group_members(HUB, ROOM, None, 100)] == ["a-0"]
        assert await p.connection_groups(HUB, ConnectionId("victim-0")) == []
        # The survivor's own registration is untouched.
        assert await p.connection_exists(HUB, ConnectionId("a-0"))
    finally:
        proc.kill()
        proc.wait()


async def test_graceful_close_deregisters_at_once(start_node: StartNode) -> None:
    """A node that closes leaves the registry immediately, not after the TTL."""
    a, b = await start_node("a"), await start_node("b")
    b.connect(HUB, "b1", user="ann", groups=["room"])
    await settle(b)
    assert await a.presence.connection_exists(HUB, ConnectionId("b1"))
    await b.broker.close()
    assert b.broker.state is EngineState.CLOSED
    assert not await a.presence.connection_exists(HUB, ConnectionId("b1"))
    assert not await a.presence.group_exists(HUB, ROOM)
    assert await a.presence.hubs() == []


async def test_redis_restart_resubscribes_and_reregisters(
    start_node: StartNode, redis_server: RedisServer
) -> None:
    """After a Redis restart (every key and subscription gone) both nodes come back by
    themselves: interests renewed, connections and groups registered again."""
    a, b = await start_node("a"), await start_node("b")
    states: list[EngineState] = []
    a.broker.on_state_change(states.append)
    b.connect(HUB, "b1", user="ann", groups=["room"])
    a.connect(HUB, "a1", user="ann")
    await settle(a, b)
    redis_server.restart()
    await until(lambda: EngineState.DEGRADED in states and a.broker.ready and b.broker.ready)
    await settle(a, b)
    assert await a.presence.connection_exists(HUB, ConnectionId("b1"))
    assert [m.connection_id for m in await a.presence.group_members(HUB, ROOM, None, 9)] == ["b1"]
    await a.broker.publish(pub(Target.GROUP, "room", b"after restart"))
    await until(lambda: b.received)
    assert b.payloads() == [b"after restart"]
    assert await b.broker.command(AddUserToGroup(HUB, UserId("ann"), GroupName("g"))) == 2
    assert states[0] is EngineState.DEGRADED and states[-1] is EngineState.READY
    assert a.broker.stats.outages == 1


async def test_redis_stopped_local_delivery_goes_on(
    start_node: StartNode, redis_server: RedisServer
) -> None:
    """With Redis down: local delivery works, cluster operations raise a 503 error, nothing
    crashes; when Redis is back so is the cluster."""
    a, b = await start_node("a"), await start_node("b")
    a.connect(HUB, "a1", groups=["room"])
    b.connect(HUB, "b1", groups=["room"])
    await settle(a, b)
    redis_server.stop()
    await until(lambda: not a.broker.ready and not b.broker.ready)
    a.broker.publish_nowait(pub(Target.GROUP, "room", b"local only"))
    with pytest.raises(ClusterUnavailableError):
        await a.broker.publish(pub(Target.GROUP, "room", b"local too"))
    assert a.payloads() == [b"local only", b"local too"]
    await a.broker.sync()  # returns at once
    with pytest.raises(ClusterUnavailableError) as caught:
        await a.broker.command(AddUserToGroup(HUB, UserId("x"), ROOM))
    assert caught.value.status == 503
    with pytest.raises(ClusterUnavailableError):
        await a.broker.query(
            CheckPermission(HUB, ConnectionId("b1"), Permission.SEND_TO_GROUP, None)
        )
    with pytest.raises(ClusterUnavailableError):
        await a.presence.group_members(HUB, ROOM, None, 10)
    with pytest.raises(ClusterUnavailableError):
        await a.presence.connection_exists(HUB, ConnectionId("b1"))
    # What this node holds it answers by itself.
    a1 = ConnectionId("a1")
    assert await a.presence.connection_exists(HUB, a1)
    assert await a.broker.command(AddToGroup(HUB, a1, GroupName("solo"))) == 1
    assert await a.broker.command(GrantPermission(HUB, a1, Permission.SEND_TO_GROUP, None)) == 1
    assert await a.broker.query(CheckPermission(HUB, a1, Permission.SEND_TO_GROUP, None))
    assert a.broker.stats.dropped == 2
    await asyncio.sleep(0.5)  # a few failed reconnection attempts
    redis_server.start()
    await until(lambda: a.broker.ready and b.broker.ready)
    await settle(a, b)
    await a.broker.publish(pub(Target.GROUP, "room", b"back"))
    await until(lambda: b.payloads() == [b"back"])
    assert len(await b.presence.group_members(HUB, ROOM, None, 10)) == 2
    # The join made during the outage was registered with the rest.
    assert await b.presence.connection_groups(HUB, a1) == [ROOM, GroupName("solo")]


async def test_redis_paused_is_detected_and_survived(
    start_node: StartNode, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A frozen Redis (SIGSTOP: connections open, no answers) is taken as lost after the
    timeout, the log naming the link that noticed; after SIGCONT the nodes reconnect and the
    cluster works again."""
    a, b = await start_node("a"), await start_node("b")
    b.connect(HUB, "b1", groups=["room"])
    a.connect(HUB, "a1", groups=["room"])
    await settle(a, b)
    redis_server.pause()
    try:
        a.broker.publish_nowait(pub(Target.GROUP, "room", b"during pause"))
        assert a.payloads() == [b"during pause"]
        await until(lambda: not a.broker.ready and not b.broker.ready, seconds=5)
        losses = [r.getMessage() for r in caplog.records if "local delivery only" in r.getMessage()]
        assert len(losses) == 2, losses
        assert all(
            re.search(r"; in the (writer|replica writer|subscriber|heartbeat)\)", m) for m in losses
        ), losses
        with pytest.raises(ClusterUnavailableError):
            await a.presence.connection_exists(HUB, ConnectionId("b1"))
    finally:
        redis_server.resume()
    await until(lambda: a.broker.ready and b.broker.ready, seconds=10)
    await settle(a, b)
    b.received.clear()
    await a.broker.publish(pub(Target.GROUP, "room", b"after pause"))
    await until(lambda: b.payloads() == [b"after pause"])
    assert await a.presence.connection_exists(HUB, ConnectionId("b1"))


async def test_cut_subscriber_connection_is_renewed(
    start_node: StartNode, redis_server: RedisServer
) -> None:
    """When Redis drops a node's subscriber connection, the node reconnects and resubscribes."""
    a, b = await start_node("a"), await start_node("b")
    b.connect(HUB, "b1", groups=["room"])
    await settle(b)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        killed = await admin.execute_command("CLIENT", "KILL", "SKIPME", "yes", "USER", "default")  # type: ignore[no-untyped-call]
        assert killed >= 4
    finally:
        await admin.aclose()
    await until(
        lambda: (
            a.broker.stats.outages and b.broker.stats.outages and a.broker.ready and b.broker.ready
        )
    )
    await settle(a, b)
    await a.broker.publish(pub(Target.GROUP, "room", b"renewed"))
    await until(lambda: b.payloads() == [b"renewed"])


async def test_node_declared_dead_registers_again(
    start_node: StartNode, redis_server: RedisServer
) -> None:
    """A node whose registration expired while it lived (a long stall) notices at its next
    heartbeat and registers everything it holds again."""
    a, b = await start_node("a"), await start_node("b")
    b.connect(HUB, "b1", groups=["room"])
    await settle(b)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        nodes = await admin.zrange("hubbub:nodes", 0, -1)
        [member] = [m for m in nodes if isinstance(m, bytes) and m.startswith(b"b/")]
        await admin.zadd("hubbub:nodes", {member: 0})  # its time is up: a reaps it
        await until(lambda: a.broker.stats.reaped >= 1)
        await until(lambda: b.broker.stats.reregistered >= 1)
        await settle(b)
        assert await a.presence.connection_exists(HUB, ConnectionId("b1"))
        assert await a.presence.group_exists(HUB, ROOM)
        members = await admin.zrange("hubbub:nodes", 0, -1)
        assert member not in members
        assert any(isinstance(m, bytes) and m.startswith(b"b/") for m in members)
    finally:
        await admin.aclose()


async def test_connection_taken_over_during_an_outage_is_disowned(
    start_node: StartNode, redis_server: RedisServer
) -> None:
    """Re-registration does not take back a connection another node holds now: the node
    is told to drop it."""
    a, b = await start_node("a"), await start_node("b")
    b.connect(HUB, "b1", groups=["room"])
    b.connect(HUB, "b2")
    await settle(b)
    a.presence.add_connection(HUB, ConnectionId("b1"), None)  # as a resumed session does
    await settle(a)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        nodes = await admin.zrange("hubbub:nodes", 0, -1)
        [member] = [m for m in nodes if isinstance(m, bytes) and m.startswith(b"b/")]
        await admin.zadd("hubbub:nodes", {member: 0})
    finally:
        await admin.aclose()
    await until(lambda: b.disowned_ids == ["b1"])
    await settle(b)
    assert await a.presence.owner(HUB, ConnectionId("b1")) == "a"
    assert await a.presence.owner(HUB, ConnectionId("b2")) == "b"


async def test_node_started_before_redis_connects_when_it_comes(
    start_node: StartNode, redis_server: RedisServer
) -> None:
    """A node started while Redis is down starts degraded (local delivery works) and joins
    the cluster by itself once Redis is up."""
    redis_server.stop()
    a = await start_node("a", start_timeout_seconds=0.3)
    assert not a.broker.ready
    a.connect(HUB, "a1", groups=["room"])
    a.broker.publish_nowait(pub(Target.GROUP, "room", b"alone"))
    assert a.payloads() == [b"alone"]
    redis_server.start()
    await until(lambda: a.broker.ready)
    b = await start_node("b")
    assert await b.presence.connection_exists(HUB, ConnectionId("a1"))
    await b.broker.publish(pub(Target.GROUP, "room", b"together"))
    await until(lambda: a.payloads() == [b"alone", b"together"])
