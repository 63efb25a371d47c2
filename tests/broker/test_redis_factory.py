"""The contract-suite factory of the Redis engine works as its docstring says."""

from __future__ import annotations

import pytest

from hubbub.core.commands import Target
from hubbub.types import ConnectionId
from tests.broker._fakes import FakeNode
from tests.broker._redis_factory import RedisEngineFactory, redis_engines
from tests.broker._util import HUB, pub, until

__all__ = ["redis_engines"]  # the fixture, imported for this module's tests

pytestmark = pytest.mark.redis


async def test_factory_makes_nodes_of_one_cluster(redis_engines: RedisEngineFactory) -> None:
    """Two engines from the factory, started with their nodes, see each other."""
    broker_a, presence_a = redis_engines("a")
    broker_b, _ = redis_engines("b")
    a, b = FakeNode(broker_a), FakeNode(broker_b)
    await broker_a.start(a)
    await broker_b.start(b)
    b.connect(HUB, "b1", groups=["room"])
    await broker_b.sync()
    assert await presence_a.connection_exists(HUB, ConnectionId("b1"))
    await broker_a.publish(pub(Target.GROUP, "room", b"x"))
    await until(lambda: b.payloads() == [b"x"])
