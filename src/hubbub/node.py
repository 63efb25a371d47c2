"""The node: the connections of one process, their lifecycle, and the engine they meet through.

The transport hands the node each connection (:meth:`Node.connect`, :meth:`Node.resume`), its
messages (:meth:`Node.handle_client_message`, executed by :class:`hubbub.client.ClientHandler`)
and the end of its socket (:meth:`Node.socket_closed`). The node keeps reliable sessions
through dropped sockets (the timers; the session itself is a pure state machine), and is the
one membership seam: every join, leave, open and close passes through :meth:`Node.register`,
:meth:`Node.unregister`, :meth:`Node.join` and :meth:`Node.leave`, which tell the engine.
Publications, commands and queries come back from the engine
(:class:`hubbub.broker.base.BrokerHandler`) and are delivered by :mod:`hubbub.core.fanout`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import msgspec
import orjson

from hubbub.broker.base import Broker, Interest, Presence
from hubbub.broker.memory import MemoryPresence
from hubbub.broker.redis_registry import Holding
from hubbub.broker.redis_sessions import ReplicatedSession
from hubbub.broker.redis_types import EngineState
from hubbub.client import ClientHandler
from hubbub.closecodes import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    REASON_NOT_RECOVERABLE,
    REASON_REPLACED,
    REASON_SERVICE_RELOAD,
    REASON_SESSION_EXPIRED,
)
from hubbub.config import Config
from hubbub.core.apply import apply_command, apply_query
from hubbub.core.commands import (
    CloseConnections,
    Command,
    GrantPermission,
    Publication,
    Query,
    RevokePermission,
    Target,
)
from hubbub.core.expiring import attach_live, deliver_expiring
from hubbub.core.fanout import deliver_publication, send_message, targets
from hubbub.core.outlet import Outlet, SequencedFrames, SharedFrames
from hubbub.core.roles import RoleSet
from hubbub.core.state import Connection, ConnectionSnapshot, HubRegistry
from hubbub.errors import ClusterUnavailableError
from hubbub.events import ConnectDecision, ConnectRequest, EventDispatcher
from hubbub.metrics import CONNECTIONS, CONNECTIONS_CLOSED, CONNECTIONS_OPENED, DELIVERIES
from hubbub.protocol.codec import Codec
from hubbub.protocol.messages import ClientMessage, ConnectedMessage, DisconnectedMessage
from hubbub.protocol.registry import codec_for
from hubbub.protocol.reliable import SessionReplica, SessionState
from hubbub.protocol.tokens import reconnection_token, verify_reconnection_token
from hubbub.types import ConnectionId, GroupName, HubName, UserId
from hubbub.upstream import Upstream

if TYPE_CHECKING:
    from hubbub.broker.redis import RedisBroker

__all__ = ["Node"]

log = logging.getLogger("hubbub.node")


class Node:
    """One process's share of the service."""

    def __init__(
        self,
        config: Config,
        broker: Broker,
        upstream: Upstream | None = None,
        hubs: HubRegistry | None = None,
        presence: Presence | None = None,
        cluster: RedisBroker | None = None,
    ) -> None:
        self.config = config
        self.broker = broker
        self.events = EventDispatcher(upstream)
        self.hubs = hubs if hubs is not None else HubRegistry()
        if presence is None:
            presence = cluster.presence if cluster is not None else MemoryPresence(self.hubs)
        self.presence: Presence = presence
        """The cluster-wide registry the membership seam writes to (memory: the hub state)."""
        self.client = ClientHandler(self, broker, self.events, self.hubs)
        self._expiry: dict[ConnectionId, asyncio.TimerHandle] = {}
        self.on_ended: list[Callable[[Connection], None]] = []
        """Called with each connection once it is over (its place in the limits is given back)."""
        self._recovery_keys = config.access_keys
        """Keys a reconnection token may be signed with: every key this process signed with."""
        self.cluster = cluster
        """The Redis engine when this node is one of a cluster (sessions move between nodes)."""
        self._drained: asyncio.Event | None = None
        """Set when the last connection left, while :meth:`hand_over_sessions` waits."""
        self._untold = MemoryPresence(self.hubs)
        """Writes nothing: what a connection another node took over leaves with."""
        self.replicating = cluster is not None and config.session_replication
        """Reliable sessions are copied to Redis as they change (restored if this node dies)."""
        if self.replicating:
            self.client.on_sequence_ack = self._replica_acked
            self.client.on_ack_remembered = self._replica_ack_remembered
        if cluster is not None:
            cluster.on_state_change(self._engine_state)

    def update(self, config: Config) -> None:
        """Take a reloaded configuration; open connections stay.

        New client tokens must be signed with one of its keys; the hub settings (anonymous
        connect, keep-alive, session timeout) apply to what happens from now on. A reliable
        session's reconnection token stays good whatever key signed it: it was this process's
        to give, and rotating a key must not break the sessions open across the rotation.
        """
        self.config = config
        self._recovery_keys = tuple(dict.fromkeys(config.access_keys + self._recovery_keys))

    @staticmethod
    def new_connection_id() -> ConnectionId:
        """An opaque, URL-safe, unique connection id."""
        return ConnectionId(secrets.token_urlsafe(16))

    async def connect_event(
        self, hub: HubName, connection_id: ConnectionId, request: ConnectRequest
    ) -> ConnectDecision:
        """Run the hub's ``connect`` event, if it has a handler for it (upstream.md §5.1).

        Raises:
            HandshakeError: the handler refused (its 4xx status) or failed (500).
        """
        return await self.events.connect(hub, connection_id, request)

    # -- connection lifecycle -----------------------------------------------------------------

    def connect(
        self,
        hub_name: HubName,
        user_id: UserId | None,
        roles: Iterable[str],
        groups: Iterable[GroupName],
        codec: Codec,
        outlet: Outlet,
        *,
        connection_id: ConnectionId | None = None,
        subprotocol: str | None = None,
        state: str | None = None,
    ) -> Connection:
        """Register a connection whose handshake succeeded and greet it with ``connected``."""
        connection_id = connection_id or self.new_connection_id()
        connection = Connection(
            id=connection_id,
            hub=hub_name,
            user_id=user_id,
            roles=RoleSet.parse(roles),
            codec=codec,
            outlet=outlet,
            subprotocol=subprotocol,
            state=state,
        )
        self.register(connection)
        if self.replicating and connection.session is not None:
            self._replicate(connection)
        for group in groups:
            self.join(connection, group)
        token = None
        if codec.reliable:
            token = reconnection_token(self.config.access_keys[0], connection_id)
        send_message(connection, ConnectedMessage(connection_id, user_id, token))
        CONNECTIONS.inc()
        CONNECTIONS_OPENED.inc()
        self.events.notify(connection, "connected", b"{}")
        log.debug("connected %s hub=%s user=%s", connection_id, hub_name, user_id)
        return connection

    async def subscribe_ahead(
        self, hub: HubName, user_id: UserId | None, groups: Iterable[GroupName]
    ) -> None:
        """In a cluster: subscribe the interests of a connection about to open, in effect
        before its client learns it is connected (a plain client learns it from the
        upgrade), so a send from another node right after reaches it. Nothing on one node."""
        if self.cluster is None:
            return
        for interest in _interests(hub, user_id, groups):
            self.broker.subscribe(interest)
        await self.broker.sync()

    def release_ahead(
        self, hub: HubName, user_id: UserId | None, groups: Iterable[GroupName]
    ) -> None:
        """The connection of :meth:`subscribe_ahead` did not open: drop what nobody holds."""
        if self.cluster is None:
            return
        state = self.hubs.get(hub)
        for interest in _interests(hub, user_id, groups):
            if state is None:
                held = False
            elif interest.target is Target.HUB:
                held = bool(state.connections)
            elif interest.target is Target.USER:
                held = interest.name in state.users
            else:
                held = interest.name in state.groups
            if not held:
                self.broker.unsubscribe(interest)

    # -- the membership seam: every membership change of any origin passes here ---------------
    #
    # Only these four methods touch Hub.add/remove/join/leave. Each tells presence, and the
    # broker about interest: subscribe on the first local connection of a hub, a user or a
    # group, unsubscribe on the last. Callers that answer somebody await ``broker.sync()``
    # first (a client's join before its ack, a command before its count).

    def register(self, connection: Connection) -> None:
        """Add a connection that completed its handshake to its hub."""
        hub = self.hubs.ensure(connection.hub)
        hub.add(connection)
        user_id = connection.user_id
        self.presence.add_connection(hub.name, connection.id, user_id)
        if len(hub.connections) == 1:
            self.broker.subscribe(Interest(hub.name, Target.HUB, ""))
        if user_id is not None and len(hub.users[user_id]) == 1:
            self.broker.subscribe(Interest(hub.name, Target.USER, user_id))

    def unregister(self, connection: Connection) -> None:
        """Take a connection out of every group and of its hub; again: nothing happens."""
        hub = self.hubs.get(connection.hub)
        if hub is None or hub.connections.get(connection.id) is not connection:
            return
        for group in list(connection.groups):
            self.leave(connection, group)
        hub.remove(connection.id)
        user_id = connection.user_id
        self.presence.remove_connection(hub.name, connection.id, user_id)
        if user_id is not None and user_id not in hub.users:
            self.broker.unsubscribe(Interest(hub.name, Target.USER, user_id))
        if hub.is_empty():
            self.broker.unsubscribe(Interest(hub.name, Target.HUB, ""))
            self.hubs.release(hub)
            if self._drained is not None and not self.hubs.connection_count():
                self._drained.set()

    def join(self, connection: Connection, group: GroupName, *, announce: bool = True) -> bool:
        """Add a registered connection to a group; False when a member already, or gone.

        ``announce=False``: no ``joined`` event (a session taken over from another node)."""
        hub = self.hubs.get(connection.hub)
        if hub is None or hub.connections.get(connection.id) is not connection:
            return False  # closed meanwhile (a client's join may race a REST close)
        if not hub.join(connection, group):
            return False
        self.presence.join(hub.name, group, connection.id)
        if len(hub.groups[group]) == 1:
            self.broker.subscribe(Interest(hub.name, Target.GROUP, group))
        if announce:
            self.client.joined(connection, group)
        if connection.session is not None and self.replicating:
            self._save_replica(connection)
        return True

    def leave(self, connection: Connection, group: GroupName) -> bool:
        """Remove a connection from a group; False when it was not a member."""
        hub = self.hubs.get(connection.hub)
        if hub is None or not hub.leave(connection, group):
            return False
        self.presence.leave(hub.name, group, connection.id)
        if group not in hub.groups:
            self.broker.unsubscribe(Interest(hub.name, Target.GROUP, group))
        self.client.left(connection, group)
        if connection.session is not None and self.replicating and not connection.ended:
            self._save_replica(connection)
        return True

    # -- reliable sessions (client-protocols.md §4) --------------------------------------------

    def socket_closed(self, connection: Connection, outlet: Outlet, close_code: int | None) -> None:
        """The socket behind ``outlet`` is gone: keep a recoverable session, else end it.

        A session survives a dropped socket when it is reliable, the service did not close it,
        its buffer is within limits and the client did not close with 1000.
        """
        if connection.outlet is not outlet:
            return  # a recovery already moved the session to a newer socket
        session = connection.session
        recoverable = (
            session is not None
            and session.recoverable
            and connection.close_reason is None
            and close_code != CLOSE_NORMAL
            and connection.id in self._hub_connections(connection.hub)
        )
        if not recoverable or session is None:
            self.disconnect(connection)
            return
        connection.outlet = _Detached(self, connection)
        loop = asyncio.get_running_loop()
        timeout = self.config.session_timeout_seconds
        session.detach(loop.time(), timeout)
        self._expiry[connection.id] = loop.call_later(timeout, self._expire, connection)
        if self.replicating and self.cluster is not None:
            self.cluster.sessions.detached(connection.hub, connection.id, int(timeout * 1000))
        log.debug("session %s detached, kept %.0f s", connection.id, timeout)

    def _hub_connections(self, hub: HubName) -> dict[ConnectionId, Connection]:
        state = self.hubs.get(hub)
        return state.connections if state is not None else {}

    def _expire(self, connection: Connection) -> None:
        self._expiry.pop(connection.id, None)
        session = connection.session
        if session is None or session.state is not SessionState.DETACHED:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not session.expired(now) and session.expires_at is not None:
            # A timer may fire a little early (the loop's clock resolution): wait the rest.
            delay = session.expires_at - now
            self._expiry[connection.id] = loop.call_later(delay, self._expire, connection)
            return
        connection.close_reason = connection.close_reason or REASON_SESSION_EXPIRED
        self.disconnect(connection)

    def find_session(self, hub: HubName, connection_id: str, token: str) -> Connection | None:
        """The reliable session a recovery request names, if its token is right."""
        if not verify_reconnection_token(token, self._recovery_keys, connection_id):
            return None
        connection = self._hub_connections(hub).get(ConnectionId(connection_id))
        if connection is None or connection.session is None or connection.close_reason:
            return None
        return connection

    def resume(self, connection: Connection, outlet: Outlet) -> None:
        """Move a session to a new socket and resend every unacknowledged frame in order.

        A session that ended or overflowed since :meth:`find_session` found it (while the new
        socket was being upgraded) is refused as :meth:`find_session` would have: 1008.
        """
        session = connection.session
        if connection.ended or session is None or not session.recoverable:
            outlet.close(CLOSE_POLICY_VIOLATION, REASON_NOT_RECOVERABLE)
            return
        handle = self._expiry.pop(connection.id, None)
        if handle is not None:
            handle.cancel()
        previous = connection.outlet
        connection.outlet = outlet
        if not isinstance(previous, _Detached):
            previous.close(CLOSE_NORMAL, REASON_REPLACED)
        frames = attach_live(connection, session, time.monotonic())  # without expired copies
        for frame in frames:
            outlet.send(frame)
        if self.replicating and self.cluster is not None:
            self.cluster.sessions.attached(connection.hub, connection.id)
        log.debug("session %s resumed, %d frames resent", connection.id, len(frames))

    def disconnect(self, connection: Connection) -> None:
        """End a connection's session, once; tell the ``disconnected`` handler why."""
        if connection.ended:
            return
        connection.ended = True
        if connection.session is not None:
            connection.session.end()
            if self.replicating and self.cluster is not None:
                self.cluster.sessions.drop(connection.hub, connection.id)
        handle = self._expiry.pop(connection.id, None)
        if handle is not None:
            handle.cancel()
        CONNECTIONS.dec()
        CONNECTIONS_CLOSED.inc()
        self.client.ending(connection)
        self.events.notify(
            connection, "disconnected", orjson.dumps({"reason": connection.close_reason})
        )
        self.unregister(connection)
        for ended in self.on_ended:
            ended(connection)
        log.debug("disconnected %s hub=%s", connection.id, connection.hub)

    # -- client messages ----------------------------------------------------------------------

    async def handle_client_message(self, connection: Connection, message: ClientMessage) -> None:
        """Execute one client message and answer it (see :class:`hubbub.client.ClientHandler`)."""
        await self.client.handle(connection, message)

    async def handle_client_frame(self, connection: Connection, data: bytes, binary: bool) -> None:
        """Decode one client frame and execute it (:meth:`ClientHandler.handle_frame`)."""
        await self.client.handle_frame(connection, data, binary)

    # -- BrokerHandler: publications ----------------------------------------------------------

    def handle_publication(self, publication: Publication) -> None:
        """Deliver a publication to the local connections it targets."""
        if publication.expires_at is not None:
            DELIVERIES.inc(deliver_expiring(self.hubs, publication))
            return
        DELIVERIES.inc(deliver_publication(self.hubs, publication))

    def shut_down(self) -> int:
        """Close every connection of this node, which is stopping; returns how many.

        Each gets ``disconnected`` with Azure's maintenance reason, then a 1001 close: the SDKs
        reconnect (reliable ones first try to recover, which a restarted node refuses with 1008).
        Sessions waiting for a recovery end too.
        """
        count = 0
        for hub in self.hubs:
            kept = self._kept_through_shut_down(hub.connections.values())
            count += apply_command(
                self.hubs,
                self,
                CloseConnections(
                    hub.name,
                    Target.HUB,
                    "",
                    REASON_SERVICE_RELOAD,
                    excluded=frozenset(c.id for c in kept),
                    code=CLOSE_GOING_AWAY,
                ),
            )
            for connection in kept:
                send_message(connection, DisconnectedMessage(REASON_SERVICE_RELOAD))
                connection.outlet.close(CLOSE_GOING_AWAY, REASON_SERVICE_RELOAD)
                count += 1
        return count

    def _kept_through_shut_down(self, connections: Iterable[Connection]) -> list[Connection]:
        """In a cluster, the reliable sessions a stopping node keeps (their sockets closed)
        for :meth:`hand_over_sessions`: the clients recover them on other nodes."""
        if self.cluster is None:
            return []
        return [
            c
            for c in connections
            if c.session is not None and c.session.recoverable and c.close_reason is None
        ]

    async def hand_over_sessions(self, seconds: float) -> int:
        """After :meth:`shut_down` in a cluster: wait up to ``seconds`` while the clients of
        the kept sessions recover them on other nodes (each handed over from here), then end
        those left. Returns how many were handed over."""

        def held() -> list[Connection]:
            return [c for hub in self.hubs for c in hub.connections.values()]

        before = len(held())
        if before:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), seconds)
            except TimeoutError:
                pass
            finally:
                self._drained = None
        left = held()
        for connection in left:
            connection.close_reason = connection.close_reason or REASON_SERVICE_RELOAD
            self.disconnect(connection)
        if before:
            log.info("sessions handed over to other nodes: %d of %d", before - len(left), before)
        return before - len(left)

    # -- BrokerHandler: commands --------------------------------------------------------------

    async def handle_command(self, command: Command) -> int:
        """Apply a cluster-wide command to the local connections; what it changed is in
        effect in the engine when this returns."""
        count = apply_command(self.hubs, self, command)
        if self.replicating and isinstance(command, (GrantPermission, RevokePermission)):
            connection = self._hub_connections(command.hub).get(command.connection_id)
            if connection is not None and connection.session is not None:
                self._save_replica(connection)
        await self.broker.sync()
        return count

    async def handle_query(self, query: Query) -> bool:
        """Answer a question about a local connection."""
        return apply_query(self.hubs, query)

    # -- the cluster: ClusterMember and SessionOwner of hubbub.broker.redis_types --------------

    def holds(self, hub: HubName, connection_id: ConnectionId) -> bool:
        """True when the connection (or its detached session) is on this node."""
        return connection_id in self._hub_connections(hub)

    def inventory(self) -> list[Holding]:
        """Every connection held, with its user and groups (re-registered after an outage)."""
        return [
            Holding(hub.name, c.id, c.user_id, sorted(c.groups))
            for hub in self.hubs
            for c in hub.connections.values()
        ]

    def disowned(self, hub: HubName, connection_id: ConnectionId) -> None:
        """Another node took the connection over while this one was cut off from Redis: drop
        it here without telling the registry (the entry is the other node's now)."""
        connection = self._hub_connections(hub).get(connection_id)
        if connection is None:
            return
        log.info("connection %s was taken over by another node: closed here", connection_id)
        self._let_go(connection)
        connection.outlet.close(CLOSE_NORMAL, REASON_REPLACED)

    async def hand_over(self, hub: HubName, connection_id: ConnectionId) -> bytes | None:
        """Stop serving a reliable session here and return its snapshot (msgpack) for the
        node its client reconnected to; None when there is none to hand over."""
        connection = self._hub_connections(hub).get(connection_id)
        session = connection.session if connection is not None else None
        if connection is None or session is None or connection.ended or not session.recoverable:
            return None
        snapshot = msgspec.msgpack.encode(connection.snapshot())
        outlet = connection.outlet
        self._let_go(connection, tell=True)
        outlet.close(CLOSE_NORMAL, REASON_REPLACED)
        await self.broker.sync()  # the registry shows it gone before the new owner adds it
        log.debug("session %s handed over", connection_id)
        return snapshot

    def _let_go(self, connection: Connection, *, tell: bool = False) -> None:
        """End a connection here without ``disconnected`` or ``left`` events: it lives on
        elsewhere. ``tell``: the registry hears of it (a hand-over), else not (disowned)."""
        connection.ended = True
        handle = self._expiry.pop(connection.id, None)
        if handle is not None:
            handle.cancel()
        session = connection.session
        if session is not None:
            session.replica = None
            session.end()
        CONNECTIONS.dec()
        CONNECTIONS_CLOSED.inc()  # closed here: opened again on the node that takes it
        self.client.streams.ended(connection)
        presence = self.presence
        if not tell:
            self.presence = self._untold
        try:
            self.unregister(connection)
        finally:
            self.presence = presence

    async def recover_session(
        self, hub: HubName, connection_id: str, token: str
    ) -> Connection | None:
        """The reliable session a recovery request names, here or, in a cluster, taken over
        from the node that holds it (handed over when it is alive, restored from the
        replica in Redis when it died); None when there is none (the client gets 1008)."""
        connection = self.find_session(hub, connection_id, token)
        if connection is not None or self.cluster is None:
            return connection
        if not verify_reconnection_token(token, self._recovery_keys, connection_id):
            return None
        cid = ConnectionId(connection_id)
        try:
            # The session's interests are subscribed here before its owner gives it up, and
            # what comes for them meanwhile is kept: nothing sent to its user, groups or hub
            # during the hand-over is lost (``transfer.missed``, delivered below).
            presence = self.cluster.presence
            user_id = await presence.connection_user(hub, cid)
            groups = await presence.connection_groups(hub, cid)
            watch = _interests(hub, user_id, groups)
            for interest in watch:
                self.broker.subscribe(interest)
        except ClusterUnavailableError:
            log.warning("session %s: the cluster is unavailable, not recovered", cid)
            return None
        try:
            return await self._take_session(hub, cid, token, watch)
        finally:
            self.release_ahead(hub, user_id, groups)  # those the session did not take

    async def _take_session(
        self, hub: HubName, cid: ConnectionId, token: str, watch: list[Interest]
    ) -> Connection | None:
        assert self.cluster is not None
        try:
            transfer = await self.cluster.take_session(hub, cid, watch)
        except ClusterUnavailableError:
            log.warning("session %s: the cluster is unavailable, not recovered", cid)
            return None
        snapshot: ConnectionSnapshot | None = None
        if transfer.snapshot is not None:
            snapshot = msgspec.msgpack.decode(transfer.snapshot, type=ConnectionSnapshot)
            how = "handed over"
        elif transfer.replica is not None:
            snapshot = _replica_snapshot(transfer.replica)
            how = "restored from its replica"
        if snapshot is None or snapshot.hub != hub or snapshot.id != cid:
            return None
        if cid in self._hub_connections(hub):
            return self.find_session(hub, cid, token)  # recovered here meanwhile
        connection = self._adopt(snapshot)
        if connection is None:
            log.info("session %s %s, but it is not recoverable", cid, how)
            return None
        for publication in transfer.missed:
            self._deliver_to(connection, publication)
        await self.broker.sync()  # subscribed and registered before the client is resumed
        log.info("session %s %s", cid, how)
        return connection

    def _deliver_to(self, connection: Connection, publication: Publication) -> None:
        """Deliver a publication to one of its local targets only (the others had it)."""
        hub = self.hubs.get(connection.hub)
        if hub is None:
            return
        others = [
            c.id for c in targets(hub, publication.target, publication.name) if c is not connection
        ]
        if others:
            excluded = publication.excluded.union(others)
            publication = msgspec.structs.replace(publication, excluded=excluded)
        self.handle_publication(publication)

    def _adopt(self, snapshot: ConnectionSnapshot) -> Connection | None:
        """Register a connection taken over from another node; its session waits for its
        socket as a detached one (:meth:`resume` attaches it). None: its session cannot be
        recovered (ended, over its limits, or a replica missing too much)."""
        connection = Connection.restore(snapshot, codec_for(snapshot.subprotocol), _NoOutlet())
        if connection.session is None or not connection.session.recoverable:
            if self.replicating and self.cluster is not None:
                self.cluster.sessions.drop(connection.hub, connection.id)
            return None
        connection.outlet = _Detached(self, connection)
        self.register(connection)
        if self.replicating and connection.session is not None:
            self.cluster.sessions.drop(connection.hub, connection.id)  # type: ignore[union-attr]
            self._replicate(connection)
            for sequence_id, frame in connection.session.snapshot().unacked:
                self.cluster.sessions.push(connection.hub, connection.id, sequence_id, frame)  # type: ignore[union-attr]
        for group in snapshot.groups:
            self.join(connection, group, announce=False)
        CONNECTIONS.inc()
        CONNECTIONS_OPENED.inc()
        session = connection.session
        assert session is not None
        loop = asyncio.get_running_loop()
        timeout = self.config.session_timeout_seconds
        if session.state is SessionState.ATTACHED:
            session.detach(loop.time(), timeout)
        else:
            session.expires_at = loop.time() + timeout
        self._expiry[connection.id] = loop.call_later(timeout, self._expire, connection)
        return connection

    # -- session replication ------------------------------------------------------------------

    def _replicate(self, connection: Connection) -> None:
        """Copy every reliable delivery of ``connection`` to Redis from now on."""
        session = connection.session
        assert session is not None and self.cluster is not None
        sessions = self.cluster.sessions
        session.replica = SessionReplica(
            connection.id,
            functools.partial(sessions.push, connection.hub, connection.id),
            functools.partial(sessions.push_shared, connection.hub),
        )
        self._save_replica(connection)

    def _save_replica(self, connection: Connection) -> None:
        """Store what a restore needs besides the frames (id, user, roles, groups, grants)."""
        if self.cluster is None:
            return
        data = msgspec.msgpack.encode(connection.snapshot(frames=False))
        self.cluster.sessions.save(connection.hub, connection.id, data)

    def _engine_state(self, state: EngineState) -> None:
        """Back on Redis (after start-up or an outage): the replicas are written anew, since
        what was queued while it was away was dropped (and a restarted Redis has none)."""
        if state is EngineState.READY and self.replicating:
            count = self._rewrite_replicas()
            if count:
                log.info("session replicas written again: %d", count)

    def _rewrite_replicas(self) -> int:
        assert self.cluster is not None
        sessions = self.cluster.sessions
        count = 0
        for hub in self.hubs:
            for connection in list(hub.connections.values()):
                session = connection.session
                if session is None or connection.ended:
                    continue
                sessions.drop(hub.name, connection.id)
                self._save_replica(connection)
                for sequence_id, frame in session.snapshot().unacked:
                    sessions.push(hub.name, connection.id, sequence_id, frame)
                if session.state is SessionState.DETACHED and session.expires_at is not None:
                    left = session.expires_at - asyncio.get_running_loop().time()
                    sessions.detached(hub.name, connection.id, max(1, int(left * 1000)))
                count += 1
        return count

    def _replica_ack_remembered(self, connection: Connection) -> None:
        """A client message's ackId is remembered (a retry of it is a ``Duplicate``): so is
        it in the replica."""
        if connection.session is not None and not connection.ended:
            self._save_replica(connection)

    def _replica_acked(self, connection: Connection, sequence_id: int) -> None:
        if self.cluster is not None and not connection.ended:
            self.cluster.sessions.acked(connection.hub, connection.id, sequence_id)


def _interests(hub: HubName, user_id: UserId | None, groups: Iterable[GroupName]) -> list[Interest]:
    """What a connection of ``user_id`` in ``groups`` makes its node subscribe."""
    interests = [Interest(hub, Target.HUB, "")]
    if user_id is not None:
        interests.append(Interest(hub, Target.USER, user_id))
    interests += [Interest(hub, Target.GROUP, group) for group in groups]
    return interests


RESTORE_SKIP = 64
"""Sequence ids a session restored from its replica skips before its next message: more than
a node delivers to one session in a replica batch window (the clients accept gaps)."""


def _replica_snapshot(replica: ReplicatedSession) -> ConnectionSnapshot | None:
    """A replicated session as a snapshot: its stored state and its unacked frames."""
    try:
        snapshot = msgspec.msgpack.decode(replica.snapshot, type=ConnectionSnapshot)
    except msgspec.DecodeError:
        log.warning("a replicated session could not be decoded")
        return None
    reliable = snapshot.reliable
    if reliable is None:
        return None
    frames = tuple(replica.frames)
    # The client may have got frames whose replica writes were lost with the node (the last
    # batch window): new messages skip past them, or the client would drop those as repeats.
    next_id = max(reliable.next_sequence_id, replica.last_sequence_id + 1) + RESTORE_SKIP
    reliable = msgspec.structs.replace(reliable, unacked=frames, next_sequence_id=next_id)
    return msgspec.structs.replace(snapshot, reliable=reliable)


class _NoOutlet:
    """Where a taken-over connection is before it has an outlet of its own."""

    def send(self, frame: bytes) -> None:
        pass

    def send_expiring(self, frame: bytes, deadline: float) -> None:
        pass

    def share(self, shared: SharedFrames) -> bool:
        return False

    def share_sequenced(self, frames: SequencedFrames, first: int) -> bool:
        return False

    def close(self, code: int, reason: str) -> None:
        pass


class _Detached:
    """The outlet of a session whose socket dropped: frames wait in the reliable buffer."""

    __slots__ = ("_connection", "_node")

    def __init__(self, node: Node, connection: Connection) -> None:
        self._node = node
        self._connection = connection

    def send(self, frame: bytes) -> None:
        pass  # data frames are kept by the session; other frames are not replayed

    def send_expiring(self, frame: bytes, deadline: float) -> None:
        pass  # kept by the session, its deadline by the connection (``expiring``)

    def share(self, shared: SharedFrames) -> bool:
        return False  # a reliable session's frames are its own (sequence ids)

    def share_sequenced(self, frames: SequencedFrames, first: int) -> bool:
        return False  # kept by the session alone (pushed), resent when it is recovered

    def close(self, code: int, reason: str) -> None:
        # Deferred: this may be called from inside a fan-out over the session's groups.
        asyncio.get_running_loop().call_soon(self._node.disconnect, self._connection)
