"""Mapping of errors to HTTP answers: the service's error body (rest-api.md §2)."""

from __future__ import annotations

import orjson
from aiohttp import web

__all__ = ["error_response"]

# Codes named as in .NET's HttpStatusCode (the service documents no list of its own).
_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    414: "RequestUriTooLong",
    415: "UnsupportedMediaType",
    431: "RequestHeaderFieldsTooLarge",
    500: "InternalServerError",
}


def error_response(status: int, message: str) -> web.Response:
    """An ``ErrorDetail`` JSON body with the ``x-ms-error-code`` header."""
    code = _CODES.get(status, "Error")
    try:
        body = orjson.dumps({"code": code, "message": message})
    except TypeError:  # a lone surrogate from the request, echoed in the message
        text = message.encode("utf-8", "backslashreplace").decode()
        body = orjson.dumps({"code": code, "message": text})
    return web.Response(
        status=status,
        body=body,
        content_type="application/json",
        headers={"x-ms-error-code": code},
    )
