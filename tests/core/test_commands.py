"""Publications, commands and queries are plain data: they survive msgpack unchanged."""

from __future__ import annotations

import msgspec
import pytest

from hubbub.core.commands import (
    AddToGroup,
    AddUserToGroup,
    CheckPermission,
    CloseConnections,
    Command,
    GrantPermission,
    GroupsByFilter,
    Publication,
    Query,
    RemoveFromGroup,
    RemoveUserFromGroup,
    RevokePermission,
    Target,
)
from hubbub.core.roles import Permission
from hubbub.protocol.messages import DataType, Payload
from hubbub.types import ConnectionId, GroupName, HubName, UserId

HUB = HubName("chat")
C = ConnectionId("conn-1")
G = GroupName("g")

COMMANDS: list[Command] = [
    AddToGroup(HUB, C, G),
    RemoveFromGroup(HUB, C, G),
    RemoveFromGroup(HUB, C, None),
    AddUserToGroup(HUB, UserId("u"), G),
    RemoveUserFromGroup(HUB, UserId("u"), None),
    GroupsByFilter(HUB, (G, GroupName("h")), "userId eq 'u'", add=True),
    GroupsByFilter(HUB, (G,), None, add=False),
    CloseConnections(HUB, Target.USER, "u", "bye", frozenset([C]), code=1001),
    CloseConnections(HUB, Target.HUB, "", "bye"),
    GrantPermission(HUB, C, Permission.SEND_TO_GROUP, None),
    RevokePermission(HUB, C, Permission.JOIN_LEAVE_GROUP, "g"),
]
QUERIES: list[Query] = [
    CheckPermission(HUB, C, Permission.SEND_TO_GROUP, "g"),
    CheckPermission(HUB, C, Permission.JOIN_LEAVE_GROUP, None),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_round_trips(command: Command) -> None:
    """A command decodes, as the union, to an equal command of the same type."""
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(command), type=Command)
    assert decoded == command and type(decoded) is type(command)


@pytest.mark.parametrize("query", QUERIES)
def test_every_query_round_trips(query: Query) -> None:
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(query), type=Query)
    assert decoded == query and type(decoded) is type(query)


def test_every_command_type_is_covered() -> None:
    """The list above holds each member of the union (a new command needs a case)."""
    members = set(Command.__args__)  # type: ignore[attr-defined]
    assert {type(c) for c in COMMANDS} == members


@pytest.mark.parametrize(
    "publication",
    [
        Publication(HUB, Target.HUB, "", Payload(DataType.TEXT, b"hi")),
        Publication(
            HUB,
            Target.GROUP,
            "g",
            Payload(DataType.BINARY, b"\x00\xff"),
            from_group=True,
            from_user_id=UserId("u"),
            excluded=frozenset([C]),
            filter="userId ne 'x'",
            ttl_seconds=30,
        ),
        Publication(HUB, Target.CONNECTION, C, Payload(DataType.JSON, b'{"a":1}')),
    ],
)
def test_publications_round_trip(publication: Publication) -> None:
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(publication), type=Publication)
    assert decoded == publication


def test_commands_and_queries_are_frozen() -> None:
    with pytest.raises(AttributeError):
        AddToGroup(HUB, C, G).group = GroupName("h")  # type: ignore[misc]
