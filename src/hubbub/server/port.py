"""The listening side: one :class:`Port` per accepted TCP connection.

aiohttp serves every HTTP request (REST, health, metrics, the WebSocket handshake). Once a
client connection is upgraded, aiohttp steps aside: the port stops feeding aiohttp, tells it the
connection is gone (so its request, handler and parser are freed) and hands the bytes that follow
to the upgraded socket (:mod:`hubbub.server.socket`). An idle WebSocket then costs the
transport, aiohttp's frame reader and hubbub's own few objects, not a parked HTTP request.

Towards aiohttp the port is the transport: writes and flow control pass through to the real
one until the hand-over, and are dropped after it.

With the fast lane (:mod:`hubbub.server.fastlane`), aiohttp's side of a connection is made only
when the first request the lane does not answer arrives: a connection of plain sends alone
never costs aiohttp's request handler.

What a client sends before it is authenticated costs bounded memory: while its upgrade waits for
the ``connect`` event the port keeps at most :data:`HOLD_BYTES` (plus one read), then stops
reading, so the rest waits in the network. And every request head has a deadline
(:class:`RequestHeads`): one not complete in time is answered ``408`` and its connection closed,
whether the lane or aiohttp reads it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from aiohttp import web
from aiohttp.tcp_helpers import tcp_keepalive

from hubbub.core.acl import Address, TrafficKind
from hubbub.limits import HOLD_BYTES
from hubbub.server.fastlane import FastLane, Sniffer
from hubbub.server.restrules import raw_error

if TYPE_CHECKING:
    from hubbub.policy import Policy

__all__ = [
    "EVERY_KIND",
    "REQUEST_HEADS",
    "Mode",
    "Port",
    "RequestHeads",
    "Stream",
    "listen",
    "request_address",
    "request_heads",
]

log = logging.getLogger("hubbub.port")

EVERY_KIND = frozenset(TrafficKind)
"""What a listener serves unless REST has one of its own."""
LISTEN_BACKLOG = 2048
"""Pending connections the kernel queues (aiohttp's default of 128 is small for a burst)."""


class Stream(Protocol):
    """What receives the bytes of an upgraded connection."""

    def feed(self, data: bytes) -> None:
        """Bytes from the client."""
        ...

    def lost(self) -> None:
        """The connection is gone."""
        ...


class Mode(enum.Enum):
    """Who reads what a connection sends.

    ``SNIFFING`` (only with the fast lane) becomes ``HTTP`` at the first request the lane does
    not take; ``HTTP`` becomes ``HOLDING`` while an upgrade is decided, and ``HOLDING`` becomes
    ``STREAM`` when it is accepted or ``HTTP`` again when it is refused. Any mode becomes
    ``CLOSED`` when the connection is gone. :meth:`Port._enter` is the one place the mode
    changes.
    """

    SNIFFING = "sniffing"
    """The fast lane reads the requests; aiohttp has not seen the connection."""
    HTTP = "http"
    """aiohttp reads the requests."""
    HOLDING = "holding"
    """An upgrade waits for its decision: what arrives is kept, up to :data:`HOLD_BYTES`."""
    STREAM = "stream"
    """Upgraded: the stream reads; aiohttp is gone."""
    CLOSED = "closed"


# The modes as module constants: data_received compares with them on every read.
SNIFFING = Mode.SNIFFING
HTTP = Mode.HTTP
HOLDING = Mode.HOLDING
STREAM = Mode.STREAM
CLOSED = Mode.CLOSED


class _Nowhere(asyncio.Protocol):
    """Where bytes go when nobody reads them: aiohttp's side before it exists and after it is
    gone, and the stream before there is one. Every method does nothing."""

    def feed(self, data: bytes) -> None:
        pass

    def lost(self) -> None:
        pass


_NOWHERE = _Nowhere()
_NOTHING_HELD: list[bytes] = []
"""What a port holds when not HOLDING (shared, never appended to: HOLDING gets its own list)."""


class Port(asyncio.Protocol, asyncio.Transport):
    """One TCP connection: HTTP through aiohttp (or first the fast lane), then, once upgraded,
    a WebSocket stream (see :class:`Mode`)."""

    __slots__ = (
        "_awaiting_head",
        "_heads",
        "_held",
        "_held_bytes",
        "_hold_paused",
        "_http",
        "_kinds",
        "_lane",
        "_lane_paused",
        "_mode",
        "_reading_paused",
        "_server",
        "_sniffer",
        "_stream",
        "_transport",
    )

    def __init__(
        self,
        server: web.Server,
        lane: FastLane | None = None,
        heads: RequestHeads | None = None,
        kinds: frozenset[TrafficKind] = EVERY_KIND,
    ) -> None:
        super().__init__()
        self._server = server
        self._lane = lane
        self._heads = heads
        self._kinds = kinds
        """The kinds of traffic this listener serves (REST may have a listener of its own)."""
        self._mode = CLOSED
        """Until the connection is made, nothing is read."""
        self._transport: asyncio.Transport | None = None
        self._sniffer: Sniffer | None = None
        """The fast lane's reader, while SNIFFING."""
        self._http: asyncio.Protocol = _NOWHERE
        """aiohttp's request handler, made when the mode first becomes HTTP."""
        self._held = _NOTHING_HELD
        """What arrived while HOLDING."""
        self._stream: Stream = _NOWHERE
        """The upgraded connection's reader, while STREAM."""
        self._awaiting_head = True
        """aiohttp waits for a request: the next byte begins a head (until aiohttp has it)."""
        self._held_bytes = 0
        self._hold_paused = False
        """Reading paused because the bytes held for the upgrade reached :data:`HOLD_BYTES`."""
        self._reading_paused = False
        """Reading paused by aiohttp, the WebSocket reader or the lane (see pause_reading)."""
        self._lane_paused = False
        """Reading paused by the lane because its answers are not read."""

    @property
    def mode(self) -> Mode:
        return self._mode

    def serves(self, kind: TrafficKind) -> bool:
        """Whether this connection's listener serves ``kind`` (with ``network.rest_port``, REST
        and metrics have a listener of their own and client connections the other)."""
        return kind in self._kinds

    def _enter(self, mode: Mode) -> None:
        """Change the mode: what the old one leaves behind is let go of here, and only here."""
        old = self._mode
        if old is SNIFFING:
            if self._lane is not None and self._sniffer is not None:
                self._lane.forget(self._sniffer)
            self._sniffer = None
        elif old is HOLDING:
            self._held, self._held_bytes, self._hold_paused = _NOTHING_HELD, 0, False
        if mode is HOLDING:
            self._held = []
        elif mode is STREAM or mode is CLOSED:
            self._http = _NOWHERE  # aiohttp's request, handler and parser are freed
            if mode is CLOSED:
                self._stream = _NOWHERE
        self._mode = mode

    # -- the real transport's protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = real = cast(asyncio.Transport, transport)  # uvloop's: no subclass
        if self._lane is not None:
            tcp_keepalive(real)  # as aiohttp does for the connections it sees
            peer = real.get_extra_info("peername")
            self._sniffer = self._lane.sniffer(
                real.write, real.close, peer[0] if isinstance(peer, tuple) and peer else None
            )
            self._enter(SNIFFING)
        else:
            self._start_http()

    def _start_http(self) -> asyncio.Protocol:
        self._enter(HTTP)
        http = self._http = self._server()
        http.connection_made(self)
        if self._lane_paused:
            # The lane's answers still fill the buffer: aiohttp takes over the wait for it to
            # drain (and gets the matching resume_writing); reading is its to pause.
            self._lane_paused = False
            http.pause_writing()
            self.resume_reading()
        return http

    def data_received(self, data: bytes) -> None:
        mode = self._mode
        if mode is STREAM:
            self._stream.feed(data)
        elif mode is SNIFFING:
            sniffer = self._sniffer
            assert sniffer is not None  # set while SNIFFING
            rest = sniffer.feed(data)
            heads = self._heads
            if rest is None:
                # every request so far was a plain send, answered
                if heads is not None:
                    if sniffer.reading_head:
                        heads.started(self)
                    else:
                        heads.complete(self)
                return
            # From this request on, aiohttp serves the connection; its head's deadline holds
            # until aiohttp has the head (see request_heads).
            if heads is not None:
                heads.started(self)
            self._start_http().data_received(rest)
        elif mode is HTTP:
            if self._awaiting_head and self._heads is not None:
                self._heads.started(self)
            self._http.data_received(data)
        elif mode is HOLDING:
            self._held.append(data)
            self._held_bytes += len(data)
            if self._held_bytes >= HOLD_BYTES and not self._hold_paused:
                self._hold_paused = True
                self._apply_reading()

    def eof_received(self) -> bool | None:
        if self._mode is HTTP:
            return self._http.eof_received()
        return None  # held, upgraded, or the lane's alone: closed

    def connection_lost(self, exc: Exception | None) -> None:
        if self._heads is not None:
            self._heads.complete(self)
        mode, stream, http = self._mode, self._stream, self._http
        self._enter(CLOSED)
        if mode is STREAM:
            stream.lost()
        elif mode is HTTP or mode is HOLDING:
            http.connection_lost(exc)

    def pause_writing(self) -> None:
        mode = self._mode
        if mode is HTTP or mode is HOLDING:
            self._http.pause_writing()
        elif mode is SNIFFING:
            # A client that does not read its answers gets no more until it does.
            self._lane_paused = True
            self.pause_reading()

    def resume_writing(self) -> None:
        mode = self._mode
        if mode is HTTP or mode is HOLDING:
            self._http.resume_writing()
        elif self._lane_paused:
            self._lane_paused = False
            self.resume_reading()

    # -- the hand-over --------------------------------------------------------------------------

    def hold(self) -> None:
        """From now on keep what arrives: it belongs to the WebSocket about to be accepted."""
        if self._mode is HTTP:
            self._enter(HOLDING)

    def release(self) -> None:
        """The upgrade did not happen: what arrived meanwhile goes to aiohttp after all."""
        if self._mode is not HOLDING:
            return
        held = self._held
        self._enter(HTTP)
        for data in held:
            self._http.data_received(data)
        self._apply_reading()

    def hand_over(self, stream: Stream) -> asyncio.Transport:
        """Detach aiohttp (it sees the connection end) and feed ``stream`` from now on."""
        assert self._transport is not None
        assert self._mode is HOLDING or self._mode is HTTP, self._mode
        http, held = self._http, self._held
        self._enter(STREAM)
        self._stream = stream
        if self._heads is not None:
            self._heads.complete(self)
        http.connection_lost(None)
        for data in held:
            stream.feed(data)
        self._apply_reading()  # unless the stream's reader asked for a pause meanwhile
        return self._transport

    # -- request heads (see request_heads) ------------------------------------------------------

    def head_complete(self) -> None:
        """aiohttp has a request's head: the deadline is met."""
        self._awaiting_head = False
        if self._heads is not None:
            self._heads.complete(self)

    def request_done(self) -> None:
        """aiohttp handled a request: the next byte from the client begins the next head."""
        if self._mode is HTTP or self._mode is HOLDING:
            self._awaiting_head = True

    def head_timed_out(self, timeout: float) -> None:
        """The request head being read took too long: answer 408 and close."""
        transport = self._transport
        if transport is None or self._mode is STREAM or transport.is_closing():
            return
        log.debug("a request head took more than %g s: answered 408, connection closed", timeout)
        message = f"the request head was not complete within {timeout:g} seconds"
        transport.write(raw_error(408, message, close=True))
        if transport.get_write_buffer_size():
            transport.abort()  # a client that does not read gets no time to
        else:
            transport.close()

    # -- the transport aiohttp writes to ----------------------------------------------------------

    def _live(self) -> asyncio.Transport | None:
        """The real transport while aiohttp has the connection; None before and after."""
        mode = self._mode
        return self._transport if mode is HTTP or mode is HOLDING else None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        transport = self._live()
        if transport is not None:
            transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        transport = self._live()
        if transport is not None:
            transport.writelines(list_of_data)

    def write_eof(self) -> None:
        transport = self._live()
        if transport is not None:
            transport.write_eof()

    def can_write_eof(self) -> bool:
        transport = self._live()
        return transport.can_write_eof() if transport is not None else False

    def is_closing(self) -> bool:
        transport = self._live()
        return transport.is_closing() if transport is not None else True

    def close(self) -> None:
        transport = self._live()
        if transport is not None:
            transport.close()

    def abort(self) -> None:
        transport = self._live()
        if transport is not None:
            transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)

    def is_reading(self) -> bool:
        return self._transport is not None and self._transport.is_reading()

    def pause_reading(self) -> None:
        """Used by aiohttp before the hand-over and by the WebSocket reader's queue after it."""
        if not self._reading_paused:
            self._reading_paused = True
            self._apply_reading()

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            self._apply_reading()

    def _apply_reading(self) -> None:
        """Read from the socket unless someone paused reading (aiohttp, reader, lane, hold)."""
        transport = self._transport
        if transport is None:
            return
        paused = self._reading_paused or self._hold_paused
        if paused and transport.is_reading():
            transport.pause_reading()
        elif not paused and not transport.is_reading():
            transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits() if self._transport is not None else (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._transport is not None:
            self._transport.set_write_buffer_limits(high, low)

    def get_protocol(self) -> asyncio.BaseProtocol:
        mode = self._mode
        return self._http if mode is HTTP or mode is HOLDING else self

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        raise NotImplementedError("a port's protocol is fixed")


class RequestHeads:
    """The deadline of every request head being read, one timer for all connections.

    A head's time starts with its first byte (an idle keep-alive connection is aiohttp's and the
    lane's to close) and ends when the lane or aiohttp has the whole head; a connection whose
    head takes longer than ``timeout`` seconds is answered ``408`` and closed. While the server
    itself does not read from a connection (its answers are not being read), its head cannot
    arrive, and its time starts again.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._since: dict[Port, float] = {}
        """Connections reading a head, in the order their heads began."""
        self._timer: asyncio.TimerHandle | None = None

    def started(self, port: Port) -> None:
        """Part of a head arrived (a no-op while the same head goes on)."""
        if port not in self._since:
            self._since[port] = time.monotonic()
            if self._timer is None:
                self._schedule(self.timeout)

    def complete(self, port: Port) -> None:
        """The head is complete, or the connection gone."""
        self._since.pop(port, None)

    def _schedule(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = time.monotonic()
        late = now - self.timeout
        since = self._since
        expired = []
        for port, began in since.items():
            if began > late:
                break
            expired.append(port)
        for port in expired:
            del since[port]
            if port.is_reading():
                port.head_timed_out(self.timeout)
            else:
                since[port] = now
        if since:
            self._schedule(max(next(iter(since.values())) + self.timeout - now, 0.0))

    def close(self) -> None:
        """Stop the timer (the node is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._since.clear()


REQUEST_HEADS = web.AppKey("request_heads", RequestHeads)
"""The application's :class:`RequestHeads`, used by :func:`listen` and :func:`request_heads`."""

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def request_heads(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Tell the port when aiohttp has a request's head, and when the request is handled."""
    port = request.transport
    if not isinstance(port, Port):
        return await handler(request)
    port.head_complete()
    try:
        return await handler(request)
    finally:
        port.request_done()


def request_address(request: web.Request, policy: Policy | None) -> Address | None:
    """The client's address as the network rules judge it: the peer, or what a trusted proxy
    forwarded for it; None when no rule needs it."""
    if policy is None or not policy.needs_address:
        return None
    headers = request.headers
    return policy.address(
        request.remote, headers.getall("Forwarded", []), headers.getall("X-Forwarded-For", [])
    )


async def listen(
    runner: web.AppRunner,
    host: str,
    port: int,
    lane: FastLane | None = None,
    tls: ssl.SSLContext | None = None,
    handshake_timeout: float | None = None,
    *,
    kinds: frozenset[TrafficKind] = EVERY_KIND,
) -> asyncio.Server:
    """Listen on ``host:port``: a :class:`Port` per connection around the runner's server.

    With ``tls`` every connection is TLS: the port sees it once the handshake is done, over
    the loop's TLS transport (the lane, aiohttp and the upgraded sockets write to it as to a
    plain one); a handshake not done within ``handshake_timeout`` seconds (default: the
    loop's 60) is dropped. The request heads' deadlines are the application's
    :data:`REQUEST_HEADS`, if it has one. ``kinds`` are the kinds of traffic the listener
    serves (the others are answered 404).
    """
    server = runner.server
    assert server is not None, "runner.setup() first"
    heads = runner.app.get(REQUEST_HEADS)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: Port(server, lane, heads, kinds),
        host,
        port,
        reuse_address=True,
        backlog=LISTEN_BACKLOG,
        ssl=tls,
        ssl_handshake_timeout=handshake_timeout if tls is not None else None,
    )
