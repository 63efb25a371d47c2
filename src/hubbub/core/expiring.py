"""Messages with a TTL on their way to connections (the rules: :mod:`hubbub.core.expiry`).

A publication carries its deadline as Unix time (:attr:`Publication.expires_at`), the same on
every node; on receipt a node turns it into its own monotonic clock. A publication that arrives
past its deadline is dropped. A copy that a reliable session keeps for a dropped socket is
noted with its sequence id on the connection (:attr:`Connection.expiring`); when the session
is recovered, the copies past their deadline are not resent. They stay in the session until
the client acknowledges a later sequence id (acks are cumulative; the SDKs only track the
highest id, so the gap is harmless), which also forgets their deadlines.

Delivery itself is untouched: :func:`deliver_expiring` wraps :func:`deliver_publication` and
looks at the targets' sequence ids before and after, so only publications with a TTL pay for it.
"""

from __future__ import annotations

import time

from hubbub.core.commands import Publication
from hubbub.core.expiry import is_expired
from hubbub.core.fanout import deliver_publication, targets
from hubbub.core.state import Connection, HubRegistry
from hubbub.protocol.reliable import ReliableSession

__all__ = ["attach_live", "deliver_expiring", "forget_acked", "local_deadline"]


def local_deadline(expires_at: float, wall_now: float, monotonic_now: float) -> float:
    """A Unix-time deadline in this node's monotonic clock."""
    return monotonic_now + (expires_at - wall_now)


def deliver_expiring(hubs: HubRegistry, publication: Publication) -> int:
    """:func:`deliver_publication` for a publication with a deadline; returns how many
    connections it reached (none once the deadline passed)."""
    assert publication.expires_at is not None
    now = time.monotonic()
    deadline = local_deadline(publication.expires_at, time.time(), now)
    if is_expired(deadline, now):
        return 0
    hub = hubs.get(publication.hub)
    if hub is None:
        return 0
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
