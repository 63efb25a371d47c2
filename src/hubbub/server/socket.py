"""The upgraded socket: a WebSocket connection once its handshake is answered.

This layer knows WebSocket (RFC 6455) and aiohttp, nothing of what the messages mean: no codec,
no node, no token. It takes a connection over from aiohttp (the port stops feeding aiohttp and
feeds the socket, :mod:`hubbub.server.port`), reads frames with aiohttp's frame reader (after
:class:`MaskCheck`, which enforces client masking), answers pings, runs the close handshake
(our close frame, then the client's, or a timeout), registers the socket for keep-alive pings
and writes through its corked outlet (:mod:`hubbub.server.writer`). Each data message goes to
the socket's :class:`FrameHandler`, in order, one at a time.

A handshake module puts a protocol on top (:mod:`hubbub.server.websocket` does Web PubSub):

1. ``port = port_of(request)``, and ``port.hold()`` as soon as the request is an upgrade it
   may accept: from then on what the client sends is kept for the socket; ``port.release()``
   if it refuses.
2. Decide (authenticate, run connect hooks), then ``ws, socket = await sockets.upgrade(request,
   port, subprotocol, keep_alive_seconds=..., max_message_bytes=...)``: aiohttp answers 101 and
   steps aside (``socket`` is None when the client left meanwhile).
3. Bind the socket to the protocol: ``socket.outlet`` is where frames go out;
   ``sockets.run(socket, handler)`` pumps the frames in to ``handler`` until the socket ends,
   then calls ``handler.closed(code)``. ``sockets.end(socket, code, reason)`` closes one that
   is not to be read at all.

Socket.IO (``server/socketio.py``: its Engine.IO handshake, then packets in text and binary
frames) and MQTT over WebSocket (``server/mqtt.py``: subprotocol ``mqtt``, MQTT packets in binary
frames) are such modules over the same :class:`Sockets`, so they share its flusher, its
keep-alive timers and the node's shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Protocol

from aiohttp import WSMsgType, web
from aiohttp._websocket.reader import WebSocketDataQueue
from aiohttp.http_websocket import WebSocketError, WebSocketReader
from aiohttp.streams import EofStream

from hubbub.closecodes import CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR
from hubbub.protocol.frames import OP_PONG, close_frame, frame
from hubbub.server.keepalive import KeepAlive
from hubbub.server.port import Port
from hubbub.server.writer import CorkedOutlet, Flusher

__all__ = ["FrameHandler", "MaskCheck", "Sockets", "UpgradedSocket", "port_of"]

log = logging.getLogger("hubbub.socket")

CLOSE_TIMEOUT_SECONDS = 10.0
"""How long a close frame of ours waits for the client's before the socket is dropped."""
READ_QUEUE_BYTES = 64 * 1024
"""Inbound messages queued per socket before reading from it pauses (a read buffer: transport
tuning, not a limit a client sees)."""
UNMASKED = "a client frame without a mask"


class FrameHandler(Protocol):
    """What a protocol does with the messages of one socket."""

    @property
    def name(self) -> str:
        """How log lines name the connection (its id)."""
        ...

    async def message(self, payload: bytes, binary: bool) -> None:
        """One whole text or binary message (its fragments joined), in the order sent."""
        ...

    def closed(self, code: int | None) -> None:
        """The socket is gone: the client's close code, ours when we closed first, or None
        when the connection broke without one."""
        ...


def port_of(request: web.Request) -> Port | None:
    """The connection of an upgrade request; None for one that did not come through hubbub's
    listener (:func:`hubbub.server.port.listen`), which cannot be taken over."""
    port = request.transport
    return port if isinstance(port, Port) else None


class Sockets:
    """The upgraded sockets of one node, whatever their protocol: hand-over, pumps, shutdown.

    Args:
        max_outbound_bytes: the bound of each socket's unsent bytes (a slower client is closed).
    """

    def __init__(self, max_outbound_bytes: int) -> None:
        self.max_outbound_bytes = max_outbound_bytes
        """The bound given to each socket upgraded from now on (a reload may change it)."""
        self._flusher: Flusher | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.keepalive = KeepAlive()

    async def upgrade(
        self,
        request: web.Request,
        port: Port,
        subprotocol: str | None,
        *,
        keep_alive_seconds: float,
        max_message_bytes: int,
    ) -> tuple[web.WebSocketResponse, UpgradedSocket | None]:
        """Answer the handshake (aiohttp), then take the connection over from aiohttp.

        Returns:
            aiohttp's response (the handler returns it) and the socket, or None when the
            client left before the answer.
        """
        ws = web.WebSocketResponse(
            protocols=[subprotocol] if subprotocol else (), compress=False, autoping=False
        )
        port.hold()
        try:
            await ws.prepare(request)
        except ConnectionError:
            # The client left while the handshake was decided: an ordinary end, not a failure.
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
        socket = UpgradedSocket(port, keep_alive_seconds, max_message_bytes, loop)
        if self._flusher is None:
            self._flusher = Flusher(loop)
        socket.outlet = CorkedOutlet(
            socket.transport, self._flusher, self.max_outbound_bytes, socket.close
        )
        return ws, socket

    def run(self, socket: UpgradedSocket, handler: FrameHandler) -> None:
        """Pump the socket's frames to ``handler`` in a task of its own until the socket ends."""
        self._spawn(self._run(socket, handler))

    def end(self, socket: UpgradedSocket, code: int, reason: str) -> None:
        """Close a socket that is not to be read: our close frame, then wait (in a task) for
        the client's answer or the close timeout."""
        socket.close(code, reason)
        self._spawn(socket.drain())

    @property
    def count(self) -> int:
        """Sockets open (being read, or waiting for the client's close)."""
        return len(self._tasks)

    async def wait_closed(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for every socket to end."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)

    def close_all(self) -> None:
        """Drop every socket still open (the node is stopping)."""
        for task in list(self._tasks):
            task.cancel()

    async def close(self) -> None:
        """Stop the keep-alive timers."""
        await self.keepalive.close()

    def _spawn(self, coro: Coroutine[None, None, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, socket: UpgradedSocket, handler: FrameHandler) -> None:
        outlet = socket.outlet
        assert outlet is not None
        self.keepalive.add(socket, socket.interval)
        try:
            await socket.pump(handler)
        except asyncio.CancelledError:
            outlet.abort()
            raise
        except Exception:
            log.error("connection %s failed", handler.name, exc_info=True)
            outlet.abort()
        finally:
            self.keepalive.discard(socket, socket.interval)
            outlet.mark_closed()
            socket.finish()
            handler.closed(socket.close_code)


class UpgradedSocket:
    """One upgraded WebSocket: aiohttp's frame reader in, the corked outlet out.

    Args:
        port: the connection, handed over to this socket at once.
        interval: the keep-alive ping interval, in seconds.
        max_message_bytes: the largest message; a larger one closes the socket with 1009.
        loop: the running loop.
    """

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

    def __init__(
        self,
        port: Port,
        interval: float,
        max_message_bytes: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        # The queue pauses and resumes the port's reading (duck-typed as aiohttp's protocol).
        self.queue = WebSocketDataQueue(port, READ_QUEUE_BYTES, loop=loop)  # type: ignore[arg-type]
        self.reader = WebSocketReader(
            self.queue, max_message_bytes, compress=False, decode_text=False
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

    # -- the port's stream ----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the client."""
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
        self.queue.set_exception(WebSocketError(CLOSE_PROTOCOL_ERROR, UNMASKED))

    def lost(self) -> None:
        """The socket is gone."""
        if self.outlet is not None:
            self.outlet.mark_closed()
        self.reader.feed_eof()
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    # -- reading --------------------------------------------------------------------------------

    async def pump(self, handler: FrameHandler) -> None:
        """Read frames until the socket ends: messages to ``handler``, pings answered, the
        close handshake completed."""
        queue = self.queue
        outlet = self.outlet
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
                log.debug("connection %s: %s", handler.name, exc)
                outlet.close(exc.code, "")
                await self.gone()
                return
            self.last_seen = loop.time()
            kind = msg.type
            if self.close_sent:
                if kind is WSMsgType.CLOSE:
                    return
                continue  # after our close frame only the client's close counts
            if kind is WSMsgType.TEXT or kind is WSMsgType.BINARY:
                data = msg.data if type(msg.data) is bytes else bytes(msg.data)
                await handler.message(data, kind is WSMsgType.BINARY)
            elif kind is WSMsgType.PING:
                outlet.send(frame(OP_PONG, msg.data))
            elif kind is WSMsgType.CLOSE:
                self.close_code = msg.data
                outlet.close(CLOSE_NORMAL, "")
                return
            # a PONG is only a sign of life

    async def drain(self) -> None:
        """Wait for the client's answer to a close frame of ours (or for the timeout)."""
        try:
            while True:
                msg = await self.queue.read()
                if msg.type is WSMsgType.CLOSE:
                    return
        except (EofStream, WebSocketError, asyncio.CancelledError):
            return
        finally:
            self.finish()

    async def gone(self) -> None:
        """Wait until the socket is closed (by the client, or by the close timeout)."""
        if self.transport.is_closing():
            return
        if self._gone is None:
            self._gone = asyncio.get_running_loop().create_future()
        await self._gone

    # -- keep-alive -----------------------------------------------------------------------------

    def ping(self, frame: bytes) -> None:
        """Queue a ping frame behind the pending data."""
        if self.outlet is not None:
            self.outlet.send(frame)

    def abort(self) -> None:
        """The client went silent; drop the socket as if the network had."""
        if self.outlet is not None:
            self.outlet.abort()

    # -- closing --------------------------------------------------------------------------------

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
