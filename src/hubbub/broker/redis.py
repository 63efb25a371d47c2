"""The Redis engine: many nodes sharing one Redis (>= 7, or Valkey) behave as one service.

Design note.

**Connections.** Each node keeps four: an ordered *writer* (every command it sends:
publications, registry writes, routed messages, replies; see
:mod:`~hubbub.broker.redis_link`), a *replica writer* (session replica writes only, batched
the same way, so that a publication never waits behind the replicas of earlier deliveries),
a *subscriber* (the channels its connections need) and a small pool for reads (presence,
heartbeats). redis-py (asyncio, RESP2, hiredis) does the
protocol; hiredis packs the commands.

**Names** (``{p}`` is ``RedisSettings.prefix``; details in :mod:`~hubbub.broker.channels`,
:mod:`~hubbub.broker.redis_registry`, :mod:`~hubbub.broker.redis_sessions`)::

    channels  {p}:to:hub:{hub}   {p}:to:group:{hub}:{group}   {p}:to:user:{hub}:{user}
              {p}:to:node:{node}
    registry  {p}:nodes {p}:reaping {p}:epoch:{node} {p}:held:{node}/{epoch} {p}:hubs
              {p}:owner:{hub} {p}:conns:{hub} {p}:user:{hub}:{user} {p}:group:{hub}:{group}
              {p}:groups:{hub}:{cid}
    sessions  {p}:session:{hub}:{cid} (snapshot)   {p}:frames:{hub}:{cid} (stream)

**Fan-out, interest-based.** A node subscribes (SSUBSCRIBE; SUBSCRIBE on a server without
sharded pub/sub, found with ``COMMAND INFO``) to the hub of each of its connections, to
each of their users and groups, and to its own node channel: the node's membership seam
calls :meth:`RedisBroker.subscribe` on the first local member and
:meth:`~RedisBroker.unsubscribe` on the last. A publication to a hub, group or user is
delivered to the publisher's own members at once, then published once on the target's
channel (publications queued back to back share one script call); each receiving node
encodes once for its members, and the publisher drops the copy it hears back (the envelope
names its origin). A publication to a connection is delivered locally when the node holds
it, else the ``route`` script looks the owner up and publishes on its node channel in the
same round trip. One writer connection per node means Redis runs one node's commands in
the order it sent them, and one subscriber connection per node receives them in that order:
a publisher's order is kept for every target.

**Commands and queries.** A command for a connection goes to its owner like a connection
publication (or is applied here, without Redis, when this node holds it); a user, group or
hub command is published on that interest's channel. SPUBLISH answers how many subscribers
received the message, one per node, so the sender knows how many replies to wait for (up to
``request_timeout_seconds``) and sums their counts: ``AddUserToGroup`` answers how many of
the user's connections matched cluster-wide, for the 404 rule. Replies go to the sender's
node channel. A receiving node applies the command and ``await broker.sync()`` before it
replies, so when :meth:`~RedisBroker.command` returns, the registry shows the result.
``CheckPermission`` is a query answered by the owner.

**Registry.** What is stored: per hub, each connection's owner incarnation and user (a
hash), the hub's connections, each user's and each group's connections (sorted sets of
connection ids, score 0, so pages come in id order: ``group_members(after, limit)`` is one
script call), each connection's groups, the hubs; per node incarnation
(``node/epoch``) the connections it holds. About 0.9 KB of Redis memory per connection with
a user and two groups. Every write applies only to connections its incarnation owns (the
late cleanup of a connection's old owner cannot remove it from its new one) and a whole
batch is refused when its epoch is stale.

**Heartbeats and expiry.** Each node refreshes its incarnation's expiry every
``heartbeat_seconds`` (2 s) with a script that also hands incarnations whose expiry passed
to the reapers; ``node_ttl_seconds`` is 8 s. So a killed node's connections leave the
registry within 10 s (8 s, plus up to one heartbeat of a surviving node), plus the reaping:
200 connections per script call (about 9 ms of Redis time), about 2 s per 50,000. Why 8 s:
four missed heartbeats, so a loaded event loop, a GC pause or a short Redis hiccup does not
evict a live node (which would then re-register everything), while a dead one goes within the
10 s the cluster promises. A node that was evicted anyway (a stall longer than the TTL) sees
it at its next heartbeat and registers again under a new epoch. A node that closes
deregisters at once.

**Failure behaviour.** States: ``connecting`` -> ``ready`` -> ``degraded`` (Redis lost) ->
``connecting`` -> ``ready``. A refused connection or a closed one is seen at once; a frozen
server (SIGSTOP, a network black hole) when a round trip exceeds ``timeout_seconds`` (3 s) or
the subscriber misses a pong. Then every queued command is dropped and the engine retries
with exponential back-off (0.1 s doubling to 5 s, with jitter); the loss is logged once, the
recovery once, the state is exposed for metrics (:attr:`RedisBroker.state`,
:meth:`~RedisBroker.on_state_change`, :attr:`RedisBroker.stats`). On reconnection: scripts
loaded, every wanted channel subscribed again, a new epoch, the node's connections and groups
re-registered from :meth:`ClusterMember.inventory` (read in the same step as the queue
reopens, so nothing falls between), the old epoch reaped (what closed during the outage
goes), connections another node took over meanwhile handed back to the node through
:meth:`ClusterMember.disowned`. Then, after an outage, the engine waits (at most a TTL) for
the nodes it saw before to register again: until they are back, they would miss what it
publishes.

While not ready: local delivery goes on (publish delivers here, drops the cross-node copy and
counts it); joins and leaves apply locally (registered on reconnection); commands, queries
and exists checks about a connection this node holds are answered here; everything else
that needs the cluster raises :class:`~hubbub.errors.ClusterUnavailableError` (503). The
REST rule: every data-plane operation answers 503 while the engine is not ready, except
those this node can answer alone (a send, command, permission check or exists check whose
target connection it holds) and those that need no cluster (``:generateToken``, health);
``:send`` checks :attr:`~RedisBroker.ready` before publishing, so a 503 means nothing was
delivered. Body ``{"code":"ServiceUnavailable","message":"The cluster engine is
unavailable; retry later."}``, ``x-ms-error-code: ServiceUnavailable``, ``Retry-After: 1``.
A client's acked sendToGroup is delivered locally and acked with ``InternalServerError``
when the cross-node copy could not be handed to Redis. Redis pub/sub is at-most-once: what a
node publishes while another node's subscriber is down is lost for that node (the wait for
known nodes above closes that gap after a Redis restart).

**Cost per operation** (measured with ``bench/redis_engine.py``; round trips from the node):

========================================  ===============================================
REST send to all / group / user            1 SPUBLISH, in a batched script call (0 extra
(or a client sendToGroup)                  round trips when sends are queued back to back)
REST send to a connection elsewhere        1 ``route`` script (lookup + SPUBLISH)
REST add user to group, close, ...         1 SPUBLISH + one reply per node holding a target
REST group page / exists                   1 script call / 1 command
connection opened                          1 registry op (batched) + SSUBSCRIBE of new channels
client join / leave                        1 registry op (batched) + (UN)SSUBSCRIBE if first/last
========================================  ===============================================

On this 2-core VM: cross-node publish latency ~60-70 us (p50), a command round trip ~160 us,
~6 us of node CPU (both ends together) and ~1.4 us of Redis CPU per publication.

**Reliable sessions across nodes.** A client whose reconnect lands on another node resumes
through :meth:`RedisBroker.take_session`: the ``route`` script sends ``TakeSession`` to the
owner's node channel; a live owner (:class:`SessionOwner`) stops serving the session,
unregisters it, syncs and replies with its snapshot (a msgspec struct, bytes here); the new
node restores it and registers the connection. So that nothing sent to the session's user,
groups or hub falls between the two, the new node subscribes to them (read from the
registry) before it asks, and keeps what they bring until the snapshot comes; the owner's
reply carries its *marks*, per origin node the number of the last publication it had (every
publication is numbered by its origin, and one Redis delivers one origin's messages in
order to every subscriber), and the new node delivers to the session what it kept past
those marks, in order, before the session goes live. A send to the connection id itself,
routed by the registry, can still miss the session while neither node is registered.
When nobody answers (the owner was killed: its subscriber is gone, SPUBLISH reaches 0
receivers) and replication is on, the new node takes the replica from Redis instead
(:class:`~hubbub.broker.redis_sessions.RedisSessions`,
read and deleted atomically, so only one node can). Replication costs one ``XADD`` per
reliable delivery and one ``XTRIM`` per ``sequenceAck``, on the replica writer (a connection
of its own, batched like publications); a group fan-out shared by K members on the node
sends the message once with the K (connection, sequence id) pairs, and the script writes the
K entries. Redis still does one stream write per delivery (bench (j): about 1 ms of Redis
CPU per publication to 1,000 reliable members, some 3x the server CPU per delivery without
replication); hence ``RedisSettings.replicate_sessions``, off by default: without it a
session survives a hand-over and its node's graceful stop, not a kill -9. A dead owner's
replicas expire ``session_timeout_seconds`` after it is reaped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from hubbub.broker.channels import Interest, Names, valid_node_id
from hubbub.broker.redis_incarnation import Incarnation, Superseded
from hubbub.broker.redis_link import Arg, Reply, Subscriber, Writer, server_info
from hubbub.broker.redis_registry import (
    OPS_PER_BATCH,
    Holding,
    RedisPresence,
)
from hubbub.broker.redis_scripts import SCRIPTS, Script
from hubbub.broker.redis_sessions import RedisSessions, ReplicatedSession
from hubbub.broker.redis_types import (
    ClusterHandler,
    ClusterMember,
    EngineState,
    RedisSettings,
    RedisStats,
    Request,
    SessionOwner,
    SessionTransfer,
)
from hubbub.broker.wire import (
    CommandEnvelope,
    PublicationEnvelope,
    Query,
    QueryEnvelope,
    ReplyEnvelope,
    SessionEnvelope,
    TakeSessionEnvelope,
    decode_envelope,
    decode_publication,
    decode_request,
    encode_command,
    encode_publication,
    encode_query,
    encode_reply,
    encode_session,
    encode_take_session,
)
from hubbub.core.commands import (
    AddToGroup,
    AddUserToGroup,
    CheckPermission,
    CloseConnections,
    Command,
    GrantPermission,
    GroupsByFilter,
    Publication,
    RemoveFromGroup,
    RemoveUserFromGroup,
    RevokePermission,
    Target,
)
from hubbub.errors import ClusterUnavailableError
from hubbub.types import ConnectionId, HubName

__all__ = [
    "ClusterHandler",
    "ClusterMember",
    "EngineState",
    "Holding",
    "RedisBroker",
    "RedisPresence",
    "RedisSessions",
    "RedisSettings",
    "RedisStats",
    "ReplicatedSession",
    "SessionOwner",
    "SessionTransfer",
]

log = logging.getLogger("hubbub.broker.redis")

T = TypeVar("T")


def _new_node_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:32] or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _safe_url(url: str) -> str:
    """The URL without its password (keys never appear in logs)."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def _reason(exc: BaseException) -> str:
    """What went wrong, and on which of the node's Redis links (see ``_named``)."""
    cause = exc.__cause__ if isinstance(exc, ClusterUnavailableError) and exc.__cause__ else exc
    text = str(cause) or type(cause).__name__
    notes = getattr(exc, "__notes__", None) or getattr(cause, "__notes__", None) or ()
    return "; ".join((text, *notes))


def _named(task: asyncio.Task[Any]) -> None:
    """Note on a failed connection task's error which task it was (the writer, the replica
    writer, the subscriber, the heartbeat), for the log line of the loss."""
    if not task.cancelled() and (error := task.exception()) is not None:
        error.add_note(f"in the {task.get_name()}")


class _Watch:
    """The interests of a session being taken over, and what came for them meanwhile."""

    __slots__ = ("interests", "kept")

    def __init__(self, interests: frozenset[Interest]) -> None:
        self.interests = interests
        self.kept: list[tuple[str, int, Publication]] = []
        """(origin node, its number for it, the publication), in the order they came."""


def _connection_target(command: Command | Query) -> ConnectionId | None:
    if isinstance(
        command, (AddToGroup, RemoveFromGroup, GrantPermission, RevokePermission, CheckPermission)
    ):
        return command.connection_id
    if isinstance(command, CloseConnections) and command.target is Target.CONNECTION:
        return ConnectionId(command.name)
    return None


def _interest(command: Command) -> Interest:
    if isinstance(command, (AddUserToGroup, RemoveUserFromGroup)):
        return Interest(command.hub, Target.USER, command.user_id)
    if isinstance(command, GroupsByFilter):
        return Interest(command.hub, Target.HUB)
    if isinstance(command, CloseConnections):
        return Interest(command.hub, command.target, command.name)
    raise TypeError(f"no interest for {type(command).__name__}")


class RedisBroker:
    """Broker, presence and session store of one node of a cluster on Redis.

    Guarantees: publications from one publisher reach each interested node in publish order
    (one ordered writer connection per node, one subscriber connection per node); a node
    receives publications only for the interests it subscribed, plus the
    connection-targeted ones routed to it; :meth:`command` returns after every node holding
    a target applied it (or after ``request_timeout_seconds``, with the sum of the answers
    that came); after :meth:`sync`, a publication from any node reaches the new
    subscriptions and the registry shows every write made before it. While Redis is out of
    reach local delivery goes on, cross-node copies are dropped (counted), and whatever
    needs the cluster raises :class:`~hubbub.errors.ClusterUnavailableError`.
    """

    def __init__(self, settings: RedisSettings | None = None) -> None:
        self.settings = settings = settings or RedisSettings()
        self.node_id = settings.node_id or _new_node_id()
        if not valid_node_id(self.node_id):
            raise ValueError(f"invalid node id {self.node_id!r}: letters, digits, _ . -")
        self.names = Names(settings.prefix)
        self.presence = RedisPresence(self)
        self.sessions = RedisSessions(self)
        self.state = EngineState.CONNECTING
        self.stats = RedisStats()
        self.server = ""
        """What the server said it is, e.g. ``redis 7.0.15`` (empty until connected)."""
        self._listeners: list[Callable[[EngineState], None]] = []
        self._handler: ClusterHandler | None = None
        self._member: ClusterMember | None = None
        self._owner: SessionOwner | None = None
        self._writer = Writer(settings.timeout_seconds, settings.max_queued_bytes)
        self._replica_writer = Writer(settings.timeout_seconds, settings.max_queued_bytes)
        """Session replica writes, on a connection of their own: a publication never waits
        behind the replicas of the deliveries made before it."""
        self._subscriber = Subscriber(self._dispatch)
        self._node_channel = self.names.node_channel(self.node_id)
        self._publish = b"SPUBLISH"
        self._sharded = b"1"
        self._incarnation = Incarnation(
            self.names,
            self.node_id,
            int(settings.node_ttl_seconds * 1000),
            int(settings.session_timeout_seconds * 1000),
        )
        self._accepting = False
        self._requests: dict[int, Request] = {}
        self._request_ids = 0
        self._pool: ConnectionPool | None = None
        self._client: aioredis.Redis | None = None
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lost_at = 0.0
        self._closing = False
        self._backoff = settings.reconnect_min_seconds
        self._drop_logged = False
        self._sequence = 0
        """The number of the last publication this node sent (:mod:`~hubbub.broker.wire`)."""
        self._marks: dict[str, int] = {}
        """Per origin node, the number of the last of its publications this node had."""
        self._watches: list[_Watch] = []
        """The sessions being taken over to here: what comes for them meanwhile is kept."""

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True while the cluster is reachable (REST answers 503 otherwise)."""
        return self.state is EngineState.READY

    def on_state_change(self, listener: Callable[[EngineState], None]) -> None:
        """Call ``listener`` with each new state (for metrics)."""
        self._listeners.append(listener)

    async def start(self, handler: ClusterHandler) -> None:
        """Connect and begin handing messages to ``handler``.

        Waits up to ``start_timeout_seconds`` for Redis; then goes on degraded (and keeps
        trying) rather than failing, so a node can start while Redis is being restarted.
        """
        self._handler = handler
        self._member = handler if isinstance(handler, ClusterMember) else None
        self._owner = handler if isinstance(handler, SessionOwner) else None
        timeout = self.settings.timeout_seconds
        self._pool = ConnectionPool.from_url(
            self.settings.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            protocol=2,  # RESP2 everywhere: pub/sub messages are plain replies
            client_name=f"hubbub:{self.node_id}:read",
        )
        self._client = aioredis.Redis(connection_pool=self._pool)
        self._runner = asyncio.create_task(self._run())
        try:
            await asyncio.wait_for(self._ready.wait(), self.settings.start_timeout_seconds)
        except TimeoutError:
            log.warning(
                "redis engine: %s not reachable yet; the node starts degraded and retries",
                _safe_url(self.settings.url),
            )

    async def wait_ready(self) -> None:
        """Until the engine is ready (bound it with ``asyncio.timeout``)."""
        await self._ready.wait()

    async def close(self) -> None:
        """Leave the cluster: flush what is queued, deregister (the node's connections leave
        the registry at once), close the connections."""
        if self.state is EngineState.CLOSED or self._closing:
            return
        self._closing = True  # no reconnection, no heartbeat from here on
        if self.ready:
            try:
                await asyncio.wait_for(self._leave(), self.settings.timeout_seconds)
            except (TimeoutError, RedisError, OSError, ClusterUnavailableError) as exc:
                log.warning("redis engine: could not deregister cleanly (%s)", exc)
        self._set_state(EngineState.CLOSED)
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
        if self._pool is not None:
            await self._pool.disconnect()

    async def _leave(self) -> None:
        await self.sync()
        await self._incarnation.leave(self.run_script)

    # -- interest -----------------------------------------------------------------------------

    def subscribe(self, interest: Interest) -> None:
        """Receive the publications and commands of ``interest`` (ordered, fire-and-forget)."""
        self._subscriber.want(self.names.channel(interest))

    def unsubscribe(self, interest: Interest) -> None:
        self._subscriber.unwant(self.names.channel(interest))

    async def sync(self) -> None:
        """Until every subscribe/unsubscribe and registry write requested so far is in
        effect on Redis. Returns at once while not connected (they take effect on
        reconnection: subscriptions are renewed, connections re-registered)."""
        if not self._accepting:
            return
        try:
            await self._writer.wait(self._writer.last)
            await self._replica_writer.wait(self._replica_writer.last)
            await self._subscriber.settled()
        except (RedisError, OSError, ClusterUnavailableError):
            return  # the connection failed meanwhile: the same as not connected

    # -- publications -------------------------------------------------------------------------

    async def publish(self, publication: Publication) -> None:
        """Deliver locally, then hand to Redis for the other nodes and wait until it has it.

        Raises:
            ClusterUnavailableError: the cross-node copy could not be handed to Redis (the
                local members have it).
        """
        seq = self._publish_one(publication, strict=True)
        if seq:
            try:
                await self._writer.wait(seq)
            except (RedisError, OSError) as exc:
                raise ClusterUnavailableError("cluster engine unavailable") from exc

    def publish_nowait(self, publication: Publication) -> None:
        """:meth:`publish` without waiting (or raising), in the same order as ``publish``."""
        self._publish_one(publication, strict=False)

    def _publish_one(self, publication: Publication, strict: bool) -> int:
        member = self._member
        target = publication.target
        if target is Target.CONNECTION:
            cid = ConnectionId(publication.name)
            if member is not None and member.holds(publication.hub, cid):
                self._deliver(publication)
                return 0
        else:
            self._deliver(publication)
        if not self.ready:
            return self._drop(strict)
        self._sequence += 1
        data = encode_publication(self.node_id, self._sequence, publication)
        if self._writer.full(len(data)):
            return self._drop(strict)
        self.stats.published += 1
        if target is Target.CONNECTION:
            callback = None if member is not None else self._routed_publication(publication)
            return self._writer.append(
                self._route_args(publication.hub, publication.name, data), callback, len(data)
            )
        channel = self.names.target_channel(publication.hub, target, publication.name)
        return self._writer.extend(
            "publish", self._publish_header, (channel, data), OPS_PER_BATCH, None, len(data)
        )

    def _publish_header(self) -> list[Arg]:
        return [b"EVALSHA", SCRIPTS.publish.sha, 0, self.names.prefix, self._sharded]

    def _routed_publication(self, publication: Publication) -> Callable[[Reply], None]:
        def routed(reply: Reply) -> None:
            if reply == -2:  # the registry says it is here: deliver it here
                self._deliver(publication)

        return routed

    def _drop(self, strict: bool) -> int:
        self.stats.dropped += 1
        if not self._drop_logged:
            self._drop_logged = True
            log.warning("redis engine: cross-node copies dropped while Redis is unavailable")
        if strict:
            raise ClusterUnavailableError("cluster engine unavailable")
        return 0

    def _deliver(self, publication: Publication) -> None:
        handler = self._handler
        if handler is None:
            return
        try:
            handler.handle_publication(publication)
        except Exception:
            log.exception("redis engine: local delivery failed")

    def _route_args(self, hub: HubName, connection_id: str, data: bytes) -> list[Arg]:
        sha = SCRIPTS.route.sha
        prefix = self.names.prefix
        return [b"EVALSHA", sha, 0, prefix, hub, connection_id, self.node_id, self._sharded, data]

    # -- commands and queries -----------------------------------------------------------------

    async def command(self, command: Command) -> int:
        """Apply ``command`` on every node holding a target; the total count they matched.

        A command for a connection this node holds is applied here, without Redis (also
        while Redis is out of reach); any other needs the cluster.

        Raises:
            ClusterUnavailableError: Redis is out of reach.
        """
        if isinstance(command, CheckPermission):  # a query, while commands still include it
            return int(await self.query(command))
        self.stats.commands += 1
        cid = _connection_target(command)
        if cid is not None and self.holds(command.hub, cid):
            assert self._handler is not None
            return await self._handler.handle_command(command)
        handler = self._require_handler()
        if cid is not None:
            request = self._new_request()
            data = encode_command(self.node_id, request.id, command)
            self._writer.append(self._route_args(command.hub, cid, data), request.on_routed)
            return await self._routed(request, lambda: handler.handle_command(command))
        request = self._new_request()
        data = encode_command(self.node_id, request.id, command)
        channel = self.names.channel(_interest(command))
        self._writer.append([self._publish, channel, data], request.on_routed)
        return await self._routed(request, None)

    async def query(self, query: Query) -> bool:
        """Ask the node holding the connection; False when nobody holds it. Answered here,
        without Redis, when this node holds it.

        Raises:
            ClusterUnavailableError: Redis is out of reach.
        """
        if self.holds(query.hub, query.connection_id):
            assert self._handler is not None
            return await self._handler.handle_query(query)
        handler = self._require_handler()
        request = self._new_request()
        data = encode_query(self.node_id, request.id, query)
        self._writer.append(
            self._route_args(query.hub, query.connection_id, data), request.on_routed
        )

        async def local() -> int:
            return int(await handler.handle_query(query))

        return bool(await self._routed(request, local))

    async def take_session(
        self, hub: HubName, connection_id: ConnectionId, watch: Iterable[Interest] = ()
    ) -> SessionTransfer:
        """Get a reliable session held elsewhere: handed over by its live owner, or, when no
        owner answers and replication is on, restored from Redis.

        ``watch``: the session's interests, subscribed here before the call (this syncs
        them before it asks the owner; what a subscription brings is kept from the moment
        it is in effect). What comes for them while the owner gives the session up is kept,
        and the transfer's ``missed`` has what of it the owner had not had (by the
        per-origin numbers of the publications and the owner's marks): nothing sent to the
        session's user, groups or hub during the hand-over is lost, or delivered twice. The
        caller delivers ``missed``
        to the session before its next ``await``.

        An owner that does not answer within ``request_timeout_seconds`` gets nothing taken
        from it: the result is empty (the client starts a new session) rather than a second
        live copy of the session.

        Raises:
            ClusterUnavailableError: Redis is out of reach.
        """
        self._require_handler()
        request = self._new_request()
        data = encode_take_session(self.node_id, request.id, hub, connection_id)
        kept = _Watch(frozenset(watch))
        try:
            if kept.interests:
                self._watches.append(kept)
                await self.sync()  # their subscriptions in effect before the owner is asked
            self._writer.append(self._route_args(hub, connection_id, data), request.on_routed)
            receivers = await self._wait(request.routed)
            if receivers > 0:
                request.expect(receivers)
                await self._wait(request.future)
                if request.replies:
                    marks = request.marks
                    missed = tuple(
                        publication
                        for origin, sequence, publication in kept.kept
                        if sequence > marks.get(origin, 0)
                    )
                    return SessionTransfer(snapshot=request.snapshot, missed=missed)
                return SessionTransfer()
        except TimeoutError:
            if not request.routed.done():
                raise ClusterUnavailableError("cluster engine did not answer") from None
            log.warning("redis engine: the owner of session %s did not hand it over", connection_id)
            return SessionTransfer()
        finally:
            self._forget(request)
            if kept.interests:
                self._watches.remove(kept)
        if receivers == -2 or not self.settings.replicate_sessions:
            return SessionTransfer()
        return SessionTransfer(replica=await self.sessions.take(hub, connection_id))

    def holds(self, hub: HubName, connection_id: ConnectionId) -> bool:
        """True when this node's handler says it holds the connection."""
        member = self._member
        return member is not None and member.holds(hub, connection_id)

    def _require_handler(self) -> ClusterHandler:
        if not self.ready or self._handler is None:
            raise ClusterUnavailableError("cluster engine unavailable")
        return self._handler

    def _new_request(self) -> Request:
        self._request_ids += 1
        request = self._requests[self._request_ids] = Request(self._request_ids)
        return request

    def _forget(self, request: Request) -> None:
        self._requests.pop(request.id, None)

    async def _wait(self, future: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(
                asyncio.shield(future), self.settings.request_timeout_seconds
            )
        except TimeoutError:
            self.stats.request_timeouts += 1
            raise

    async def _routed(self, request: Request, local: Callable[[], Awaitable[int]] | None) -> int:
        """The answer of a routed or fanned-out request (see the ``route`` script)."""
        try:
            receivers = await self._wait(request.routed)
            if receivers == -2 and local is not None:
                return await local()
            if receivers <= 0:
                return 0
            request.expect(receivers)
            try:
                await self._wait(request.future)
            except TimeoutError:
                log.warning(
                    "redis engine: %d of %d nodes answered in %.0f s",
                    request.replies,
                    receivers,
                    self.settings.request_timeout_seconds,
                )
            return request.total
        except TimeoutError as exc:
            raise ClusterUnavailableError("cluster engine did not answer") from exc
        finally:
            self._forget(request)

    # -- what other nodes send ----------------------------------------------------------------

    def _dispatch(self, data: bytes) -> None:
        """One message from the subscriber connection (called by its read loop)."""
        try:
            envelope = decode_envelope(data)
        except msgspec.DecodeError:
            log.warning("redis engine: a message on a cluster channel could not be decoded")
            return
        self.stats.received += 1
        if type(envelope) is PublicationEnvelope:
            if self._watches:
                self._watch(envelope)
            if envelope.origin != self.node_id:  # our own, heard back on a channel
                self._marks[envelope.origin] = envelope.sequence
                self._deliver(decode_publication(envelope))
        elif type(envelope) is ReplyEnvelope:
            request = self._requests.get(envelope.request_id)
            if request is not None:
                request.reply(0 if envelope.error else envelope.value)
        elif type(envelope) is SessionEnvelope:
            request = self._requests.get(envelope.request_id)
            if request is not None:
                request.snapshot = envelope.snapshot
                request.marks = envelope.marks
                request.reply(0)
        elif isinstance(envelope, (CommandEnvelope, QueryEnvelope)):
            self._spawn(self._answer(envelope))
        elif isinstance(envelope, TakeSessionEnvelope):
            self._spawn(self._hand_over(envelope))

    def _watch(self, envelope: PublicationEnvelope) -> None:
        """Keep a publication for the sessions being taken over whose interests it names."""
        publication = decode_publication(envelope)
        key = Interest(publication.hub, publication.target, publication.name)
        for watch in self._watches:
            if key in watch.interests:
                watch.kept.append((envelope.origin, envelope.sequence, publication))

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, envelope: CommandEnvelope | QueryEnvelope) -> None:
        handler = self._handler
        value, error = 0, False
        try:
            request = decode_request(envelope)
            assert handler is not None
            if isinstance(envelope, QueryEnvelope):
                assert isinstance(request, CheckPermission)
                value = int(await handler.handle_query(request))
            else:
                assert not isinstance(request, CheckPermission)  # queries are no commands
                value = await handler.handle_command(request)
        except Exception:
            log.exception("redis engine: a command from node %s failed", envelope.origin)
            error = True
        if envelope.origin == self.node_id:
            local = self._requests.get(envelope.request_id)
            if local is not None:
                local.reply(0 if error else value)
            return
        self._reply(envelope.origin, encode_reply(envelope.request_id, value, error))

    async def _hand_over(self, envelope: TakeSessionEnvelope) -> None:
        snapshot: bytes | None = None
        # What the session had: the owner takes its snapshot before its first await, so
        # nothing reaches this node between these marks and the snapshot.
        marks = {**self._marks, self.node_id: self._sequence}
        if self._owner is not None:
            try:
                snapshot = await self._owner.hand_over(envelope.hub, envelope.connection_id)
            except Exception:
                log.exception("redis engine: a session hand-over failed")
        self._reply(envelope.origin, encode_session(envelope.request_id, snapshot, marks))

    def _reply(self, node_id: str, data: bytes) -> None:
        if self._accepting:
            self._writer.append([self._publish, self.names.node_channel(node_id), data])

    # -- the engine core used by presence and sessions ----------------------------------------

    def registry_write(self, op: str, hub: HubName, a: str, b: str) -> None:
        if self._accepting:
            self._writer.extend(
                "registry",
                self._incarnation.write_header,
                (op, hub, a, b),
                OPS_PER_BATCH,
                self._on_written,
            )

    def session_write(self, op: str, hub: HubName, cid: str, a: bytes | str, b: bytes) -> None:
        if self._accepting:
            self._replica_writer.extend(
                "sessions", self._sessions_header, (op, hub, cid, a, b), OPS_PER_BATCH, None, len(b)
            )

    def session_ops(self, args: list[str | bytes], size: int) -> None:
        if self._accepting:
            self._replica_writer.extend(
                "sessions", self._sessions_header, args, OPS_PER_BATCH, None, size
            )

    def _sessions_header(self) -> list[Arg]:
        return [b"EVALSHA", SCRIPTS.sessions.sha, 0, self.names.prefix]

    def _on_written(self, reply: Reply) -> None:
        if isinstance(reply, ResponseError):
            log.error("redis engine: a registry write failed: %s", reply)
        elif isinstance(reply, list) and reply and self._member is not None:
            for hub, cid in zip(reply[::2], reply[1::2], strict=True):
                self._member.disowned(HubName(hub.decode()), ConnectionId(cid.decode()))

    async def run_script(self, script: Script, *args: str | int) -> object:
        """Run a script on the read pool.

        Raises:
            ClusterUnavailableError: not connected, or Redis failed to answer.
        """
        client = self._read_client()
        try:
            try:
                return await client.evalsha(script.sha, 0, self.names.prefix, *args)
            except NoScriptError:
                await client.script_load(script.text)
                return await client.evalsha(script.sha, 0, self.names.prefix, *args)
        except (RedisError, OSError) as exc:
            raise ClusterUnavailableError("cluster engine unavailable") from exc

    async def run_command(self, *args: str | int) -> object:
        client = self._read_client()
        try:
            return await client.execute_command(*args)  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            raise ClusterUnavailableError("cluster engine unavailable") from exc

    def _read_client(self) -> aioredis.Redis:
        if not self.ready or self._client is None:
            raise ClusterUnavailableError("cluster engine unavailable")
        return self._client

    # -- connection, registration, heartbeats -------------------------------------------------

    def _set_state(self, state: EngineState) -> None:
        if state is self.state:
            return
        self.state = state
        if state is EngineState.READY:
            self._ready.set()
        else:
            self._ready.clear()
        for listener in self._listeners:
            try:
                listener(state)
            except Exception:
                log.exception("redis engine: a state listener failed")

    async def _run(self) -> None:
        """Connect, serve until the connection fails, back off, start over; until closed."""
        settings = self.settings
        while not self._closed:
            connections: list[AbstractConnection] = []
            tasks: list[asyncio.Task[None]] = []
            again = False
            try:
                await self._serve(connections, tasks)
            except Superseded:
                if self._closing:
                    break
                log.warning(
                    "redis engine: node %s was declared dead (no heartbeat for %.0f s): "
                    "registering again",
                    self.node_id,
                    settings.node_ttl_seconds,
                )
                self._lost_at = time.monotonic()
                self._set_state(EngineState.CONNECTING)
                again = True
            except (RedisError, OSError, TimeoutError, ClusterUnavailableError) as exc:
                self._lost(exc)
            finally:
                await self._teardown(connections, tasks)
            if not again and not self._closed:
                await asyncio.sleep(self._backoff * random.uniform(0.5, 1.0))
                self._backoff = min(self._backoff * 2, settings.reconnect_max_seconds)

    @property
    def _closed(self) -> bool:
        return self._closing or self.state is EngineState.CLOSED

    def _lost(self, exc: BaseException) -> None:
        """Log the loss once (not every failed attempt after it) and say so in the state."""
        if self._closing:
            return
        if not self._lost_at:
            log.log(
                logging.WARNING if self._incarnation.epoch else logging.INFO,
                "redis engine: %s unavailable (%s): local delivery only, retrying",
                _safe_url(self.settings.url),
                _reason(exc),
            )
            self._lost_at = time.monotonic()
            if self._incarnation.epoch:
                self.stats.outages += 1
        self._set_state(EngineState.DEGRADED)

    async def _serve(
        self, connections: list[AbstractConnection], tasks: list[asyncio.Task[None]]
    ) -> None:
        for role in ("pub", "sub", "rep"):
            conn = self._link(role)
            connections.append(conn)
            async with asyncio.timeout(self.settings.timeout_seconds):
                await conn.connect()  # type: ignore[no-untyped-call]
        writer_conn, subscriber_conn, _ = connections
        async with asyncio.timeout(self.settings.timeout_seconds):
            await self._prepare(writer_conn)
        subscriber = self._subscriber
        subscriber.sharded = self._publish == b"SPUBLISH"
        subscriber.want(self._node_channel)
        tasks.append(asyncio.create_task(subscriber.run(subscriber_conn), name="subscriber"))
        await self._race(subscriber.settled(), tasks)
        held = self._register()
        tasks.append(asyncio.create_task(self._writer.run(writer_conn), name="writer"))
        tasks.append(asyncio.create_task(self._replicate(connections, 2), name="replica writer"))
        await self._race(self._writer.wait(self._writer.last), tasks)
        await self._race(self._await_known_nodes(), tasks)
        self._set_state(EngineState.READY)
        self._backoff = self.settings.reconnect_min_seconds
        self._announce_ready(held)
        tasks.append(asyncio.create_task(self._heartbeat(), name="heartbeat"))
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            _named(task)
            task.result()
        raise ConnectionError("a redis connection task ended")

    def _link(self, role: str) -> AbstractConnection:
        """A new, unconnected connection of the node's, named for its ``role``."""
        assert self._pool is not None
        kwargs = {**self._pool.connection_kwargs, "socket_timeout": None}
        return self._pool.connection_class(
            **{**kwargs, "client_name": f"hubbub:{self.node_id}:{role}"}
        )

    async def _replicate(self, connections: list[AbstractConnection], index: int) -> None:
        """Write session replicas over ``connections[index]``.

        A replica batch that fails or takes longer than ``timeout_seconds`` (Redis or the node
        too busy to keep up with replication) drops the replica writes queued and goes on over
        a new connection: sessions are replicated best-effort (a session restored later finds
        an older state), and publications, the registry and the heartbeat, on links of their
        own, are what say whether Redis itself is lost. A new connection that cannot be made
        ends the link, and with it the engine's connection (Redis is gone then).
        """
        while True:
            try:
                await self._replica_writer.run(connections[index])
            except (RedisError, OSError, TimeoutError) as exc:
                dropped = self._replica_writer.fail(
                    ClusterUnavailableError("session replica writes dropped")
                )
                self.stats.replica_drops += dropped
                log.warning(
                    "redis engine: session replication fell behind (%s): %d replica writes "
                    "dropped, going on over a new connection",
                    _reason(exc),
                    dropped,
                )
            await connections[index].disconnect(nowait=True)
            conn = connections[index] = self._link("rep")
            async with asyncio.timeout(self.settings.timeout_seconds):
                await conn.connect()  # type: ignore[no-untyped-call]

    async def _prepare(self, conn: AbstractConnection) -> None:
        """Learn what the server is and can do; load the scripts."""
        info = await server_info(conn, self.settings.sharded, [s.text for s in SCRIPTS.all()])
        self._publish = b"SPUBLISH" if info.sharded else b"PUBLISH"
        self._sharded = b"1" if info.sharded else b"0"
        self.server = str(info)

    def _register(self) -> int:
        """Queue a new incarnation's registration (registry writes open again with it)."""
        member = self._member
        return self._incarnation.renew(
            self._writer,
            self._reopen,
            self.registry_write,
            member.inventory() if member is not None else (),
        )

    def _reopen(self) -> None:
        self._accepting = True

    def _announce_ready(self, held: int) -> None:
        if self._lost_at:
            log.info(
                "redis engine: back after %.1f s (%s): %d channels subscribed, %d connections "
                "re-registered",
                time.monotonic() - self._lost_at,
                self.server,
                len(self._subscriber.wanted),
                held,
            )
            self.stats.reregistered += held
        else:
            log.info(
                "redis engine: node %s on %s (%s)",
                self.node_id,
                _safe_url(self.settings.url),
                self.server,
            )
        self._lost_at = 0.0
        self._drop_logged = False

    async def _race(self, awaitable: Awaitable[object], tasks: list[asyncio.Task[None]]) -> None:
        """Await ``awaitable`` unless a connection task fails first (then raise its error)."""
        step = asyncio.ensure_future(awaitable)
        done, _ = await asyncio.wait(
            [step, *tasks],
            timeout=self.settings.node_ttl_seconds + self.settings.timeout_seconds,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if step in done:
            step.result()
            return
        step.cancel()
        for task in done:
            _named(task)
            task.result()
        raise TimeoutError("redis did not answer while connecting")

    async def _await_known_nodes(self) -> None:
        client = self._client
        assert client is not None  # not ready yet: no run_command

        async def members() -> object:
            return await client.execute_command("ZRANGE", self.names.nodes, 0, -1)  # type: ignore[no-untyped-call]

        await self._incarnation.await_known(members, self.settings.node_ttl_seconds)

    async def _heartbeat(self) -> None:
        settings = self.settings
        while True:
            await asyncio.sleep(settings.heartbeat_seconds)
            if self._closing:  # leaving: a beat now would find the node gone and re-register
                await asyncio.get_running_loop().create_future()  # until cancelled
            for member in await self._incarnation.beat(self.run_script):
                if await self._incarnation.reap(self.run_script, member):
                    self.stats.reaped += 1
            silent = time.monotonic() - self._subscriber.last_pong
            if silent > settings.heartbeat_seconds + settings.timeout_seconds:
                raise TimeoutError(f"the subscriber connection was silent for {silent:.1f} s")
            await self._subscriber.ping()

    async def _teardown(
        self, connections: list[AbstractConnection], tasks: list[asyncio.Task[None]]
    ) -> None:
        self._accepting = False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        error = ClusterUnavailableError("cluster engine unavailable")
        self._writer.fail(error)
        self._replica_writer.fail(error)
        self._subscriber.detach()
        for request in self._requests.values():
            request.fail(error)
        self._requests.clear()
        for conn in connections:
            await conn.disconnect(nowait=True)
        if self._pool is not None:
            await self._pool.disconnect()
