"""The unacknowledged-message buffer of a reliable connection (client-protocols.md §4).

Every data message to a ``*.reliable.*`` connection is kept, as the exact frame that was sent,
until the client's ``sequenceAck`` covers its ``sequenceId``. After a dropped connection the
client recovers the session and receives every kept frame again, in order. The service's limits
are 1,000 messages or 16 MB; a connection over either cannot be recovered.
"""

from __future__ import annotations

from collections import deque

from hubbub.limits import MAX_UNACKED_BYTES, MAX_UNACKED_MESSAGES

__all__ = ["ReliableBuffer"]


class ReliableBuffer:
    """Frames sent but not yet acknowledged, oldest first."""

    __slots__ = ("_frames", "_max_bytes", "_max_messages", "_size", "overflowed")

    def __init__(
        self, max_messages: int = MAX_UNACKED_MESSAGES, max_bytes: int = MAX_UNACKED_BYTES
    ) -> None:
        self._frames: deque[tuple[int, bytes]] | None = None  # allocated on the first push
        self._size = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self.overflowed = False
        """Set once a limit was passed; the session is then unrecoverable."""

    def push(self, sequence_id: int, frame: bytes) -> bool:
        """Keep ``frame``; False when that passes a limit (the frame is still kept)."""
        frames = self._frames
        if frames is None:
            frames = self._frames = deque()
        frames.append((sequence_id, frame))
        self._size += len(frame)
        if len(frames) > self._max_messages or self._size > self._max_bytes:
            self.overflowed = True
        return not self.overflowed

    def ack(self, sequence_id: int) -> int:
        """Drop every frame with a ``sequenceId`` up to ``sequence_id``; returns how many."""
        frames = self._frames
        dropped = 0
        while frames is not None and frames and frames[0][0] <= sequence_id:
            self._size -= len(frames.popleft()[1])
            dropped += 1
        return dropped

    def unacked(self) -> list[bytes]:
        """The kept frames in sequence order, for resending after a recovery."""
        return [frame for _, frame in self._frames or ()]

    def __len__(self) -> int:
        return len(self._frames) if self._frames is not None else 0

    @property
    def size(self) -> int:
        """Bytes kept."""
        return self._size
