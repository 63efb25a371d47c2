"""The REST data plane through aiohttp: the 25 routes of api-version 2024-12-01 (rest-api.md §4).

Each handler parses its request and calls one :class:`hubbub.service.Service` method. The rules
(routes, bearer token, ``api-version``, content types, error bodies) are the rulebook's
(:mod:`hubbub.server.restrules`), which the fast lane follows too; :func:`api_middleware`
applies the checks shared by every route and maps errors to the service's answers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

import orjson
from aiohttp import web

from hubbub.core.acl import TrafficKind
from hubbub.core.commands import Target
from hubbub.core.names import validate_group, validate_hub
from hubbub.core.roles import Permission
from hubbub.errors import (
    BadRequestError,
    ClusterUnavailableError,
    InvalidFilterError,
    OperationError,
)
from hubbub.limits import MAX_INT32, MAX_PAGE_SIZE, MAX_TTL_SECONDS
from hubbub.protocol.messages import DataType, Payload
from hubbub.protocol.metadata import MetadataError, metadata_from_headers
from hubbub.protocol.restanswers import RestAnswer, invalid_filter_answer
from hubbub.server.errors import error_response, unavailable_response
from hubbub.server.port import Port, request_address
from hubbub.server.restrules import (
    API_SUPPORTED_VERSIONS,
    API_VERSION,
    DEFER,
    HEALTH_PATH,
    INTERNAL_ERROR,
    SENDS,
    Operation,
    RestRules,
    Route,
    data_type,
    media_type,
    payload_of,
    route,
    send_target,
    version_refusal,
)
from hubbub.service import SendOptions, Service
from hubbub.types import ConnectionId, GroupName, HubName, UserId

__all__ = ["RULES", "SERVICE", "api_middleware", "routes"]

log = logging.getLogger("hubbub.rest")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE = web.AppKey("service", Service)
RULES = web.AppKey("rest_rules", RestRules)


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate ``/api`` calls, judge their ``api-version``, map errors to the service's
    answers; every answer past the token check lists the supported versions, as the
    service's do."""
    if not request.path.startswith("/api/"):
        return await handler(request)  # the client endpoint answers for itself
    health = request.path == HEALTH_PATH
    port = request.transport
    if not health and isinstance(port, Port) and not port.serves(TrafficKind.REST):
        return error_response(404, "the REST API is served on its own port (network.rest_port)")
    rules = request.app[RULES]
    address = request_address(request, rules.policy)
    authorization = request.headers.get("Authorization", "")
    refusal = rules.refusal(
        request.raw_path,
        authorization,
        health=health,
        method=request.method,
        address=address,
    )
    if refusal is DEFER:
        refusal = await rules.refusal_after_keys(
            request.raw_path, authorization, method=request.method, address=address
        )
    if refusal is not None:
        return error_response(*refusal)
    if health:
        return await handler(request)
    try:
        found = route(request.method, request.raw_path)
        if found is not None:
            answer = version_refusal(
                request.query.getall(API_VERSION, []),
                found.operation,
                request.scheme,
                request.host,
                request.raw_path,
            )
            if answer is not None:
                return rest_answer(answer)
            request[ROUTE] = found
        response = await handler(request)
    except InvalidFilterError as exc:
        response = rest_answer(invalid_filter_answer(str(exc)))
    except ClusterUnavailableError:
        response = unavailable_response()
    except OperationError as exc:
        response = error_response(exc.status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, exc.reason)
    except Exception:
        log.error("%s %s failed", request.method, request.path, exc_info=True)
        response = error_response(500, INTERNAL_ERROR)
    if not response.prepared:
        response.headers[SUPPORTED_HEADER] = SUPPORTED_VALUE
    return response


SUPPORTED_HEADER, SUPPORTED_VALUE = API_SUPPORTED_VERSIONS


def rest_answer(answer: RestAnswer) -> web.Response:
    """One of the service's exact answers (:mod:`hubbub.protocol.restanswers`)."""
    return web.Response(status=answer.status, body=answer.body, headers=answer.headers)


# -- parameter parsing --------------------------------------------------------------------------


ROUTE: web.RequestKey[Route] = web.RequestKey("route", Route)


def _param(request: web.Request, name: str) -> str:
    return request[ROUTE].name(name)


def _service(request: web.Request) -> Service:
    return request.app[SERVICE]


def _hub(request: web.Request) -> HubName:
    return validate_hub(request[ROUTE].hub)


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


def _content_type(request: web.Request) -> str | None:
    return request.headers.get("Content-Type")


async def _payload(request: web.Request) -> Payload:
    kind = data_type(_content_type(request))
    if kind is None:
        raise web.HTTPUnsupportedMediaType(
            reason=f"unsupported Content-Type {media_type(_content_type(request))!r}: use "
            "application/json, text/plain or application/octet-stream"
        )
    try:
        metadata = metadata_from_headers(request.headers.items())
    except MetadataError as exc:
        raise BadRequestError(str(exc)) from exc
    payload = payload_of(kind, await request.read())
    return payload if metadata is None else Payload(kind, payload.data, metadata)


def _send_options(request: web.Request, *, excluded: bool, filtered: bool) -> SendOptions:
    return SendOptions(
        excluded=_excluded(request) if excluded else frozenset(),
        filter=request.query.get("filter") if filtered else None,
        ttl_seconds=_int(request, "messageTtlSeconds", 0, MAX_TTL_SECONDS) or 0,
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


async def send(request: web.Request) -> web.Response:
    """The four ``:send`` operations: what they send to is the rulebook's (``SENDS``)."""
    found = request[ROUTE]
    what = SENDS[found.operation]
    options = _send_options(request, excluded=what.excluded, filtered=what.filtered)
    hub, name = send_target(found, what)
    await _service(request).send(hub, what.target, name, await _payload(request), options)
    return _status(ACCEPTED)


async def _groups_body(request: web.Request) -> tuple[list[GroupName], str | None]:
    if data_type(_content_type(request)) is not DataType.JSON:
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
    top = _int(request, "top", 1, MAX_INT32)
    token = request.query.get("continuationToken")
    page = await _service(request).list_group_connections(hub, group, page_size, top, token)
    body: dict[str, object] = {
        "value": [{"connectionId": m.connection_id, "userId": m.user_id} for m in page.members]
    }
    if page.next_token is not None:
        query = {
            API_VERSION: request.query[API_VERSION],
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
    minutes = _int(request, "minutesToExpire", 1, MAX_INT32)
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


_HANDLERS: dict[Operation, Handler] = {
    Operation.ADD_TO_GROUPS: add_to_groups,
    Operation.CLOSE_ALL: close_all,
    Operation.GENERATE_TOKEN: generate_token,
    Operation.REMOVE_FROM_GROUPS: remove_from_groups,
    Operation.SEND_TO_ALL: send,
    Operation.CLOSE_CONNECTION: close_connection,
    Operation.CONNECTION_EXISTS: connection_exists,
    Operation.SEND_TO_CONNECTION: send,
    Operation.REMOVE_CONNECTION_FROM_ALL_GROUPS: remove_connection_from_all_groups,
    Operation.GROUP_EXISTS: group_exists,
    Operation.CLOSE_GROUP: close_group,
    Operation.SEND_TO_GROUP: send,
    Operation.LIST_GROUP_CONNECTIONS: list_group_connections,
    Operation.REMOVE_CONNECTION_FROM_GROUP: remove_connection_from_group,
    Operation.ADD_CONNECTION_TO_GROUP: add_connection_to_group,
    Operation.REVOKE_PERMISSION: revoke_permission,
    Operation.CHECK_PERMISSION: check_permission,
    Operation.GRANT_PERMISSION: grant_permission,
    Operation.USER_EXISTS: user_exists,
    Operation.CLOSE_USER: close_user,
    Operation.SEND_TO_USER: send,
    Operation.REMOVE_USER_FROM_ALL_GROUPS: remove_user_from_all_groups,
    Operation.REMOVE_USER_FROM_GROUP: remove_user_from_group,
    Operation.ADD_USER_TO_GROUP: add_user_to_group,
}
"""The handler of every operation the rulebook routes to."""


async def hub_route(request: web.Request) -> web.StreamResponse:
    """Dispatch ``/api/hubs/{hub}/...`` to the handler of its operation (see ``route``)."""
    found = request.get(ROUTE)  # routed by api_middleware
    if found is None:
        return error_response(404, "no such operation")
    return await _HANDLERS[found.operation](request)


def routes() -> list[web.RouteDef]:
    """Every data-plane route: health, and one dispatcher for everything under a hub."""
    return [
        web.head("/api/health", health),
        web.get("/api/health", health, allow_head=False),
        web.route("*", "/api/hubs/{hub}/{tail:.+}", hub_route),
    ]
