"""The Web PubSub client endpoint: ``/client/hubs/{hub}`` and ``/client/?hub=``
(client-protocols.md §1).

Everything is decided before the upgrade (the network rules, hub, token, the connection
limits, subprotocol, the ``connect`` event, or the session a reconnecting client recovers), so a
refusal is a plain HTTP answer with the service's status (403 from a denied address — the
service's status for an upgrade is unconfirmed — and 429 over a connection limit, with no
``connect`` event). Then the upgraded-socket layer (:mod:`hubbub.server.socket`) takes the
connection over from aiohttp, and this module binds the socket to the node: each message is
checked against the connection's inbound limits (one that breaks them closes it), decoded with
the connection's codec and handed to the node, whose answers go out through the socket's
outlet.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from hubbub.closecodes import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_POLICY_VIOLATION,
    REASON_NOT_RECOVERABLE,
    REASON_THROTTLING,
)
from hubbub.core.acl import TrafficKind
from hubbub.core.names import validate_group, validate_hub
from hubbub.core.state import Connection
from hubbub.core.throttle import InboundGate
from hubbub.errors import BadRequestError, HandshakeError, OperationError, ProtocolError
from hubbub.events import ConnectRequest
from hubbub.limits import MAX_MESSAGE_BYTES
from hubbub.node import Node
from hubbub.policy import Policy
from hubbub.protocol.codec import KNOWN_SUBPROTOCOLS
from hubbub.protocol.messages import AckMessage
from hubbub.protocol.registry import codec_for
from hubbub.protocol.tokens import ClientClaims, TokenError, verify_client_token
from hubbub.server.errors import error_response
from hubbub.server.port import request_address
from hubbub.server.socket import Sockets, UpgradedSocket, port_of
from hubbub.server.tls import client_certificates
from hubbub.server.writer import CorkedOutlet
from hubbub.types import GroupName, HubName, UserId

if TYPE_CHECKING:
    from hubbub.server.port import Port

__all__ = ["MAX_MESSAGE_BYTES", "ClientEndpoint"]

log = logging.getLogger("hubbub.websocket")

STOPPING = "the service is shutting down"
"""The 503 answer to a handshake that meets a stopping node."""
SHUTDOWN_GRACE_SECONDS = 3.0
"""How long a stopping node waits for clients to answer its close frames."""


def select_subprotocol(offered: list[str]) -> str | None:
    """The first offered known subprotocol; else the first offered one, echoed (plain mode)."""
    for name in offered:
        if name in KNOWN_SUBPROTOCOLS:
            return name
    return offered[0] if offered else None


def _offered(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [p.strip() for p in header.split(",") if p.strip()]


def _connect_request(
    request: web.Request, claims: ClientClaims, offered: list[str]
) -> ConnectRequest:
    """The handshake as the ``connect`` event shows it: no token, no Authorization header; the
    TLS client certificate, when the client sent one."""
    query = [(k, v) for k, v in request.query.items() if k != "access_token"]
    headers = [(str(k), v) for k, v in request.headers.items() if k.lower() != "authorization"]
    transport = request.transport
    certificates = client_certificates(transport.get_extra_info("ssl_object")) if transport else []
    return ConnectRequest(claims, query, headers, offered, certificates)


def _token(request: web.Request) -> str | None:
    token = request.query.get("access_token")
    if token:
        return token
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class ClientEndpoint:
    """The aiohttp handler of Web PubSub client connections.

    Args:
        node: the node the connections belong to.
        sockets: the node's upgraded sockets (shared with any other protocol's endpoint).
        policy: the network rules and limits (None: none).
    """

    def __init__(self, node: Node, sockets: Sockets, policy: Policy | None = None) -> None:
        self._node = node
        self._sockets = sockets
        self._stopping = False
        self._policy = policy
        self._admitted: dict[Connection, _Admitted] = {}
        """Connections holding a place in the connection limits, until they end."""
        if policy is not None:
            node.on_ended.append(self._ended)

    def _ended(self, connection: Connection) -> None:
        admitted = self._admitted.pop(connection, None)
        if admitted is not None and self._policy is not None:
            self._policy.release_connection(connection.hub, admitted.user, admitted.token)

    def _refusal(self, request: web.Request, port: Port) -> HandshakeError | None:
        """404 on a listener that serves only REST, 403 from an address the network rules deny
        client connections (the service's status for an upgrade is unconfirmed)."""
        if not port.serves(TrafficKind.CLIENT):
            return HandshakeError("client connections are served on the other port", 404)
        policy = self._policy
        if policy is None or not policy.needs_address:
            return None
        denied = policy.check_network(TrafficKind.CLIENT, request_address(request, policy))
        return HandshakeError(denied.message, denied.status) if denied is not None else None

    def _hub(self, request: web.Request) -> HubName:
        raw = request.match_info.get("hub") or request.query.get("hub")
        if not raw:
            raise HandshakeError("the hub is missing", 400)
        try:
            return validate_hub(raw)
        except BadRequestError as exc:
            raise HandshakeError(str(exc), 400) from exc

    def _claims(self, request: web.Request, hub: HubName) -> ClientClaims:
        token = _token(request)
        settings = self._node.config.hub(hub)
        if token is None:
            if settings.anonymous_connect:
                return ClientClaims(None, (), ())
            raise HandshakeError("an access token is required", 401)
        try:
            claims = verify_client_token(token, self._node.config.access_keys, hub)
        except TokenError as exc:
            raise HandshakeError(str(exc), 401) from exc
        for group in claims.groups:
            try:
                validate_group(group)
            except BadRequestError as exc:
                raise HandshakeError("The token contains an invalid group name.", 400) from exc
        return claims

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Validate the handshake, upgrade, and bind the socket to the node."""
        port = port_of(request)
        if port is None:
            log.error("a client connection that did not come through hubbub's listener")
            return error_response(500, "internal server error")
        admitted: _Admitted | None = None
        hub: HubName | None = None
        try:
            if self._stopping:
                raise HandshakeError(STOPPING, 503)
            refused = self._refusal(request, port)
            if refused is not None:
                raise refused
            hub = self._hub(request)
            offered = _offered(request)
            if not web.WebSocketResponse(protocols=offered).can_prepare(request).ok:
                raise HandshakeError("a WebSocket upgrade is required", 400)
            # What the client sends from now on belongs to the WebSocket, if it is accepted.
            port.hold()
            subprotocol = select_subprotocol(offered)
            recovering = "awps_connection_id" in request.query
            if not recovering:
                claims = self._claims(request, hub)
                admitted = self._admit(hub, claims.user_id, _token(request))
                connection_id = self._node.new_connection_id()
                decision = await self._node.connect_event(
                    hub, connection_id, _connect_request(request, claims, offered)
                )
        except HandshakeError as exc:
            port.release()
            self._give_back(hub, admitted)
            return error_response(exc.status, str(exc))
        except Exception:
            port.release()
            self._give_back(hub, admitted)
            log.error("handshake failed", exc_info=True)
            return error_response(500, "internal server error")
        if self._stopping:
            # The node began to stop while this handshake waited (e.g. for its connect event).
            port.release()
            self._give_back(hub, admitted)
            return error_response(503, STOPPING)
        # A client that goes away from here on is aiohttp's to log (at debug level).
        if recovering:
            connection = await self._node.recover_session(
                hub,
                request.query.get("awps_connection_id", ""),
                request.query.get("awps_reconnection_token", ""),
            )
            if connection is None:
                # §4: the upgrade is accepted, then closed with 1008.
                ws, socket = await self._upgrade(request, port, hub, subprotocol)
                if socket is not None:
                    self._sockets.end(socket, CLOSE_POLICY_VIOLATION, REASON_NOT_RECOVERABLE)
                return ws
            ws, socket = await self._upgrade(request, port, hub, connection.subprotocol)
            if socket is not None and socket.outlet is not None:
                self._node.resume(connection, socket.outlet)
                found = self._admitted.get(connection)
                self._bind(socket, connection, found.gate if found is not None else None)
            return ws
        subprotocol = decision.subprotocol if decision.subprotocol is not None else subprotocol
        user_id = UserId(decision.user_id) if decision.user_id is not None else None
        groups = [GroupName(g) for g in decision.groups]
        if self._node.cluster is not None:
            await self._node.subscribe_ahead(hub, user_id, groups)
        ws, socket = await self._upgrade(request, port, hub, subprotocol)
        if socket is None or socket.outlet is None:
            self._node.release_ahead(hub, user_id, groups)
            self._give_back(hub, admitted)
            return ws
        connection = self._node.connect(
            hub,
            user_id,
            decision.roles,
            groups,
            codec_for(subprotocol),
            socket.outlet,
            connection_id=connection_id,
            subprotocol=subprotocol,
            state=decision.state,
        )
        if admitted is not None:
            self._admitted[connection] = admitted
        self._bind(socket, connection, admitted.gate if admitted is not None else None)
        return ws

    def _admit(self, hub: HubName, user: str | None, token: str | None) -> _Admitted | None:
        """Reserve the connection's place in the limits (429 over one) and make its inbound
        gate; None without a policy."""
        policy = self._policy
        if policy is None:
            return None
        refused = policy.admit_connection(hub, user, token)
        if refused is not None:
            raise HandshakeError(refused.message, refused.status)
        return _Admitted(user, token, policy.inbound_gate(hub, user, token))

    def _give_back(self, hub: HubName | None, admitted: _Admitted | None) -> None:
        """A handshake that reserved a place and did not become a connection."""
        if admitted is not None and hub is not None and self._policy is not None:
            self._policy.release_connection(hub, admitted.user, admitted.token)

    async def _upgrade(
        self, request: web.Request, port: Port, hub: HubName, subprotocol: str | None
    ) -> tuple[web.WebSocketResponse, UpgradedSocket | None]:
        keep_alive = float(self._node.config.hub(hub).keep_alive_seconds)
        limit = self._policy.limits.max_message_bytes if self._policy is not None else None
        return await self._sockets.upgrade(
            request,
            port,
            subprotocol,
            keep_alive_seconds=keep_alive,
            max_message_bytes=MAX_MESSAGE_BYTES if limit is None else min(limit, MAX_MESSAGE_BYTES),
        )

    def _bind(
        self, socket: UpgradedSocket, connection: Connection, gate: InboundGate | None = None
    ) -> None:
        assert socket.outlet is not None
        binding = _Binding(self._node, connection, socket.outlet, gate, self._policy)
        self._sockets.run(socket, binding)

    async def shut_down(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Close every connection with a close frame; wait up to ``grace`` for the clients'."""
        self._stopping = True
        closed = self._node.shut_down()
        if self._sockets.count:
            log.info("closing %d connections", closed)
        await self._sockets.wait_closed(grace)


class _Admitted:
    """A connection's place in the connection limits, and its inbound checks."""

    __slots__ = ("gate", "token", "user")

    def __init__(self, user: str | None, token: str | None, gate: InboundGate | None) -> None:
        self.user, self.token, self.gate = user, token, gate


class _Binding:
    """One socket bound to its Web PubSub connection: messages decoded with the connection's
    codec and handed to the node; a refused message answered as the protocol says.

    With an inbound gate (``[limits]``), a message over ``max_message_bytes`` closes the
    connection with 1009, one over the message rate or a traffic limit with 1008 and the reason
    ``Throttling`` (the session ends: recovering it would go on over the limit)."""

    __slots__ = ("_connection", "_gate", "_node", "_outlet", "_policy")

    def __init__(
        self,
        node: Node,
        connection: Connection,
        outlet: CorkedOutlet,
        gate: InboundGate | None = None,
        policy: Policy | None = None,
    ) -> None:
        self._node = node
        self._connection = connection
        self._outlet = outlet
        self._gate = gate
        self._policy = policy

    @property
    def name(self) -> str:
        return self._connection.id

    async def message(self, payload: bytes, binary: bool) -> None:
        connection = self._connection
        gate = self._gate
        if gate is not None and self._over(gate, connection, len(payload)):
            return
        try:
            await self._node.handle_client_frame(connection, payload, binary)
        except ProtocolError as exc:
            connection.close_reason = str(exc)
            self._outlet.close(exc.close_code, str(exc))
        except OperationError as exc:
            if exc.ack_id is not None:
                ack = AckMessage(exc.ack_id, False, exc.name, str(exc))
                reply = connection.codec.encode(ack)
                if reply is not None:
                    connection.outlet.send(reply)

    def _over(self, gate: InboundGate, connection: Connection, size: int) -> bool:
        """Whether the message breaks a limit; the connection is then closed."""
        if connection.close_reason is not None:
            return True  # closing already: nothing more is executed
        if gate.too_big(size):
            code, why = CLOSE_MESSAGE_TOO_BIG, f"a message of more than {gate.max_bytes} bytes"
        else:
            over = gate.check(size, time.monotonic())
            if over is None:
                return False
            code, why = CLOSE_POLICY_VIOLATION, over
        log.info("connection %s closed: %s", connection.id, why)
        if self._policy is not None:
            self._policy.throttled()
        connection.close_reason = REASON_THROTTLING
        self._outlet.close(code, REASON_THROTTLING)
        return True

    def closed(self, code: int | None) -> None:
        self._node.socket_closed(self._connection, self._outlet, code)
