"""The upgraded socket: a WebSocket connection once its handshake is answered.

This layer knows WebSocket (RFC 6455) and aiohttp, nothing of what the messages mean: no codec,
no node, no token. It takes a connection over from aiohttp (the port stops feeding aiohttp and
feeds the socket, :mod:`hubbub.server.port`), reads frames with aiohttp's frame reader (after
:class:`MaskCheck`, which enforces client masking), answers pings, runs the close handshake
(our close frame, then the client's, or a timeout), registers the socket for keep-alive pings
and writes through its corked outlet (:mod:`hubbub.server.writer`). Each data message goes to
the socket's :class:`FrameHandler`, in order, one at a time, from a task that lives only while
messages wait for it: an idle socket holds no task, no future and no queue (memory per idle
connection).

A handshake module puts a protocol on top (:mod:`hubbub.server.websocket` does Web PubSub):

1. ``port = port_of(request)``, and ``port.hold()`` as soon as the request is an upgrade it
   may accept: from then on what the client sends is kept for the socket; ``port.release()``
   if it refuses.
2. Decide (authenticate, run connect hooks), then ``ws, socket = await sockets.upgrade(request,
   port, subprotocol, keep_alive_seconds=..., max_message_bytes=...)``: aiohttp answers 101 and
   steps aside (``socket`` is None when the client left meanwhile).
3. Bind the socket to the protocol: ``socket.outlet`` is where frames go out;
   ``sockets.run(socket, handler)`` hands the messages to ``handler`` until the socket ends,
   then calls ``handler.closed(code)``. ``sockets.end(socket, code, reason)`` closes one that
   is not to be read at all.

Socket.IO (``server/socketio.py``: its Engine.IO handshake, then packets in text and binary
frames) and MQTT over WebSocket (``server/mqtt.py``: subprotocol ``mqtt``, MQTT packets in binary
frames) are such modules over the same :class:`Sockets`, so they share its flusher, its
keep-alive timers and the node's shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Protocol

from aiohttp import WSMessage, WSMsgType, web
from aiohttp._websocket.reader import WebSocketDataQueue
from aiohttp.http_websocket import WebSocketError, WebSocketReader

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
    """The upgraded sockets of one node, whatever their protocol: hand-over, reading, shutdown.

    Args:
        max_outbound_bytes: the bound of each socket's unsent bytes (a slower client is closed).
    """

    def __init__(self, max_outbound_bytes: int) -> None:
        self.max_outbound_bytes = max_outbound_bytes
        """The bound given to each socket upgraded from now on (a reload may change it)."""
        self._flusher: Flusher | None = None
        self._open: set[UpgradedSocket] = set()
        """The sockets being read, or waiting for the client's close."""
        self._emptied: asyncio.Future[None] | None = None
        """Set when the last open socket ends (while :meth:`wait_closed` waits)."""
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
        """Hand the socket's messages to ``handler`` until the socket ends."""
        self._open.add(socket)
        self.keepalive.add(socket, socket.interval)
        socket.start(self, handler)

    def end(self, socket: UpgradedSocket, code: int, reason: str) -> None:
        """Close a socket that is not to be read: our close frame, then wait for the client's
        answer or the close timeout."""
        self._open.add(socket)
        socket.close(code, reason)
        socket.start(self, None)

    @property
    def count(self) -> int:
        """Sockets open (being read, or waiting for the client's close)."""
        return len(self._open)

    async def wait_closed(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for every socket to end."""
        if not self._open:
            return
        if self._emptied is None or self._emptied.done():
            self._emptied = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._emptied), grace)

    def close_all(self) -> None:
        """Drop every socket still open (the node is stopping)."""
        for socket in list(self._open):
            socket.cancel()

    async def close(self) -> None:
        """Stop the keep-alive timers."""
        await self.keepalive.close()

    def ended(self, socket: UpgradedSocket) -> None:
        """The socket is done (called by the socket, once)."""
        self._open.discard(socket)
        self.keepalive.discard(socket, socket.interval)
        if not self._open and self._emptied is not None and not self._emptied.done():
            self._emptied.set_result(None)


_QUEUE_LIMIT = 2 * READ_QUEUE_BYTES
"""Bytes of messages waiting for their handler (each counted with 128 more) at which the
socket stops reading, as aiohttp's queue does (it pauses at twice its limit)."""
_MESSAGE_OVERHEAD = 128


def _inbox_type(base: type[WebSocketDataQueue]) -> type[WebSocketDataQueue]:
    """aiohttp's frame reader writes to a ``WebSocketDataQueue`` (its compiled reader to that
    exact type or a subclass); this subclass of ``base`` hands each message to its socket
    instead of queueing it, and has neither buffer nor waiter of its own (its base's
    ``__init__`` is not run: an idle socket keeps no empty deque and no future)."""
    cached = _INBOXES.get(base)
    if cached is not None:
        return cached

    class Inbox(base):  # type: ignore[valid-type,misc]
        __slots__ = ("_socket",)
        # Read by the reader to decide whether to stall: never (the socket pauses the port).
        _size = 0
        _limit = 0

        def __init__(self, socket: UpgradedSocket) -> None:
            self._socket = socket

        def feed_data(self, data: WSMessage, size: int) -> None:
            self._socket.received(data, size)

        def feed_eof(self) -> None:
            self._socket.received_eof()

        def set_exception(self, exc: BaseException, exc_cause: object = None) -> None:
            self._socket.failed(exc)

    _INBOXES[base] = Inbox
    return Inbox


_INBOXES: dict[type[WebSocketDataQueue], type[WebSocketDataQueue]] = {}


class UpgradedSocket:
    """One upgraded WebSocket: aiohttp's frame reader in, the corked outlet out.

    What the reader parses goes straight to the socket (:meth:`received`): a ping or pong that
    finds no task is answered on the spot; any other message waits in the socket's backlog for
    its handler, which a task works through, in order, one at a time. The task waits for the
    next message while the socket is in use and ends at the first keep-alive tick that finds
    the socket silent for a whole interval (:meth:`ping`): an idle socket has neither task nor
    backlog.

    Args:
        port: the connection, handed over to this socket at once.
        interval: the keep-alive ping interval, in seconds.
        max_message_bytes: the largest message; a larger one closes the socket with 1009.
        loop: the running loop.
    """

    __slots__ = (
        "_backlog",
        "_eof",
        "_failure",
        "_handler",
        "_loop",
        "_masks",
        "_owner",
        "_port",
        "_queued",
        "_state",
        "_task",
        "_timer",
        "_waiter",
        "close_code",
        "close_sent",
        "interval",
        "last_seen",
        "outlet",
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
        self._port = port
        self._loop = loop
        inbox = _inbox_type(WebSocketDataQueue)(self)  # type: ignore[arg-type,call-arg]
        self.reader = WebSocketReader(inbox, max_message_bytes, compress=False, decode_text=False)
        self._masks: MaskCheck | None = MaskCheck()
        """None once an unmasked frame arrived: nothing after it is read."""
        self.interval = interval
        self.last_seen = loop.time()
        self.outlet: CorkedOutlet | None = None
        self.close_code: int | None = None
        """The client's close code, or ours when we closed first; None when the socket broke."""
        self.close_sent = False
        self._timer: asyncio.TimerHandle | None = None
        self._backlog: deque[tuple[WSMessage, int]] | None = None
        """Messages waiting for the handler (None when there are none)."""
        self._queued = 0
        """Their size (each counted with 128 more bytes), for the read pause."""
        self._eof = False
        """The client's side is gone: nothing more will arrive."""
        self._failure: BaseException | None = None
        """Why the reader failed (after the messages before it)."""
        self._handler: FrameHandler | None = None
        self._owner: Sockets | None = None
        self._task: asyncio.Task[None] | None = None
        """Works through the backlog; None on an idle socket."""
        self._waiter: asyncio.Future[bool] | None = None
        """What the task waits on when the backlog is empty (True: end, the socket is idle)."""
        self._state = _NEW
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
        # error (the messages before it are handled first), and the connection is closed 1002.
        self._masks = None
        if cut:
            self.reader.feed_data(data[:cut])
        self.failed(WebSocketError(CLOSE_PROTOCOL_ERROR, UNMASKED))

    def lost(self) -> None:
        """The socket is gone."""
        if self.outlet is not None:
            self.outlet.mark_closed()
        self.reader.feed_eof()

    # -- what the reader parsed -----------------------------------------------------------------

    def received(self, msg: WSMessage, size: int) -> None:
        """One message from the reader."""
        self.last_seen = self._loop.time()
        state = self._state
        if state is _ENDED or state is _FAILED:
            return  # nothing after a failure is read
        if state is _DRAINING:
            if msg.type is WSMsgType.CLOSE:
                self._end()
            return  # after our close frame only the client's close counts
        backlog = self._backlog
        if backlog is None:
            kind = msg.type
            if state is _READING and self._task is None:
                if kind is WSMsgType.PONG:
                    return  # only a sign of life
                if kind is WSMsgType.PING and not self.close_sent:
                    assert self.outlet is not None
                    self.outlet.send(frame(OP_PONG, msg.data))
                    return
            backlog = self._backlog = deque()
        backlog.append((msg, size))
        self._queued += size + _MESSAGE_OVERHEAD
        if self._queued > _QUEUE_LIMIT:
            self._port.pause_reading()
        # What _wake does, for a backlog that is not empty (the path of every message).
        if self._task is not None:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(False)
        elif state is _READING:
            self._task = self._loop.create_task(self._work())

    def received_eof(self) -> None:
        """The client's side is gone."""
        self._eof = True
        self._wake()

    def failed(self, exc: BaseException) -> None:
        """The reader failed: nothing after the messages already parsed can be read."""
        if self._failure is None:
            self._failure = exc
        self._wake()

    def _wake(self) -> None:
        """Let the handler's side see what arrived (a task, unless there is one)."""
        state = self._state
        if state is _READING:
            if self._task is None:
                if self._backlog:
                    self._task = self._loop.create_task(self._work())
                else:
                    self._settle()
            else:
                self._resume(False)
        elif state is _DRAINING or state is _FAILED:
            if self._eof:
                self._end()

    def _settle(self) -> None:
        """Nothing waits for the handler: a failure or the end of the stream is dealt with."""
        failure = self._failure
        if failure is not None:
            self._fail(failure)
        elif self._eof:
            self._end()

    def _fail(self, failure: BaseException) -> None:
        outlet = self.outlet
        assert outlet is not None
        if not isinstance(failure, WebSocketError):
            log.error(
                "connection %s failed",
                self._handler.name if self._handler is not None else "?",
                exc_info=failure,
            )
            outlet.abort()
            self._end()
            return
        # A frame the reader refused (1002, 1007, 1009): nothing after it can be read. The
        # socket stays open (input discarded) until the client, having read our close frame,
        # closes it, or the close timeout drops it.
        log.debug("connection %s: %s", self._handler.name if self._handler else "?", failure)
        self._state = _FAILED
        outlet.close(failure.code, "")
        if self._eof or self.transport.is_closing():
            self._end()

    async def _work(self) -> None:
        """Hand the backlog to the handler, in order; done when it is empty."""
        handler = self._handler
        outlet = self.outlet
        assert handler is not None and outlet is not None
        try:
            while True:
                backlog = self._backlog
                if not backlog:
                    self._backlog = None
                    if self._state is not _READING or self._failure is not None or self._eof:
                        self._task = None
                        if self._state is _READING:
                            self._settle()
                        return
                    # Wait for the next message: a socket in use keeps its task (a wake-up
                    # costs less than a new task), until a keep-alive tick finds it idle.
                    waiter = self._waiter = self._loop.create_future()
                    try:
                        retired = await waiter
                    finally:
                        self._waiter = None
                    if retired and not self._backlog:
                        self._task = None
                        return
                    continue
                msg, size = backlog.popleft()
                self._queued -= size + _MESSAGE_OVERHEAD
                if self._queued < READ_QUEUE_BYTES:
                    self._port.resume_reading()
                kind = msg.type
                if self.close_sent:
                    if kind is WSMsgType.CLOSE:
                        self._task = None
                        self._end()
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
                    self._task = None
                    self._end()
                    return
                # a PONG is only a sign of life
        except asyncio.CancelledError:
            self._task = None
            outlet.abort()
            self._end()
            raise
        except Exception:
            self._task = None
            log.error("connection %s failed", handler.name, exc_info=True)
            outlet.abort()
            self._end()

    def _resume(self, retire: bool) -> None:
        """Wake the task if it waits for a message; ``retire``: it is to end if none came."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(retire)

    # -- the socket's owner ---------------------------------------------------------------------

    def start(self, owner: Sockets, handler: FrameHandler | None) -> None:
        """Hand the messages to ``handler`` from now on; None: the socket is not read, only
        its close is awaited (after :meth:`close`)."""
        self._owner = owner
        self._handler = handler
        if handler is None:
            self._state = _DRAINING
            backlog, self._backlog, self._queued = self._backlog, None, 0
            if backlog and any(m.type is WSMsgType.CLOSE for m, _ in backlog):
                self._end()
                return
            self._port.resume_reading()
            if self._eof or self._failure is not None:
                self._end()
            return
        self._state = _READING
        self._wake()

    def cancel(self) -> None:
        """Drop the socket at once (the node is stopping)."""
        task = self._task
        if task is not None:
            task.cancel()
            # A task cancelled before its first step never runs its handler.
            task.add_done_callback(lambda _: self._drop())
            return
        self._drop()

    def _drop(self) -> None:
        if self.outlet is not None:
            self.outlet.abort()
        self._end()

    def _end(self) -> None:
        """The socket is done: close the transport and tell the handler, once."""
        if self._state is _ENDED:
            return
        self._state = _ENDED
        self._backlog = None
        self._resume(True)
        if self.outlet is not None:
            self.outlet.mark_closed()
        self.finish()
        handler, owner = self._handler, self._owner
        self._handler = None
        if owner is not None:
            owner.ended(self)
        if handler is not None:
            handler.closed(self.close_code)

    # -- keep-alive -----------------------------------------------------------------------------

    def ping(self, frame: bytes) -> None:
        """Queue a ping frame behind the pending data; a task that waited a whole interval
        for a message ends (the socket is idle: it keeps no task)."""
        if self.outlet is not None:
            self.outlet.send(frame)
        if self._waiter is not None and self._loop.time() - self.last_seen >= self.interval:
            self._resume(True)

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
        self._timer = self._loop.call_later(CLOSE_TIMEOUT_SECONDS, transport.abort)

    def finish(self) -> None:
        """Close the transport once what was written is sent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport.close()


_NEW = 0
"""Upgraded, not yet started: what arrives waits."""
_READING = 1
"""Messages go to the handler."""
_DRAINING = 2
"""Not read: only the client's close (or the end of the stream) is awaited."""
_FAILED = 3
"""The reader failed and our close frame went out: the end of the stream is awaited."""
_ENDED = 4


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
