"""The reliable session of a ``*.reliable.*`` connection, as one pure state machine
(client-protocols.md §4).

Every data message to a reliable connection carries the session's next ``sequenceId`` and is
kept until the client's ``sequenceAck`` covers it. What is kept is the message as encoded once
for every connection (an :class:`~hubbub.protocol.codec.EncodedData`, shared), not a frame of
this connection's own: sequence ids are consecutive, so the kept messages are numbered by their
place, and the exact frame (this connection's header and ``sequenceId`` spliced in) is built
only when it is written, resent or snapshotted. When the socket drops the session is
*detached*: messages sent meanwhile are kept too, until the client recovers the session on a
new socket (*attached* again: every kept frame is resent, in order) or the session expires. The
service's limits are 1,000 messages or 16 MB; a session over either cannot be recovered. An
*ended* session keeps nothing.

A group fan-out hands many sessions one :class:`SequencedFrames`: each session numbers its
messages from its own next id (:meth:`ReliableSession.share`), and the fan-outs that follow only
append to it, with no work per session; a session takes the messages in, in order, the next
time it is used (``_settle``).

No clock and no I/O here: callers pass ``now`` in whatever clock they use, and decide when to
detach, expire or end. A session turns into a :class:`ReliableSnapshot` (plain data that
msgspec encodes) and back, so another node can take it over.

    ATTACHED --detach--> DETACHED --attach--> ATTACHED   (attach also replaces a live socket)
    ATTACHED, DETACHED --end--> ENDED
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from operator import attrgetter

import msgspec

from hubbub.limits import MAX_UNACKED_BYTES, MAX_UNACKED_MESSAGES
from hubbub.protocol.codec import Codec, EncodedData

__all__ = [
    "RUN_BYTES",
    "RUN_MESSAGES",
    "ReliableSession",
    "ReliableSnapshot",
    "SequencedFrames",
    "SessionReplica",
    "SessionState",
    "SessionStateError",
]


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


class _Kept(EncodedData):
    """A frame kept as it was written, whatever its sequence id: a restored session's."""

    __slots__ = ()

    def __init__(self, frame: bytes) -> None:
        super().__init__(0, frame)

    def sequenced(self, sequence_id: int) -> bytes:
        assert self.frame is not None
        return self.frame


_GAP = _Kept(b"")
"""The place of a sequence id that a restored snapshot had no frame for: never resent."""
_SIZE = attrgetter("size")
RUN_MESSAGES = 64
"""The most messages one :class:`SequencedFrames` takes (then the next fan-out starts another)."""
RUN_BYTES = 1 << 20
"""The most bytes one :class:`SequencedFrames` takes; a bigger message is pushed one by one."""
_SHARE_COUNT = MAX_UNACKED_MESSAGES - RUN_MESSAGES
_SHARE_BYTES = MAX_UNACKED_BYTES - RUN_BYTES
_LOWEST = (0, *(10 ** (digits - 1) for digits in range(1, 22)))
"""The lowest number of each digit count (uint64 ids have at most 20)."""


class SessionReplica:
    """Where a session's deliveries are copied (a replica of the session elsewhere).

    ``push`` takes one delivery: its sequence id and the frame the client gets. ``shared``
    takes a message of a group fan-out once for all the members that share it
    (:class:`SequencedFrames`): the message, the ``(key, first sequence id)`` of each member
    and the message's place in the run (its sequence id is ``first + offset`` for each). ``key``
    names this session in those pairs (its connection id). No I/O here: the callables are the
    engine's.
    """

    __slots__ = ("key", "push", "shared")

    def __init__(
        self,
        key: str,
        push: Callable[[int, bytes], None],
        shared: Callable[[EncodedData, list[tuple[str, int]], int], None],
    ) -> None:
        self.key = key
        self.push = push
        self.shared = shared


class SequencedFrames:
    """Consecutive data messages of a group fan-out, kept once for all the members' sessions.

    Each session that shares it (:meth:`ReliableSession.share`) numbers the messages from its
    own next sequence id; while ``open``, later fan-outs only :meth:`add` to it, up to
    :data:`RUN_MESSAGES` messages and :data:`RUN_BYTES` bytes. Only a session with room for that
    much below its limits shares it: one near a limit is sent its messages one by one, and
    closed at once when one passes the limit. The members' writers build their bytes with
    :meth:`joined`.
    """

    __slots__ = (
        "__weakref__",
        "_first",
        "_joined",
        "_replicas",
        "_templates",
        "codec",
        "datas",
        "open",
        "size",
    )

    def __init__(self, codec: Codec, data: EncodedData) -> None:
        self.codec = codec
        self.datas = [data]
        self.size = data.size
        self.open = data.size <= RUN_BYTES
        """Taking more messages (fan-outs share no message over :data:`RUN_BYTES`)."""
        self._first = 0
        self._joined = b""
        self._templates: dict[int, bytes] = {}
        self._replicas: tuple[SessionReplica, list[tuple[str, int]]] | None = None

    def replicate(self, replica: SessionReplica, members: list[tuple[str, int]]) -> None:
        """Copy this run's messages, the first now and each added one, to the replicas of
        ``members`` (``(key, first sequence id)`` each), with one call per message."""
        self._replicas = (replica, members)
        for offset, data in enumerate(self.datas):
            replica.shared(data, members, offset)

    def add(self, data: EncodedData) -> bool:
        """Append the next message; False (and closed) when this is full."""
        size = self.size + data.size
        if len(self.datas) >= RUN_MESSAGES or size > RUN_BYTES:
            self.open = False
            return False
        self.datas.append(data)
        self.size = size
        if self._replicas is not None:
            replica, members = self._replicas
            replica.shared(data, members, len(self.datas) - 1)
        return True

    def joined(self, first: int) -> bytes:
        """The frames of all the messages numbered from ``first``, as one buffer.

        The last buffer built is kept: members whose sequence ids agree (they joined together
        and got the same messages since) share it, as members on the plain subprotocols do.
        Others format one template of all the frames (``EncodedData.template``) with their ids.
        """
        if first == self._first:
            return self._joined
        datas = self.datas
        count = len(datas)
        last = first + count - 1
        digits = len(b"%d" % last)
        joined: bytes | None = None
        if first >= _LOWEST[digits]:  # every id of the run has as many digits
            template = self._templates.get(digits)
            if template is None:
                parts = [data.template(digits) for data in datas]
                if None not in parts:
                    template = b"".join(parts)  # type: ignore[arg-type]
                    if not self.open:
                        self._templates[digits] = template
            if template is not None:
                joined = template % (first if count == 1 else tuple(range(first, last + 1)))
        if joined is None:
            joined = b"".join([data.sequenced(first + i) for i, data in enumerate(datas)])
        if not self.open:  # complete: nothing is added any more
            self._first = first
            self._joined = joined
        return joined


class ReliableSession:
    """Sequence ids, unacknowledged messages and the attached/detached/ended state of a session.

    ``replica``, when set, is told every sequence id taken and the frame it goes out in, as
    the client gets it (:class:`SessionReplica`); a session with one still shares group
    fan-outs (:meth:`share`): their messages reach the replica once per message for all the
    sharing members (:meth:`SequencedFrames.replicate`), which the fan-out arranges.
    """

    __slots__ = (
        "_alone",
        "_entries",
        "_max_bytes",
        "_max_messages",
        "_next",
        "_replica",
        "_run",
        "_run_first",
        "_share_bytes",
        "_share_count",
        "_size",
        "expires_at",
        "overflowed",
        "state",
    )

    def __init__(
        self, max_messages: int = MAX_UNACKED_MESSAGES, max_bytes: int = MAX_UNACKED_BYTES
    ) -> None:
        self._entries: list[EncodedData] | None = None
        """The unacked messages in sequence order; the last is number ``_next - 1``. Allocated
        on the first push."""
        self._size = 0
        """At least the bytes kept: acks do not lower it (but to 0 when nothing is left), so they
        do not visit what they drop; :meth:`_recount` makes it exact, before any limit check
        it would fail."""
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        # A session shares a run only with room for a whole one below its limits (the
        # service's limits share their int objects: memory per reliable connection).
        self._share_count = (
            _SHARE_COUNT if max_messages == MAX_UNACKED_MESSAGES else max_messages - RUN_MESSAGES
        )
        self._share_bytes = (
            _SHARE_BYTES if max_bytes == MAX_UNACKED_BYTES else max_bytes - RUN_BYTES
        )
        self._alone = False
        """Never shares: ended."""
        self._next = 1
        self._run: SequencedFrames | None = None
        """Shared messages this session numbers from ``_run_first`` on, not yet in ``_entries``
        (then ``_next`` is ``_run_first``)."""
        self._run_first = 0
        self.overflowed = False
        """Set once a limit was passed; the session is then unrecoverable."""
        self.state = SessionState.ATTACHED
        self.expires_at: float | None = None
        """When a detached session expires; None while attached or ended."""
        self._replica: SessionReplica | None = None

    @property
    def replica(self) -> SessionReplica | None:
        """Told every sequence id taken and its frame, when set."""
        return self._replica

    @replica.setter
    def replica(self, replica: SessionReplica | None) -> None:
        if self._run is not None:
            self._settle()  # what was shared before is the caller's to copy
        self._replica = replica

    # -- sending ------------------------------------------------------------------------------

    @property
    def next_sequence_id(self) -> int:
        """The ``sequenceId`` the next data message takes (1, 2, 3 ...)."""
        if self._run is not None:
            self._settle()
        return self._next

    def push(self, data: EncodedData) -> bytes:
        """Take the next sequence id for ``data``, keep it until acknowledged; return its frame.

        When that passes a limit, ``overflowed`` is set (end the session); the message is kept
        even then. An ended session keeps nothing.
        """
        if self._run is not None:
            self._settle()
        sequence_id = self._next
        self._next = sequence_id + 1
        frame = data.sequenced(sequence_id)
        if self.state is _ENDED:
            return frame
        entries = self._entries
        if entries is None:
            entries = self._entries = []
        entries.append(data)
        self._size += data.size
        if len(entries) > self._max_messages or (
            self._size > self._max_bytes and self._recount() > self._max_bytes
        ):
            self.overflowed = True
        if self._replica is not None:
            self._replica.push(sequence_id, frame)
        return frame

    def share(self, frames: SequencedFrames) -> int:
        """Take ``frames`` (and what is added to them) as the next messages.

        Returns:
            The sequence id of the first of them, or 0 when this session cannot share them: it
            is ended or has no room for them (:meth:`push` them instead).
        """
        run = self._run
        entries = self._entries
        if run is not None:  # _settle, inline: this runs per member and flush period
            self._run = None
            run.open = False
            datas = run.datas
            self._next = self._run_first + len(datas)
            if entries is None:
                entries = self._entries = datas.copy()
            else:
                entries += datas
            self._size += run.size
        if self._alone or (len(entries) if entries is not None else 0) > self._share_count:
            return 0
        if self._size > self._share_bytes and self._recount() > self._share_bytes:
            return 0
        self._run = frames
        self._run_first = first = self._next
        return first

    def unshare(self) -> None:
        """Undo the last :meth:`share` (its frames could not be queued for the socket)."""
        self._run = None

    def _settle(self) -> None:
        """Take the shared messages in: they are final from now on (closed for everybody)."""
        run = self._run
        assert run is not None
        self._run = None
        run.open = False
        datas = run.datas
        self._next = self._run_first + len(datas)
        entries = self._entries
        if entries is None:
            self._entries = datas.copy()
        else:
            entries += datas
        self._size += run.size

    def ack(self, sequence_id: int) -> int:
        """Drop every message with a ``sequenceId`` up to ``sequence_id``; returns how many."""
        run = self._run
        if run is not None and (sequence_id >= self._run_first or not run.open):
            self._settle()
        entries = self._entries
        if not entries:
            return 0
        count = len(entries)
        dropped = sequence_id - (self._next - count) + 1
        if dropped <= 0:
            return 0
        if dropped >= count:
            entries.clear()
            self._size = 0
            return count
        del entries[:dropped]
        return dropped

    def _recount(self) -> int:
        """Make ``_size`` exact; returns it."""
        entries = self._entries
        self._size = size = sum(map(_SIZE, entries)) if entries else 0
        return size

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
        return [frame for _, frame in self._frames()]

    def expired(self, now: float) -> bool:
        """True when the session is detached and its time ran out at ``now``."""
        expires_at = self.expires_at
        return self.state is SessionState.DETACHED and expires_at is not None and now >= expires_at

    def end(self) -> None:
        """End the session for good and drop what it kept (again: nothing happens)."""
        if self._run is not None:
            self._settle()  # the sequence ids given stay taken
        self.state = SessionState.ENDED
        self._alone = True
        self.expires_at = None
        self._entries = None
        self._size = 0

    # -- inspection and hand-over -------------------------------------------------------------

    def _frames(self) -> list[tuple[int, bytes]]:
        """Every kept message as its sequence id and the exact frame the client gets."""
        if self._run is not None:
            self._settle()
        entries = self._entries
        if not entries:
            return []
        first = self._next - len(entries)
        return [
            (first + i, data.sequenced(first + i))
            for i, data in enumerate(entries)
            if data is not _GAP
        ]

    def __len__(self) -> int:
        if self._run is not None:
            self._settle()
        return len(self._entries) if self._entries is not None else 0

    @property
    def size(self) -> int:
        """Bytes kept, as counted against the byte limit (see ``EncodedData.size``)."""
        if self._run is not None:
            self._settle()
        return self._recount()

    def snapshot(self, *, frames: bool = True) -> ReliableSnapshot:
        """The whole session as plain data; :meth:`restore` makes an equal session of it.

        ``frames=False``: without the unacked frames (a replica keeps those one by one).
        """
        return ReliableSnapshot(
            self.state,
            self.next_sequence_id,
            tuple(self._frames()) if frames else (),
            self.overflowed,
            self.expires_at,
            self._max_messages,
            self._max_bytes,
        )

    @classmethod
    def restore(cls, snapshot: ReliableSnapshot) -> ReliableSession:
        """The session a :meth:`snapshot` describes.

        The kept frames are taken as they are. Sequence ids the snapshot has no frame for
        (a replica that missed some) keep their places and are not resent; too many of them
        make the session over its limits.
        """
        session = cls(snapshot.max_messages, snapshot.max_bytes)
        session.state = snapshot.state
        session._alone = snapshot.state is _ENDED
        session.overflowed = snapshot.overflowed
        session.expires_at = snapshot.expires_at
        next_id = snapshot.next_sequence_id
        if snapshot.unacked and snapshot.state is not _ENDED:
            entries: list[EncodedData] = []
            expected = snapshot.unacked[0][0]
            limit = snapshot.max_messages
            lost = False
            for sequence_id, frame in snapshot.unacked:
                if sequence_id < expected:
                    continue  # out of order or repeated: the first one counts
                if sequence_id - expected + len(entries) > limit:
                    lost = True
                    break
                entries.extend([_GAP] * (sequence_id - expected))
                entries.append(_Kept(frame))
                session._size += len(frame)
                expected = sequence_id + 1
            if not lost and expected < next_id:
                lost = next_id - expected + len(entries) > limit
                if not lost:
                    entries.extend([_GAP] * (next_id - expected))
            if lost:  # more gaps than a session may hold: not recoverable, nothing resent
                session.overflowed = True
                entries = []
                session._size = 0
            session._entries = entries or None
            next_id = max(next_id, expected)
        session._next = next_id
        return session
