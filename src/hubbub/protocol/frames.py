"""WebSocket frame headers for server-to-client frames (RFC 6455 §5.2).

Server frames are never masked, so a frame is a 2-10 byte header followed by the payload. The
fan-out path builds each frame once and hands the same bytes to every connection.
"""

from __future__ import annotations

import struct

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "close_frame",
    "frame",
    "frame_header",
]

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

MAX_CLOSE_REASON_BYTES = 123
"""A control frame carries at most 125 bytes: the 2-byte code and the reason."""

_SHORT = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def frame_header(opcode: int, length: int) -> bytes:
    """Return the header of a final, unmasked frame carrying ``length`` payload bytes."""
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return _SHORT.pack(first, 126, length)
    return _LONG.pack(first, 127, length)


def frame(opcode: int, payload: bytes) -> bytes:
    """Return a complete frame: header and payload."""
    return frame_header(opcode, len(payload)) + payload


def close_frame(code: int, reason: str) -> bytes:
    """A close frame: ``code``, then ``reason`` cut to whole UTF-8 characters within 123 bytes."""
    data = reason.encode()[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore").encode()
    return frame(OP_CLOSE, code.to_bytes(2, "big") + data)
