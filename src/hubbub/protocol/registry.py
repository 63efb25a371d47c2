"""Lookup of a codec by negotiated subprotocol name."""

from __future__ import annotations

from hubbub.protocol.codec import (
    JSON_RELIABLE_SUBPROTOCOL,
    JSON_SUBPROTOCOL,
    PROTOBUF_RELIABLE_SUBPROTOCOL,
    PROTOBUF_SUBPROTOCOL,
    Codec,
)
from hubbub.protocol.json_codec import JsonCodec
from hubbub.protocol.protobuf_codec import ProtobufCodec
from hubbub.protocol.simple_codec import SimpleCodec

__all__ = ["codec_for"]

_CODECS: dict[str, Codec] = {
    JSON_SUBPROTOCOL: JsonCodec(JSON_SUBPROTOCOL, reliable=False),
    JSON_RELIABLE_SUBPROTOCOL: JsonCodec(JSON_RELIABLE_SUBPROTOCOL, reliable=True),
    PROTOBUF_SUBPROTOCOL: ProtobufCodec(PROTOBUF_SUBPROTOCOL, reliable=False),
    PROTOBUF_RELIABLE_SUBPROTOCOL: ProtobufCodec(PROTOBUF_RELIABLE_SUBPROTOCOL, reliable=True),
}
_SIMPLE = SimpleCodec()


def codec_for(subprotocol: str | None) -> Codec:
    """Return the codec of a selected subprotocol; None or an unknown name is a plain client."""
    if subprotocol is None:
        return _SIMPLE
    return _CODECS.get(subprotocol, _SIMPLE)
