"""The REST sends answered without aiohttp's request machinery.

``POST /api/hubs/{hub}[/users|groups|connections/{name}]/:send`` is the call an app server makes
most: one per message. aiohttp spends most of such a call on request, URL and response objects
(a do-nothing aiohttp route serves about 11,000 calls/s on a 2-core machine), so each
:class:`~hubbub.server.port.Port` first offers a request to the :class:`Sniffer`: httptools
parses its head, and a send that is plain all through is published and answered ``202`` right
here. Plain means: ``api-version`` the only query parameter, an ASCII path without
percent-escapes, a ``Content-Length`` body of at most 1 MB in a known content type that
validates, a valid bearer token, HTTP/1.1 keep-alive, no ``Expect``.

Everything else, and every request that would be refused, goes to aiohttp byte for byte, which
answers it (errors included) through :mod:`hubbub.server.rest`: there is one implementation of
every rule, this module only skips the objects for the case where all rules pass. Once a
connection has gone to aiohttp it stays there, so answers keep the order of the requests.

aiohttp does not see a connection until its first request for aiohttp: the lane closes the ones
it alone serves once they have been idle for the keep-alive time, as aiohttp does its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from email.utils import formatdate

import httptools
import orjson
from aiohttp.http import SERVER_SOFTWARE

from hubbub.core.commands import Target
from hubbub.core.names import validate_group, validate_hub
from hubbub.errors import BadRequestError
from hubbub.metrics import FAST_SENDS
from hubbub.protocol.tokens import TokenError, verify_rest_token
from hubbub.server.limits import MAX_BODY_BYTES, MAX_LANE_HEAD_BYTES as MAX_HEAD_BYTES
from hubbub.server.rest import CONTENT_TYPES, payload_of
from hubbub.service import SendOptions, Service
from hubbub.types import HubName

__all__ = ["FastLane", "Sniffer"]

log = logging.getLogger("hubbub.rest")

# A request head longer than MAX_HEAD_BYTES is aiohttp's to judge (it answers 414, 431 or 400),
# a body longer than MAX_BODY_BYTES aiohttp's to refuse (413).

_TARGETS = {b"users": Target.USER, b"groups": Target.GROUP, b"connections": Target.CONNECTION}
_WANTED = frozenset(
    (b"authorization", b"content-type", b"content-length", b"transfer-encoding", b"expect")
)
_NO_OPTIONS = SendOptions()
_ERROR_BODY = orjson.dumps({"code": "InternalServerError", "message": "internal server error"})
_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\nx-ms-error-code: InternalServerError\r\n"
    b"Content-Type: application/json\r\nContent-Length: "
    + str(len(_ERROR_BODY)).encode()
    + b"\r\n\r\n"
    + _ERROR_BODY
)


class FastLane:
    """Publishes plain REST sends of one node (shared by every port)."""

    def __init__(
        self,
        service: Service,
        access_keys: tuple[str, ...],
        keep_alive_seconds: float,
    ) -> None:
        self._service = service
        self._keys = access_keys
        self._date = b""
        self._date_second = -1
        self._keep_alive = keep_alive_seconds
        self._sniffers: set[Sniffer] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    # -- the connections the lane serves --------------------------------------------------------

    def sniffer(self, write: Callable[[bytes], None], close: Callable[[], None]) -> Sniffer:
        """A sniffer for a new connection, watched for idleness until :meth:`forget`."""
        sniffer = Sniffer(self, write, close)
        self._sniffers.add(sniffer)
        if self._sweeper is None:
            self._schedule_sweep()
        return sniffer

    def forget(self, sniffer: Sniffer) -> None:
        """The connection is gone, or aiohttp serves it from now on."""
        self._sniffers.discard(sniffer)

    def _sweep(self) -> None:
        """Close the connections idle for the keep-alive time (checked 4 times per period)."""
        self._sweeper = None
        idle_since = time.monotonic() - self._keep_alive
        for sniffer in [s for s in self._sniffers if s.active <= idle_since]:
            self._sniffers.discard(sniffer)
            sniffer.close()
        if self._sniffers:
            self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        self._sweeper = asyncio.get_running_loop().call_later(self._keep_alive / 4, self._sweep)

    def close(self) -> None:
        """Close every connection only the lane has served (the node is stopping)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        sniffers, self._sniffers = self._sniffers, set()
        for sniffer in sniffers:
            sniffer.close()

    # -- one send -------------------------------------------------------------------------------

    def send(self, url: bytes, headers: dict[bytes, bytes], body: bytes) -> bytes | None:
        """Publish a plain send and return the ``202`` answer; None: aiohttp must answer."""
        route = _route(url)
        if route is None:
            return None
        hub, target, name, path = route
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        data_type = CONTENT_TYPES.get(
            headers.get(b"content-type", b"").partition(b";")[0].strip().lower().decode("latin-1")
        )
        if scheme.lower() != b"bearer" or not token.strip() or data_type is None:
            return None
        try:
            verify_rest_token(token.strip().decode("latin-1"), self._keys, path)
            payload = payload_of(data_type, body)
        except (TokenError, BadRequestError):
            return None
        try:
            self._service.send_nowait(hub, target, name, payload, _NO_OPTIONS)
        except Exception:
            log.error("POST %s failed", path, exc_info=True)
            return _INTERNAL_ERROR
        FAST_SENDS.inc()
        return self._accepted()

    def _accepted(self) -> bytes:
        second = int(time.time())
        if second != self._date_second:
            self._date_second = second
            self._date = (
                b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nDate: "
                + formatdate(second, usegmt=True).encode()
                + b"\r\nServer: "
                + SERVER_SOFTWARE.encode()
                + b"\r\n\r\n"
            )
        return self._date


@functools.lru_cache(maxsize=4096)
def _route(url: bytes) -> tuple[HubName, Target, str, str] | None:
    """Hub, target, name and path of a plain send's URL; None for any other URL."""
    path, _, query = url.partition(b"?")
    if (
        not query.startswith(b"api-version=")
        or len(query) == len(b"api-version=")
        or b"&" in query
        or b"%" in path
        or not path.isascii()
    ):
        return None
    parts = path.split(b"/")
    if len(parts) < 5 or parts[1] != b"api" or parts[2] != b"hubs":
        return None
    tail = parts[4:]
    if tail == [b":send"]:
        target, name = Target.HUB, ""
    elif len(tail) == 3 and tail[2] == b":send" and tail[0] in _TARGETS and tail[1]:
        target, name = _TARGETS[tail[0]], tail[1].decode()
    else:
        return None
    try:
        hub = validate_hub(parts[3].decode())
        if target is Target.GROUP:
            name = validate_group(name)
    except BadRequestError:
        return None
    return hub, target, name, path.decode()


class _Head:
    """httptools callbacks: the URL and the few headers the lane looks at."""

    __slots__ = ("complete", "headers", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.lower()
        if key in _WANTED:
            self.headers[key] = value

    def on_headers_complete(self) -> None:
        self.complete = True


class Sniffer:
    """One connection's requests until the first one the lane does not take.

    Args:
        lane: the node's fast lane.
        write: writes an answer to the connection.
        close: closes the connection (it was idle too long).
    """

    __slots__ = ("_buffer", "_lane", "_write", "active", "close")

    def __init__(
        self, lane: FastLane, write: Callable[[bytes], None], close: Callable[[], None]
    ) -> None:
        self._lane = lane
        self._write = write
        self.close = close
        self._buffer = b""
        self.active = time.monotonic()
        """When the client last sent something."""

    def feed(self, data: bytes) -> bytes | None:
        """Answer the plain sends in ``data``; return the bytes for aiohttp from the first other
        request on (None while every request so far was the lane's)."""
        self.active = time.monotonic()
        buffer = self._buffer = self._buffer + data if self._buffer else data
        try:
            return self._answer(buffer)
        except Exception:
            # ``_buffer`` starts at the request that failed: aiohttp answers it.
            log.error("the fast lane failed on a request; aiohttp answers it", exc_info=True)
            return self._buffer

    def _answer(self, buffer: bytes) -> bytes | None:
        """The loop of :meth:`feed`; ``_buffer`` always starts at the request being read."""
        while buffer:
            end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES)
            if end < 0:
                if len(buffer) >= MAX_HEAD_BYTES:
                    return buffer
                break
            head = _Head()
            parser = httptools.HttpRequestParser(head)
            try:
                parser.feed_data(buffer[: end + 4])
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                return buffer
            if (
                not head.complete
                or parser.get_method() != b"POST"
                or parser.get_http_version() != "1.1"
                or not parser.should_keep_alive()
                or b"expect" in head.headers
                or b"transfer-encoding" in head.headers
            ):
                return buffer
            length_text = head.headers.get(b"content-length", b"")
            if not length_text.isdigit() or int(length_text) > MAX_BODY_BYTES:
                return buffer
            start, stop = end + 4, end + 4 + int(length_text)
            if len(buffer) < stop:
                break  # the body is still on its way
            answer = self._lane.send(head.url, head.headers, buffer[start:stop])
            if answer is None:
                return buffer
            buffer = self._buffer = buffer[stop:]  # published: never handed on again
            self._write(answer)
        return None
