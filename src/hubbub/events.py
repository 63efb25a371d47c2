"""The node's side of event handlers: when to call them and what their answers change.

:class:`EventDispatcher` decides which events go upstream (``connect`` before the upgrade,
``connected``, ``disconnected`` and the group presence events ``joined`` / ``left`` as
notifications, user events blocking per connection, a message's metadata as
``x-webpubsub-metadata-*`` headers) and maps the answers back: a new identity for ``connect``,
connection state, and the reply a client receives (upstream.md §5-7). HTTP itself is in
:mod:`hubbub.upstream`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from hubbub.core.state import Connection
from hubbub.errors import HandshakeError, UpstreamError
from hubbub.logs import ACTIVITY
from hubbub.protocol.cloudevents import (
    GROUP_PRESENCE_PREFIX,
    EventContext,
    connect_body,
    content_type_for,
    data_type_of,
    group_presence_body,
    parse_connect_response,
)
from hubbub.protocol.messages import DataType, Payload
from hubbub.protocol.metadata import metadata_headers
from hubbub.protocol.tokens import ClientClaims
from hubbub.types import ConnectionId, HubName
from hubbub.upstream import Upstream

__all__ = ["ConnectDecision", "ConnectRequest", "EventDispatcher", "reply_payload"]

_JSON_BODY = "application/json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """What the ``connect`` event tells the handler about the handshake."""

    claims: ClientClaims
    query: list[tuple[str, str]]
    headers: list[tuple[str, str]]
    subprotocols: list[str]
    client_certificates: list[dict[str, str]] = field(default_factory=list)
    """``[{"thumbprint", "content"}]`` of the TLS client certificate, if any."""


@dataclass(frozen=True, slots=True)
class ConnectDecision:
    """Identity of a new connection: the token's, as the ``connect`` handler amended it."""

    user_id: str | None
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    subprotocol: str | None
    state: str | None


def _context(connection: Connection) -> EventContext:
    return EventContext(
        connection.hub,
        connection.id,
        connection.user_id,
        connection.subprotocol,
        connection.state,
        connection.take_event_id(),
    )


def reply_payload(content_type: str | None, body: bytes, plain: bool) -> Payload:
    """A handler's reply as client data (upstream.md §6.2): by Content-Type, binary when none.

    JSON that does not parse goes to subprotocol clients as text rather than break the frame.
    """
    data_type = data_type_of(content_type) or DataType.BINARY
    if data_type is DataType.JSON and not plain:
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError:
            data_type = DataType.TEXT
    return Payload(data_type, body)


class EventDispatcher:
    """Calls the hub's event handlers on behalf of the node; inert without an upstream."""

    def __init__(self, upstream: Upstream | None) -> None:
        self._upstream = upstream

    async def connect(
        self, hub: HubName, connection_id: ConnectionId, request: ConnectRequest
    ) -> ConnectDecision:
        """Ask the hub's ``connect`` handler, if there is one (upstream.md §5.1).

        Raises:
            HandshakeError: the handler refused (its 4xx status) or failed (500).
        """
        claims = request.claims
        decision = ConnectDecision(claims.user_id, claims.roles, claims.groups, None, None)
        upstream = self._upstream
        handler = upstream.handler(hub, "connect", True) if upstream else None
        if handler is None or upstream is None:
            return decision
        context = EventContext(hub, connection_id, claims.user_id, None, None, 0)
        body = connect_body(
            claims.claims,
            request.query,
            request.headers,
            request.subprotocols,
            request.client_certificates,
        )
        try:
            response = await upstream.invoke(handler, context, "connect", True, body, _JSON_BODY)
            answer = parse_connect_response(response.body)
        except UpstreamError as exc:
            status = exc.status if exc.status is not None and 400 <= exc.status < 500 else 500
            raise HandshakeError(f"connect event handler refused: {exc}", status) from exc
        except ValueError as exc:
            raise HandshakeError(f"connect event handler failed: {exc}", 500) from exc
        if answer.subprotocol is not None and answer.subprotocol not in request.subprotocols:
            raise HandshakeError("connect event handler chose a subprotocol not offered", 500)
        return ConnectDecision(
            answer.user_id if answer.user_id is not None else claims.user_id,
            answer.roles if answer.roles is not None else claims.roles,
            answer.groups if answer.groups else claims.groups,
            answer.subprotocol,
            response.connection_state,
        )

    def notify(self, connection: Connection, event: str, body: bytes) -> None:
        """Send ``connected`` or ``disconnected`` without waiting, when a handler takes it."""
        upstream = self._upstream
        handler = upstream.handler(connection.hub, event, True) if upstream else None
        if handler is not None and upstream is not None:
            upstream.notify(handler, _context(connection), event, body)

    def group_presence(self, connection: Connection, event: str, group: str) -> None:
        """Send ``joined`` or ``left`` for ``group`` without waiting, when a handler takes it."""
        upstream = self._upstream
        handler = upstream.presence_handler(connection.hub, event, group) if upstream else None
        if handler is not None and upstream is not None:
            body = group_presence_body(group)
            upstream.notify(handler, _context(connection), event, body, GROUP_PRESENCE_PREFIX)

    async def user_event(
        self, connection: Connection, event: str, payload: Payload | None
    ) -> Payload | None:
        """Deliver a user event and wait; returns the reply for the client, if any.

        Raises:
            UpstreamError: no handler takes the event, or the handler failed.
        """
        upstream = self._upstream
        handler = upstream.handler(connection.hub, event, False) if upstream else None
        if handler is None or upstream is None:
            ACTIVITY.event_failures.add("user event with no handler")
            raise UpstreamError(f"No event handler is configured for event '{event}'.")
        data_type = payload.data_type if payload is not None else DataType.BINARY
        body = payload.data if payload is not None else b""
        response = await upstream.invoke(
            handler,
            _context(connection),
            event,
            False,
            body,
            content_type_for(data_type),
            metadata_headers(payload.metadata if payload is not None else None),
        )
        if response.connection_state is not None:
            connection.state = response.connection_state
        if not response.body:
            return None
        return reply_payload(response.content_type, response.body, connection.codec.plain)
