"""Replicated reliable sessions on Redis: what another node restores when the owner died.

A reliable session is kept in two keys, so that a delivery costs one small write instead of a
rewrite of the whole session::

    {p}:session:{hub}:{cid}   string   the connection snapshot without its unacked frames
                                       (msgspec msgpack: id, user, roles, groups, grants,
                                       state, next sequence id, ack ids); rewritten when one
                                       of those changes, which is rare
    {p}:frames:{hub}:{cid}    stream   one entry per unacked frame, entry id = sequence id,
                                       field ``f`` = the frame bytes as the client gets them

Per reliable delivery: ``XADD frames <seq>-0 f <frame>``; a message of a group fan-out
shared by K members on the node (``SequencedFrames``) is written once, with the K
``(connection, first sequence id)`` pairs, and the script adds ``XADD frames <seq>-0 d
<message>`` to each member's stream (the frame is rebuilt from the message on restore,
:mod:`hubbub.protocol.replica_data`); per ``sequenceAck``:
``XTRIM frames MINID <seq+1>``. Both are queued on the node's ordered writer, and the
session operations queued back to back go in one script call (the ``sessions`` script), so
a fan-out to 1,000 reliable members costs a handful of round trips, not 1,000. While the owner
holds the session the keys have no expiry; :meth:`RedisSessions.detached` gives them the
session timeout, :meth:`RedisSessions.attached` takes it away again, and when the owner dies
the reaper gives them the timeout (so a restore is possible for at least that long after
the death). :meth:`RedisSessions.take` reads and deletes both keys in one script, so two
nodes can never both restore one session.

The snapshot bytes are opaque here: the node encodes and decodes them.
"""

from __future__ import annotations

from typing import NamedTuple

from hubbub.broker.redis_registry import EngineCore
from hubbub.broker.redis_scripts import SCRIPTS
from hubbub.protocol import replica_data
from hubbub.protocol.codec import EncodedData
from hubbub.types import ConnectionId, HubName

__all__ = ["RedisSessions", "ReplicatedSession"]


class ReplicatedSession(NamedTuple):
    """A session as stored: the snapshot and its unacked frames in sequence order."""

    snapshot: bytes
    frames: list[tuple[int, bytes]]
    last_sequence_id: int = 0
    """The last sequence id pushed (also when every frame was acked since)."""


class RedisSessions:
    """Writes and restores of replicated sessions (queued writes, like the registry's)."""

    def __init__(self, core: EngineCore) -> None:
        self._core = core
        self._names = core.names

    def save(self, hub: HubName, connection_id: ConnectionId, snapshot: bytes) -> None:
        """Store the session's snapshot (its frames are pushed one by one)."""
        self._core.session_write("s", hub, connection_id, snapshot, b"")

    def push(
        self, hub: HubName, connection_id: ConnectionId, sequence_id: int, frame: bytes
    ) -> None:
        """One reliable delivery: the frame the client gets, under its sequence id."""
        self._core.session_write("p", hub, connection_id, str(sequence_id), frame)

    def push_shared(
        self, hub: HubName, data: EncodedData, members: list[tuple[str, int]], offset: int
    ) -> None:
        """One message of a group fan-out to ``members`` (connection id, first sequence id of
        the run), the ``offset``-th of the run: written once for all of them."""
        args: list[str | bytes] = ["g", hub, replica_data.encode(data), str(offset)]
        args.append(str(len(members)))
        for cid, first in members:
            args += (cid, str(first))
        self._core.session_ops(args, len(args[2]) + 16 * len(members))

    def acked(self, hub: HubName, connection_id: ConnectionId, sequence_id: int) -> None:
        """The client acknowledged every frame up to ``sequence_id``."""
        self._core.session_write("t", hub, connection_id, str(sequence_id + 1), b"")

    def detached(self, hub: HubName, connection_id: ConnectionId, timeout_ms: int) -> None:
        """The socket is gone: the session lives ``timeout_ms`` longer unless reattached."""
        self._core.session_write("e", hub, connection_id, str(timeout_ms), b"")

    def attached(self, hub: HubName, connection_id: ConnectionId) -> None:
        self._core.session_write("k", hub, connection_id, "", b"")

    def drop(self, hub: HubName, connection_id: ConnectionId) -> None:
        """The session ended: nothing to restore."""
        self._core.session_write("d", hub, connection_id, "", b"")

    async def take(self, hub: HubName, connection_id: ConnectionId) -> ReplicatedSession | None:
        """Read and delete a replicated session; None when there is none.

        Raises:
            ClusterUnavailableError: Redis cannot be reached.
        """
        reply = await self._core.run_script(SCRIPTS.take_session, hub, connection_id)
        assert isinstance(reply, list)
        if not reply or reply[0] is None:
            return None
        last = int(reply[1].split(b"-", 1)[0])
        frames: list[tuple[int, bytes]] = []
        for entry, field, value in zip(reply[2::3], reply[3::3], reply[4::3], strict=True):
            sequence_id = int(entry.split(b"-", 1)[0])
            if field == b"d":
                try:
                    value = replica_data.decode(value).sequenced(sequence_id)
                except (ValueError, IndexError):
                    continue  # a gap: never resent
            frames.append((sequence_id, value))
        return ReplicatedSession(reply[0], frames, last)
