"""The one REST rulebook: what every data-plane request must pass, and how it is answered.

Two readers serve the REST API: aiohttp (:mod:`hubbub.server.rest`, every request) and the fast
lane (:mod:`hubbub.server.fastlane`, plain ``:send`` calls without aiohttp's objects). Both ask
this module, so a rule is written once and the two cannot drift apart:

- routing: method and path shape to an :class:`Operation` (:func:`route`), and what each
  ``:send`` sends to (:data:`SENDS`, :func:`send_target`);
- the request target must be UTF-8, a bearer token signed for this URL, ``api-version`` given
  (:meth:`RestRules.refusal`);
- content types to :class:`~hubbub.protocol.messages.DataType` (:func:`data_type`), and what a
  message body must be (:func:`payload_of`);
- the body limit (:func:`body_allowed`), which requests leave their connection open
  (:func:`keeps_alive`) and the keep-alive time of an idle connection
  (:attr:`RestRules.keep_alive_seconds`);
- the refusals (:class:`Refusal`: status and message) and, for answers written as bytes, the
  service's error answer (:func:`raw_error`, with the body of :mod:`hubbub.server.errors`) and
  the status line and ``Date``/``Server`` headers aiohttp writes (:func:`raw_answer`).

Nothing here touches a socket or an aiohttp object. Admin API throttling, a per-client rate
limit or another rule that every REST request must pass goes here, into
:meth:`RestRules.refusal`, and both readers apply it.
"""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import msgspec
from aiohttp.http import SERVER_SOFTWARE

from hubbub.core.commands import Target
from hubbub.core.names import validate_group, validate_hub
from hubbub.errors import BadRequestError
from hubbub.limits import MAX_REST_BODY_BYTES
from hubbub.protocol.messages import DataType, Payload
from hubbub.protocol.tokens import TokenError, token_window, verify_rest_token
from hubbub.server.errors import error_body, error_code
from hubbub.types import HubName

__all__ = [
    "API_VERSION",
    "CACHED_URLS",
    "CACHED_URL_BYTES",
    "CONTENT_TYPES",
    "HEALTH_PATH",
    "INTERNAL_ERROR",
    "SENDS",
    "Operation",
    "Refusal",
    "RestRules",
    "Route",
    "Send",
    "accepted_answer",
    "body_allowed",
    "data_type",
    "keeps_alive",
    "media_type",
    "payload_of",
    "raw_answer",
    "raw_error",
    "route",
    "send_target",
]

API_VERSION = "api-version"
"""The query parameter every data-plane call must give (any version is accepted)."""
HEALTH_PATH = "/api/health"
"""The one ``/api`` path that needs no token and no ``api-version``."""
INTERNAL_ERROR = "internal server error"
"""The message of every 500: an unexpected error's details never reach a client."""
CACHED_URLS = 4096
"""Most request paths (or URLs) a REST reader remembers the route of: only those of
authenticated requests, and only up to :data:`CACHED_URL_BYTES` each."""
CACHED_URL_BYTES = 256
"""Longest path (or URL) a REST reader remembers: longer ones are routed every time."""


class Refusal(NamedTuple):
    """A request refused before its operation runs: the status and the error message."""

    status: int
    message: str


# -- answers written as bytes -------------------------------------------------------------------

_date_second = -1
_date = b""


def _date_header() -> bytes:
    """``Date: ...`` as aiohttp writes it (RFC 9110 §5.6.7), made once a second."""
    global _date_second, _date
    second = int(time.time())
    if second != _date_second:
        _date_second = second
        _date = b"Date: " + formatdate(second, usegmt=True).encode()
    return _date


_SERVER = b"Server: " + SERVER_SOFTWARE.encode()


def raw_answer(
    status: int, body: bytes = b"", headers: Sequence[tuple[str, str]] = (), *, close: bool = False
) -> bytes:
    """A whole HTTP/1.1 answer as bytes, with the headers aiohttp's answers carry.

    Args:
        status: the HTTP status.
        body: the body; its length is the ``Content-Length``.
        headers: further headers, in order.
        close: add ``Connection: close`` (the connection closes after the answer).
    """
    lines = [b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode())]
    if close:
        lines.append(b"Connection: close")
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers]
    lines += [b"Content-Length: %d" % len(body), _date_header(), _SERVER, b"", b""]
    return b"\r\n".join(lines) + body


def raw_error(status: int, message: str, *, close: bool = False) -> bytes:
    """The service's error answer as bytes: what :func:`~hubbub.server.errors.error_response`
    answers through aiohttp."""
    headers = [("Content-Type", "application/json"), ("x-ms-error-code", error_code(status))]
    return raw_answer(status, error_body(status, message), headers, close=close)


_accepted_second = -1
_accepted = b""


def accepted_answer() -> bytes:
    """``202 Accepted`` with an empty body, as aiohttp answers a ``:send`` (made once a second)."""
    global _accepted_second, _accepted
    second = int(time.time())
    if second != _accepted_second:
        _accepted_second = second
        _accepted = raw_answer(202)
    return _accepted


# -- the checks before an operation runs --------------------------------------------------------


def sent_as_text(target: str) -> bool:
    """False for a request target with bytes that are not UTF-8 (aiohttp keeps them as
    surrogate escapes, which no name, log line or JSON answer can carry)."""
    if target.isascii():
        return True
    try:
        target.encode()
    except UnicodeEncodeError:
        return False
    return True


class RestRules:
    """The rules of one node's REST API that depend on its configuration.

    Args:
        access_keys: the keys a bearer token may be signed with.
        keep_alive_seconds: how long an HTTP connection may stay idle before it is closed
            (aiohttp's ``keepalive_timeout`` and the fast lane's idle sweep both use it).
    """

    __slots__ = ("access_keys", "keep_alive_seconds")

    def __init__(self, access_keys: tuple[str, ...], keep_alive_seconds: float) -> None:
        self.access_keys = access_keys
        self.keep_alive_seconds = keep_alive_seconds

    def refusal(
        self, target: str, authorization: str, api_version: str | None, *, health: bool = False
    ) -> Refusal | None:
        """Why a request to ``/api/...`` is refused before its operation runs, or None.

        Args:
            target: the request target as sent (path and query, not decoded).
            authorization: the ``Authorization`` header ("" when missing).
            api_version: the ``api-version`` query parameter (None when missing).
            health: the request is for :data:`HEALTH_PATH` (no token, no api-version).
        """
        judged = self.judge(target, authorization, api_version, health=health)
        return judged if isinstance(judged, Refusal) else None

    def judge(
        self, target: str, authorization: str, api_version: str | None, *, health: bool = False
    ) -> Refusal | tuple[float, float]:
        """:meth:`refusal`, or when the request passes, the times between which the same
        request passes again (its token's lifetime, seconds since the epoch; unbounded for
        health): nothing else in these rules depends on the time, so a reader may keep the
        verdict for a request that comes again (the fast lane does)."""
        if not target.isascii() and not sent_as_text(target):
            return Refusal(400, "the request target is not UTF-8")
        if health:
            return _ALWAYS
        scheme, _, token = authorization.partition(" ")  # RFC 6750 §2.1
        token = token.strip()
        if not token or scheme.lower() != "bearer":
            return Refusal(401, "a bearer token is required")
        try:
            claims = verify_rest_token(token, self.access_keys, target)
        except TokenError as exc:
            return Refusal(401, str(exc))
        if not api_version:
            return Refusal(400, "the api-version query parameter is required")
        return token_window(claims)


_ALWAYS = (float("-inf"), float("inf"))


# -- routing ------------------------------------------------------------------------------------


class Operation(enum.Enum):
    """The data-plane operations under ``/api/hubs/{hub}`` (rest-api.md §4)."""

    ADD_TO_GROUPS = "add_to_groups"
    CLOSE_ALL = "close_all"
    GENERATE_TOKEN = "generate_token"
    REMOVE_FROM_GROUPS = "remove_from_groups"
    SEND_TO_ALL = "send_to_all"
    CLOSE_CONNECTION = "close_connection"
    CONNECTION_EXISTS = "connection_exists"
    SEND_TO_CONNECTION = "send_to_connection"
    REMOVE_CONNECTION_FROM_ALL_GROUPS = "remove_connection_from_all_groups"
    GROUP_EXISTS = "group_exists"
    CLOSE_GROUP = "close_group"
    SEND_TO_GROUP = "send_to_group"
    LIST_GROUP_CONNECTIONS = "list_group_connections"
    REMOVE_CONNECTION_FROM_GROUP = "remove_connection_from_group"
    ADD_CONNECTION_TO_GROUP = "add_connection_to_group"
    REVOKE_PERMISSION = "revoke_permission"
    CHECK_PERMISSION = "check_permission"
    GRANT_PERMISSION = "grant_permission"
    USER_EXISTS = "user_exists"
    CLOSE_USER = "close_user"
    SEND_TO_USER = "send_to_user"
    REMOVE_USER_FROM_ALL_GROUPS = "remove_user_from_all_groups"
    REMOVE_USER_FROM_GROUP = "remove_user_from_group"
    ADD_USER_TO_GROUP = "add_user_to_group"


# Keyed by method and path shape: names sit at the odd positions (``groups/*/connections/*``),
# so one dict lookup finds the operation instead of one regular expression per route.
_ROUTES: dict[tuple[str, str], Operation] = {
    ("POST", ":addToGroups"): Operation.ADD_TO_GROUPS,
    ("POST", ":closeConnections"): Operation.CLOSE_ALL,
    ("POST", ":generateToken"): Operation.GENERATE_TOKEN,
    ("POST", ":removeFromGroups"): Operation.REMOVE_FROM_GROUPS,
    ("POST", ":send"): Operation.SEND_TO_ALL,
    ("DELETE", "connections/*"): Operation.CLOSE_CONNECTION,
    ("HEAD", "connections/*"): Operation.CONNECTION_EXISTS,
    ("POST", "connections/*/:send"): Operation.SEND_TO_CONNECTION,
    ("DELETE", "connections/*/groups"): Operation.REMOVE_CONNECTION_FROM_ALL_GROUPS,
    ("HEAD", "groups/*"): Operation.GROUP_EXISTS,
    ("POST", "groups/*/:closeConnections"): Operation.CLOSE_GROUP,
    ("POST", "groups/*/:send"): Operation.SEND_TO_GROUP,
    ("GET", "groups/*/connections"): Operation.LIST_GROUP_CONNECTIONS,
    ("DELETE", "groups/*/connections/*"): Operation.REMOVE_CONNECTION_FROM_GROUP,
    ("PUT", "groups/*/connections/*"): Operation.ADD_CONNECTION_TO_GROUP,
    ("DELETE", "permissions/*/connections/*"): Operation.REVOKE_PERMISSION,
    ("HEAD", "permissions/*/connections/*"): Operation.CHECK_PERMISSION,
    ("PUT", "permissions/*/connections/*"): Operation.GRANT_PERMISSION,
    ("HEAD", "users/*"): Operation.USER_EXISTS,
    ("POST", "users/*/:closeConnections"): Operation.CLOSE_USER,
    ("POST", "users/*/:send"): Operation.SEND_TO_USER,
    ("DELETE", "users/*/groups"): Operation.REMOVE_USER_FROM_ALL_GROUPS,
    ("DELETE", "users/*/groups/*"): Operation.REMOVE_USER_FROM_GROUP,
    ("PUT", "users/*/groups/*"): Operation.ADD_USER_TO_GROUP,
}
_NAMES = {
    "connections": "connectionId",
    "groups": "group",
    "users": "userId",
    "permissions": "permission",
}


class Route(NamedTuple):
    """A request's operation and the names in its path, percent-decoded."""

    operation: Operation
    hub: str
    names: tuple[tuple[str, str], ...]
    """``(parameter, name)`` pairs: ``connectionId``, ``group``, ``userId``, ``permission``."""

    def name(self, parameter: str) -> str:
        """The name given for ``parameter`` (``group``, ``userId``, ...); "" when none."""
        for key, value in self.names:
            if key == parameter:
                return value
        return ""


def route(method: str, target: str) -> Route | None:
    """The operation of a request to ``/api/hubs/{hub}/...``; None when there is none (404).

    The path is read as the client sent it (the token's audience is compared with that form
    too): split at its slashes, then each segment percent-decoded once, so a name may hold
    ``/`` (``%2F``), ``?``, ``#`` or a literal ``%2F`` (``%252F``). Call it only once the request
    is authenticated (:meth:`RestRules.refusal`): it remembers recent short paths.

    Raises:
        BadRequestError: a segment is not percent-encoded UTF-8.
    """
    path = _sent_path(target)
    if len(path) <= CACHED_URL_BYTES:
        return _cached_route(method, path)
    return _route(method, path)


def _route(method: str, path: str) -> Route | None:
    parts = path.split("/")
    if len(parts) < 5 or parts[:3] != ["", "api", "hubs"]:
        return None
    try:
        hub, *segments = [unquote(s, errors="strict") for s in parts[3:]]
    except UnicodeDecodeError:
        raise BadRequestError("a name in the path is not percent-encoded UTF-8") from None
    shape = "/".join(s if i % 2 == 0 else "*" for i, s in enumerate(segments))
    operation = _ROUTES.get((method, shape))
    if operation is None or not all(segments):
        return None
    pairs = zip(segments[::2], segments[1::2], strict=False)
    return Route(operation, hub, tuple((_NAMES.get(kind, kind), name) for kind, name in pairs))


_cached_route = functools.lru_cache(maxsize=CACHED_URLS)(_route)
"""Short paths of authenticated requests (see :data:`CACHED_URLS`)."""


def _sent_path(target: str) -> str:
    """The path of a request target as sent: origin form (``/path?query``), or absolute form
    (``http://host/path?query``, as a proxy may send it)."""
    if not target.startswith("/"):
        return urlsplit(target).path
    return target.split("?", 1)[0]


class Send(NamedTuple):
    """What a ``:send`` operation sends to, and which query parameters it reads."""

    target: Target
    parameter: str
    """The path parameter that names the target; "" for the whole hub."""
    excluded: bool
    """It takes ``excluded`` connection ids."""
    filtered: bool
    """It takes an OData ``filter``."""


SENDS = {
    Operation.SEND_TO_ALL: Send(Target.HUB, "", excluded=True, filtered=True),
    Operation.SEND_TO_GROUP: Send(Target.GROUP, "group", excluded=True, filtered=True),
    Operation.SEND_TO_USER: Send(Target.USER, "userId", excluded=False, filtered=True),
    Operation.SEND_TO_CONNECTION: Send(
        Target.CONNECTION, "connectionId", excluded=False, filtered=False
    ),
}
"""The four ``:send`` operations (rest-api.md §4.1)."""


def send_target(found: Route, send: Send) -> tuple[HubName, str]:
    """The hub and the target's name of a send, validated as the service validates them.

    Raises:
        BadRequestError: an invalid hub or group name.
    """
    hub = validate_hub(found.hub)
    name = found.name(send.parameter) if send.parameter else ""
    if send.target is Target.GROUP:
        name = validate_group(name)
    return hub, name


# -- bodies -------------------------------------------------------------------------------------

CONTENT_TYPES = {
    "text/plain": DataType.TEXT,
    "application/json": DataType.JSON,
    "application/octet-stream": DataType.BINARY,
}
_OCTETS = "application/octet-stream"


def media_type(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` header, lower case, as aiohttp reads it: the part
    before any ``;``, and ``application/octet-stream`` when missing or malformed (RFC 9110
    §8.3)."""
    if content_type is None:
        return _OCTETS
    media = content_type.lower().partition(";")[0].strip()
    return media if media.count("/") == 1 else _OCTETS


def data_type(content_type: str | None) -> DataType | None:
    """The data type of a message body sent with this ``Content-Type``; None: not accepted."""
    exact = CONTENT_TYPES.get(content_type) if content_type is not None else None
    return exact if exact is not None else CONTENT_TYPES.get(media_type(content_type))


def keeps_alive(http_version: str, connection: str | None) -> bool:
    """The connection stays open after the answer: HTTP/1.1 without ``Connection: close``
    (RFC 9112 §9.3; HTTP/1.0 keep-alive is aiohttp's alone to serve)."""
    if http_version != "1.1":
        return False
    return connection is None or all(
        token.strip().lower() != "close" for token in connection.split(",")
    )


def body_allowed(length: int) -> bool:
    """A body of ``length`` bytes may be sent (larger ones are answered 413)."""
    return length <= MAX_REST_BODY_BYTES


def payload_of(kind: DataType, body: bytes) -> Payload:
    """A message body as sent: JSON must parse, text must be UTF-8.

    Raises:
        BadRequestError: it does not.
    """
    if kind is DataType.JSON:
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise BadRequestError("the body is not valid JSON") from exc
    elif kind is DataType.TEXT:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequestError("the body is not valid UTF-8 text") from exc
    return Payload(kind, body)
