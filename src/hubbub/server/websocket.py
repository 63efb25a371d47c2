"""The client endpoint: ``/client/hubs/{hub}`` and ``/client/?hub=`` (client-protocols.md §1).

Everything is decided before the upgrade (hub, token, subprotocol), so a refusal is a plain
HTTP answer with the service's status. After the upgrade this adapter only moves frames:
inbound to the codec and the node, outbound through the connection's corked outlet.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from hubbub.closecodes import CLOSE_POLICY_VIOLATION, REASON_NOT_RECOVERABLE
from hubbub.core.names import validate_group, validate_hub
from hubbub.core.state import Connection
from hubbub.errors import BadRequestError, HandshakeError, OperationError, ProtocolError
from hubbub.events import ConnectDecision, ConnectRequest
from hubbub.node import Node
from hubbub.protocol.codec import KNOWN_SUBPROTOCOLS
from hubbub.protocol.messages import AckMessage
from hubbub.protocol.registry import codec_for
from hubbub.protocol.tokens import ClientClaims, TokenError, verify_client_token
from hubbub.server.errors import error_response
from hubbub.server.keepalive import KeepAlive
from hubbub.server.writer import CorkedOutlet, Flusher
from hubbub.types import ConnectionId, GroupName, HubName, UserId

__all__ = ["MAX_MESSAGE_BYTES", "ClientEndpoint"]

log = logging.getLogger("hubbub.websocket")

MAX_MESSAGE_BYTES = 1024 * 1024
"""One client message may be at most 1 MB (client-protocols.md §10); aiohttp closes with 1009."""


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
    """The handshake as the ``connect`` event shows it: no token, no Authorization header."""
    query = [(k, v) for k, v in request.query.items() if k != "access_token"]
    headers = [(str(k), v) for k, v in request.headers.items() if k.lower() != "authorization"]
    return ConnectRequest(claims, query, headers, offered)


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
    """The aiohttp handler of client WebSocket connections."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._flusher: Flusher | None = None
        self.keepalive = KeepAlive()

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
        """Validate the handshake, upgrade, then pump frames until the socket closes."""
        try:
            hub = self._hub(request)
            offered = _offered(request)
            if not web.WebSocketResponse(protocols=offered).can_prepare(request).ok:
                raise HandshakeError("a WebSocket upgrade is required", 400)
            subprotocol = select_subprotocol(offered)
            recovering = "awps_connection_id" in request.query
            if not recovering:
                claims = self._claims(request, hub)
                connection_id = self._node.new_connection_id()
                decision = await self._node.connect_event(
                    hub, connection_id, _connect_request(request, claims, offered)
                )
        except HandshakeError as exc:
            return error_response(exc.status, str(exc))
        except Exception:
            log.error("handshake failed", exc_info=True)
            return error_response(500, "internal server error")
        # A client that goes away from here on is aiohttp's to log (at debug level).
        if recovering:
            return await self._recover(request, hub, subprotocol)
        del claims, offered  # the frame lives as long as the connection
        return await self._accept(request, hub, connection_id, decision, subprotocol)

    async def _accept(
        self,
        request: web.Request,
        hub: HubName,
        connection_id: ConnectionId,
        decision: ConnectDecision,
        offered: str | None,
    ) -> web.StreamResponse:
        """Upgrade a new connection and serve it until its socket closes."""
        subprotocol = decision.subprotocol if decision.subprotocol is not None else offered
        socket = await self._open(request, hub, subprotocol)
        if socket.outlet is None:
            return socket.ws
        user_id = decision.user_id
        connection = self._node.connect(
            hub,
            UserId(user_id) if user_id is not None else None,
            decision.roles,
            [GroupName(g) for g in decision.groups],
            codec_for(subprotocol),
            socket.outlet,
            connection_id=connection_id,
            subprotocol=subprotocol,
            state=decision.state,
        )
        del decision
        return await self._run(socket, connection)

    async def _recover(
        self, request: web.Request, hub: HubName, offered: str | None
    ) -> web.WebSocketResponse:
        """Resume a reliable session, or accept and close with 1008 when it cannot be (§4)."""
        connection = self._node.find_session(
            hub,
            request.query.get("awps_connection_id", ""),
            request.query.get("awps_reconnection_token", ""),
        )
        if connection is None:
            ws = web.WebSocketResponse(protocols=[offered] if offered else (), compress=False)
            await ws.prepare(request)
            await ws.close(code=CLOSE_POLICY_VIOLATION, message=REASON_NOT_RECOVERABLE.encode())
            return ws
        socket = await self._open(request, hub, connection.subprotocol)
        if socket.outlet is None:
            return socket.ws
        self._node.resume(connection, socket.outlet)
        return await self._run(socket, connection)

    async def _open(self, request: web.Request, hub: HubName, subprotocol: str | None) -> _Socket:
        """Complete the upgrade and give the socket its corked outlet."""
        settings = self._node.config.hub(hub)
        ws = web.WebSocketResponse(
            protocols=[subprotocol] if subprotocol else (),
            compress=False,
            max_msg_size=MAX_MESSAGE_BYTES,
            autoping=False,
            decode_text=False,
        )
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        socket = _Socket(ws, float(settings.keep_alive_seconds), loop.time())
        transport = request.transport
        if transport is None:
            return socket
        if self._flusher is None:
            self._flusher = Flusher(loop)
        socket.outlet = CorkedOutlet(
            transport, self._flusher, self._node.config.max_outbound_bytes, socket.close
        )
        return socket

    async def _run(self, socket: _Socket, connection: Connection) -> web.WebSocketResponse:
        assert socket.outlet is not None
        self.keepalive.add(socket, socket.interval)
        try:
            await self._pump(socket, connection)
            if socket.closing is not None:
                await socket.closing
        finally:
            self.keepalive.discard(socket, socket.interval)
            socket.outlet.mark_closed()
            self._node.socket_closed(connection, socket.outlet, socket.ws.close_code)
        return socket.ws

    async def _pump(self, socket: _Socket, connection: Connection) -> None:
        codec = connection.codec
        node = self._node
        ws = socket.ws
        outlet = socket.outlet
        assert outlet is not None
        loop = asyncio.get_running_loop()
        async for msg in ws:
            socket.last_seen = loop.time()
            if msg.type is WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                data = msg.data if isinstance(msg.data, bytes) else msg.data.encode()
                try:
                    message = codec.decode(data, msg.type is WSMsgType.BINARY)
                    await node.handle_client_message(connection, message)
                except ProtocolError as exc:
                    connection.close_reason = str(exc)
                    outlet.close(exc.close_code, str(exc))
                    break
                except OperationError as exc:
                    if exc.ack_id is not None:
                        ack = AckMessage(exc.ack_id, False, exc.name, str(exc))
                        frame = codec.encode(ack)
                        if frame is not None:
                            connection.outlet.send(frame)
            elif msg.type is WSMsgType.ERROR:
                log.debug("connection %s: %s", connection.id, ws.exception())
                break


class _Socket:
    """One upgraded WebSocket: its outlet and the close handshake the service started."""

    __slots__ = ("closing", "interval", "last_seen", "outlet", "ws")

    def __init__(self, ws: web.WebSocketResponse, interval: float, now: float) -> None:
        self.ws = ws
        self.interval = interval
        self.last_seen = now
        self.outlet: CorkedOutlet | None = None
        self.closing: asyncio.Task[bool] | None = None

    def ping(self, frame: bytes) -> None:
        """Keep-alive: queue a ping frame behind the pending data."""
        if self.outlet is not None:
            self.outlet.send(frame)

    def abort(self) -> None:
        """Keep-alive: the client went silent; drop the socket as if the network had."""
        if self.outlet is not None:
            self.outlet.abort()

    def close(self, code: int, reason: str) -> None:
        """Start the close handshake once (the outlet's closer)."""
        if not self.ws.closed and self.closing is None:
            self.closing = asyncio.get_running_loop().create_task(_close(self.ws, code, reason))


async def _close(ws: web.WebSocketResponse, code: int, reason: str) -> bool:
    """The close handshake, without waiting for a client that stopped reading to drain."""
    message = reason.encode()[:123].decode("utf-8", "ignore").encode()
    return await ws.close(code=code, message=message, drain=False)
