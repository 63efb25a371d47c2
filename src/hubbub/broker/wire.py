"""What nodes say to each other over Redis pub/sub: msgpack envelopes (msgspec).

Every message on a channel is one envelope, a msgpack array whose first element is its kind:

=====  =====================  ==========================================================
kind   envelope               carries
=====  =====================  ==========================================================
1      PublicationEnvelope    origin node, its sequence number there, a
                              :class:`~hubbub.core.commands.Publication`
2      CommandEnvelope        origin node, request id, command type name, the command
3      QueryEnvelope          origin node, request id, query type name, the query
4      ReplyEnvelope          request id, a count (command) or 0/1 (query), error flag
5      TakeSessionEnvelope    origin node, request id, hub, connection id
6      SessionEnvelope        request id, the session's snapshot bytes (or nil), the
                              owner's marks (origin node -> last sequence number it had)
=====  =====================  ==========================================================

The body of a publication is decoded only when the envelope did not come from the receiving
node itself (a node hears its own publications on the channels it subscribes to). Each node
numbers the publications it sends, 1, 2, 3 ... (one counter for every target): one Redis
delivers one node's messages in that order to every subscriber, so "the last number a node
had from each origin" says exactly which publications it had, whatever their channel (what a
session hand-over needs, :meth:`hubbub.broker.redis.RedisBroker.take_session`). Commands
and queries travel as ``(type name, struct)``: that decodes the dataclasses of today's
:mod:`hubbub.core.commands` and the tagged msgspec structs they become alike.
"""

from __future__ import annotations

import typing

import msgspec

from hubbub.core.commands import CheckPermission, Command, Publication
from hubbub.types import ConnectionId, HubName

__all__ = [
    "CommandEnvelope",
    "Envelope",
    "PublicationEnvelope",
    "QueryEnvelope",
    "ReplyEnvelope",
    "SessionEnvelope",
    "TakeSessionEnvelope",
    "decode_envelope",
    "decode_publication",
    "decode_request",
    "encode_command",
    "encode_publication",
    "encode_query",
    "encode_reply",
    "encode_session",
    "encode_take_session",
]

Query = CheckPermission
"""The questions a node answers about a connection it holds."""

_TYPES: dict[str, type[typing.Any]] = {
    cls.__name__: cls for cls in (*typing.get_args(Command), CheckPermission)
}


class _OutgoingPublication(msgspec.Struct, array_like=True, tag=1):
    origin: str
    sequence: int
    publication: Publication


class PublicationEnvelope(msgspec.Struct, frozen=True, array_like=True, tag=1):
    origin: str
    sequence: int
    """The origin's number for it: one more than its previous publication's."""
    publication: msgspec.Raw


class CommandEnvelope(msgspec.Struct, frozen=True, array_like=True, tag=2):
    origin: str
    request_id: int
    kind: str
    body: msgspec.Raw


class QueryEnvelope(msgspec.Struct, frozen=True, array_like=True, tag=3):
    origin: str
    request_id: int
    kind: str
    body: msgspec.Raw


class ReplyEnvelope(msgspec.Struct, frozen=True, array_like=True, tag=4):
    request_id: int
    value: int
    error: bool = False


class TakeSessionEnvelope(msgspec.Struct, frozen=True, array_like=True, tag=5):
    origin: str
    request_id: int
    hub: HubName
    connection_id: ConnectionId


class SessionEnvelope(msgspec.Struct, frozen=True, array_like=True, tag=6):
    request_id: int
    snapshot: bytes | None
    marks: dict[str, int] = {}
    """Per origin node, the sequence number of the last publication the owner had when it
    gave the session up (its own: the last it sent)."""


class _OutgoingRequest(msgspec.Struct, array_like=True):
    tag: int
    origin: str
    request_id: int
    kind: str
    body: typing.Any


Envelope = (
    PublicationEnvelope
    | CommandEnvelope
    | QueryEnvelope
    | ReplyEnvelope
    | TakeSessionEnvelope
    | SessionEnvelope
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Envelope)
_publication_decoder = msgspec.msgpack.Decoder(Publication)


def encode_publication(origin: str, sequence: int, publication: Publication) -> bytes:
    return _encoder.encode(_OutgoingPublication(origin, sequence, publication))


def encode_command(origin: str, request_id: int, command: Command) -> bytes:
    return _encoder.encode(_OutgoingRequest(2, origin, request_id, type(command).__name__, command))


def encode_query(origin: str, request_id: int, query: Query) -> bytes:
    return _encoder.encode(_OutgoingRequest(3, origin, request_id, type(query).__name__, query))


def encode_reply(request_id: int, value: int, error: bool = False) -> bytes:
    return _encoder.encode(ReplyEnvelope(request_id, value, error))


def encode_take_session(
    origin: str, request_id: int, hub: HubName, connection_id: ConnectionId
) -> bytes:
    return _encoder.encode(TakeSessionEnvelope(origin, request_id, hub, connection_id))


def encode_session(
    request_id: int, snapshot: bytes | None, marks: dict[str, int] | None = None
) -> bytes:
    return _encoder.encode(SessionEnvelope(request_id, snapshot, marks or {}))


def decode_envelope(data: bytes) -> Envelope:
    """Raises:
    msgspec.DecodeError: not an envelope (or one of a newer kind).
    """
    return _decoder.decode(data)


def decode_publication(envelope: PublicationEnvelope) -> Publication:
    return _publication_decoder.decode(envelope.publication)


def decode_request(envelope: CommandEnvelope | QueryEnvelope) -> Command | Query:
    """The command or query an envelope carries.

    Raises:
        msgspec.DecodeError: an unknown type name, or a body that does not fit it.
    """
    cls = _TYPES.get(envelope.kind)
    if cls is None:
        raise msgspec.DecodeError(f"unknown request type {envelope.kind!r}")
    request: Command | Query = msgspec.msgpack.decode(envelope.body, type=cls)
    return request
