"""Names of the Redis engine's channels and keys, in one place so every node agrees.

Every name starts with the cluster's prefix (``hubbub`` unless configured), so clusters can
share one Redis. Hub names never contain ``:`` (:func:`hubbub.core.names.validate_hub`) and
node ids never contain ``:`` or ``/`` (:func:`valid_node_id`); group names, user ids and
connection ids come last, so no name can be read two ways.

Channels (pub/sub; sharded where the server has it)::

    {p}:to:hub:{hub}            send-to-all and hub-wide commands: nodes holding a connection
    {p}:to:group:{hub}:{group}  group sends and group commands: nodes holding a member
    {p}:to:user:{hub}:{user}    user sends and user commands: nodes holding the user
    {p}:to:node:{node}          connection sends, commands, queries and replies for one node

The keys are listed in :mod:`hubbub.broker.redis_registry` (registry) and
:mod:`hubbub.broker.redis_sessions` (replicated sessions), which build them with this class.
"""

from __future__ import annotations

import re

import msgspec

from hubbub.core.commands import Target
from hubbub.types import ConnectionId, GroupName, HubName, UserId

__all__ = ["Interest", "Names", "valid_node_id"]

_NODE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def valid_node_id(node_id: str) -> bool:
    """Letters, digits, ``_ . -``; 1-64 characters."""
    return _NODE_ID.fullmatch(node_id) is not None


class Interest(msgspec.Struct, frozen=True, gc=False):
    """What a node subscribes to: a hub (``name`` empty), a group or a user of a hub.

    Connections are not interests: a connection-targeted message goes to the channel of the
    node that holds the connection (the registry says which).
    """

    hub: HubName
    target: Target
    name: str = ""


class Names:
    """Channel and key names under one prefix; channel names are bytes, ready to send."""

    __slots__ = ("_channels", "_groups", "_hubs", "_users", "prefix")

    def __init__(self, prefix: str = "hubbub") -> None:
        self.prefix = prefix
        self._channels: dict[Interest, bytes] = {}
        # Per target, keyed by (hub, name): a publish hashes two cached strings, not an enum.
        self._hubs: dict[tuple[str, str], bytes] = {}
        self._groups: dict[tuple[str, str], bytes] = {}
        self._users: dict[tuple[str, str], bytes] = {}

    # -- channels -----------------------------------------------------------------------------

    def channel(self, interest: Interest) -> bytes:
        """The channel of an interest (cached: built once per interest while it is in use)."""
        channel = self._channels.get(interest)
        if channel is None:
            channel = self._build(interest.hub, interest.target, interest.name)
            if len(self._channels) > 65536:  # bounded: interests come and go
                self._channels.clear()
            self._channels[interest] = channel
        return channel

    def target_channel(self, hub: HubName, target: Target, name: str) -> bytes:
        """The channel of a hub, group or user target (the publish path: cached, bounded)."""
        if target is Target.GROUP:
            cache = self._groups
        elif target is Target.USER:
            cache = self._users
        else:
            cache = self._hubs
        key = (hub, name)
        channel = cache.get(key)
        if channel is None:
            channel = self._build(hub, target, name)
            if len(cache) > 65536:
                cache.clear()
            cache[key] = channel
        return channel

    def _build(self, hub: HubName, target: Target, name: str) -> bytes:
        if target is Target.HUB:
            text = f"{self.prefix}:to:hub:{hub}"
        elif target is Target.GROUP:
            text = f"{self.prefix}:to:group:{hub}:{name}"
        elif target is Target.USER:
            text = f"{self.prefix}:to:user:{hub}:{name}"
        else:
            raise ValueError("connections have no interest channel: route to the owner node")
        return text.encode()

    def node_channel(self, node_id: str) -> bytes:
        return f"{self.prefix}:to:node:{node_id}".encode()

    @property
    def node_channel_prefix(self) -> str:
        return f"{self.prefix}:to:node:"

    # -- registry keys ------------------------------------------------------------------------

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    @property
    def reaping(self) -> str:
        return f"{self.prefix}:reaping"

    def epoch(self, node_id: str) -> str:
        return f"{self.prefix}:epoch:{node_id}"

    def held(self, member: str) -> str:
        return f"{self.prefix}:held:{member}"

    @property
    def hubs(self) -> str:
        return f"{self.prefix}:hubs"

    def owners(self, hub: HubName) -> str:
        return f"{self.prefix}:owner:{hub}"

    def connections(self, hub: HubName) -> str:
        return f"{self.prefix}:conns:{hub}"

    def user(self, hub: HubName, user_id: UserId) -> str:
        return f"{self.prefix}:user:{hub}:{user_id}"

    def group(self, hub: HubName, group: GroupName) -> str:
        return f"{self.prefix}:group:{hub}:{group}"

    def connection_groups(self, hub: HubName, connection_id: ConnectionId) -> str:
        return f"{self.prefix}:groups:{hub}:{connection_id}"

    # -- replicated sessions ------------------------------------------------------------------

    def session(self, hub: HubName, connection_id: ConnectionId) -> str:
        return f"{self.prefix}:session:{hub}:{connection_id}"

    def frames(self, hub: HubName, connection_id: ConnectionId) -> str:
        return f"{self.prefix}:frames:{hub}:{connection_id}"
