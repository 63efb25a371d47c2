"""The REST data plane: the 25 routes of api-version 2024-12-01 (rest-api.md §4).

Each handler parses its request and calls one :class:`hubbub.service.Service` method. Checks
shared by every route (bearer token, ``api-version``, errors) live in :func:`api_middleware`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import unquote, urlencode, urlsplit

import msgspec
import orjson
from aiohttp import web

from hubbub.core.commands import Target
from hubbub.core.names import validate_group, validate_hub
from hubbub.core.roles import Permission
from hubbub.errors import BadRequestError, OperationError
from hubbub.protocol.messages import DataType, Payload
from hubbub.protocol.tokens import TokenError, verify_rest_token
from hubbub.server.errors import error_response
from hubbub.service import MAX_PAGE_SIZE, SendOptions, Service
from hubbub.types import ConnectionId, GroupName, HubName, UserId

__all__ = ["api_middleware", "routes"]

log = logging.getLogger("hubbub.rest")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE = web.AppKey("service", Service)
ACCESS_KEYS: web.AppKey[tuple[str, ...]] = web.AppKey("access_keys")

CONTENT_TYPES = {
    "text/plain": DataType.TEXT,
    "application/json": DataType.JSON,
    "application/octet-stream": DataType.BINARY,
}


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate ``/api`` calls, require ``api-version``, map errors to the service's body."""
    if not request.path.startswith("/api/"):
        return await handler(request)  # the client endpoint answers for itself
    if not _sent_as_text(request.raw_path):
        return error_response(400, "the request target is not UTF-8")
    if request.path != "/api/health":
        token = _bearer(request)
        if token is None:
            return error_response(401, "a bearer token is required")
        try:
            keys: tuple[str, ...] = request.app[ACCESS_KEYS]
            verify_rest_token(token, keys, request.raw_path)
        except TokenError as exc:
            return error_response(401, str(exc))
        if not request.query.get("api-version"):
            return error_response(400, "the api-version query parameter is required")
    try:
        return await handler(request)
    except OperationError as exc:
        return error_response(exc.status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)
    except Exception:
        log.error("%s %s failed", request.method, request.path, exc_info=True)
        return error_response(500, "internal server error")


def _sent_as_text(raw: str) -> bool:
    """False for a request target with bytes that are not UTF-8 (aiohttp keeps them as
    surrogate escapes, which no name, log line or JSON answer can carry)."""
    if raw.isascii():
        return True
    try:
        raw.encode()
    except UnicodeEncodeError:
        return False
    return True


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


# -- parameter parsing --------------------------------------------------------------------------


PARAMS: web.RequestKey[dict[str, str]] = web.RequestKey("params", dict)


def _param(request: web.Request, name: str) -> str:
    return request[PARAMS][name]


def _service(request: web.Request) -> Service:
    return request.app[SERVICE]


def _hub(request: web.Request) -> HubName:
    return validate_hub(_param(request, "hub"))


def _group(request: web.Request) -> GroupName:
    return validate_group(_param(request, "group"))


def _conn(request: web.Request) -> ConnectionId:
    return ConnectionId(_param(request, "connectionId"))


def _user(request: web.Request) -> UserId:
    return UserId(_param(request, "userId"))


_INTEGER = re.compile(r"[+-]?[0-9]{1,20}")
"""An integer parameter as the SDKs write it (ASCII digits, no spaces or ``_``), short enough
for Python to convert."""


def _int(request: web.Request, name: str, low: int, high: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    value = int(raw) if _INTEGER.fullmatch(raw) else low - 1
    if not low <= value <= high:
        raise BadRequestError(f"{name} must be an integer from {low} to {high}")
    return value


def _excluded(request: web.Request) -> frozenset[ConnectionId]:
    return frozenset(ConnectionId(c) for c in request.query.getall("excluded", []))


def _permission(request: web.Request) -> Permission:
    raw = _param(request, "permission")
    for permission in Permission:
        if permission.value == raw:
            return permission
    raise BadRequestError(f"unknown permission {raw!r} (expected sendToGroup or joinLeaveGroup)")


def _target_name(request: web.Request) -> str | None:
    return request.query.get("targetName") or None


async def _payload(request: web.Request) -> Payload:
    content_type = request.content_type
    data_type = CONTENT_TYPES.get(content_type)
    if data_type is None:
        raise web.HTTPUnsupportedMediaType(
            reason=f"unsupported Content-Type {content_type!r}: use "
            "application/json, text/plain or application/octet-stream"
        )
    return payload_of(data_type, await request.read())


def payload_of(data_type: DataType, body: bytes) -> Payload:
    """A message body as sent: JSON must parse, text must be UTF-8."""
    if data_type is DataType.JSON:
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise BadRequestError("the body is not valid JSON") from exc
    elif data_type is DataType.TEXT:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequestError("the body is not valid UTF-8 text") from exc
    return Payload(data_type, body)


def _send_options(request: web.Request, *, excluded: bool, filtered: bool) -> SendOptions:
    return SendOptions(
        excluded=_excluded(request) if excluded else frozenset(),
        filter=request.query.get("filter") if filtered else None,
        ttl_seconds=_int(request, "messageTtlSeconds", 0, 300) or 0,
    )


ACCEPTED = 202
_EMPTY = b""


def _status(code: int) -> web.Response:
    return web.Response(status=code, body=_EMPTY if code != 204 else None)


def _exists(found: bool) -> web.Response:
    return web.Response(status=200 if found else 404)


# -- handlers -----------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def send_to_all(request: web.Request) -> web.Response:
    options = _send_options(request, excluded=True, filtered=True)
    await _service(request).send(_hub(request), Target.HUB, "", await _payload(request), options)
    return _status(ACCEPTED)


async def send_to_group(request: web.Request) -> web.Response:
    options = _send_options(request, excluded=True, filtered=True)
    hub, group = _hub(request), _group(request)
    await _service(request).send(hub, Target.GROUP, group, await _payload(request), options)
    return _status(ACCEPTED)


async def send_to_user(request: web.Request) -> web.Response:
    options = _send_options(request, excluded=False, filtered=True)
    hub, user = _hub(request), _user(request)
    await _service(request).send(hub, Target.USER, user, await _payload(request), options)
    return _status(ACCEPTED)


async def send_to_connection(request: web.Request) -> web.Response:
    options = _send_options(request, excluded=False, filtered=False)
    hub, conn = _hub(request), _conn(request)
    await _service(request).send(hub, Target.CONNECTION, conn, await _payload(request), options)
    return _status(ACCEPTED)


async def _groups_body(request: web.Request) -> tuple[list[GroupName], str | None]:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(reason="the body must be application/json")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise BadRequestError("the body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise BadRequestError("the body must be a JSON object")
    groups = body.get("groups")
    if not isinstance(groups, list) or not groups or not all(isinstance(g, str) for g in groups):
        raise BadRequestError("groups must be a non-empty array of group names")
    filter_text = body.get("filter")
    if filter_text is not None and not isinstance(filter_text, str):
        raise BadRequestError("filter must be a string")
    return [validate_group(g) for g in groups], filter_text


async def add_to_groups(request: web.Request) -> web.Response:
    hub = _hub(request)
    groups, filter_text = await _groups_body(request)
    await _service(request).groups_by_filter(hub, groups, filter_text, add=True)
    return _status(200)


async def remove_from_groups(request: web.Request) -> web.Response:
    hub = _hub(request)
    groups, filter_text = await _groups_body(request)
    await _service(request).groups_by_filter(hub, groups, filter_text, add=False)
    return _status(200)


async def close_all(request: web.Request) -> web.Response:
    reason = request.query.get("reason")
    await _service(request).close(_hub(request), Target.HUB, "", reason, _excluded(request))
    return _status(204)


async def close_group(request: web.Request) -> web.Response:
    hub, group, reason = _hub(request), _group(request), request.query.get("reason")
    await _service(request).close(hub, Target.GROUP, group, reason, _excluded(request))
    return _status(204)


async def close_user(request: web.Request) -> web.Response:
    hub, user, reason = _hub(request), _user(request), request.query.get("reason")
    await _service(request).close(hub, Target.USER, user, reason, _excluded(request))
    return _status(204)


async def close_connection(request: web.Request) -> web.Response:
    hub, conn, reason = _hub(request), _conn(request), request.query.get("reason")
    await _service(request).close(hub, Target.CONNECTION, conn, reason)
    return _status(204)


async def connection_exists(request: web.Request) -> web.Response:
    return _exists(await _service(request).connection_exists(_hub(request), _conn(request)))


async def group_exists(request: web.Request) -> web.Response:
    return _exists(await _service(request).group_exists(_hub(request), _group(request)))


async def user_exists(request: web.Request) -> web.Response:
    return _exists(await _service(request).user_exists(_hub(request), _user(request)))


async def add_connection_to_group(request: web.Request) -> web.Response:
    hub, group, conn = _hub(request), _group(request), _conn(request)
    await _service(request).add_connection_to_group(hub, group, conn)
    return _status(200)


async def remove_connection_from_group(request: web.Request) -> web.Response:
    hub, group, conn = _hub(request), _group(request), _conn(request)
    await _service(request).remove_connection_from_group(hub, group, conn)
    return _status(204)


async def remove_connection_from_all_groups(request: web.Request) -> web.Response:
    await _service(request).remove_connection_from_group(_hub(request), None, _conn(request))
    return _status(204)


async def add_user_to_group(request: web.Request) -> web.Response:
    hub, group, user = _hub(request), _group(request), _user(request)
    await _service(request).add_user_to_group(hub, group, user)
    return _status(200)


async def remove_user_from_group(request: web.Request) -> web.Response:
    hub, group, user = _hub(request), _group(request), _user(request)
    await _service(request).remove_user_from_group(hub, group, user)
    return _status(204)


async def remove_user_from_all_groups(request: web.Request) -> web.Response:
    await _service(request).remove_user_from_group(_hub(request), None, _user(request))
    return _status(204)


async def grant_permission(request: web.Request) -> web.Response:
    hub, permission, conn = _hub(request), _permission(request), _conn(request)
    await _service(request).grant_permission(hub, permission, conn, _target_name(request))
    return _status(200)


async def revoke_permission(request: web.Request) -> web.Response:
    hub, permission, conn = _hub(request), _permission(request), _conn(request)
    await _service(request).revoke_permission(hub, permission, conn, _target_name(request))
    return _status(204)


async def check_permission(request: web.Request) -> web.Response:
    hub, permission, conn = _hub(request), _permission(request), _conn(request)
    found = await _service(request).check_permission(hub, permission, conn, _target_name(request))
    return _exists(found)


async def list_group_connections(request: web.Request) -> web.Response:
    hub, group = _hub(request), _group(request)
    page_size = _int(request, "maxpagesize", 1, MAX_PAGE_SIZE) or MAX_PAGE_SIZE
    top = _int(request, "top", 1, 2**31 - 1)
    token = request.query.get("continuationToken")
    page = await _service(request).list_group_connections(hub, group, page_size, top, token)
    body: dict[str, object] = {
        "value": [{"connectionId": m.connection_id, "userId": m.user_id} for m in page.members]
    }
    if page.next_token is not None:
        query = {
            "api-version": request.query["api-version"],
            "maxpagesize": str(page_size),
            "continuationToken": page.next_token,
        }
        if top is not None:
            query["top"] = str(top - len(page.members))
        try:
            here = str(request.url.with_query(None))
        except ValueError as exc:  # yarl cannot make a URL of this Host (UnicodeError is one)
            raise BadRequestError("the Host header does not name a host") from exc
        body["nextLink"] = here + "?" + urlencode(query)
    return web.json_response(body, dumps=lambda o: orjson.dumps(o).decode())


async def generate_token(request: web.Request) -> web.Response:
    minutes = _int(request, "minutesToExpire", 1, 2**31 - 1)
    endpoint = f"{request.scheme}://{request.host}"
    token = _service(request).generate_token(
        _hub(request),
        endpoint,
        user_id=request.query.get("userId") or None,
        roles=request.query.getall("role", []),
        groups=[validate_group(g) for g in request.query.getall("group", [])],
        minutes=60 if minutes is None else minutes,
        client_type=request.query.get("clientType", "Default"),
    )
    return web.json_response({"token": token})


# The routes under /api/hubs/{hub}, keyed by method and path shape: names sit at the odd
# positions (``groups/*/connections/*``), so one dict lookup finds the handler instead of one
# regular expression per route.
_NAMES = {
    "connections": "connectionId",
    "groups": "group",
    "users": "userId",
    "permissions": "permission",
}
_HUB_ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", ":addToGroups"): add_to_groups,
    ("POST", ":closeConnections"): close_all,
    ("POST", ":generateToken"): generate_token,
    ("POST", ":removeFromGroups"): remove_from_groups,
    ("POST", ":send"): send_to_all,
    ("DELETE", "connections/*"): close_connection,
    ("HEAD", "connections/*"): connection_exists,
    ("POST", "connections/*/:send"): send_to_connection,
    ("DELETE", "connections/*/groups"): remove_connection_from_all_groups,
    ("HEAD", "groups/*"): group_exists,
    ("POST", "groups/*/:closeConnections"): close_group,
    ("POST", "groups/*/:send"): send_to_group,
    ("GET", "groups/*/connections"): list_group_connections,
    ("DELETE", "groups/*/connections/*"): remove_connection_from_group,
    ("PUT", "groups/*/connections/*"): add_connection_to_group,
    ("DELETE", "permissions/*/connections/*"): revoke_permission,
    ("HEAD", "permissions/*/connections/*"): check_permission,
    ("PUT", "permissions/*/connections/*"): grant_permission,
    ("HEAD", "users/*"): user_exists,
    ("POST", "users/*/:closeConnections"): close_user,
    ("POST", "users/*/:send"): send_to_user,
    ("DELETE", "users/*/groups"): remove_user_from_all_groups,
    ("DELETE", "users/*/groups/*"): remove_user_from_group,
    ("PUT", "users/*/groups/*"): add_user_to_group,
}


async def hub_route(request: web.Request) -> web.StreamResponse:
    """Dispatch ``/api/hubs/{hub}/...`` on the method and the shape of the path.

    The path is read as the client sent it (the token's audience is compared with that form too):
    split at its slashes, then each segment percent-decoded once, so a name may hold ``/``
    (``%2F``), ``?``, ``#`` or a literal ``%2F`` (``%252F``).
    """
    parts = _sent_path(request.raw_path).split("/")
    if len(parts) < 5 or parts[:3] != ["", "api", "hubs"]:
        return error_response(404, "no such operation")
    try:
        hub, *segments = [unquote(s, errors="strict") for s in parts[3:]]
    except UnicodeDecodeError:
        raise BadRequestError("a name in the path is not percent-encoded UTF-8") from None
    shape = "/".join(s if i % 2 == 0 else "*" for i, s in enumerate(segments))
    handler = _HUB_ROUTES.get((request.method, shape))
    if handler is None or not all(segments):
        return error_response(404, "no such operation")
    pairs = zip(segments[::2], segments[1::2], strict=False)
    request[PARAMS] = {_NAMES.get(kind, kind): name for kind, name in pairs}
    request[PARAMS]["hub"] = hub
    return await handler(request)


def _sent_path(target: str) -> str:
    """The path of a request target as sent: origin form (``/path?query``), or absolute form
    (``http://host/path?query``, as a proxy may send it)."""
    if not target.startswith("/"):
        return urlsplit(target).path
    return target.split("?", 1)[0]


def routes() -> list[web.RouteDef]:
    """Every data-plane route: health, and one dispatcher for everything under a hub."""
    return [
        web.head("/api/health", health),
        web.get("/api/health", health, allow_head=False),
        web.route("*", "/api/hubs/{hub}/{tail:.+}", hub_route),
    ]
