"""The memory engine hands its node only what the node subscribed to.

The contract allows a publisher to be handed its own publications; the memory engine, whose
one node publishes everything, filters them by interest anyway, so every test over one node
also checks the node's interest bookkeeping (a missed subscribe loses deliveries).
"""

from __future__ import annotations

from hubbub.broker.base import Interest
from hubbub.broker.memory import MemoryBroker
from hubbub.core.commands import Command, Publication, Query, Target
from hubbub.protocol.messages import DataType, Payload
from hubbub.types import HubName

HUB = HubName("memory")


class Handler:
    def __init__(self) -> None:
        self.received: list[str] = []

    def handle_publication(self, publication: Publication) -> None:
        self.received.append(f"{publication.target.value}:{publication.name}")

    async def handle_command(self, command: Command) -> int:
        return 0

    async def handle_query(self, query: Query) -> bool:
        return False


def publication(target: Target, name: str) -> Publication:
    return Publication(HUB, target, name, Payload(DataType.TEXT, b"x"))


async def test_only_subscribed_interests_and_connections_reach_the_node() -> None:
    broker, handler = MemoryBroker(), Handler()
    await broker.start(handler)
    for target, name in ((Target.HUB, ""), (Target.GROUP, "g"), (Target.USER, "u")):
        await broker.publish(publication(target, name))
    assert handler.received == []
    broker.subscribe(Interest(HUB, Target.GROUP, "g"))
    broker.subscribe(Interest(HUB, Target.HUB))
    await broker.publish(publication(Target.GROUP, "g"))
    broker.publish_nowait(publication(Target.HUB, ""))
    await broker.publish(publication(Target.GROUP, "h"))
    await broker.publish(publication(Target.USER, "g"))  # same name, other target
    await broker.publish(publication(Target.CONNECTION, "c"))  # routed, never filtered
    assert handler.received == ["group:g", "hub:", "connection:c"]
    broker.unsubscribe(Interest(HUB, Target.GROUP, "g"))
    await broker.sync()
    await broker.publish(publication(Target.GROUP, "g"))
    assert handler.received == ["group:g", "hub:", "connection:c"]
