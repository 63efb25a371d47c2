"""The Redis engine's public types: settings, state, statistics, and what it needs from the
node beyond the engine interface's handler (see :mod:`hubbub.broker.redis`)."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import msgspec

from hubbub.broker.base import BrokerHandler
from hubbub.broker.redis_link import Reply
from hubbub.broker.redis_registry import Holding
from hubbub.broker.redis_sessions import ReplicatedSession
from hubbub.core.commands import Publication
from hubbub.errors import ClusterUnavailableError
from hubbub.types import ConnectionId, HubName

__all__ = [
    "ClusterHandler",
    "ClusterMember",
    "EngineState",
    "RedisSettings",
    "RedisStats",
    "Request",
    "SessionOwner",
    "SessionTransfer",
]


class EngineState(enum.Enum):
    """Where the engine stands with Redis (a metric and the REST 503 rule read it)."""

    CONNECTING = "connecting"  # starting, or re-establishing after an outage
    READY = "ready"  # subscribed, registered, the cluster reachable
    DEGRADED = "degraded"  # Redis lost: local delivery only, retrying with back-off
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """The engine's settings (``[engine]`` in the configuration file)."""

    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "hubbub"
    """Namespace of every key and channel: clusters sharing one Redis use different ones."""
    node_id: str | None = None
    """This node's id (letters, digits, ``_.-``); a fresh one per process when None."""
    heartbeat_seconds: float = 2.0
    node_ttl_seconds: float = 8.0
    """A node whose heartbeat is this late is dead; its connections are removed."""
    timeout_seconds: float = 3.0
    """A Redis round trip slower than this means the connection is lost (a paused server)."""
    request_timeout_seconds: float = 5.0
    """How long a command, query or session hand-over waits for the other nodes."""
    reconnect_min_seconds: float = 0.1
    reconnect_max_seconds: float = 5.0
    sharded: bool | None = None
    """Sharded pub/sub (SPUBLISH/SSUBSCRIBE); None: when the server has it (Redis >= 7)."""
    session_timeout_seconds: float = 30.0
    """How long a dead node's replicated sessions stay restorable after it was reaped."""
    replicate_sessions: bool = False
    """Whether nodes replicate reliable sessions (a stream write per reliable delivery; off by
    default, as `[engine] session_replication`)."""
    max_queued_bytes: int = 64 << 20
    """Publications queued for Redis beyond this are dropped (a stalled server)."""
    start_timeout_seconds: float = 10.0
    """How long :meth:`RedisBroker.start` waits for Redis before going on degraded."""


@dataclass(slots=True)
class RedisStats:
    """Counters for metrics (plain integers, bumped on the event loop)."""

    published: int = 0
    dropped: int = 0
    received: int = 0
    commands: int = 0
    request_timeouts: int = 0
    outages: int = 0
    replica_drops: int = 0
    reregistered: int = 0
    reaped: int = 0


ClusterHandler = BrokerHandler
"""The node as the engine sees it: the ``BrokerHandler`` of the engine interface."""


@runtime_checkable
class ClusterMember(Protocol):
    """What the node tells the engine about itself, beyond the handler (optional).

    Without it every connection-targeted message takes a Redis round trip, and nothing is
    re-registered after an outage.
    """

    def holds(self, hub: HubName, connection_id: ConnectionId) -> bool:
        """True when the connection (or its detached session) is on this node."""
        ...

    def inventory(self) -> Iterable[Holding]:
        """Every connection held, with its user and groups; iterated synchronously."""
        ...

    def disowned(self, hub: HubName, connection_id: ConnectionId) -> None:
        """Another node took the connection over while this one was cut off: drop it
        locally without telling the registry (the other node owns the entry now)."""
        ...


@runtime_checkable
class SessionOwner(Protocol):
    """A node that can hand a reliable session over to another node (optional)."""

    async def hand_over(self, hub: HubName, connection_id: ConnectionId) -> bytes | None:
        """Stop serving the session here and return its snapshot (None: no such session).

        The node unregisters the connection (without a ``disconnected`` event) and awaits
        ``broker.sync()`` before it returns, so the new owner's registration comes after.
        It takes the snapshot and stops delivering to the session before its first ``await``
        (the engine notes, just before calling it, which publications the session had).
        """
        ...


class SessionTransfer(msgspec.Struct, frozen=True):
    """What :meth:`RedisBroker.take_session` found.

    ``snapshot``: handed over by a live owner. ``replica``: restored from Redis because no
    owner answered. Both None: the session is gone (or its owner refused). ``missed``: with
    a snapshot, the publications to the watched interests that reached this node while the
    session was being handed over and that the owner had not had when it gave it up, in the
    order they came (the new owner delivers them to the session, then it is live).
    """

    snapshot: bytes | None = None
    replica: ReplicatedSession | None = None
    missed: tuple[Publication, ...] = ()


class Request:
    """A command, query or hand-over waiting for the nodes that received it."""

    __slots__ = ("expected", "future", "id", "marks", "replies", "routed", "snapshot", "total")

    def __init__(self, request_id: int) -> None:
        self.id = request_id
        loop = asyncio.get_running_loop()
        self.routed: asyncio.Future[int] = loop.create_future()
        self.future: asyncio.Future[None] = loop.create_future()
        self.expected: int | None = None
        self.replies = 0
        self.total = 0
        self.snapshot: bytes | None = None
        self.marks: dict[str, int] = {}

    def on_routed(self, reply: Reply) -> None:
        if not self.routed.done():
            if isinstance(reply, int):
                self.routed.set_result(reply)
            else:
                self.routed.set_exception(ClusterUnavailableError(f"redis answered {reply!r}"))

    def expect(self, count: int) -> None:
        self.expected = count
        self._check()

    def reply(self, value: int) -> None:
        self.replies += 1
        self.total += value
        self._check()

    def _check(self) -> None:
        if self.expected is not None and self.replies >= self.expected:
            if not self.future.done():
                self.future.set_result(None)

    def fail(self, exc: BaseException) -> None:
        for future in (self.routed, self.future):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: nobody may be waiting any more
