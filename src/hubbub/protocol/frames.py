"""WebSocket frame headers for server-to-client frames (RFC 6455 §5.2).

Server frames are never masked, so a frame is a 2-10 byte header followed by the payload. The
fan-out path builds each frame once and hands the same bytes to every connection.
"""

from __future__ import annotations

import struct

__all__ = ["OP_BINARY", "OP_TEXT", "frame", "frame_header"]

OP_TEXT = 0x1
OP_BINARY = 0x2

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
