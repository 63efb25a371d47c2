"""A reliable message as a session replica stores it: once for all the members of a fan-out.

A group fan-out to K reliable members on one node is replicated as one message plus K
``(connection, sequence id)`` pairs; each member's frame is rebuilt from the message and its
sequence id when the session is restored (:meth:`EncodedData.sequenced`). The bytes are what
:func:`encode` gives and :func:`decode` reads; they are opaque to the engine.
"""

from __future__ import annotations

from hubbub.protocol.codec import EncodedData
from hubbub.protocol.protobuf_codec import _ProtobufSequenced

__all__ = ["decode", "encode"]


def encode(data: EncodedData) -> bytes:
    """The bytes a replica keeps for ``data`` (a sequenced message of a reliable codec)."""
    if isinstance(data, _ProtobufSequenced):
        member, sequence = data.member_tag, data.sequence_tag
        return b"".join(
            (b"p", bytes((len(member),)), member, bytes((len(sequence),)), sequence, data.prefix)
        )
    if data.frame is not None:
        return b"f" + data.frame
    return b"j" + bytes((data.opcode,)) + data.prefix


def decode(raw: bytes) -> EncodedData:
    """The message :func:`encode` kept.

    Raises:
        ValueError: the bytes are not what :func:`encode` gives.
    """
    kind = raw[:1]
    if kind == b"j" and len(raw) >= 2:
        return EncodedData(raw[1], None, raw[2:])
    if kind == b"p" and len(raw) >= 2:
        n = raw[1]
        member = raw[2 : 2 + n]
        m = raw[2 + n]
        sequence = raw[3 + n : 3 + n + m]
        return _ProtobufSequenced(raw[3 + n + m :], member, sequence)
    if kind == b"f":
        return EncodedData(0, raw[1:])
    raise ValueError("not a replicated message")
