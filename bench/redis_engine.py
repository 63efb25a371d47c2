"""Quick figures of the Redis engine alone (no WebSocket clients): Redis commands and round
trips per operation, cross-node publish latency, publish throughput and its CPU cost.

    python bench/redis_engine.py [--publications 50000]

Starts its own redis-server on a free loopback port, and two nodes (RedisBroker with the
test suite's stand-in node) in this one process. CPU figures: this process (both nodes) and
the redis-server process, from /proc, over the measured window.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis  # noqa: E402

from hubbub.broker.redis import RedisBroker, RedisSettings  # noqa: E402
from hubbub.core.commands import AddUserToGroup, Publication, Target  # noqa: E402
from hubbub.protocol.messages import DataType, Payload  # noqa: E402
from hubbub.types import GroupName, HubName, UserId  # noqa: E402
from tests.broker._fakes import FakeNode  # noqa: E402

HUB = HubName("bench")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def commandstats(admin: aioredis.Redis) -> dict[str, int]:
    info = await admin.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in info.items()}


async def count(admin: aioredis.Redis, action: object) -> dict[str, int]:
    """Redis commands (by name) that ``action()`` costs, INFO itself excluded."""
    before = await commandstats(admin)
    assert callable(action)
    await action()
    after = await commandstats(admin)
    diff = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    diff["info"] = diff.get("info", 1) - 1
    return {k: v for k, v in diff.items() if v}


def pub(target: Target, name: str, data: bytes) -> Publication:
    return Publication(HUB, target, name, Payload(DataType.TEXT, data))


async def main(publications: int) -> None:
    binary = shutil.which(os.environ.get("HUBBUB_TEST_REDIS_SERVER", "redis-server"))
    assert binary, "redis-server not found"
    port = free_port()
    tmp = tempfile.mkdtemp()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(0.3)
        url = f"redis://127.0.0.1:{port}/0"
        admin = aioredis.Redis.from_url(url)
        nodes = []
        for node_id in ("a", "b"):
            node = FakeNode(RedisBroker(RedisSettings(url=url, node_id=node_id)))
            await node.broker.start(node)
            nodes.append(node)
        a, b = nodes
        await run(a, b, admin, server.pid, publications)
        for node in nodes:
            await node.broker.close()
        await admin.aclose()
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


async def run(a: FakeNode, b: FakeNode, admin: aioredis.Redis, redis_pid: int, n: int) -> None:
    print("Redis commands per operation (INFO commandstats deltas):")

    async def connect() -> None:
        b.connect(HUB, "b1", user="ann", groups=["room"])
        await b.broker.sync()

    print("  connection opened (user, 1 group) on a new node:", await count(admin, connect))

    async def connect2() -> None:
        b.connect(HUB, "b2", user="bob", groups=["room"])
        await b.broker.sync()

    print("  one more (new user, same group):             ", await count(admin, connect2))

    async def join() -> None:
        b.join(b.get(HUB, "b1"), "room2")
        await b.broker.sync()

    print("  client join (group new to the node):         ", await count(admin, join))

    async def join_many() -> None:
        for i in range(100):
            b.connect(HUB, f"m{i}", groups=["big"])
        await b.broker.sync()

    print("  100 connections joining in one pass:         ", await count(admin, join_many))

    async def send_group() -> None:
        await a.broker.publish(pub(Target.GROUP, "room", b"x"))

    print("  REST send to group / client sendToGroup:     ", await count(admin, send_group))

    async def send_conn() -> None:
        await a.broker.publish(pub(Target.CONNECTION, "b1", b"x"))

    print("  REST send to a connection on another node:   ", await count(admin, send_conn))

    async def add_user() -> None:
        await a.broker.command(AddUserToGroup(HUB, UserId("ann"), GroupName("g")))

    print("  REST add user to group (user on 1 node):     ", await count(admin, add_user))

    async def exists() -> None:
        await a.presence.group_members(HUB, GroupName("room"), None, 100)

    print("  REST list group connections (one page):      ", await count(admin, exists))

    # Cross-node latency: a publishes, b receives, one at a time.
    b.received.clear()
    latencies = []
    for i in range(2000):
        start = time.perf_counter()
        a.broker.publish_nowait(pub(Target.GROUP, "room", b"%d" % i))
        while len(b.received) <= i:
            await asyncio.sleep(0)
        latencies.append((time.perf_counter() - start) * 1e6)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99)]
    print(f"cross-node publish latency (one in flight): p50 {p50:.0f} us, p99 {p99:.0f} us")

    # Command latency: add a user to a group, the user on the other node.
    times = []
    for _ in range(500):
        start = time.perf_counter()
        await a.broker.command(AddUserToGroup(HUB, UserId("ann"), GroupName("g")))
        times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    print(f"command round trip (add user to group on another node): p50 {statistics.median(times):.0f} us")

    # Throughput: n publications of 100 B to a group with a member on the other node.
    b.received.clear()
    data = b"x" * 100
    cpu0, redis0, wall0 = time.process_time(), cpu_seconds(redis_pid), time.perf_counter()
    batches0 = a.broker._writer.batches
    for i in range(n):
        a.broker.publish_nowait(pub(Target.GROUP, "room", data))
        if i % 500 == 499:
            await asyncio.sleep(0)
    while len(b.received) < n:
        await asyncio.sleep(0.001)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    rcpu = cpu_seconds(redis_pid) - redis0
    batches = a.broker._writer.batches - batches0
    print(
        f"throughput: {n / wall:,.0f} publications/s node to node; "
        f"{cpu / n * 1e6:.1f} us CPU per publication in both nodes together, "
        f"{rcpu / n * 1e6:.1f} us Redis CPU; {n / max(batches, 1):.0f} publications per write"
    )

    # Session replication: one XADD per reliable delivery (100 B frames, 100 sessions).
    store = a.broker.sessions
    cpu0, redis0, wall0 = time.process_time(), cpu_seconds(redis_pid), time.perf_counter()
    mem0 = (await admin.info("memory"))["used_memory"]
    frame = b"f" * 100
    for i in range(n):
        store.push(HUB, f"s{i % 100}", i // 100 + 1, frame)  # type: ignore[arg-type]
        if i % 500 == 499:
            await asyncio.sleep(0)
    await a.broker.sync()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    rcpu = cpu_seconds(redis_pid) - redis0
    mem = (await admin.info("memory"))["used_memory"] - mem0
    print(
        f"session replication: {n / wall:,.0f} frames/s; {cpu / n * 1e6:.1f} us node CPU and "
        f"{rcpu / n * 1e6:.1f} us Redis CPU per replicated delivery; {mem / n:.0f} B of Redis "
        "memory per unacked 100 B frame"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--publications", type=int, default=50_000)
    asyncio.run(main(parser.parse_args().publications))
