"""Fixtures of the engine tests: nodes (RedisBroker + FakeNode) on a test redis-server."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from hubbub.broker.redis import RedisBroker, RedisSettings
from tests._redis import RedisServer
from tests.broker._fakes import FakeNode

FAST = RedisSettings(
    heartbeat_seconds=0.2,
    node_ttl_seconds=1.0,
    timeout_seconds=0.5,
    request_timeout_seconds=2.0,
    reconnect_min_seconds=0.05,
    reconnect_max_seconds=0.3,
    start_timeout_seconds=5.0,
    replicate_sessions=True,
)
"""Short heartbeats and timeouts, so that expiry and reconnection take a second, not ten."""

StartNode = Callable[..., Awaitable[FakeNode]]


@pytest.fixture
async def start_node(redis_server: RedisServer) -> AsyncIterator[StartNode]:
    """``await start_node("a")`` -> a started node on the test server (closed at the end)."""
    nodes: list[FakeNode] = []

    async def start(node_id: str, **settings: Any) -> FakeNode:  # RedisSettings fields
        config = dataclasses.replace(FAST, url=redis_server.url, node_id=node_id, **settings)
        node = FakeNode(RedisBroker(config))
        await node.broker.start(node)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.broker.close()
