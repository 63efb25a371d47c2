"""Delivery: encode a message once, hand the same bytes to every target's outlet.

The hot path of the service (ARCHITECTURE.md "The hot path"). A publication becomes one
:class:`~hubbub.protocol.messages.DataMessage`, encoded once per codec among its targets;
unsequenced codecs give one complete frame for everybody, the reliable ones a prefix into which
each connection's ``sequenceId`` is spliced when its frame is written. Consecutive fan-outs to
one group share their frames across the members' outlets
(:class:`~hubbub.core.outlet.SharedFrames`; on the reliable subprotocols the members' sessions
share the encoded messages too, :class:`~hubbub.protocol.reliable.SequencedFrames`, each
numbering them from its own next ``sequenceId``). Other deliveries to reliable connections go
through :func:`send_sequenced`. Nothing here allocates per delivery what can be made per
publication.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

from hubbub.closecodes import CLOSE_POLICY_VIOLATION, REASON_UNACKED_OVERFLOW
from hubbub.core.commands import Publication, Target
from hubbub.core.outlet import SharedFrames
from hubbub.core.state import Connection, Hub, HubRegistry
from hubbub.protocol.codec import Codec, EncodedData
from hubbub.protocol.filters import Filter, parse_filter
from hubbub.protocol.messages import DataMessage, ServiceMessage
from hubbub.protocol.reliable import RUN_BYTES, SequencedFrames, SessionReplica
from hubbub.types import ConnectionId, GroupName, UserId

__all__ = [
    "deliver",
    "deliver_publication",
    "deliver_to_group",
    "send_message",
    "send_sequenced",
    "targets",
]


def deliver_publication(hubs: HubRegistry, publication: Publication) -> int:
    """Deliver a publication to the local connections it targets; returns how many."""
    hub = hubs.get(publication.hub)
    if hub is None:
        return 0
    group = publication.name if publication.from_group else None
    message = DataMessage(publication.payload, group, publication.from_user_id, publication.stream)
    stream = publication.stream
    if stream is not None and stream.end_of_stream and not publication.payload.data:
        return _deliver_stream_end(hub, publication, message)
    if publication.target is Target.GROUP and not publication.excluded and not publication.filter:
        return deliver_to_group(hub, GroupName(publication.name), message)
    selected = targets(hub, publication.target, publication.name)
    flt = parse_filter(publication.filter) if publication.filter else None
    return deliver(selected, message, publication.excluded, flt)


def _deliver_stream_end(hub: Hub, publication: Publication, message: DataMessage) -> int:
    """The last message of a group stream, without payload: plain clients have no envelope
    for ``endOfStream``, so they get nothing."""
    members = targets(hub, Target.GROUP, publication.name)
    return deliver([c for c in members if not c.codec.plain], message, publication.excluded)


def deliver_to_group(hub: Hub, name: GroupName, message: DataMessage) -> int:
    """A fan-out to every member of a group; returns how many members it reached.

    When the members' outlets still share the frames of the previous fan-out to this group
    (:class:`~hubbub.core.outlet.SharedFrames`, or on a reliable subprotocol
    :class:`~hubbub.protocol.reliable.SequencedFrames` that every member's session numbers
    itself), the new message is only appended there: the cost does not grow with the group.
    Otherwise every member is visited once and, when the first one's codec has frames to share,
    the members on it start sharing again. The members that cannot share (another codec, a
    reliable session near its limits, a dropped socket) are noted and sent each message of the
    period one by one, so that a few of them do not make the group visit everybody again.
    """
    members = hub.groups.get(name)
    if not members:
        return 0
    entry = hub.shared.get(name)
    data: EncodedData | None = None
    shared: SharedFrames | SequencedFrames | None = None
    if entry is not None:
        shared = entry[0]()
        if shared is not None and shared.open:
            codec = shared.codec
            data = codec.encode_data(message)
            if shared.add(data):
                if entry[1]:
                    _fan_out(entry[1], message, {codec: data})
                return len(members)
            # Full (SequencedFrames): visit them all.
    connections = iter(members.values())
    first = next(connections)
    codec = first.codec
    if data is None or shared is None or shared.codec is not codec:
        data = codec.encode_data(message)
    frame = data.frame
    others: list[Connection] = []
    if frame is not None:
        shared = SharedFrames(codec, frame)
        if not first.outlet.share(shared):
            others.append(first)
        for connection in connections:
            if connection.codec is not codec or not connection.outlet.share(shared):
                others.append(connection)
    elif data.size > RUN_BYTES:  # one big message: pushed to each session, nothing to share
        hub.shared.pop(name, None)
        return _fan_out(members.values(), message, {codec: data})
    else:
        shared = SequencedFrames(codec, data)
        replica: SessionReplica | None = None
        replicated: list[tuple[str, int]] = []
        for connection in members.values():
            session = connection.session
            if connection.codec is not codec or session is None:
                others.append(connection)
                continue
            sequence_id = session.share(shared)
            if not sequence_id:
                others.append(connection)
            elif not connection.outlet.share_sequenced(shared, sequence_id):
                session.unshare()
                others.append(connection)
            elif (member_replica := session.replica) is not None:
                replica = member_replica
                replicated.append((member_replica.key, sequence_id))
        if replica is not None:  # one replica write per message for all the members
            shared.replicate(replica, replicated)
    hub.shared[name] = (weakref.ref(shared), others)
    if others:
        _fan_out(others, message, {codec: data})
    return len(members)


def deliver(
    targets: Iterable[Connection],
    message: DataMessage,
    excluded: frozenset[ConnectionId] = frozenset(),
    flt: Filter | None = None,
) -> int:
    """The hot path: encode once per codec, write the same bytes to every target.

    Returns:
        The number of connections the message was handed to.
    """
    if excluded or flt is not None:
        targets = [
            c
            for c in targets
            if c.id not in excluded and (flt is None or flt.matches(c.id, c.user_id, c.groups))
        ]
    return _fan_out(targets, message, {})


def _fan_out(
    targets: Iterable[Connection], message: DataMessage, encoded: dict[Codec, EncodedData]
) -> int:
    """Hand ``message`` to every target, encoded once per codec; ``encoded`` holds the
    encodings made already (a group's first codec), and takes the ones made here."""
    last_codec: Codec | None = None
    data: EncodedData | None = None
    frame: bytes | None = None
    count = 0
    for connection in targets:
        codec = connection.codec
        if codec is not last_codec:  # fan-outs are mostly one codec: skip the dict lookup
            last_codec = codec
            data = encoded.get(codec)
            if data is None:
                data = encoded[codec] = codec.encode_data(message)
            frame = data.frame
        if frame is not None:
            connection.outlet.send(frame)
        else:
            assert data is not None
            send_sequenced(connection, data)
        count += 1
    return count


def send_sequenced(connection: Connection, data: EncodedData) -> None:
    """Send a data message with the connection's next ``sequenceId`` and keep it until
    acknowledged; a session past its limits is closed, unrecoverable (§4)."""
    session = connection.session
    assert session is not None  # sequenced codecs are the reliable ones
    connection.outlet.send(session.push(data))
    if session.overflowed and connection.close_reason is None:
        connection.close_reason = REASON_UNACKED_OVERFLOW
        connection.outlet.close(CLOSE_POLICY_VIOLATION, REASON_UNACKED_OVERFLOW)


def send_message(connection: Connection, message: ServiceMessage) -> None:
    """Send one non-data message (ack, pong, ``connected`` ...) to one connection."""
    frame = connection.codec.encode(message)
    if frame is not None:
        connection.outlet.send(frame)


def targets(hub: Hub, target: Target, name: str) -> Iterable[Connection]:
    """The local connections a hub, group, user or connection target names."""
    if target is Target.HUB:
        return hub.connections.values()
    if target is Target.GROUP:
        return hub.members(GroupName(name))
    if target is Target.USER:
        return hub.user_connections(UserId(name))
    connection = hub.connections.get(ConnectionId(name))
    return () if connection is None else (connection,)
