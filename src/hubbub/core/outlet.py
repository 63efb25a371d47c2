"""Where a connection's frames go: the :class:`Outlet` a transport gives each connection, and
the :class:`SharedFrames` that the outlets of a group's members hold in common (on the reliable
subprotocols :class:`~hubbub.protocol.reliable.SequencedFrames`, with each member's first
sequence id).

Delivery (:mod:`hubbub.core.fanout`) writes to outlets; the transport's corked writer
(:mod:`hubbub.server.writer`) implements them. Both sides meet here, and nowhere else.
"""

from __future__ import annotations

from typing import Protocol

from hubbub.protocol.codec import Codec, EncodedData
from hubbub.protocol.reliable import SequencedFrames

__all__ = ["Outlet", "SequencedFrames", "SharedFrames"]


class SharedFrames:
    """The frames of consecutive fan-outs to one group, queued once for all its members.

    The first fan-out to a group in a flush period hands this object to every member's outlet;
    while it stays ``open``, the next fan-outs to the same members only append their frame here
    (no work per member). An outlet closes it when it writes it, or when it is sent any other
    frame (which must come after these); the hub drops it when the group's membership changes.
    """

    __slots__ = ("__weakref__", "_joined", "codec", "frames", "open")

    def __init__(self, codec: Codec, frame: bytes) -> None:
        self.codec = codec
        self.frames = [frame]
        self.open = True
        self._joined: bytes | None = None

    def add(self, data: EncodedData) -> bool:
        """Append the next fan-out's frame (complete: this codec's frames are alike)."""
        assert data.frame is not None
        self.frames.append(data.frame)
        self._joined = None
        return True

    def joined(self) -> bytes:
        """All the frames as one buffer, built once for every outlet that writes them."""
        joined = self._joined
        if joined is None:
            frames = self.frames
            joined = self._joined = frames[0] if len(frames) == 1 else b"".join(frames)
        return joined


class Outlet(Protocol):
    """Where a connection's outbound frames go: the transport's corked writer."""

    def send(self, frame: bytes) -> None:
        """Queue one complete frame; never blocks, never raises."""
        ...

    def send_expiring(self, frame: bytes, deadline: float) -> None:
        """Queue one complete frame that must not be written after ``deadline`` (monotonic
        seconds): one waiting for a slow client past it is dropped."""
        ...

    def share(self, shared: SharedFrames) -> bool:
        """Queue ``shared``, and every frame appended to it while it is open; False: cannot."""
        ...

    def share_sequenced(self, frames: SequencedFrames, first: int) -> bool:
        """Queue ``frames`` (and what is added while open) numbered from ``first`` on, as
        :meth:`~hubbub.protocol.reliable.SequencedFrames.joined` builds them; False: cannot."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Flush what is queued, then close the WebSocket with ``code``."""
        ...
