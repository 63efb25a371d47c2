"""Message time-to-live: REST ``messageTtlSeconds`` and client ``ttlSeconds`` (0-300).

A message's deadline is fixed when the service accepts it (``accepted + ttl``). A copy still
waiting at its deadline, in a detached reliable session's buffer or in a slow consumer's
outbound queue, is dropped, never delivered late. Times are monotonic seconds; None means the
message never expires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

__all__ = ["MAX_TTL_SECONDS", "deadline", "is_expired", "split_expired", "validate_ttl"]

MAX_TTL_SECONDS = 300

T = TypeVar("T")


def validate_ttl(seconds: int) -> int | None:
    """Check a TTL of 0-300 seconds; 0 means none.

    Raises:
        ValueError: outside 0-300.
    """
    if not 0 <= seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"The TTL must be between 0 and {MAX_TTL_SECONDS} seconds.")
    return seconds or None


def deadline(accepted_at: float, ttl_seconds: int | None) -> float | None:
    """When a message accepted at ``accepted_at`` expires; None without a TTL."""
    return None if not ttl_seconds else accepted_at + ttl_seconds


def is_expired(expires_at: float | None, now: float) -> bool:
    """True once ``now`` reached ``expires_at``: the copy must not be delivered."""
    return expires_at is not None and now >= expires_at


def split_expired(
    items: Iterable[T], expires_at: Callable[[T], float | None], now: float
) -> tuple[list[T], list[T]]:
    """``(live, expired)`` of waiting copies, each list in the given order."""
    live: list[T] = []
    dropped: list[T] = []
    for item in items:
        (dropped if is_expired(expires_at(item), now) else live).append(item)
    return live, dropped
