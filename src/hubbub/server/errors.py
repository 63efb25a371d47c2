"""The service's error answers (rest-api.md §2): an ``ErrorDetail`` body and ``x-ms-error-code``.

:func:`error_response` answers through aiohttp; answers written as bytes (the fast lane's, a
request head's timeout) take the same body from :func:`error_body`
(:func:`hubbub.server.restrules.raw_error`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
from aiohttp import web

from hubbub.logs import ACTIVITY

__all__ = [
    "CLUSTER_UNAVAILABLE",
    "count_errors",
    "error_body",
    "error_code",
    "error_response",
    "unavailable_response",
]

CLUSTER_UNAVAILABLE = "The cluster engine is unavailable; retry later."
"""The message of the 503 a node answers while it cannot reach Redis."""
RETRY_AFTER_SECONDS = 1

log = logging.getLogger("hubbub.rest")

# Codes named as in .NET's HttpStatusCode (the service documents no list of its own).
_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    408: "RequestTimeout",
    413: "RequestEntityTooLarge",
    414: "RequestUriTooLong",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
    431: "RequestHeaderFieldsTooLarge",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def error_code(status: int) -> str:
    """The ``code`` of the error body (and ``x-ms-error-code``) for an HTTP status."""
    return _CODES.get(status, "Error")


def error_body(status: int, message: str) -> bytes:
    """The ``ErrorDetail`` JSON body: ``{"code", "message"}``."""
    code = error_code(status)
    try:
        return orjson.dumps({"code": code, "message": message})
    except TypeError:  # a lone surrogate from the request, echoed in the message
        text = message.encode("utf-8", "backslashreplace").decode()
        return orjson.dumps({"code": code, "message": text})


def error_response(
    status: int, message: str, headers: Sequence[tuple[str, str]] = ()
) -> web.Response:
    """An ``ErrorDetail`` JSON body with the ``x-ms-error-code`` header (and ``headers``)."""
    return web.Response(
        status=status,
        body=error_body(status, message),
        content_type="application/json",
        headers={"x-ms-error-code": error_code(status), **dict(headers)},
    )


def unavailable_response() -> web.Response:
    """503 ``ServiceUnavailable`` with ``Retry-After``: the cluster engine is out of reach."""
    response = error_response(503, CLUSTER_UNAVAILABLE)
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def count_errors(request: web.Request, response: web.StreamResponse) -> None:
    """Count an error answer for the log's summary (``on_response_prepare``); log a 5xx.

    A refused handshake counts by status; a REST error (one with the service's error code: a
    bare 404 answers an existence check) by status and code, each 5xx logged as it happens.
    """
    status = response.status
    if status < 400:
        return
    if request.path.startswith("/client"):
        ACTIVITY.refused.add(str(status))
        return
    code = response.headers.get("x-ms-error-code")
    if code is None:
        return
    if status >= 500:
        log.error("%s %s answered %d %s", request.method, request.path, status, code)
    else:
        ACTIVITY.rest_errors.add(f"{status} {code}")
