"""The service's exact REST answers for api-versions and invalid filters (rest-api.md §1, §6).

Pure: each function returns the status, headers and body to send; the REST rulebook (aiohttp
handlers and the fast lane) sends them.

api-version: the service supports the versions it lists in ``api-supported-versions`` on every
versioned answer, gates routes by the version that introduced them, and answers any other
version with ASP.NET API Versioning's 400 (``The HTTP resource that matches the request URI
'<uri>' does not support the API version '<v>'.``, the text the .NET SDK shows against the
service). ``/api/health`` is version-neutral. The newest preview an official SDK sends,
``2026-02-01-preview`` (``azure-messaging-webpubsubchatservice`` 1.0.0b1), goes only to the chat
routes (``/api/hubs/{hub}/chat/...``, which hubbub does not serve; its ``:generateToken`` sends
2024-12-01), so it is not among the versions of these routes (unconfirmed for the service).

Invalid filter: the body the service sends (its live answer, recorded by ``@azure/web-pubsub``'s
tests), as ``application/problem+json``. That Content-Type matters: ``@azure/core-client`` parses
only ``application/json`` and ``text/json`` error bodies, so with it ``RestError.message`` is the
raw body, which the SDK's own test reads with ``JSON.parse(error.message).message``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

__all__ = [
    "API_SUPPORTED_VERSIONS",
    "API_VERSION_NEUTRAL",
    "LATEST_API_VERSION",
    "MINIMUM_API_VERSION",
    "SUPPORTED_API_VERSIONS",
    "RestAnswer",
    "check_api_version",
    "invalid_filter_answer",
]

SUPPORTED_API_VERSIONS = ("2021-10-01", "2022-11-01", "2023-07-01", "2024-01-01", "2024-12-01")
"""The versions the service answers (its ``api-supported-versions``, 2026)."""
LATEST_API_VERSION = SUPPORTED_API_VERSIONS[-1]
API_SUPPORTED_VERSIONS = ("api-supported-versions", ", ".join(SUPPORTED_API_VERSIONS))
"""The header every versioned answer carries, as the service's do."""

MINIMUM_API_VERSION = {
    "WebPubSub_RemoveConnectionFromAllGroups": "2022-11-01",
    "WebPubSub_AddConnectionsToGroups": "2023-07-01",
    "WebPubSub_RemoveConnectionsFromGroups": "2023-07-01",
    "WebPubSub_ListConnectionsInGroup": "2024-12-01",
}
"""Operations newer than the first version, by operationId, with the version that added them."""
API_VERSION_NEUTRAL = frozenset({"HealthApi_GetServiceStatus"})
"""Operations that take any api-version, or none."""

_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}(?:-[A-Za-z][A-Za-z0-9]*)?")


@dataclass(frozen=True, slots=True)
class RestAnswer:
    """An error answer: status, headers (``Content-Type`` and ``x-ms-error-code`` first), body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _versioning_error(code: str, message: str) -> RestAnswer:
    body = orjson.dumps({"error": {"code": code, "message": message, "innerError": None}})
    headers = (
        ("Content-Type", "application/json; charset=utf-8"),
        ("x-ms-error-code", code),
        API_SUPPORTED_VERSIONS,
    )
    return RestAnswer(400, headers, body)


def check_api_version(values: list[str], operation: str, uri: str) -> RestAnswer | None:
    """Check the ``api-version`` query values of a request.

    Args:
        values: every ``api-version`` value of the query, in order (usually one).
        operation: the route's operationId (``WebPubSub_SendToAll``, ...).
        uri: the request URI without its query, for the message (``http://host/api/...``).

    Returns:
        None when the version is fine, else the 400 answer: ``ApiVersionUnspecified`` without
        a value, ``AmbiguousApiVersion`` for several different ones, ``InvalidApiVersion`` for
        one that is not a version, ``UnsupportedApiVersion`` for one the service or the route
        does not support.
    """
    if operation in API_VERSION_NEUTRAL:
        return None
    distinct = list(dict.fromkeys(values))
    if not distinct:
        return _versioning_error(
            "ApiVersionUnspecified", "An API version is required, but was not specified."
        )
    if len(distinct) > 1:
        return _versioning_error(
            "AmbiguousApiVersion",
            f"The following API versions were requested: {', '.join(distinct)}. At most, only a"
            " single API version may be specified. Please update the intended API version and"
            " try again.",
        )
    version = distinct[0]
    unsupported = (
        f"The HTTP resource that matches the request URI '{uri}' does not support the API "
        f"version '{version}'."
    )
    if not _VERSION.fullmatch(version):
        return _versioning_error("InvalidApiVersion", unsupported)
    if version not in SUPPORTED_API_VERSIONS:
        return _versioning_error("UnsupportedApiVersion", unsupported)
    if version < MINIMUM_API_VERSION.get(operation, version):
        return _versioning_error("UnsupportedApiVersion", unsupported)
    return None


def invalid_filter_answer(message: str) -> RestAnswer:
    """The service's 400 for an invalid ``filter``; ``message`` is its text (``filters``)."""
    body = orjson.dumps(
        {
            "code": "Error.BadRequest",
            "message": message,
            "target": "filter",
            "errors": {"filter": [message]},
            "type": None,
            "title": "One or more validation errors occurred.",
            "status": 400,
            "detail": None,
            "instance": None,
            "extensions": {},
        }
    )
    headers = (
        ("Content-Type", "application/problem+json; charset=utf-8"),
        ("x-ms-error-code", "Error.BadRequest"),
    )
    return RestAnswer(400, headers, body)
