"""How large an HTTP request may be, and the aiohttp runner that enforces it.

The SDKs sign the whole request URL into the token's ``aud``, so a URL is carried twice: once in
the request line and once, base64-encoded (4/3 of its size), in ``Authorization``. Measured with
``azure-messaging-webpubsubservice`` 1.3.0 and ``@azure/web-pubsub`` 1.2.0, ``send_to_all`` with
1,000 ``excluded`` connection ids of 22 characters (hubbub's) sends a 32 kB URL and a 43 kB
``Authorization`` header; with 43-character ids (32 random bytes) 53 kB and 71 kB. The limits
take the longer ids with headroom, and a header limit that holds the token of any URL within the
URL limit. Whatever is larger is answered ``414`` (URL) or ``431`` (headers) with the service's
error body; the service documents no limits of its own.

aiohttp answers a request it cannot parse with a plain-text ``400`` and logs the error with the
start of the offending line (a token, for an oversized ``Authorization``). :class:`Runner` makes
it answer with the service's error body instead and log one debug line that quotes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from hubbub.logs import ACTIVITY
from hubbub.server.errors import error_response

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_HEADERS",
    "MAX_HEADER_BYTES",
    "MAX_LANE_HEAD_BYTES",
    "MAX_URL_BYTES",
    "Runner",
]

log = logging.getLogger("hubbub.http")

MAX_URL_BYTES = 64 * 1024
"""Longest request target (path and query)."""
MAX_HEADER_BYTES = 96 * 1024
"""Longest header, name and value: ``Authorization`` for a URL of :data:`MAX_URL_BYTES` is 88 kB."""
MAX_HEADERS = 64
"""Most headers in one request (the SDKs send about 10; aiohttp's default is 128). With the
sizes above, what a client can make a connection hold before it is authenticated is bounded by
``MAX_URL_BYTES + MAX_HEADERS * MAX_HEADER_BYTES``."""
MAX_BODY_BYTES = 1024 * 1024
"""Largest REST message body (the service's limit is undocumented; 1 MB like client messages)."""
MAX_LANE_HEAD_BYTES = 16 * 1024
"""Longest request head the REST fast lane reads; a longer one is aiohttp's to judge. Below the
size limits above, so the lane never serves a request too long for aiohttp (it does not count
headers, though: a send with more than :data:`MAX_HEADERS` small ones is the lane's)."""

_TOO_MANY_HEADERS = "Too many headers received"  # aiohttp's message (both of its parsers)


def _refusal(exc: HttpProcessingError) -> web.Response:
    """The answer to a request aiohttp could not parse: 414, 431 or 400, with the error body."""
    if isinstance(exc, LineTooLong):
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
