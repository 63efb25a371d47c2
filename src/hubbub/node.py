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
import logging
import secrets
import time
from collections.abc import Callable, Iterable

import orjson

from hubbub.broker.base import Broker, Interest, Presence
from hubbub.broker.memory import MemoryPresence
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
from hubbub.core.commands import CloseConnections, Command, Publication, Query, Target
from hubbub.core.expiring import attach_live, deliver_expiring
from hubbub.core.fanout import deliver_publication, send_message
from hubbub.core.outlet import Outlet, SequencedFrames, SharedFrames
from hubbub.core.roles import RoleSet
from hubbub.core.state import Connection, HubRegistry
from hubbub.events import ConnectDecision, ConnectRequest, EventDispatcher
from hubbub.metrics import CONNECTIONS, CONNECTIONS_CLOSED, CONNECTIONS_OPENED, DELIVERIES
from hubbub.protocol.codec import Codec
from hubbub.protocol.messages import ClientMessage, ConnectedMessage
from hubbub.protocol.reliable import SessionState
from hubbub.protocol.tokens import reconnection_token, verify_reconnection_token
from hubbub.types import ConnectionId, GroupName, HubName, UserId
from hubbub.upstream import Upstream

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
    ) -> None:
        self.config = config
        self.broker = broker
        self.events = EventDispatcher(upstream)
        self.hubs = hubs if hubs is not None else HubRegistry()
        self.presence: Presence = presence if presence is not None else MemoryPresence(self.hubs)
        """The cluster-wide registry the membership seam writes to (memory: the hub state)."""
        self.client = ClientHandler(self, broker, self.events, self.hubs)
        self._expiry: dict[ConnectionId, asyncio.TimerHandle] = {}
        self.on_ended: list[Callable[[Connection], None]] = []
        """Called with each connection once it is over (its place in the limits is given back)."""
        self._recovery_keys = config.access_keys
        """Keys a reconnection token may be signed with: every key this process signed with."""

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

    def join(self, connection: Connection, group: GroupName) -> bool:
        """Add a registered connection to a group; False when a member already, or gone."""
        hub = self.hubs.get(connection.hub)
        if hub is None or hub.connections.get(connection.id) is not connection:
            return False  # closed meanwhile (a client's join may race a REST close)
        if not hub.join(connection, group):
            return False
        self.presence.join(hub.name, group, connection.id)
        if len(hub.groups[group]) == 1:
            self.broker.subscribe(Interest(hub.name, Target.GROUP, group))
        self.client.joined(connection, group)
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
        log.debug("session %s resumed, %d frames resent", connection.id, len(frames))

    def disconnect(self, connection: Connection) -> None:
        """End a connection's session, once; tell the ``disconnected`` handler why."""
        if connection.ended:
            return
        connection.ended = True
        if connection.session is not None:
            connection.session.end()
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
            count += apply_command(
                self.hubs,
                self,
                CloseConnections(
                    hub.name, Target.HUB, "", REASON_SERVICE_RELOAD, code=CLOSE_GOING_AWAY
                ),
            )
        return count

    # -- BrokerHandler: commands --------------------------------------------------------------

    async def handle_command(self, command: Command) -> int:
        """Apply a cluster-wide command to the local connections; what it changed is in
        effect in the engine when this returns."""
        count = apply_command(self.hubs, self, command)
        await self.broker.sync()
        return count

    async def handle_query(self, query: Query) -> bool:
        """Answer a question about a local connection."""
        return apply_query(self.hubs, query)


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
