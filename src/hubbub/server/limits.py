"""How large an HTTP request may be, and the aiohttp runner that enforces it.

The SDKs sign the whole request URL into the token's ``aud``, so a URL is carried twice: once in
the request line and once, base64-encoded (4/3 of its size), in ``Authorization``. Measured with
``azure-messaging-webpubsubservice`` 1.3.0 and ``@azure/web-pubsub`` 1.2.0, ``send_to_all`` with
1,000 ``excluded`` connection ids of 22 characters (hubbub's) sends a 32 kB URL and a 43 kB
``Authorization`` header; with 43-character ids (32 random bytes) 53 kB and 71 kB. The limits
take the longer ids with headroom, and a header limit that holds the token of any URL within the
URL limit; the whole head (124 kB for the longer ids) is bounded too, so that what a client can
make a connection hold before it is authenticated is :data:`MAX_HEAD_BYTES`, not the product of
the per-header limits. Whatever is larger is answered ``414`` (URL) or ``431`` (headers) with
the service's error body; the service documents no limits of its own.

aiohttp answers a request it cannot parse with a plain-text ``400`` and logs the error with the
start of the offending line (a token, for an oversized ``Authorization``). :class:`Runner` makes
it answer with the service's error body instead and log one debug line that quotes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader

from hubbub.limits import (
    MAX_HEAD_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_LANE_HEAD_BYTES,
    MAX_REST_BODY_BYTES as MAX_BODY_BYTES,
    MAX_URL_BYTES,
)
from hubbub.logs import ACTIVITY
from hubbub.server.errors import error_response

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_LANE_HEAD_BYTES",
    "MAX_URL_BYTES",
    "Runner",
]

log = logging.getLogger("hubbub.http")

_TOO_MANY_HEADERS = "Too many headers received"  # aiohttp's message (both of its parsers)


class HeadTooLarge(BadHttpMessage):
    """A request head longer than :data:`MAX_HEAD_BYTES`."""


class _BoundedHeads:
    """aiohttp's request parser, with a bound on the whole of each request head.

    aiohttp's parsers bound each line and the number of headers, not their sum. A head is read
    while no request body is pending (the last request's body, if any, is complete): the bytes
    of reads that do not complete it are counted, and of the read that completes it those up to
    its blank line. A body, however large, is never counted. Over the bound the parser fails as
    on any malformed request, and aiohttp answers through :meth:`_RequestHandler.handle_error`.
    (A head that begins in the read that ends the request before it is bounded by that read.)
    """

    __slots__ = ("_body", "_head", "_last", "_parser")

    def __init__(self, parser: Any) -> None:
        self._parser = parser
        self._head = 0
        """Bytes of the head being read, in earlier reads."""
        self._last = b""
        """The end of the last read of the head being read (a blank line may span two reads)."""
        self._body: StreamReader | None = None
        """The body of the last request parsed; None before the first."""

    def feed_data(self, data: bytes) -> Any:
        body = self._body
        reading_head = body is None or body.is_eof()
        parsed = self._parser.feed_data(data)
        messages = parsed[0]
        if reading_head:
            held = self._head + len(data)
            if held > MAX_HEAD_BYTES and (not messages or self._length(data) > MAX_HEAD_BYTES):
                raise HeadTooLarge(f"request head over {MAX_HEAD_BYTES} bytes")
            if not messages:
                self._head, self._last = held, data[-3:]
        if messages:
            self._body = messages[-1][1]
            self._head, self._last = 0, b""
        return parsed

    def _length(self, data: bytes) -> int:
        """The length of the head that ``data`` completes."""
        joined = self._last + data
        end = joined.find(b"\r\n\r\n")
        return self._head + end + 4 - len(self._last) if end >= 0 else self._head + len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


def _refusal(exc: HttpProcessingError) -> web.Response:
    """The answer to a request aiohttp could not parse: 414, 431 or 400, with the error body."""
    if isinstance(exc, HeadTooLarge):
        response = error_response(431, f"the request head is longer than {MAX_HEAD_BYTES} bytes")
    elif isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == MAX_URL_BYTES:
            response = error_response(414, f"the request URL is longer than {limit} bytes")
        else:
            response = error_response(431, f"a request header is longer than {limit} bytes")
    elif exc.message == _TOO_MANY_HEADERS:
        response = error_response(431, f"the request has more than {MAX_HEADERS} headers")
    else:
        response = error_response(400, "the request is not valid HTTP/1.1")
    response.force_close()
    return response


class _RequestHandler(web.RequestHandler):
    """aiohttp's HTTP/1.1 connection, answering unparsable requests as the service does."""

    __slots__ = ()

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        # aiohttp's own parser, wrapped (the attribute is aiohttp's: pinned versions).
        self._parser = _BoundedHeads(self._parser)  # type: ignore[assignment]

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        response = _refusal(exc)
        ACTIVITY.rest_errors.add(f"{response.status} {response.headers['x-ms-error-code']}")
        # The exception's text quotes the request (a token, say): only its class is logged.
        log.debug(
            "refused a request from %s with %d: %s",
            request.remote,
            response.status,
            type(exc).__name__,
        )
        return response


class _Server(web.Server):
    def __call__(self) -> web.RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._kwargs)


class Runner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` with the limits above and the service's refusals."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(
            app,
            max_line_size=MAX_URL_BYTES,
            max_field_size=MAX_HEADER_BYTES,
            max_headers=MAX_HEADERS,
            **kwargs,
        )

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # starts the application
        return _Server(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
