"""The client endpoint: ``/client/hubs/{hub}`` and ``/client/?hub=`` (client-protocols.md §1).

Everything is decided before the upgrade (hub, token, subprotocol), so a refusal is a plain
HTTP answer with the service's status. aiohttp answers the handshake; then its port
(:mod:`hubbub.server.port`) hands the connection over and aiohttp's request is freed. From there
this adapter only moves frames: inbound through aiohttp's frame reader to the codec and the node,
outbound through the connection's corked outlet. One task per connection reads its messages in
order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp._websocket.reader import WebSocketDataQueue
from aiohttp.http_websocket import WebSocketError, WebSocketReader
from aiohttp.streams import EofStream

from hubbub.closecodes import CLOSE_NORMAL, CLOSE_POLICY_VIOLATION, REASON_NOT_RECOVERABLE
from hubbub.core.names import validate_group, validate_hub
from hubbub.core.state import Connection
from hubbub.errors import BadRequestError, HandshakeError, OperationError, ProtocolError
from hubbub.events import ConnectRequest
from hubbub.limits import MAX_MESSAGE_BYTES
from hubbub.node import Node
from hubbub.protocol.codec import KNOWN_SUBPROTOCOLS
from hubbub.protocol.frames import OP_PONG, close_frame, frame
from hubbub.protocol.messages import AckMessage
from hubbub.protocol.registry import codec_for
from hubbub.protocol.tokens import ClientClaims, TokenError, verify_client_token
from hubbub.server.errors import error_response
from hubbub.server.keepalive import KeepAlive
from hubbub.server.port import Port
from hubbub.server.writer import CorkedOutlet, Flusher
from hubbub.types import GroupName, HubName, UserId

__all__ = ["MAX_MESSAGE_BYTES", "ClientEndpoint", "MaskCheck"]

log = logging.getLogger("hubbub.websocket")

CLOSE_TIMEOUT_SECONDS = 10.0
"""How long a close frame of ours waits for the client's before the socket is dropped."""
STOPPING = "the service is shutting down"
"""The 503 answer to a handshake that meets a stopping node."""
SHUTDOWN_GRACE_SECONDS = 3.0
"""How long a stopping node waits for clients to answer its close frames."""
READ_QUEUE_BYTES = 64 * 1024
"""Inbound messages queued per connection before reading from its socket pauses."""


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
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
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
        """Validate the handshake, upgrade, and hand the socket to its own reading task."""
        port = request.transport
        if not isinstance(port, Port):
            log.error("a client connection that did not come through hubbub's listener")
            return error_response(500, "internal server error")
        try:
            if self._stopping:
                raise HandshakeError(STOPPING, 503)
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
                connection_id = self._node.new_connection_id()
                decision = await self._node.connect_event(
                    hub, connection_id, _connect_request(request, claims, offered)
                )
        except HandshakeError as exc:
            port.release()
            return error_response(exc.status, str(exc))
        except Exception:
            port.release()
            log.error("handshake failed", exc_info=True)
            return error_response(500, "internal server error")
        if self._stopping:
            # The node began to stop while this handshake waited (e.g. for its connect event).
            port.release()
            return error_response(503, STOPPING)
        # A client that goes away from here on is aiohttp's to log (at debug level).
        if recovering:
            connection = self._node.find_session(
                hub,
                request.query.get("awps_connection_id", ""),
                request.query.get("awps_reconnection_token", ""),
            )
            if connection is None:
                # §4: the upgrade is accepted, then closed with 1008.
                ws, socket = await self._upgrade(request, port, hub, subprotocol)
                if socket is not None:
                    socket.close(CLOSE_POLICY_VIOLATION, REASON_NOT_RECOVERABLE)
                    self._spawn(self._drain(socket))
                return ws
            ws, socket = await self._upgrade(request, port, hub, connection.subprotocol)
            if socket is not None and socket.outlet is not None:
                self._node.resume(connection, socket.outlet)
                self._spawn(self._run(socket, connection))
            return ws
        subprotocol = decision.subprotocol if decision.subprotocol is not None else subprotocol
        ws, socket = await self._upgrade(request, port, hub, subprotocol)
        if socket is not None and socket.outlet is not None:
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
            self._spawn(self._run(socket, connection))
        return ws

    async def _upgrade(
        self, request: web.Request, port: Port, hub: HubName, subprotocol: str | None
    ) -> tuple[web.WebSocketResponse, _Socket | None]:
        """Answer the handshake (aiohttp), then take the connection over from aiohttp."""
        ws = web.WebSocketResponse(
            protocols=[subprotocol] if subprotocol else (), compress=False, autoping=False
        )
        port.hold()
        try:
            await ws.prepare(request)
        except ConnectionError:
            # The client left while its connect event ran: an ordinary end, not a failure.
            port.release()
            log.debug("a client left before its upgrade was answered")
            return ws, None
        except BaseException:
            port.release()
            raise
        if port.is_closing():
            port.release()
            return ws, None
        loop = asyncio.get_running_loop()
        socket = _Socket(port, float(self._node.config.hub(hub).keep_alive_seconds), loop)
        if self._flusher is None:
            self._flusher = Flusher(loop)
        socket.outlet = CorkedOutlet(
            socket.transport, self._flusher, self._node.config.max_outbound_bytes, socket.close
        )
        return ws, socket

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shut_down(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Close every connection with a close frame; wait up to ``grace`` for the clients'."""
        self._stopping = True
        closed = self._node.shut_down()
        if self._tasks:
            log.info("closing %d connections", closed)
            await asyncio.wait(set(self._tasks), timeout=grace)

    def close_all(self) -> None:
        """Drop every upgraded connection still open (the node is stopping)."""
        for task in list(self._tasks):
            task.cancel()

    async def _run(self, socket: _Socket, connection: Connection) -> None:
        assert socket.outlet is not None
        self.keepalive.add(socket, socket.interval)
        try:
            await self._pump(socket, connection)
        except asyncio.CancelledError:
            socket.outlet.abort()
            raise
        except Exception:
            log.error("connection %s failed", connection.id, exc_info=True)
            socket.outlet.abort()
        finally:
            self.keepalive.discard(socket, socket.interval)
            socket.outlet.mark_closed()
            socket.finish()
            self._node.socket_closed(connection, socket.outlet, socket.close_code)

    async def _drain(self, socket: _Socket) -> None:
        """Wait for the client's answer to a close frame of ours (or for the timeout)."""
        try:
            while True:
                msg = await socket.queue.read()
                if msg.type is WSMsgType.CLOSE:
                    return
        except (EofStream, WebSocketError, asyncio.CancelledError):
            return
        finally:
            socket.finish()

    async def _pump(self, socket: _Socket, connection: Connection) -> None:
        codec = connection.codec
        node = self._node
        queue = socket.queue
        outlet = socket.outlet
        assert outlet is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                msg = await queue.read()
            except EofStream:
                return
            except WebSocketError as exc:
                # A frame the reader refused (1002, 1007, 1009): nothing after it can be read.
                # The socket stays open (input discarded) until the client, having read our
                # close frame, closes it, or the close timeout drops it.
                log.debug("connection %s: %s", connection.id, exc)
                outlet.close(exc.code, "")
                await socket.gone()
                return
            socket.last_seen = loop.time()
            kind = msg.type
            if socket.close_sent:
                if kind is WSMsgType.CLOSE:
                    return
                continue  # after our close frame only the client's close counts
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                data = msg.data if type(msg.data) is bytes else bytes(msg.data)
                try:
                    await node.handle_client_frame(connection, data, kind is WSMsgType.BINARY)
                except ProtocolError as exc:
                    connection.close_reason = str(exc)
                    outlet.close(exc.close_code, str(exc))
                except OperationError as exc:
                    if exc.ack_id is not None:
                        ack = AckMessage(exc.ack_id, False, exc.name, str(exc))
                        reply = codec.encode(ack)
                        if reply is not None:
                            connection.outlet.send(reply)
            elif kind is WSMsgType.PING:
                outlet.send(frame(OP_PONG, msg.data))
            elif kind is WSMsgType.CLOSE:
                socket.close_code = msg.data
                outlet.close(CLOSE_NORMAL, "")
                return
            # a PONG is only a sign of life


class MaskCheck:
    """Finds the first client frame without a mask in a stream of reads (RFC 6455 §5.1).

    aiohttp's frame reader accepts unmasked frames; this looks at frame headers only, before
    the reader does: it steps from header to header by the declared payload lengths, so each
    read is looked at once (a payload is skipped, never scanned), and a header split across
    reads is joined from at most 14 bytes.
    """

    __slots__ = ("_head", "_skip")

    def __init__(self) -> None:
        self._head = b""
        """The start of a frame header that the last read cut short."""
        self._skip = 0
        """Bytes of the current frame (mask and payload) still to come."""

    def unmasked(self, data: bytes) -> int:
        """Where in ``data`` the first unmasked frame begins (0 when its header began in an
        earlier read), or -1 while every frame so far is masked."""
        pos, end, skip, head = 0, len(data), self._skip, self._head
        while True:
            if skip:
                if skip >= end - pos:
                    self._skip, self._head = skip - (end - pos), b""
                    return -1
                pos += skip
                skip = 0
            if pos >= end:
                self._skip, self._head = 0, b""
                return -1
            if not head and end - pos >= 2:
                second = data[pos + 1]
                if not second & 0x80:
                    return pos
                length = second & 0x7F
                if length < 126:
                    pos += 2
                    skip = 4 + length
                    continue
                size = 4 if length == 126 else 10
                if end - pos >= size:
                    skip = 4 + int.from_bytes(data[pos + 2 : pos + size], "big")
                    pos += size
                    continue
            # A header that the end of a read cuts short, or that began in the last read.
            began = pos - len(head)
            header = head + data[pos : pos + 14 - len(head)]
            if len(header) < 2:
                self._skip, self._head = 0, header
                return -1
            second = header[1]
            if not second & 0x80:
                return max(began, 0)
            length = second & 0x7F
            size = 2 if length < 126 else 4 if length == 126 else 10
            if len(header) < size:
                self._skip, self._head = 0, header
                return -1
            if size > 2:
                length = int.from_bytes(header[2:size], "big")
            pos, skip, head = began + size, 4 + length, b""


UNMASKED = "a client frame without a mask"


class _Socket:
    """One upgraded WebSocket: aiohttp's frame reader in, the corked outlet out."""

    __slots__ = (
        "_gone",
        "_masks",
        "_timer",
        "close_code",
        "close_sent",
        "interval",
        "last_seen",
        "outlet",
        "queue",
        "reader",
        "transport",
    )

    def __init__(self, port: Port, interval: float, loop: asyncio.AbstractEventLoop) -> None:
        # The queue pauses and resumes the port's reading (duck-typed as aiohttp's protocol).
        self.queue = WebSocketDataQueue(port, READ_QUEUE_BYTES, loop=loop)  # type: ignore[arg-type]
        self.reader = WebSocketReader(
            self.queue, MAX_MESSAGE_BYTES, compress=False, decode_text=False
        )
        self._masks: MaskCheck | None = MaskCheck()
        """None once an unmasked frame arrived: nothing after it is read."""
        self.interval = interval
        self.last_seen = loop.time()
        self.outlet: CorkedOutlet | None = None
        self.close_code: int | None = None
        """The client's close code, or ours when we closed first; None when the socket broke."""
        self.close_sent = False
        self._timer: asyncio.TimerHandle | None = None
        self._gone: asyncio.Future[None] | None = None
        self.transport = port.hand_over(self)

    def feed(self, data: bytes) -> None:
        """Bytes from the client (the port's stream)."""
        masks = self._masks
        if masks is None:
            return
        cut = masks.unmasked(data)
        if cut < 0:
            self.reader.feed_data(data)
            return
        # The frames before it are read as usual; then the reader fails as on any protocol
        # error (the queue hands out what it holds first), and the connection is closed 1002.
        self._masks = None
        if cut:
            self.reader.feed_data(data[:cut])
        self.queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, UNMASKED))

    def lost(self) -> None:
        """The socket is gone (the port's stream)."""
        if self.outlet is not None:
            self.outlet.mark_closed()
        self.reader.feed_eof()
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    async def gone(self) -> None:
        """Wait until the socket is closed (by the client, or by the close timeout)."""
        if self.transport.is_closing():
            return
        if self._gone is None:
            self._gone = asyncio.get_running_loop().create_future()
        await self._gone

    def ping(self, frame: bytes) -> None:
        """Keep-alive: queue a ping frame behind the pending data."""
        if self.outlet is not None:
            self.outlet.send(frame)

    def abort(self) -> None:
        """Keep-alive: the client went silent; drop the socket as if the network had."""
        if self.outlet is not None:
            self.outlet.abort()

    def close(self, code: int, reason: str) -> None:
        """Send our close frame once (the outlet's closer); the client's answer ends the socket."""
        if self.close_sent:
            return
        self.close_sent = True
        if self.close_code is None:
            self.close_code = code
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(close_frame(code, reason))
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(CLOSE_TIMEOUT_SECONDS, transport.abort)

    def finish(self) -> None:
        """Close the transport once what was written is sent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport.close()
