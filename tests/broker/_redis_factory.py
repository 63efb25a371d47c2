"""The Redis engine's entry for the engine contract suite (tests/broker/test_contract.py).

The suite is parameterised over engine factories; a factory makes the engine of one node
(a broker and its presence) and the suite starts it with the node (its handler). For Redis
every node of a test shares one fresh ``redis-server`` (the ``redis_server`` fixture), so
the suite can make two or three nodes and check the cluster-wide answers.

To add Redis to the suite:

1. in test_contract.py, add a parameter ``"redis"`` whose factory comes from the
   ``redis_engines`` fixture below (import it into the suite's module or its conftest), and
   mark that parameter ``pytest.mark.redis`` (``pytest.param(..., marks=pytest.mark.redis)``),
   so the ``redis_server`` fixture accepts it and CI never skips it;
2. wherever the suite waits for writes to be visible, call ``await broker.sync()`` (memory
   returns at once; Redis waits for its queued writes and subscriptions);
3. to check one node's writes from another, make two nodes: ``engine("a")``, ``engine("b")``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable

import pytest

from hubbub.broker.redis import RedisBroker, RedisPresence, RedisSettings
from tests._redis import RedisServer

__all__ = ["RedisEngineFactory", "redis_engines"]

RedisEngineFactory = Callable[[str], tuple[RedisBroker, RedisPresence]]
"""``factory(node_id) -> (broker, presence)``: not started (the suite starts it with its node)."""

CONTRACT_SETTINGS = RedisSettings(
    heartbeat_seconds=0.2,
    node_ttl_seconds=1.0,
    timeout_seconds=0.5,
    request_timeout_seconds=2.0,
    reconnect_min_seconds=0.05,
    reconnect_max_seconds=0.3,
)


@pytest.fixture
async def redis_engines(redis_server: RedisServer) -> AsyncIterator[RedisEngineFactory]:
    """Engines of nodes sharing the test's redis-server; every one is closed at the end."""
    brokers: list[RedisBroker] = []

    def make(node_id: str) -> tuple[RedisBroker, RedisPresence]:
        settings = dataclasses.replace(CONTRACT_SETTINGS, url=redis_server.url, node_id=node_id)
        broker = RedisBroker(settings)
        brokers.append(broker)
        return broker, broker.presence

    yield make
    for broker in brokers:
        await broker.close()
