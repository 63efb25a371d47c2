"""The reliable session state machine (client-protocols.md §4), and the ackId cache."""

from __future__ import annotations

import msgspec
import pytest

from hubbub.limits import ACK_CACHE_SIZE, MAX_UNACKED_BYTES, MAX_UNACKED_MESSAGES
from hubbub.protocol.acks import AckIds
from hubbub.protocol.codec import JSON_RELIABLE_SUBPROTOCOL, EncodedData
from hubbub.protocol.frames import OP_TEXT
from hubbub.protocol.registry import codec_for
from hubbub.protocol.reliable import (
    RUN_BYTES,
    RUN_MESSAGES,
    ReliableSession,
    ReliableSnapshot,
    SequencedFrames,
    SessionReplica,
    SessionState,
    SessionStateError,
)


class Numbered(EncodedData):
    """A message whose frame is its body and its sequence id, so tests can read both."""

    def __init__(self, body: bytes) -> None:
        super().__init__(OP_TEXT, prefix=body)

    def sequenced(self, sequence_id: int) -> bytes:
        return b"%s#%d" % (self.prefix, sequence_id)

    def template(self, digits: int) -> None:
        return None


def send(session: ReliableSession, body: bytes = b"f") -> tuple[int, bool]:
    """Push one message; its sequence id and whether the session is still within its limits."""
    frame = session.push(Numbered(body))
    return int(frame.rsplit(b"#", 1)[1]), not session.overflowed


def test_sequence_ids_count_from_one() -> None:
    """Each data message takes the next sequenceId, spliced into its frame."""
    session = ReliableSession()
    assert session.next_sequence_id == 1
    assert [session.push(Numbered(b"m")) for _ in range(3)] == [b"m#1", b"m#2", b"m#3"]
    assert session.next_sequence_id == 4


def test_ack_drops_frames_up_to_the_sequence_id() -> None:
    """A sequenceAck covers every frame up to its id, and only those."""
    session = ReliableSession()
    for frame in (b"a", b"bb", b"ccc"):
        send(session, frame)
    assert (len(session), session.size) == (3, 6)
    assert session.ack(2) == 2
    assert (len(session), session.size) == (1, 3)
    assert session.ack(2) == 0  # an old ack again drops nothing
    assert session.ack(99) == 1
    assert (len(session), session.size) == (0, 0)


def test_a_new_session_is_attached_and_keeps_nothing() -> None:
    session = ReliableSession()
    assert session.state is SessionState.ATTACHED
    assert session.recoverable and not session.overflowed
    assert session.expires_at is None and len(session) == 0
    assert session.ack(5) == 0


def test_detach_then_attach_resends_the_unacked_frames_in_order() -> None:
    """Frames sent before and while detached come back on attach, oldest first."""
    session = ReliableSession()
    send(session, b"1")
    send(session, b"2")
    session.ack(1)
    session.detach(now=100.0, timeout=30.0)
    assert (session.state, session.expires_at) == (SessionState.DETACHED, 130.0)
    send(session, b"3")
    assert session.attach() == [b"2#2", b"3#3"]
    assert session.state is SessionState.ATTACHED and session.expires_at is None
    assert len(session) == 2  # resent frames stay until acknowledged


def test_attach_while_attached_replaces_the_socket() -> None:
    """A recovery that meets a live session moves it (the old socket is replaced)."""
    session = ReliableSession()
    send(session, b"1")
    assert session.attach() == [b"1#1"]
    assert session.state is SessionState.ATTACHED


def test_detach_only_from_attached() -> None:
    session = ReliableSession()
    session.detach(0.0, 1.0)
    with pytest.raises(SessionStateError):
        session.detach(0.0, 1.0)
    session.end()
    with pytest.raises(SessionStateError):
        session.detach(0.0, 1.0)


def test_expiry_only_when_detached_and_time_ran_out() -> None:
    session = ReliableSession()
    assert not session.expired(1e12)  # attached sessions never expire
    session.detach(now=10.0, timeout=5.0)
    assert not session.expired(14.999)
    assert session.expired(15.0) and session.expired(16.0)
    session.attach()
    assert not session.expired(16.0)
    session.detach(now=20.0, timeout=1.0)
    session.end()
    assert not session.expired(30.0)


def test_end_drops_everything_and_cannot_be_undone() -> None:
    """An ended session keeps nothing, takes no frames and cannot be attached."""
    session = ReliableSession()
    send(session, b"1")
    session.end()
    assert session.state is SessionState.ENDED and not session.recoverable
    assert (len(session), session.size) == (0, 0)
    assert send(session, b"2")[1] is True  # nothing kept, nothing to overflow
    assert len(session) == 0
    with pytest.raises(SessionStateError):
        session.attach()
    session.end()  # twice is fine
    assert session.state is SessionState.ENDED


@pytest.mark.parametrize("detached", [False, True])
def test_overflow_by_count(detached: bool) -> None:
    """One message past the count limit overflows, attached or detached; the frame is kept."""
    session = ReliableSession(max_messages=3)
    if detached:
        session.detach(0.0, 30.0)
    assert [send(session)[1] for _ in range(3)] == [True, True, True]
    assert send(session)[1] is False
    assert session.overflowed and not session.recoverable and len(session) == 4
    with pytest.raises(SessionStateError):
        session.attach()
    session.ack(4)
    assert session.overflowed  # acknowledging later does not make it recoverable again


@pytest.mark.parametrize("detached", [False, True])
def test_overflow_by_bytes(detached: bool) -> None:
    """Frames past the byte limit overflow, attached or detached; exactly at it does not."""
    session = ReliableSession(max_bytes=10)
    if detached:
        session.detach(0.0, 30.0)
    assert send(session, b"x" * 10)[1] is True
    assert send(session, b"y")[1] is False
    assert session.overflowed and session.size == 11


def test_default_limits_are_the_services() -> None:
    """1,000 messages or 16 MB (§4)."""
    session = ReliableSession()
    for _ in range(MAX_UNACKED_MESSAGES):
        assert send(session)[1]
    assert not send(session)[1]
    big = ReliableSession()
    assert send(big, b"x" * MAX_UNACKED_BYTES)[1]
    assert not send(big, b"x")[1]


def _roundtrip(snapshot: ReliableSnapshot) -> ReliableSnapshot:
    return msgspec.msgpack.decode(msgspec.msgpack.encode(snapshot), type=ReliableSnapshot)


@pytest.mark.parametrize("state", ["attached", "detached", "ended", "overflowed"])
def test_snapshot_round_trips(state: str) -> None:
    """A snapshot crosses msgpack unchanged, and restores an equal session in every state."""
    session = ReliableSession(max_messages=5, max_bytes=100)
    for frame in (b"a", b"bb", b"ccc"):
        send(session, frame)
    session.ack(1)
    if state == "detached":
        session.detach(now=50.0, timeout=30.0)
    elif state == "ended":
        session.end()
    elif state == "overflowed":
        for _ in range(4):
            send(session)
    snapshot = session.snapshot()
    assert _roundtrip(snapshot) == snapshot
    restored = ReliableSession.restore(_roundtrip(snapshot))
    assert restored.snapshot() == snapshot
    assert (restored.state, len(restored)) == (session.state, len(session))
    # A live session counts its messages as encoded once, a restored one the frames it got.
    assert restored.size == sum(len(frame) for _, frame in snapshot.unacked)
    assert restored.recoverable == session.recoverable
    assert restored.next_sequence_id == session.next_sequence_id
    assert send(restored)[0] == send(session)[0]
    if state == "detached":
        assert restored.expired(80.0) and not restored.expired(79.0)
        assert restored.attach() == [b"bb#2", b"ccc#3", b"f#4"]


def test_a_restored_session_keeps_its_limits() -> None:
    session = ReliableSession.restore(ReliableSession(max_messages=1).snapshot())
    assert send(session)[1] and not send(session)[1]


def test_ack_ids_remember_and_forget_the_oldest() -> None:
    """The cache says Duplicate for remembered ids and forgets the oldest beyond its size."""
    acks = AckIds(size=3)
    for ack_id in (1, 2, 3):
        acks.remember(ack_id)
    assert acks.seen(1) and not acks.seen(4)
    acks.remember(4)
    assert not acks.seen(1) and acks.seen(2) and acks.seen(4)
    assert acks.snapshot() == [2, 3, 4]
    restored = AckIds(acks.snapshot(), size=3)
    assert restored.snapshot() == [2, 3, 4]
    restored.remember(5)
    assert restored.snapshot() == [3, 4, 5]


def test_ack_ids_default_size() -> None:
    acks = AckIds()
    for ack_id in range(ACK_CACHE_SIZE + 1):
        acks.remember(ack_id)
    assert len(acks) == ACK_CACHE_SIZE and not acks.seen(0) and acks.seen(ACK_CACHE_SIZE)


# -- messages shared by many sessions (a group fan-out) -----------------------------------------


def _run(*bodies: bytes) -> SequencedFrames:
    frames = SequencedFrames(codec_for(JSON_RELIABLE_SUBPROTOCOL), Numbered(bodies[0]))
    for body in bodies[1:]:
        assert frames.add(Numbered(body))
    return frames


def test_shared_frames_are_numbered_by_each_session() -> None:
    """Every session numbers the shared messages from its own next id, in order after what it
    was sent alone, and keeps them as if they had been pushed one by one."""
    ahead, fresh = ReliableSession(), ReliableSession()
    send(ahead, b"own")
    frames = SequencedFrames(codec_for(JSON_RELIABLE_SUBPROTOCOL), Numbered(b"a"))
    assert (ahead.share(frames), fresh.share(frames)) == (2, 1)
    assert frames.add(Numbered(b"b"))
    frames.open = False  # as the first writer does
    assert frames.joined(2) == b"a#2b#3" and frames.joined(1) == b"a#1b#2"
    assert send(ahead, b"next")[0] == 4  # after the shared ones
    assert ahead.attach() == [b"own#1", b"a#2", b"b#3", b"next#4"]
    assert (len(fresh), fresh.next_sequence_id) == (2, 3)
    assert fresh.snapshot().unacked == ((1, b"a#1"), (2, b"b#2"))


def test_a_session_taking_its_messages_in_closes_them_for_everybody() -> None:
    """Once a session numbered the shared messages, nothing may be added to them."""
    one, two = ReliableSession(), ReliableSession()
    frames = _run(b"a")
    one.share(frames)
    two.share(frames)
    send(one, b"alone")
    assert not frames.open
    assert two.next_sequence_id == 2 and len(two) == 1


def test_acks_below_the_shared_messages_leave_them_open() -> None:
    session = ReliableSession()
    send(session, b"1")
    frames = _run(b"2")
    session.share(frames)
    assert session.ack(1) == 1 and frames.open  # another member's fan-out goes on
    assert session.ack(2) == 1 and not frames.open
    assert len(session) == 0


def test_shared_frames_stay_within_every_sessions_limits() -> None:
    """A run takes at most RUN_MESSAGES messages and RUN_BYTES bytes, and only a session with
    room for a whole run below its limits shares it; one nearer is pushed its messages one by
    one (and overflows at once when one passes a limit)."""
    frames = _run(b"0")
    for i in range(1, RUN_MESSAGES):
        assert frames.add(Numbered(b"%d" % i))
    assert not frames.add(Numbered(b"one more")) and not frames.open
    big = _run(b"x" * (RUN_BYTES - 1))
    assert big.add(Numbered(b"y")) and not big.add(Numbered(b"z")) and not big.open

    roomy = ReliableSession(max_messages=RUN_MESSAGES + 1)
    send(roomy)
    assert roomy.share(_run(b"a")) == 2  # one kept + a whole run: at the limit
    near = ReliableSession(max_messages=RUN_MESSAGES + 1)
    send(near)
    send(near)
    assert near.share(_run(b"a")) == 0
    assert not near.overflowed and near.next_sequence_id == 3

    bytes_near = ReliableSession(max_bytes=RUN_BYTES + 10)
    send(bytes_near, b"x" * 10)
    assert bytes_near.share(_run(b"a")) == 2
    send(bytes_near, b"y")  # takes the run in: 12 bytes kept
    assert bytes_near.share(_run(b"a")) == 0
    bytes_near.ack(3)
    assert bytes_near.share(_run(b"a")) == 4  # the count is made exact again


def test_ended_sessions_do_not_share_sessions_with_a_replica_do() -> None:
    ended = ReliableSession()
    ended.end()
    assert ended.share(_run(b"a")) == 0
    replicated = ReliableSession()
    replicated.replica = _replica("c", [], [])
    assert replicated.share(_run(b"a")) == 1


def _replica(
    key: str,
    pushed: list[tuple[int, bytes]],
    shared: list[tuple[bytes, list[tuple[str, int]], int]],
) -> SessionReplica:
    def on_shared(data: EncodedData, members: list[tuple[str, int]], offset: int) -> None:
        shared.append((data.sequenced(0), list(members), offset))

    return SessionReplica(
        key, lambda sequence_id, frame: pushed.append((sequence_id, frame)), on_shared
    )


def test_the_replica_gets_every_frame_as_the_client_does() -> None:
    session = ReliableSession()
    got: list[tuple[int, bytes]] = []
    session.replica = _replica("c", got, [])
    frames = [session.push(Numbered(b"m")) for _ in range(2)]
    assert got == [(1, b"m#1"), (2, b"m#2")] and frames == [b"m#1", b"m#2"]


def test_a_shared_run_reaches_the_replicas_once_per_message() -> None:
    """Every message of a shared run is told once, with each member's first sequence id."""
    shared: list[tuple[bytes, list[tuple[str, int]], int]] = []
    a, b = ReliableSession(), ReliableSession()
    a.replica = _replica("a", [], shared)
    b.replica = _replica("b", [], shared)
    send(b, b"x")
    run = _run(b"m")
    members = [("a", a.share(run)), ("b", b.share(run))]
    assert members == [("a", 1), ("b", 2)]
    run.replicate(a.replica, members)
    assert run.add(Numbered(b"n"))
    assert shared == [(b"m#0", members, 0), (b"n#0", members, 1)]
    assert a.next_sequence_id == 3 and b.next_sequence_id == 4


def test_the_byte_limit_counts_what_is_kept_after_acks() -> None:
    """Acks lower the count lazily; the limit still sees exactly what is kept."""
    session = ReliableSession(max_bytes=10)
    send(session, b"x" * 6)
    send(session, b"y" * 4)
    session.ack(1)
    assert send(session, b"z" * 6)[1] is True  # 4 + 6 kept: at the limit, not over
    assert session.size == 10
    assert send(session, b"!")[1] is False


def test_restore_keeps_the_places_of_missing_frames() -> None:
    """A replica that missed frames: the ones it has are resent under their ids, the missing
    ones are skipped, and acks count the places as the client does."""
    snapshot = ReliableSnapshot(
        SessionState.DETACHED, 7, ((3, b"f3"), (5, b"f5")), False, 10.0, 1000, 1 << 20
    )
    session = ReliableSession.restore(snapshot)
    assert session.recoverable and session.next_sequence_id == 7 and len(session) == 4
    assert session.snapshot().unacked == ((3, b"f3"), (5, b"f5"))
    assert session.ack(4) == 2
    assert session.attach() == [b"f5"]
    assert send(session, b"next")[0] == 7


def test_restore_with_more_missing_frames_than_a_session_holds_is_not_recoverable() -> None:
    snapshot = ReliableSnapshot(
        SessionState.DETACHED, 5000, ((1, b"f1"), (4000, b"f")), False, 10.0, 1000, 1 << 20
    )
    session = ReliableSession.restore(snapshot)
    assert not session.recoverable and len(session) == 0
    assert session.next_sequence_id == 5000
