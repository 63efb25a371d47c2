"""The HTTP/1.1 client of event handler requests: keep-alive connections pooled per origin,
each answer parsed by httptools (llhttp) in the connection's protocol callback.

hubbub's requests to handlers are all of one shape: a URL it knows, a few headers it wrote, a
body in memory; no cookies, redirects, proxies or compression. So a request is its head and
body in one write, and the answer is read without a task, stream or response object of its own:
through aiohttp's ``ClientSession`` the same POST cost about twice the CPU (bench
``upstream_micro.py``), most of it in request and response objects and header merging.

Connections: at most ``per_origin`` open to one scheme, host and port (callers beyond wait for
one); an idle one is kept ``idle_seconds`` and closed by one sweeping timer. A request that
finds its kept-alive connection closed by the handler before any byte of the answer (a handler
closing idle connections as the request goes out) is sent once more on a new connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import httptools
import yarl

from hubbub import __version__

__all__ = [
    "MAX_ANSWER_BYTES",
    "HandlerAnswer",
    "HandlerClient",
    "HandlerClientError",
    "header_lines",
]

MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""The largest answer body read from a handler (a reply is at most a client frame anyway)."""
MAX_ANSWER_HEAD_BYTES = 256 * 1024
"""The largest status line and headers of an answer."""
USER_AGENT = f"hubbub/{__version__}"
_TARGETS_KEPT = 1024
"""At most this many parsed request targets are kept (URLs carry hub and event names)."""


class HandlerClientError(Exception):
    """No answer: the connection failed or was lost, or the answer was malformed or too big."""

    def __init__(self, message: str, *, before_answer: bool = False) -> None:
        super().__init__(message)
        self.before_answer = before_answer
        """Lost before any byte of an answer arrived."""


@dataclass(frozen=True, slots=True)
class HandlerAnswer:
    """A complete answer: its status, headers (names in lower case) and body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (lower case), in order."""
        return [value for key, value in self.headers if key == name]


def header_lines(headers: Iterable[tuple[str, str]]) -> bytes:
    """Header fields as they go on the wire, UTF-8.

    Raises:
        ValueError: a name or value holds CR, LF or NUL (it would end the field early and
            smuggle others in), or a name is empty or holds a colon or white space.
    """
    parts: list[str] = []
    for name, value in headers:
        if not name or any(c in name for c in ":\r\n\0 \t"):
            raise ValueError(f"invalid header name {name!r}")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"header {name} holds a line break or NUL")
        parts.append(f"{name}: {value}\r\n")
    return "".join(parts).encode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class _Target:
    """A URL as the client uses it: where to connect and the head's first lines."""

    origin: tuple[str, str, int]
    host: str
    port: int
    tls: bool
    server_hostname: str | None
    lines: bytes
    """After the method and a space: the request target, version, Host and Authorization."""


def _target(text: str) -> _Target:
    url = yarl.URL(text)
    if url.scheme not in ("http", "https") or not url.raw_host:
        raise HandlerClientError(f"not an http(s) URL: {url.with_user(None).with_query(None)}")
    tls = url.scheme == "https"
    port = url.port or (443 if tls else 80)
    lines = (
        f"{url.raw_path_qs or '/'} HTTP/1.1\r\nHost: {url.host_port_subcomponent}\r\n"
        f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\n"
    )
    if url.user is not None or url.password is not None:
        credentials = f"{url.user or ''}:{url.password or ''}".encode()
        lines += f"Authorization: Basic {base64.b64encode(credentials).decode('ascii')}\r\n"
    return _Target(
        origin=(url.scheme, url.raw_host, port),
        host=url.raw_host,
        port=port,
        tls=tls,
        server_hostname=url.raw_host if tls else None,
        lines=lines.encode("ascii"),
    )


class _Connection(asyncio.Protocol):
    """One kept-alive connection, carrying one request at a time."""

    def __init__(self, pool: HandlerClient, origin: tuple[str, str, int]) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = 0
        """Requests sent so far."""
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        # As lenient as aiohttp's answer parser: handlers with hand-written HTTP stay usable.
        self._parser.set_dangerous_leniencies(
            lenient_headers=True,
            lenient_optional_cr_before_lf=True,
            lenient_spaces_after_chunk_size=True,
        )
        self._waiter: asyncio.Future[HandlerAnswer] | None = None
        self._new_answer()

    def _new_answer(self) -> None:
        """Forget the last answer: what is read from now on is the next request's."""
        self._status = 0
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._unparsed = 0
        """Bytes fed since the parser last gave a field, body part or the end."""
        self._field_bytes = 0
        self._head_done = False
        self._until_eof = False
        """The answer's body ends with the connection (no length, not chunked)."""
        self._received = False
        self._reusable = False
        self._error: HandlerClientError | None = None

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # Bytes nobody asked for: the connection cannot be trusted with another request.
            self._reusable = False
            self.pool._drop(self)
            return
        self._received = True
        self._unparsed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HandlerClientError("the handler switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(HandlerClientError(f"malformed answer from the handler: {exc}"))
        if self._error is None and self._unparsed > MAX_ANSWER_HEAD_BYTES:
            # A line without end (the parser keeps a field until it is whole).
            self._fail(HandlerClientError("the handler's answer head is too large"))
        if self._error is not None:
            self._settle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._drop(self)
        if self._waiter is None or self._waiter.done():
            return
        if self._head_done and self._until_eof and self._error is None and exc is None:
            self._complete(reusable=False)
        elif self._error is None:
            why = f": {exc}" if exc else ""
            self._error = HandlerClientError(
                f"the handler closed the connection before its answer{why}",
                before_answer=not self._received,
            )
        self._settle()

    # ------------------------------------------------------------ httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._unparsed = 0
        # Trailers after a chunked body come here too: they count against the same limit.
        self._field_bytes += len(name) + len(value) + 4
        if self._field_bytes > MAX_ANSWER_HEAD_BYTES:
            self._fail(HandlerClientError("the handler's answer head is too large"))
        elif self._head_done:
            return  # a trailer: not kept
        self._headers.append(
            (name.decode("latin-1").lower(), value.decode("utf-8", "surrogateescape"))
        )

    def on_message_begin(self) -> None:
        if self._waiter is not None and self._waiter.done():
            # A second answer to one request: the connection is out of step.
            self._reusable = False

    def on_headers_complete(self) -> None:
        self._unparsed = 0
        self._head_done = True
        self._status = self._parser.get_status_code()
        if self._status < 200 or self._status in (204, 304):
            return
        framed = any(
            name == "content-length" or (name == "transfer-encoding" and "chunked" in value.lower())
            for name, value in self._headers
        )
        self._until_eof = not framed

    def on_body(self, body: bytes) -> None:
        self._unparsed = 0
        self._size += len(body)
        if self._size > MAX_ANSWER_BYTES:
            self._error = HandlerClientError(
                f"the handler's answer is larger than {MAX_ANSWER_BYTES} bytes"
            )
        elif self._error is None:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self._unparsed = 0
        if self._status < 200:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._headers = []
            self._head_done = False
            self._field_bytes = 0
            return
        if self._error is None and self._waiter is not None and not self._waiter.done():
            self._complete(reusable=self._parser.should_keep_alive())

    # ------------------------------------------------------------------------ requests
    def exchange(self, head: bytes, body: bytes) -> asyncio.Future[HandlerAnswer]:
        """Send one request; the future is its answer (or a HandlerClientError)."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        self._new_answer()
        self.used += 1
        if self.closed or self.transport.is_closing():
            waiter.set_exception(
                HandlerClientError("the connection was closed", before_answer=True)
            )
            return waiter
        if len(body) < 16384:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        return waiter

    @property
    def reusable(self) -> bool:
        return self._reusable and not self.closed

    def close(self) -> None:
        """End the connection gracefully (an answer was read whole)."""
        if self.transport is not None and not self.closed:
            self.transport.close()

    def abort(self) -> None:
        """End the connection now, unsent bytes and all (mid-request, or an answer gone wrong):
        a handler that stopped reading cannot hold it open."""
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def _complete(self, reusable: bool) -> None:
        assert self._waiter is not None
        self._reusable = reusable
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._waiter.set_result(HandlerAnswer(self._status, tuple(self._headers), body))

    def _fail(self, error: HandlerClientError) -> None:
        if self._error is None:
            self._error = error

    def _settle(self) -> None:
        """Hand the waiter its error, and end the connection that carried it."""
        self._reusable = False
        if self._waiter is not None and not self._waiter.done() and self._error is not None:
            self._waiter.set_exception(self._error)
        self.abort()


class HandlerClient:
    """Requests to event handlers over pooled keep-alive connections."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        *,
        per_origin: int = 256,
        idle_seconds: float = 30.0,
    ) -> None:
        self._ssl = ssl_context
        self._per_origin = per_origin
        self._idle_seconds = idle_seconds
        self._targets: dict[str, _Target] = {}
        """Request targets by URL, parsed once."""
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: dict[tuple[str, str, int], int] = {}
        """Per origin, the connections open or being opened."""
        self._waiting: dict[tuple[str, str, int], deque[asyncio.Future[_Connection | None]]] = {}
        self._all: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def request(
        self, method: str, url: str, headers: bytes, body: bytes = b""
    ) -> HandlerAnswer:
        """Send ``method`` to ``url`` with ``headers`` (from :func:`header_lines`) and ``body``.

        Raises:
            HandlerClientError: the handler could not be reached, or its answer not read.
        """
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) >= _TARGETS_KEPT:
                self._targets.clear()
            target = self._targets[url] = _target(url)
        head = b"%s %s%sContent-Length: %d\r\n\r\n" % (
            method.encode("ascii"),
            target.lines,
            headers,
            len(body),
        )
        for attempt in (1, 2):
            # A second attempt (the kept connection was found closed) takes a new connection.
            connection = await self._acquire(target, fresh=attempt == 2)
            reused = connection.used > 0
            try:
                answer = await connection.exchange(head, body)
            except HandlerClientError as exc:
                self._drop(connection)
                if attempt == 1 and reused and exc.before_answer:
                    continue
                raise
            except BaseException:
                # Cancelled mid-answer: what is left of it would meet the next request.
                self._drop(connection)
                raise
            self._release(connection)
            return answer
        raise AssertionError("unreachable")

    async def _acquire(self, target: _Target, fresh: bool = False) -> _Connection:
        origin = target.origin
        self._check_open()
        idle = self._idle.get(origin)
        while idle and not fresh:
            connection = idle.pop()
            if not connection.closed:
                return connection
        while self._open.get(origin, 0) >= self._per_origin:
            handed = await self._wait_for(origin)
            self._check_open()
            if handed is not None:
                if not handed.closed:
                    return handed
                self._drop(handed)
        self._open[origin] = self._open.get(origin, 0) + 1
        loop = asyncio.get_running_loop()
        try:
            transport, connection = await loop.create_connection(
                lambda: _Connection(self, origin),
                target.host,
                target.port,
                ssl=self._tls() if target.tls else None,
                server_hostname=target.server_hostname,
            )
        except BaseException as exc:
            self._open[origin] -= 1
            self._wake(origin)
            if isinstance(exc, (OSError, ssl.SSLError)):
                raise HandlerClientError(
                    f"cannot connect to {target.host}:{target.port}: {exc}"
                ) from exc
            raise
        # uvloop may call ``connection_made`` only after this returns.
        connection.transport = transport
        self._all.add(connection)
        if self._closed:
            self._drop(connection)
            self._check_open()
        return connection

    def _check_open(self) -> None:
        if self._closed:
            raise HandlerClientError("the client is closed")

    async def _wait_for(self, origin: tuple[str, str, int]) -> _Connection | None:
        """Wait until a connection to ``origin`` is handed over (or None: one may be opened)."""
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault(origin, deque())
        waiting.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.cancelled() or not waiter.done():
                with contextlib.suppress(ValueError):
                    waiting.remove(waiter)
            else:
                # Handed something as the caller was cancelled: pass it on.
                handed = waiter.result()
                if handed is None:
                    self._wake(origin)
                else:
                    self._release(handed)
            raise

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _release(self, connection: _Connection) -> None:
        """A request's end: keep its connection for the next one, or let it go."""
        origin = connection.origin
        if not connection.reusable or self._closed:
            self._drop(connection, graceful=True)
            return
        waiting = self._waiting.get(origin)
        while waiting:
            waiter = waiting.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(origin, []).append(connection)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._idle_seconds, self._sweep)

    def _drop(self, connection: _Connection, graceful: bool = False) -> None:
        """Let a connection go: its place under the per-origin cap is free at once, whether or
        not its transport has finished closing."""
        if connection in self._all:
            self._all.discard(connection)
            origin = connection.origin
            self._open[origin] -= 1
            idle = self._idle.get(origin)
            if idle and connection in idle:
                idle.remove(connection)
            self._wake(origin)
        if graceful:
            connection.close()
        else:
            connection.abort()

    def _wake(self, origin: tuple[str, str, int]) -> None:
        """Let one caller waiting for a connection to ``origin`` open a new one."""
        waiting = self._waiting.get(origin)
        while waiting:
            waiter = waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        """Close the connections idle for ``idle_seconds``; tick again while any is idle."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        stale = loop.time() - self._idle_seconds
        for idle in list(self._idle.values()):
            for connection in [c for c in idle if c.idle_since <= stale]:
                self._drop(connection, graceful=True)
        if any(self._idle.values()):
            self._sweeper = loop.call_later(self._idle_seconds / 2, self._sweep)

    async def close(self) -> None:
        """Close every connection; requests under way or waiting end with a
        HandlerClientError."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for connection in list(self._all):
            self._drop(connection)
        for waiting in self._waiting.values():
            for waiter in waiting:
                if not waiter.done():
                    waiter.set_result(None)
        self._idle.clear()
        await asyncio.sleep(0)
