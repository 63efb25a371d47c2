"""The reliable session of a ``*.reliable.*`` connection, as one pure state machine
(client-protocols.md §4).

Every data message to a reliable connection carries the session's next ``sequenceId`` and is
kept, as the exact frame that was sent, until the client's ``sequenceAck`` covers it. When the
socket drops the session is *detached*: frames sent meanwhile are kept too, until the client
recovers the session on a new socket (*attached* again: every kept frame is resent, in order)
or the session expires. The service's limits are 1,000 messages or 16 MB; a session over
either cannot be recovered. An *ended* session keeps nothing.

No clock and no I/O here: callers pass ``now`` in whatever clock they use, and decide when to
detach, expire or end. A session turns into a :class:`ReliableSnapshot` (plain data that
msgspec encodes) and back, so another node can take it over.

    ATTACHED --detach--> DETACHED --attach--> ATTACHED   (attach also replaces a live socket)
    ATTACHED, DETACHED --end--> ENDED
"""

from __future__ import annotations

import enum
from collections import deque

import msgspec

from hubbub.limits import MAX_UNACKED_BYTES, MAX_UNACKED_MESSAGES

__all__ = ["ReliableSession", "ReliableSnapshot", "SessionState", "SessionStateError"]


class SessionState(enum.Enum):
    ATTACHED = "attached"
    """A socket carries the session."""
    DETACHED = "detached"
    """The socket dropped; the session waits for a recovery until it expires."""
    ENDED = "ended"
    """Over: nothing is kept, nothing can be recovered."""


_ENDED = SessionState.ENDED  # a module global: the per-delivery check skips the enum lookup


class SessionStateError(ValueError):
    """A transition the session's state does not allow (a caller's mistake)."""


class ReliableSnapshot(msgspec.Struct, frozen=True):
    """A reliable session as plain data; ``expires_at`` is in the clock of the caller."""

    state: SessionState
    next_sequence_id: int
    unacked: tuple[tuple[int, bytes], ...]
    overflowed: bool
    expires_at: float | None
    max_messages: int
    max_bytes: int


class ReliableSession:
    """Sequence ids, unacknowledged frames and the attached/detached/ended state of a session."""

    __slots__ = (
        "_frames",
        "_max_bytes",
        "_max_messages",
        "_size",
        "expires_at",
        "next_sequence_id",
        "overflowed",
        "state",
    )

    def __init__(
        self, max_messages: int = MAX_UNACKED_MESSAGES, max_bytes: int = MAX_UNACKED_BYTES
    ) -> None:
        self._frames: deque[tuple[int, bytes]] | None = None  # allocated on the first push
        self._size = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self.next_sequence_id = 1
        self.overflowed = False
        """Set once a limit was passed; the session is then unrecoverable."""
        self.state = SessionState.ATTACHED
        self.expires_at: float | None = None
        """When a detached session expires; None while attached or ended."""

    # -- sending ------------------------------------------------------------------------------

    def sequence(self) -> int:
        """Take the next ``sequenceId`` (1, 2, 3 ...) for a data message."""
        sequence_id = self.next_sequence_id
        self.next_sequence_id = sequence_id + 1
        return sequence_id

    def push(self, sequence_id: int, frame: bytes) -> bool:
        """Keep ``frame`` until acknowledged; False when that passes a limit (end the session).

        The frame is kept even then; an ended session keeps nothing and answers True.
        """
        if self.state is _ENDED:
            return True
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
        while frames and frames[0][0] <= sequence_id:
            self._size -= len(frames.popleft()[1])
            dropped += 1
        return dropped

    # -- transitions --------------------------------------------------------------------------

    @property
    def recoverable(self) -> bool:
        """A recovery may take the session over: not ended, within its limits."""
        return self.state is not SessionState.ENDED and not self.overflowed

    def detach(self, now: float, timeout: float) -> None:
        """The socket dropped: keep the session until ``now + timeout``.

        Raises:
            SessionStateError: the session is not attached.
        """
        if self.state is not SessionState.ATTACHED:
            raise SessionStateError(f"cannot detach a session that is {self.state.value}")
        self.state = SessionState.DETACHED
        self.expires_at = now + timeout

    def attach(self) -> list[bytes]:
        """A recovery took the session over: the kept frames to resend, in sequence order.

        Attaching an attached session moves it to the new socket (the old one is replaced).

        Raises:
            SessionStateError: the session is ended or over its limits.
        """
        if not self.recoverable:
            raise SessionStateError("cannot attach a session that is not recoverable")
        self.state = SessionState.ATTACHED
        self.expires_at = None
        return [frame for _, frame in self._frames or ()]

    def expired(self, now: float) -> bool:
        """True when the session is detached and its time ran out at ``now``."""
        expires_at = self.expires_at
        return self.state is SessionState.DETACHED and expires_at is not None and now >= expires_at

    def end(self) -> None:
        """End the session for good and drop what it kept (again: nothing happens)."""
        self.state = SessionState.ENDED
        self.expires_at = None
        self._frames = None
        self._size = 0

    # -- inspection and hand-over -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._frames) if self._frames is not None else 0

    @property
    def size(self) -> int:
        """Bytes kept."""
        return self._size

    def snapshot(self) -> ReliableSnapshot:
        """The whole session as plain data; :meth:`restore` makes an equal session of it."""
        return ReliableSnapshot(
            self.state,
            self.next_sequence_id,
            tuple(self._frames or ()),
            self.overflowed,
            self.expires_at,
            self._max_messages,
            self._max_bytes,
        )

    @classmethod
    def restore(cls, snapshot: ReliableSnapshot) -> ReliableSession:
        """The session a :meth:`snapshot` describes."""
        session = cls(snapshot.max_messages, snapshot.max_bytes)
        session.state = snapshot.state
        session.next_sequence_id = snapshot.next_sequence_id
        session.overflowed = snapshot.overflowed
        session.expires_at = snapshot.expires_at
        if snapshot.unacked:
            session._frames = deque(snapshot.unacked)
            session._size = sum(len(frame) for _, frame in snapshot.unacked)
        return session
