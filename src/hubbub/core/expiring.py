"""Messages with a TTL on their way to connections (the rules: :mod:`hubbub.core.expiry`).

A publication carries its deadline as Unix time (:attr:`Publication.expires_at`), the same on
every node; on receipt a node turns it into its own monotonic clock. A publication that arrives
past its deadline is dropped. A copy that a reliable session keeps for a dropped socket is
noted with its sequence id on the connection (:attr:`Connection.expiring`); when the session
is recovered, the copies past their deadline are not resent. They stay in the session until
the client acknowledges a later sequence id (acks are cumulative; the SDKs only track the
highest id, so the gap is harmless), which also forgets their deadlines.

A publication with a TTL does not go through the shared fan-out (:mod:`hubbub.core.fanout`):
:func:`deliver_expiring` hands each target's outlet the frame with its deadline
(``Outlet.send_expiring``), and an outlet whose client is behind holds it and drops it once the
deadline passes (:mod:`hubbub.server.writer`). Only publications with a TTL pay for it; the
ones without keep the shared fan-out.
"""

from __future__ import annotations

import time

from hubbub.closecodes import CLOSE_POLICY_VIOLATION, REASON_UNACKED_OVERFLOW
from hubbub.core.commands import Publication
from hubbub.core.expiry import is_expired
from hubbub.core.fanout import deliver_publication, targets
from hubbub.core.state import Connection, Hub, HubRegistry
from hubbub.protocol.codec import Codec, EncodedData
from hubbub.protocol.filters import parse_filter
from hubbub.protocol.messages import DataMessage
from hubbub.protocol.reliable import ReliableSession

__all__ = ["attach_live", "deliver_expiring", "forget_acked", "local_deadline"]


def local_deadline(expires_at: float, wall_now: float, monotonic_now: float) -> float:
    """A Unix-time deadline in this node's monotonic clock."""
    return monotonic_now + (expires_at - wall_now)


def deliver_expiring(hubs: HubRegistry, publication: Publication) -> int:
    """Deliver a publication with a deadline; returns how many connections it reached (none
    once the deadline passed).

    Each target's outlet gets the frame with its deadline (``send_expiring``): a slow client's
    outlet drops it when the deadline passes before the client has read what came before. A
    copy that a reliable session keeps is noted with its sequence id (:func:`attach_live`).
    """
    assert publication.expires_at is not None
    now = time.monotonic()
    deadline = local_deadline(publication.expires_at, time.time(), now)
    if is_expired(deadline, now):
        return 0
    hub = hubs.get(publication.hub)
    if hub is None:
        return 0
    if publication.stream is not None:
        return _deliver_stream_expiring(hubs, hub, publication, deadline)
    group = publication.name if publication.from_group else None
    message = DataMessage(publication.payload, group, publication.from_user_id)
    excluded = publication.excluded
    flt = parse_filter(publication.filter) if publication.filter else None
    encoded: dict[Codec, EncodedData] = {}
    count = 0
    for connection in list(targets(hub, publication.target, publication.name)):
        if connection.id in excluded or (
            flt is not None
            and not flt.matches(connection.id, connection.user_id, connection.groups)
        ):
            continue
        codec = connection.codec
        data = encoded.get(codec)
        if data is None:
            data = encoded[codec] = codec.encode_data(message)
        if data.frame is not None:
            connection.outlet.send_expiring(data.frame, deadline)
        else:
            _send_sequenced(connection, data, deadline)
        count += 1
    return count


def _send_sequenced(connection: Connection, data: EncodedData, deadline: float) -> None:
    """:func:`~hubbub.core.fanout.send_sequenced` with a deadline, noted for recovery."""
    session = connection.session
    assert session is not None  # sequenced codecs are the reliable ones
    sequence_id = session.next_sequence_id
    connection.outlet.send_expiring(session.push(data), deadline)
    expiring = connection.expiring
    if expiring is None:
        expiring = connection.expiring = {}
    expiring[sequence_id] = deadline
    if session.overflowed and connection.close_reason is None:
        connection.close_reason = REASON_UNACKED_OVERFLOW
        connection.outlet.close(CLOSE_POLICY_VIOLATION, REASON_UNACKED_OVERFLOW)


def _deliver_stream_expiring(
    hubs: HubRegistry, hub: Hub, publication: Publication, deadline: float
) -> int:
    """A group stream's message with a deadline: delivered as any, its reliable copies noted."""
    sequenced = [
        (connection, connection.session.next_sequence_id)
        for connection in targets(hub, publication.target, publication.name)
        if connection.session is not None
    ]
    count = deliver_publication(hubs, publication)
    for connection, sequence_id in sequenced:
        session = connection.session
        if session is not None and session.next_sequence_id > sequence_id:
            expiring = connection.expiring
            if expiring is None:
                expiring = connection.expiring = {}
            expiring[sequence_id] = deadline
    return count


def forget_acked(connection: Connection, sequence_id: int) -> None:
    """The client acknowledged every sequence id up to ``sequence_id``."""
    expiring = connection.expiring
    if not expiring:
        return
    for kept in [k for k in expiring if k <= sequence_id]:
        del expiring[kept]
    if not expiring:
        connection.expiring = None


def attach_live(connection: Connection, session: ReliableSession, now: float) -> list[bytes]:
    """``session.attach()``, without the frames whose deadline passed at ``now``."""
    expiring = connection.expiring
    if not expiring:
        return session.attach()
    kept = session.snapshot().unacked
    session.attach()
    return [frame for sequence_id, frame in kept if not is_expired(expiring.get(sequence_id), now)]
