"""Helpers of the engine tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from hubbub.core.commands import Publication, Target
from hubbub.protocol.messages import DataType, Payload
from hubbub.types import HubName
from tests.broker._fakes import FakeNode

HUB = HubName("chat")


def pub(target: Target, name: str, data: bytes, hub: str = HUB) -> Publication:
    return Publication(HubName(hub), target, name, Payload(DataType.TEXT, data))


async def until(check: Callable[[], object], seconds: float = 5.0) -> None:
    """Poll ``check()`` until it is true; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {seconds} s")
        await asyncio.sleep(0.01)


async def settle(*nodes: FakeNode) -> None:
    """Until every node's subscriptions and registry writes are in effect."""
    for node in nodes:
        await node.broker.sync()
