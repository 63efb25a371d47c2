"""The one REST rulebook: what every data-plane request must pass, and how it is answered.

Two readers serve the REST API: aiohttp (:mod:`hubbub.server.rest`, every request) and the fast
lane (:mod:`hubbub.server.fastlane`, plain ``:send`` calls without aiohttp's objects). Both ask
this module, so a rule is written once and the two cannot drift apart:

- routing: method and path shape to an :class:`Operation` (:func:`route`), and what each
  ``:send`` sends to (:data:`SENDS`, :func:`send_target`);
- what every request must pass, in order (:meth:`RestRules.refusal`): a UTF-8 request
  target, the network rules (``[network]``, 403), a bearer token — an access-key one signed for
  this URL, or a Microsoft Entra ID one whose principal holds the operation's data action on
  the hub (``[auth.entra]``, 401/403; :data:`OPERATION_ACTIONS`) — and the hub's REST rate
  (``[limits]``, 429 with ``Retry-After``). The answers come from the node's
  :class:`~hubbub.policy.Policy`; an Entra token whose signing key is not read yet is
  :data:`DEFER`-red to the reader that can wait for the keys (aiohttp). The ``api-version``
  is judged once the request is routed (:func:`version_refusal`);
- content types to :class:`~hubbub.protocol.messages.DataType` (:func:`data_type`), and what a
  message body must be (:func:`payload_of`);
- the body limit (:func:`body_allowed`), which requests leave their connection open
  (:func:`keeps_alive`) and the keep-alive time of an idle connection
  (:attr:`RestRules.keep_alive_seconds`);
- the refusals (:class:`Refusal`: status and message) and, for answers written as bytes, the
  service's error answer (:func:`raw_error`, with the body of :mod:`hubbub.server.errors`) and
  the status line and ``Date``/``Server`` headers aiohttp writes (:func:`raw_answer`).

Nothing here touches a socket or an aiohttp object. Another rule that every REST request must
pass (admin API throttling, say) goes here, into :meth:`RestRules.refusal`, and both readers
apply it.
"""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import unquote, urlsplit

import msgspec
from aiohttp.http import SERVER_SOFTWARE

from hubbub.core.acl import Address, TrafficKind
from hubbub.core.commands import Target
from hubbub.core.names import validate_group, validate_hub
from hubbub.errors import BadRequestError
from hubbub.limits import MAX_REST_BODY_BYTES
from hubbub.protocol.entra import (
    DATA_ACTIONS,
    EntraForbiddenError,
    EntraTokenError,
    EntraValidator,
    UnknownKeyError,
    is_entra_token,
)
from hubbub.protocol.messages import DataType, Payload
from hubbub.protocol.restanswers import (
    API_SUPPORTED_VERSIONS,
    MINIMUM_API_VERSION,
    SUPPORTED_API_VERSIONS,
    RestAnswer,
    check_api_version,
)
from hubbub.protocol.tokens import TokenError, token_window, verify_rest_token
from hubbub.server.errors import error_body, error_code
from hubbub.types import HubName

if TYPE_CHECKING:
    from hubbub.policy import Policy

__all__ = [
    "API_SUPPORTED_VERSIONS",
    "API_VERSION",
    "CACHED_URLS",
    "CACHED_URL_BYTES",
    "CONTENT_TYPES",
    "DEFER",
    "HEALTH_PATH",
    "INTERNAL_ERROR",
    "OPERATION_ACTIONS",
    "OPERATION_IDS",
    "SENDS",
    "SUPPORTED_VERSIONS",
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
    "raw_rest_answer",
    "route",
    "send_target",
    "version_refusal",
]

API_VERSION = "api-version"
"""The query parameter every data-plane call must give: one of :data:`SUPPORTED_VERSIONS`,
from the version that introduced the operation on (:func:`version_refusal`)."""
SUPPORTED_VERSIONS = frozenset(SUPPORTED_API_VERSIONS)
"""The api-versions the service answers; every ``:send`` takes each of them."""
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
    """A request refused before its operation runs: the status, the error message and any
    headers to answer with (``Retry-After`` of a 429, ``WWW-Authenticate`` of an Entra 401,
    and ``api-supported-versions`` on a refusal past the token check, as on every other
    answer past it: the Entra 403 and the 429)."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


DEFER = Refusal(0, "the Entra signing keys are to be read first")
"""What :meth:`RestRules.refusal` answers for an Entra token whose signing key is not known yet:
a reader that can wait calls :meth:`RestRules.refusal_after_keys`; the fast lane hands the
request to aiohttp, which can."""


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


def raw_error(
    status: int,
    message: str,
    *,
    close: bool = False,
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The service's error answer as bytes: what :func:`~hubbub.server.errors.error_response`
    answers through aiohttp."""
    fields = [
        ("Content-Type", "application/json"),
        ("x-ms-error-code", error_code(status)),
        *headers,
    ]
    return raw_answer(status, error_body(status, message), fields, close=close)


def raw_rest_answer(answer: RestAnswer, *, close: bool = False) -> bytes:
    """One of the service's exact answers (:mod:`hubbub.protocol.restanswers`) as bytes."""
    return raw_answer(answer.status, answer.body, answer.headers, close=close)


_accepted_second = -1
_accepted = b""


def accepted_answer() -> bytes:
    """``202 Accepted`` with an empty body and ``api-supported-versions``, as aiohttp answers a
    ``:send`` (made once a second)."""
    global _accepted_second, _accepted
    second = int(time.time())
    if second != _accepted_second:
        _accepted_second = second
        _accepted = raw_answer(202, headers=(API_SUPPORTED_VERSIONS,))
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
        policy: the node's network rules, throttles and Entra ID (:mod:`hubbub.policy`);
            None: none of them (every address allowed, no rate, access keys only).
    """

    __slots__ = ("access_keys", "keep_alive_seconds", "policy")

    def __init__(
        self,
        access_keys: tuple[str, ...],
        keep_alive_seconds: float,
        policy: Policy | None = None,
    ) -> None:
        self.access_keys = access_keys
        self.keep_alive_seconds = keep_alive_seconds
        self.policy = policy

    def refusal(
        self,
        target: str,
        authorization: str,
        *,
        health: bool = False,
        method: str = "POST",
        address: Address | None = None,
        count: bool = True,
    ) -> Refusal | None:
        """Why a request to ``/api/...`` is refused before it is routed, or None.

        In order: the target must be UTF-8 (400); the network rules must allow REST from
        ``address`` (403); a bearer token is required, an access-key one signed for this URL
        or, with ``[auth.entra]``, a Microsoft Entra ID one whose caller holds the operation's
        data action on the hub (401, 403); the hub's REST calls must be within
        ``limits.rest_requests_per_second`` (429 with ``Retry-After``). Refusals past the
        token check (the Entra 403, the 429) carry ``api-supported-versions``; those before it
        (400, the network 403, 401) do not. :data:`DEFER`: an
        Entra token names a signing key not read yet (:meth:`refusal_after_keys` reads the keys
        and decides). The ``api-version`` is judged once the operation is known
        (:func:`version_refusal`).

        Args:
            target: the request target as sent (path and query, not decoded).
            authorization: the ``Authorization`` header ("" when missing).
            health: the request is for :data:`HEALTH_PATH` (no token, no api-version, and
                answered whatever the network rules: it tells nothing but that the node runs).
            method: the request method (an Entra caller's data action depends on it).
            address: the client's address (:meth:`hubbub.policy.Policy.address`).
            count: count a network denial or a throttled call in the metrics (false for the
                fast lane, which hands a refused request to aiohttp to answer and count).
        """
        judged = self.judge(
            target, authorization, health=health, method=method, address=address, count=count
        )
        return judged if isinstance(judged, Refusal) else None

    def judge(
        self,
        target: str,
        authorization: str,
        *,
        health: bool = False,
        method: str = "POST",
        address: Address | None = None,
        count: bool = True,
    ) -> Refusal | tuple[float, float] | None:
        """:meth:`refusal`, and for a request that passes with an access-key token, the times
        between which the same target and ``Authorization`` pass the token check again (the
        token's lifetime, seconds since the epoch; None: no such promise, an Entra token or
        health). The other checks depend on more than these two (the address, the hub's rate):
        a reader that keeps the verdict asks :meth:`per_call_refusal` on every call (the fast
        lane does)."""
        if not target.isascii() and not sent_as_text(target):
            return Refusal(400, "the request target is not UTF-8")
        if health:
            return None
        policy = self.policy
        if policy is not None and policy.needs_address:
            denied = _network_refusal(policy, address, count)
            if denied is not None:
                return denied
        scheme, _, token = authorization.partition(" ")  # RFC 6750 §2.1
        token = token.strip()
        if not token or scheme.lower() != "bearer":
            return Refusal(401, "a bearer token is required")
        entra = policy.entra if policy is not None else None
        window: tuple[float, float] | None = None
        if entra is not None and is_entra_token(token):
            refused = _entra_refusal(entra.validator, token, method, target)
            if refused is not None:
                return refused
        else:
            try:
                window = token_window(verify_rest_token(token, self.access_keys, target))
            except TokenError as exc:
                return Refusal(401, str(exc))
        if policy is not None and policy.rest_limited:
            throttled = _rate_refusal(policy, target, count)
            if throttled is not None:
                return throttled
        return window

    def per_call_refusal(
        self, target: str, *, address: Address | None = None, count: bool = True
    ) -> Refusal | None:
        """The checks of :meth:`refusal` that a kept verdict does not answer for: the network
        rules for ``address`` and the hub's REST rate (None: neither applies or both pass)."""
        policy = self.policy
        if policy is None:
            return None
        if policy.needs_address:
            denied = _network_refusal(policy, address, count)
            if denied is not None:
                return denied
        if policy.rest_limited:
            return _rate_refusal(policy, target, count)
        return None

    async def refusal_after_keys(
        self,
        target: str,
        authorization: str,
        *,
        method: str = "POST",
        address: Address | None = None,
    ) -> Refusal | None:
        """:meth:`refusal` for a request it :data:`DEFER`-red: the Entra signing keys are read
        again (at most once per refresh interval), then the request is judged."""
        assert self.policy is not None and self.policy.entra is not None
        token = authorization.partition(" ")[2].strip()
        try:
            await self.policy.entra.authenticate(token)
        except EntraTokenError as exc:
            return _unauthorized(str(exc))
        refused = self.refusal(target, authorization, method=method, address=address)
        if refused is DEFER:
            return _unauthorized("invalid token: the signing key is not known")
        return refused


def _unauthorized(message: str) -> Refusal:
    """An Entra token that does not verify: 401 with an RFC 6750 challenge, as bearer-token
    resources answer (the service's exact header is unconfirmed)."""
    return Refusal(401, message, (("WWW-Authenticate", 'Bearer error="invalid_token"'),))


def _entra_refusal(
    validator: EntraValidator, token: str, method: str, target: str
) -> Refusal | None:
    """401 for an Entra token that does not verify, 403 for a caller without the operation's
    data action on the hub; :data:`DEFER` for a key not read yet. A path that names no
    operation is left to the handler (404) once the token verifies."""
    try:
        identity = validator.authenticate(token)
    except UnknownKeyError:
        return DEFER
    except EntraTokenError as exc:
        return _unauthorized(str(exc))
    try:
        found = route(method, target)
    except BadRequestError:
        return None  # the handler answers 400
    if found is None:
        return None
    try:
        validator.authorize(identity, found.hub, OPERATION_ACTIONS[found.operation])
    except EntraForbiddenError as exc:
        return Refusal(403, str(exc), (API_SUPPORTED_VERSIONS,))  # the token verified
    return None


def _network_refusal(policy: Policy, address: Address | None, count: bool) -> Refusal | None:
    """The network rules' 403 for REST from ``address`` (before the token is looked at)."""
    denied = policy.check_network(TrafficKind.REST, address, count=count)
    return None if denied is None else Refusal(denied.status, denied.message)


def _rate_refusal(policy: Policy, target: str, count: bool) -> Refusal | None:
    """The hub's REST rate: 429 with ``Retry-After`` (past the token check, so it names the
    supported versions too)."""
    throttled = policy.check_rest_rate(_hub_of(target), count=count)
    if throttled is None:
        return None
    return Refusal(429, throttled.message, (*throttled.headers.items(), API_SUPPORTED_VERSIONS))


def _hub_of(target: str) -> str:
    """The hub a request target names, lower case, for the REST rate ("" for none)."""
    parts = _sent_path(target).split("/", 4)
    return parts[3].lower() if len(parts) > 3 and parts[2] == "hubs" else ""


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
OPERATION_ACTIONS: dict[Operation, str] = {
    operation: DATA_ACTIONS[key] for key, operation in _ROUTES.items()
}
"""The data action an Entra caller needs for each operation (:data:`DATA_ACTIONS`)."""
OPERATION_IDS: dict[Operation, str] = {
    Operation.ADD_TO_GROUPS: "WebPubSub_AddConnectionsToGroups",
    Operation.CLOSE_ALL: "WebPubSub_CloseAllConnections",
    Operation.GENERATE_TOKEN: "WebPubSub_GenerateClientToken",
    Operation.REMOVE_FROM_GROUPS: "WebPubSub_RemoveConnectionsFromGroups",
    Operation.SEND_TO_ALL: "WebPubSub_SendToAll",
    Operation.CLOSE_CONNECTION: "WebPubSub_CloseConnection",
    Operation.CONNECTION_EXISTS: "WebPubSub_ConnectionExists",
    Operation.SEND_TO_CONNECTION: "WebPubSub_SendToConnection",
    Operation.REMOVE_CONNECTION_FROM_ALL_GROUPS: "WebPubSub_RemoveConnectionFromAllGroups",
    Operation.GROUP_EXISTS: "WebPubSub_GroupExists",
    Operation.CLOSE_GROUP: "WebPubSub_CloseGroupConnections",
    Operation.SEND_TO_GROUP: "WebPubSub_SendToGroup",
    Operation.LIST_GROUP_CONNECTIONS: "WebPubSub_ListConnectionsInGroup",
    Operation.REMOVE_CONNECTION_FROM_GROUP: "WebPubSub_RemoveConnectionFromGroup",
    Operation.ADD_CONNECTION_TO_GROUP: "WebPubSub_AddConnectionToGroup",
    Operation.REVOKE_PERMISSION: "WebPubSub_RevokePermission",
    Operation.CHECK_PERMISSION: "WebPubSub_CheckPermission",
    Operation.GRANT_PERMISSION: "WebPubSub_GrantPermission",
    Operation.USER_EXISTS: "WebPubSub_UserExists",
    Operation.CLOSE_USER: "WebPubSub_CloseUserConnections",
    Operation.SEND_TO_USER: "WebPubSub_SendToUser",
    Operation.REMOVE_USER_FROM_ALL_GROUPS: "WebPubSub_RemoveUserFromAllGroups",
    Operation.REMOVE_USER_FROM_GROUP: "WebPubSub_RemoveUserFromGroup",
    Operation.ADD_USER_TO_GROUP: "WebPubSub_AddUserToGroup",
}
"""The REST API's operationId of each operation (what the api-version rules are keyed by)."""


def version_refusal(
    versions: list[str], operation: Operation, scheme: str, host: str, target: str
) -> RestAnswer | None:
    """The service's 400 for the ``api-version`` values of a request to ``operation``, or None.

    Args:
        versions: every ``api-version`` value of the query, in order.
        operation: the routed operation.
        scheme: ``http`` or ``https``, as the request came.
        host: the ``Host`` header.
        target: the request target as sent; the message names its path, without the query.
    """
    if len(versions) == 1 and versions[0] in SUPPORTED_VERSIONS:
        if operation not in _NEWER_OPERATIONS:
            return None
    uri = f"{scheme}://{host}{_sent_path(target)}" if target.startswith("/") else target
    return check_api_version(versions, OPERATION_IDS[operation], uri.partition("?")[0])


_NEWER_OPERATIONS = frozenset(op for op, oid in OPERATION_IDS.items() if oid in MINIMUM_API_VERSION)
"""Operations that came after the first supported version (``MINIMUM_API_VERSION``)."""


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
