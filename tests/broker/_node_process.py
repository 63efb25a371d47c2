"""A node in a process of its own, for the tests that kill one (``kill -9``).

    python -m tests.broker._node_process REDIS_URL NODE_ID HUB CONNECTIONS

It registers CONNECTIONS connections (``<node>-<i>``, user ``u<i>``, group ``room``),
replicates a reliable session for the first one (snapshot ``snapshot-<node>``, frames 1-3,
frame 1 acknowledged), prints ``ready`` and waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys

from hubbub.broker.redis import RedisBroker, RedisSettings
from hubbub.types import ConnectionId, HubName
from tests.broker._fakes import FakeNode


async def main(url: str, node_id: str, hub: str, count: int) -> None:
    settings = RedisSettings(
        url=url,
        node_id=node_id,
        heartbeat_seconds=0.2,
        node_ttl_seconds=1.0,
        timeout_seconds=0.5,
        replicate_sessions=True,
    )
    broker = RedisBroker(settings)
    node = FakeNode(broker)
    await broker.start(node)
    for i in range(count):
        node.connect(hub, f"{node_id}-{i}", user=f"u{i}", groups=["room"])
    first = (HubName(hub), ConnectionId(f"{node_id}-0"))
    broker.sessions.save(*first, f"snapshot-{node_id}".encode())
    for seq in (1, 2, 3):
        broker.sessions.push(*first, seq, b"frame%d" % seq)
    broker.sessions.acked(*first, 1)
    await broker.sync()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
