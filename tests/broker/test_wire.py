"""The Redis engine's envelopes: every message crosses msgpack unchanged (no server)."""

from __future__ import annotations

import typing

import msgspec
import pytest

from hubbub.broker import wire
from hubbub.core.commands import (
    AddToGroup,
    AddUserToGroup,
    CheckPermission,
    CloseConnections,
    Command,
    GrantPermission,
    GroupsByFilter,
    Publication,
    RemoveFromGroup,
    RemoveUserFromGroup,
    RevokePermission,
    Target,
)
from hubbub.core.roles import Permission
from hubbub.protocol.messages import DataType, Payload, StreamInfo
from hubbub.types import ConnectionId, GroupName, HubName, UserId

H = HubName("hub")
C = ConnectionId("c1")

COMMANDS: list[Command] = [
    AddToGroup(H, C, GroupName("g")),
    RemoveFromGroup(H, C, None),
    RemoveFromGroup(H, C, GroupName("g")),
    AddUserToGroup(H, UserId("ann"), GroupName("g")),
    RemoveUserFromGroup(H, UserId("ann"), None),
    GroupsByFilter(H, (GroupName("a"), GroupName("b")), "userId eq 'x'", True),
    GroupsByFilter(H, (), None, False),
    CloseConnections(H, Target.GROUP, "g", "bye", frozenset({C}), 1008),
    GrantPermission(H, C, Permission.SEND_TO_GROUP, "g"),
    RevokePermission(H, C, Permission.JOIN_LEAVE_GROUP, None),
]


def test_every_command_type_is_covered() -> None:
    """A new command type must be added here (and so gets a round trip)."""
    assert {type(c) for c in COMMANDS} == set(typing.get_args(Command))  # queries apart


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_commands_round_trip(command: Command) -> None:
    """A command decodes equal to what was encoded, with origin and request id."""
    envelope = wire.decode_envelope(wire.encode_command("node-1", 42, command))
    assert isinstance(envelope, wire.CommandEnvelope)
    assert (envelope.origin, envelope.request_id) == ("node-1", 42)
    assert wire.decode_request(envelope) == command


def test_query_round_trip() -> None:
    query = CheckPermission(H, C, Permission.SEND_TO_GROUP, "g")
    envelope = wire.decode_envelope(wire.encode_query("n", 7, query))
    assert isinstance(envelope, wire.QueryEnvelope)
    assert wire.decode_request(envelope) == query


@pytest.mark.parametrize(
    "publication",
    [
        Publication(H, Target.HUB, "", Payload(DataType.JSON, b'{"a":1}')),
        Publication(
            H,
            Target.GROUP,
            "g",
            Payload(DataType.BINARY, bytes(range(256))),
            from_group=True,
            from_user_id=UserId("ann"),
            excluded=frozenset({C, ConnectionId("c2")}),
            filter="userId eq 'ann'",
            ttl_seconds=300,
        ),
        Publication(H, Target.CONNECTION, "c1", Payload(DataType.PROTOBUF, b"\x00\x01")),
        Publication(
            H,
            Target.GROUP,
            "g",
            Payload(DataType.TEXT, b"A1", (("trace", "t1"), ("k", "v"))),
            from_group=True,
            stream=StreamInfo("s", 2),
            expires_at=1_767_225_600.25,
        ),
        Publication(
            H,
            Target.GROUP,
            "g",
            Payload(DataType.TEXT, b""),
            from_group=True,
            stream=StreamInfo("s", 3, True, "UserError", "gave up", "E42"),
        ),
    ],
)
def test_publications_round_trip(publication: Publication) -> None:
    envelope = wire.decode_envelope(wire.encode_publication("n", 7, publication))
    assert isinstance(envelope, wire.PublicationEnvelope)
    assert envelope.origin == "n" and envelope.sequence == 7
    assert wire.decode_publication(envelope) == publication


def test_replies_and_sessions_round_trip() -> None:
    assert wire.decode_envelope(wire.encode_reply(3, 12)) == wire.ReplyEnvelope(3, 12)
    assert wire.decode_envelope(wire.encode_reply(3, 0, True)) == wire.ReplyEnvelope(3, 0, True)
    assert wire.decode_envelope(wire.encode_take_session("n", 4, H, C)) == (
        wire.TakeSessionEnvelope("n", 4, H, C)
    )
    assert wire.decode_envelope(wire.encode_session(4, b"snap")) == wire.SessionEnvelope(4, b"snap")
    assert wire.decode_envelope(wire.encode_session(4, None)) == wire.SessionEnvelope(4, None)
    marks = {"a": 3, "b": 1}
    assert wire.decode_envelope(wire.encode_session(4, b"s", marks)).marks == marks  # type: ignore[union-attr]


def test_garbage_and_unknown_types_are_refused() -> None:
    with pytest.raises(msgspec.DecodeError):
        wire.decode_envelope(b"\x93\x09\xa1n\xc0")  # an unknown kind
    forged = msgspec.msgpack.encode([2, "n", 1, "DropDatabase", {"hub": "h"}])
    envelope = wire.decode_envelope(forged)
    assert isinstance(envelope, wire.CommandEnvelope)
    with pytest.raises(msgspec.DecodeError):
        wire.decode_request(envelope)
