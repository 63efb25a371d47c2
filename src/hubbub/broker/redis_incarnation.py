"""A node's incarnation in the registry: its epoch, registration, heartbeats and reaping.

A node registers anew every time it connects to Redis, under a new epoch: the incarnation
``node/epoch`` owns the registry entries written in that connection. Heartbeats keep it
alive; an incarnation whose expiry passed (a dead node, or the previous epoch of a node that
reconnected) is reaped by whichever node sees it first. See :mod:`hubbub.broker.redis` for
the bounds.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable

from hubbub.broker.channels import Names
from hubbub.broker.redis_link import Arg, Writer
from hubbub.broker.redis_registry import Holding, inventory_ops
from hubbub.broker.redis_scripts import SCRIPTS
from hubbub.types import HubName

__all__ = ["Incarnation", "Superseded"]

log = logging.getLogger("hubbub.broker.redis")

RunScript = Callable[..., Awaitable[object]]
"""``run(script, *args)``: run a script with the prefix as its first argument."""

REAP_BATCH = 200
"""Connections removed per reaping call: about 9 ms of Redis time."""

REAP_CALLS = 250
"""Reaping calls per heartbeat and incarnation: 50,000 connections."""


class Superseded(Exception):
    """This incarnation's registration expired (the node stalled): register anew."""


class Incarnation:
    """The registration of this node for the current connection to Redis."""

    def __init__(self, names: Names, node_id: str, ttl_ms: int, session_ms: int) -> None:
        self._names = names
        self.node_id = node_id
        self._ttl_ms = ttl_ms
        self._session_ms = session_ms
        self.epoch = ""
        self.member = ""
        self.known_nodes: set[str] = set()
        """Node ids alive at the last heartbeat (for the wait after an outage)."""

    def write_header(self) -> list[Arg]:
        """The start of a registry write batch of this incarnation."""
        return [b"EVALSHA", SCRIPTS.write.sha, 0, self._names.prefix, self.node_id, self.epoch]

    def renew(
        self,
        writer: Writer,
        reopen: Callable[[], None],
        write: Callable[[str, HubName, str, str], None],
        holdings: Iterable[Holding],
    ) -> int:
        """Queue a new incarnation: its epoch, everything held (``reopen`` lets registry
        writes in again just before: nothing falls between the inventory and later writes),
        then its announcement, which hands the previous incarnation to the reapers.

        Returns:
            How many connections were re-registered.
        """
        names = self._names
        previous = self.member
        self.epoch = secrets.token_hex(4)
        self.member = f"{self.node_id}/{self.epoch}"
        writer.append([b"SET", names.epoch(self.node_id), self.epoch])
        reopen()
        held = 0
        for op, hub, a, b in inventory_ops(holdings):
            held += op == "A"
            write(op, hub, a, b)
        announce = SCRIPTS.announce.sha
        writer.append(
            [
                b"EVALSHA",
                announce,
                0,
                names.prefix,
                self.node_id,
                self.epoch,
                self._ttl_ms,
                previous,
            ]
        )
        return held

    async def beat(self, run: RunScript) -> list[str]:
        """Renew this incarnation; returns incarnations to reap.

        Raises:
            Superseded: the registration had expired and was reaped meanwhile.
        """
        reply = await run(SCRIPTS.beat, self.member, self._ttl_ms)
        assert isinstance(reply, list)
        alive, members, reaping = reply
        if not alive:
            raise Superseded
        self.known_nodes = {m.decode().split("/", 1)[0] for m in members}
        return [m.decode() for m in reaping]

    async def reap(self, run: RunScript, member: str) -> bool:
        """Remove what an incarnation held, a batch per call (other nodes may share the
        work); True when it is all gone."""
        for _ in range(REAP_CALLS):
            if not await run(SCRIPTS.reap, member, REAP_BATCH, self._session_ms):
                if member.split("/", 1)[0] != self.node_id:
                    log.info("redis engine: node %s left the registry", member)
                return True
        return False

    async def leave(self, run: RunScript) -> None:
        """Deregister at once, and remove what this incarnation held."""
        await run(SCRIPTS.leave, self.node_id, self.epoch)
        while await run(SCRIPTS.reap, self.member, 1000, self._session_ms):
            pass

    async def await_known(self, members: Callable[[], Awaitable[object]], seconds: float) -> None:
        """Until the nodes alive at the last heartbeat are registered again (after an
        outage: until then they would miss what this node publishes), at most ``seconds``."""
        deadline = time.monotonic() + seconds
        while self.known_nodes:
            reply = await members()
            assert isinstance(reply, list)
            live = {m.decode().split("/", 1)[0] for m in reply}
            if not self.known_nodes - live - {self.node_id} or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.05)
