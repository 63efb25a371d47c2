"""The ackIds a connection already had processed (client-protocols.md §3.3 ``Duplicate``).

A client that resends a message with an ackId the service processed successfully gets the ack
error ``Duplicate`` instead of a second execution. Every connection keeps its own cache,
reliable or not; the oldest ackIds are forgotten beyond :data:`~hubbub.limits.ACK_CACHE_SIZE`.
"""

from __future__ import annotations

from collections.abc import Iterable

from hubbub.limits import ACK_CACHE_SIZE

__all__ = ["AckIds"]


class AckIds:
    """Processed ackIds, oldest first, at most ``size`` of them."""

    __slots__ = ("_ids", "_size")

    def __init__(self, ids: Iterable[int] = (), size: int = ACK_CACHE_SIZE) -> None:
        self._ids: dict[int, None] = {}  # insertion-ordered: the first key is the oldest
        self._size = size
        for ack_id in ids:
            self.remember(ack_id)

    def seen(self, ack_id: int) -> bool:
        """True when ``ack_id`` was processed successfully and is still remembered."""
        return ack_id in self._ids

    def remember(self, ack_id: int) -> None:
        """Remember a successful ``ack_id``, forgetting the oldest beyond the size."""
        ids = self._ids
        ids[ack_id] = None
        if len(ids) > self._size:
            del ids[next(iter(ids))]

    def snapshot(self) -> list[int]:
        """The remembered ackIds, oldest first: ``AckIds(snapshot)`` is an equal cache."""
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._ids)
