"""The data-plane operations, one method each, free of HTTP (rest-api.md §4).

The REST adapter parses requests and calls these; a dashboard or the command line may too.
Every mutation travels through the broker as a command, every send as a publication, so the
answer is the same whichever node receives the call.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hubbub.broker.base import Broker, Member, Presence
from hubbub.closecodes import REASON_CLOSED_BY_APP_SERVER
from hubbub.config import Config
from hubbub.core.commands import (
    AddToGroup,
    AddUserToGroup,
    CheckPermission,
    CloseConnections,
    GrantPermission,
    GroupsByFilter,
    Publication,
    RemoveFromGroup,
    RemoveUserFromGroup,
    RevokePermission,
    Target,
)
from hubbub.core.roles import Permission
from hubbub.errors import (
    BadRequestError,
    ClusterUnavailableError,
    InvalidFilterError,
    NotFoundError,
)
from hubbub.limits import MAX_PAGE_SIZE, MAX_TTL_SECONDS
from hubbub.metrics import PUBLICATIONS
from hubbub.protocol.filters import FilterError, parse_filter, service_message
from hubbub.protocol.messages import Payload
from hubbub.protocol.tokens import mint_client_token
from hubbub.types import ConnectionId, GroupName, HubName, UserId

if TYPE_CHECKING:
    from hubbub.broker.redis import RedisBroker

__all__ = ["MAX_PAGE_SIZE", "MAX_TTL_SECONDS", "Page", "SendOptions", "Service"]

_CLIENT_PATHS = {
    "default": "/client/hubs/",
    "mqtt": "/clients/mqtt/hubs/",
    "socketio": "/clients/socketio/hubs/",
}


@dataclass(frozen=True, slots=True)
class SendOptions:
    """Options of the ``:send`` routes."""

    excluded: frozenset[ConnectionId] = frozenset()
    filter: str | None = None
    ttl_seconds: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a group's connections; ``next_token`` None on the last page."""

    members: list[Member]
    next_token: str | None


def validate_filter(text: str | None) -> str | None:
    """Check an OData filter; an empty one means no filter.

    Raises:
        InvalidFilterError: the filter does not parse; its message is the service's.
    """
    if text is None or not text.strip():
        return None
    try:
        parse_filter(text)
    except FilterError as exc:
        raise InvalidFilterError(service_message(text) or exc.service_message) from exc
    return text


_CONTINUATION = re.compile(r"[A-Za-z0-9_-]*")
"""A continuation token as :meth:`Service.list_group_connections` makes them: unpadded
URL-safe base64 (of a connection id)."""


def _continuation(token: str | None) -> str | None:
    if token is None:
        return None
    try:
        if not _CONTINUATION.fullmatch(token):
            raise ValueError("not URL-safe base64")
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except ValueError as exc:  # not base64 (binascii.Error is one), or not UTF-8 inside
        raise BadRequestError("invalid continuationToken") from exc


def _publication(
    hub: HubName, target: Target, name: str, payload: Payload, options: SendOptions
) -> Publication:
    if not 0 <= options.ttl_seconds <= MAX_TTL_SECONDS:
        raise BadRequestError("messageTtlSeconds must be from 0 to 300")
    return Publication(
        hub,
        target,
        name,
        payload,
        from_group=target is Target.GROUP,
        excluded=options.excluded,
        filter=validate_filter(options.filter),
        ttl_seconds=options.ttl_seconds,
        expires_at=time.time() + options.ttl_seconds if options.ttl_seconds else None,
    )


class Service:
    """The data plane of a node."""

    def __init__(
        self,
        config: Config,
        broker: Broker,
        presence: Presence,
        cluster: RedisBroker | None = None,
    ) -> None:
        self._config = config
        self._broker = broker
        self._presence = presence
        self._cluster = cluster
        """The Redis engine of a cluster node: a send needs it ready (else 503, nothing sent)."""

    def _check_cluster(self, hub: HubName, target: Target, name: str) -> None:
        """Refuse a send while the cluster is out of reach, unless this node holds its target
        connection: a 503 means nothing was delivered, anywhere.

        Raises:
            ClusterUnavailableError: the engine is not ready.
        """
        cluster = self._cluster
        if cluster is None or cluster.ready:
            return
        if target is Target.CONNECTION and cluster.holds(hub, ConnectionId(name)):
            return
        raise ClusterUnavailableError("cluster engine unavailable")

    def update(self, config: Config) -> None:
        """Take a reloaded configuration: tokens from now on are signed with its primary key."""
        self._config = config

    # -- sends (202, fire-and-forget) ---------------------------------------------------------

    async def send(
        self, hub: HubName, target: Target, name: str, payload: Payload, options: SendOptions
    ) -> None:
        """Send to the hub, a group, a user or a connection; nothing matched is not an error."""
        self._check_cluster(hub, target, name)
        publication = _publication(hub, target, name, payload, options)
        PUBLICATIONS.inc()
        await self._broker.publish(publication)

    def send_nowait(
        self, hub: HubName, target: Target, name: str, payload: Payload, options: SendOptions
    ) -> None:
        """:meth:`send` without waiting for the engine (a send is fire-and-forget anyway)."""
        self._check_cluster(hub, target, name)
        publication = _publication(hub, target, name, payload, options)
        PUBLICATIONS.inc()
        self._broker.publish_nowait(publication)

    # -- membership ---------------------------------------------------------------------------

    async def add_connection_to_group(
        self, hub: HubName, group: GroupName, connection_id: ConnectionId
    ) -> None:
        if not await self._broker.command(AddToGroup(hub, connection_id, group)):
            raise NotFoundError(f"Connection `{connection_id}` is not found.")

    async def remove_connection_from_group(
        self, hub: HubName, group: GroupName | None, connection_id: ConnectionId
    ) -> None:
        await self._broker.command(RemoveFromGroup(hub, connection_id, group))

    async def add_user_to_group(self, hub: HubName, group: GroupName, user_id: UserId) -> None:
        """Adds the user's current connections only (azure-webpubsub #325)."""
        if not await self._broker.command(AddUserToGroup(hub, user_id, group)):
            raise NotFoundError(f"User `{user_id}` is not found.")

    async def remove_user_from_group(
        self, hub: HubName, group: GroupName | None, user_id: UserId
    ) -> None:
        await self._broker.command(RemoveUserFromGroup(hub, user_id, group))

    async def groups_by_filter(
        self, hub: HubName, groups: Sequence[GroupName], filter_text: str | None, add: bool
    ) -> None:
        """``:addToGroups`` / ``:removeFromGroups``; no filter selects every connection."""
        await self._broker.command(
            GroupsByFilter(hub, tuple(groups), validate_filter(filter_text), add)
        )

    # -- close --------------------------------------------------------------------------------

    async def close(
        self,
        hub: HubName,
        target: Target,
        name: str,
        reason: str | None,
        excluded: frozenset[ConnectionId] = frozenset(),
    ) -> None:
        await self._broker.command(
            CloseConnections(hub, target, name, reason or REASON_CLOSED_BY_APP_SERVER, excluded)
        )

    # -- existence ----------------------------------------------------------------------------

    async def connection_exists(self, hub: HubName, connection_id: ConnectionId) -> bool:
        return await self._presence.connection_exists(hub, connection_id)

    async def user_exists(self, hub: HubName, user_id: UserId) -> bool:
        return await self._presence.user_exists(hub, user_id)

    async def group_exists(self, hub: HubName, group: GroupName) -> bool:
        return await self._presence.group_exists(hub, group)

    async def list_group_connections(
        self, hub: HubName, group: GroupName, page_size: int, top: int | None, token: str | None
    ) -> Page:
        """A page of members ordered by connection id, after the continuation token."""
        after = _continuation(token)
        size = page_size if top is None else min(page_size, top)
        start = ConnectionId(after) if after is not None else None
        members = await self._presence.group_members(hub, group, start, size + 1)
        page = members[:size]
        more = len(members) > size and (top is None or top > size)
        next_token = None
        if more and page:
            next_token = base64.urlsafe_b64encode(page[-1].connection_id.encode()).decode()
            next_token = next_token.rstrip("=")
        return Page(page, next_token)

    # -- permissions --------------------------------------------------------------------------

    async def grant_permission(
        self, hub: HubName, permission: Permission, connection_id: ConnectionId, group: str | None
    ) -> None:
        if not await self._broker.command(GrantPermission(hub, connection_id, permission, group)):
            raise NotFoundError(f"Connection `{connection_id}` is not found.")

    async def revoke_permission(
        self, hub: HubName, permission: Permission, connection_id: ConnectionId, group: str | None
    ) -> None:
        await self._broker.command(RevokePermission(hub, connection_id, permission, group))

    async def check_permission(
        self, hub: HubName, permission: Permission, connection_id: ConnectionId, group: str | None
    ) -> bool:
        return await self._broker.query(CheckPermission(hub, connection_id, permission, group))

    # -- tokens -------------------------------------------------------------------------------

    def generate_token(
        self,
        hub: HubName,
        endpoint: str,
        *,
        user_id: str | None = None,
        roles: Sequence[str] = (),
        groups: Sequence[str] = (),
        minutes: int = 60,
        client_type: str = "Default",
    ) -> str:
        """A client access token, as ``:generateToken`` returns it (rest-api.md §4.3)."""
        if minutes < 1:
            raise BadRequestError("minutesToExpire must be at least 1")
        path = _CLIENT_PATHS.get(client_type.lower())
        if path is None:
            raise BadRequestError(f"unknown clientType {client_type!r}")
        audience = endpoint.rstrip("/") + path + hub
        return mint_client_token(
            self._config.access_keys[0],
            audience,
            user_id=user_id,
            roles=roles,
            groups=groups,
            minutes=minutes,
        )
