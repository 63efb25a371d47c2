"""The codec interface and the lookup of a codec by subprotocol name.

A codec turns client frames into :mod:`hubbub.protocol.messages` and service messages into
complete WebSocket frames. Data messages are encoded once per publication and codec into an
:class:`EncodedData`; reliable codecs splice each connection's ``sequenceId`` into it.
:func:`hubbub.protocol.registry.codec_for` finds the codec of a subprotocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

from hubbub.errors import BadRequestError, ProtocolError
from hubbub.protocol.frames import frame_header
from hubbub.protocol.messages import (
    BEYOND_CLIENT_MESSAGE,
    ClientMessage,
    DataMessage,
    GroupStateMessage,
    InboundMessage,
    ServiceMessage,
)

__all__ = [
    "JSON_RELIABLE_SUBPROTOCOL",
    "JSON_SUBPROTOCOL",
    "KNOWN_SUBPROTOCOLS",
    "PROTOBUF_RELIABLE_SUBPROTOCOL",
    "PROTOBUF_SUBPROTOCOL",
    "Codec",
    "EncodedData",
    "executable",
]

JSON_SUBPROTOCOL = "json.webpubsub.azure.v1"
JSON_RELIABLE_SUBPROTOCOL = "json.reliable.webpubsub.azure.v1"
PROTOBUF_SUBPROTOCOL = "protobuf.webpubsub.azure.v1"
PROTOBUF_RELIABLE_SUBPROTOCOL = "protobuf.reliable.webpubsub.azure.v1"
KNOWN_SUBPROTOCOLS = (
    JSON_SUBPROTOCOL,
    JSON_RELIABLE_SUBPROTOCOL,
    PROTOBUF_SUBPROTOCOL,
    PROTOBUF_RELIABLE_SUBPROTOCOL,
)


_SEQUENCE_SUFFIX = b',"sequenceId":%d}'
_SEQUENCE_SUFFIX_BYTES = len(_SEQUENCE_SUFFIX) - 2
"""The suffix's bytes without its digits."""


class EncodedData:
    """A data message encoded for one codec, ready to be written to many connections.

    Unsequenced codecs keep one complete frame (``frame``). Sequenced codecs keep the payload
    up to the sequence id (``prefix``) and build the frame per connection in
    :meth:`sequenced`, the only per-delivery work the reliable subprotocols need.
    ``size`` is what a reliable session counts against its byte limit for it: the frame, or
    the prefix (the per-connection header and sequence id aside, a few bytes).
    """

    __slots__ = ("frame", "opcode", "prefix", "size")

    def __init__(self, opcode: int, frame: bytes | None = None, prefix: bytes = b"") -> None:
        self.opcode = opcode
        self.frame = frame
        self.prefix = prefix
        self.size = len(frame) if frame is not None else len(prefix)

    def sequenced(self, sequence_id: int) -> bytes:
        """Return the frame carrying ``sequence_id`` (JSON: ``,"sequenceId":N}`` closes it)."""
        suffix = _SEQUENCE_SUFFIX % sequence_id
        prefix = self.prefix
        return b"".join((frame_header(self.opcode, len(prefix) + len(suffix)), prefix, suffix))

    def template(self, digits: int) -> bytes | None:
        """The frame as a bytes %-format of its sequence id, for ids of ``digits`` digits.

        ``template(len(b"%d" % n)) % n == sequenced(n)``; many frames are built with one
        format of their templates joined. None when the codec splices otherwise (protobuf).
        """
        prefix = self.prefix
        header = frame_header(self.opcode, len(prefix) + _SEQUENCE_SUFFIX_BYTES + digits)
        return b"".join((header, prefix.replace(b"%", b"%%"), _SEQUENCE_SUFFIX))


class Codec(Protocol):
    """One subprotocol's wire format. Implementations hold no per-connection state."""

    name: str
    """The subprotocol name, or ``""`` for plain WebSocket clients."""
    reliable: bool
    """True when data messages carry a per-connection ``sequenceId``."""
    plain: bool
    """True for plain WebSocket clients: every frame is a ``message`` user event."""

    def decode(self, data: bytes, binary: bool) -> ClientMessage:
        """Decode one client frame into a message the connection's handler executes.

        Frames of the other :data:`InboundMessage` members (group streams, group state,
        answers to invocations) are refused as protocol errors (1007), as they always were by
        callers that execute :data:`ClientMessage` only.

        Raises:
            ProtocolError: the frame breaks the subprotocol; close with its code.
            BadRequestError: the frame is well formed but invalid; answer with an ack.
        """
        ...

    def decode_inbound(self, data: bytes, binary: bool) -> InboundMessage:
        """Decode one client frame into any message a client may send.

        Raises:
            ProtocolError: the frame breaks the subprotocol; close with its code.
            BadRequestError: the frame is well formed but invalid; answer with an ack
                (``ack_id``) or, for a stream message, with ``streamClosed`` (``stream_id``).
        """
        ...

    def encode(self, message: ServiceMessage) -> bytes | None:
        """Return the complete frame for a non-data message, or None if it is not sent."""
        ...

    def encode_data(self, message: DataMessage) -> EncodedData:
        """Encode a data message once; see :class:`EncodedData`."""
        ...

    def encode_group_state(self, message: GroupStateMessage) -> EncodedData | None:
        """Encode a group-state snapshot or update once, sequenced like data on reliable
        subprotocols; None where the subprotocol has no group state (plain clients)."""
        ...


def executable(
    decode_inbound: Callable[[bytes, bool], InboundMessage], data: bytes, binary: bool
) -> ClientMessage:
    """Decode a frame with ``decode_inbound``, refusing what is not a :data:`ClientMessage`.

    The refusal is a 1007 close, as for any frame the caller cannot execute; so is a stream
    message that ``decode_inbound`` found invalid.

    Raises:
        ProtocolError: as ``decode_inbound``, and for the frames above (1007).
        BadRequestError: as ``decode_inbound``, for a :data:`ClientMessage`.
    """
    try:
        message = decode_inbound(data, binary)
    except BadRequestError as exc:
        if exc.stream_id is not None:
            raise ProtocolError(str(exc), 1007) from exc
        raise
    if isinstance(message, BEYOND_CLIENT_MESSAGE):
        raise ProtocolError(f"{type(message).__name__} is not supported here", 1007)
    return cast(ClientMessage, message)
