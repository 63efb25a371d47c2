"""The corked fan-out writer (ARCHITECTURE.md "The hot path").

Frames for a connection collect in its :class:`CorkedOutlet` during one event-loop pass and go
out in one write at the end of it: a burst of ten messages costs one system call, not ten. A
connection holds a single ``bytes`` while one frame is pending and a list only from the second
frame on, so a fan-out allocates nothing per delivery. Consecutive fan-outs to one group share
their frames: every member's outlet holds the same :class:`~hubbub.core.outlet.SharedFrames`,
the later sends only append to it, and every member's write sends the one buffer it joins once.
Members on a reliable subprotocol hold the same
:class:`~hubbub.protocol.reliable.SequencedFrames` with their own first sequence id, and write
the buffer it builds for that id (once for all the members whose ids agree).
Each outlet is bounded in bytes (its pending frames plus the transport's unsent buffer); one
over the bound is closed as a slow client, its buffers dropped, and nobody else waits for it.

A message with a TTL (:meth:`CorkedOutlet.send_expiring`) that finds the client behind (unsent
bytes in the transport) is held by the outlet instead, and so is everything after it, in order:
the held frames go to the transport as it drains (looked at every
:data:`HOLD_POLL_SECONDS`), the ones past their deadline dropped, never written late. Only a
slow client that gets messages with a TTL pays for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from hubbub.closecodes import CLOSE_SLOW_CLIENT, REASON_SLOW_CLIENT
from hubbub.core.outlet import SequencedFrames, SharedFrames
from hubbub.logs import ACTIVITY
from hubbub.metrics import SLOW_CLIENT_CLOSES

__all__ = ["HOLD_POLL_SECONDS", "CorkedOutlet", "Flusher"]

log = logging.getLogger("hubbub.writer")

COALESCE_FACTOR = 2.0
"""How many times the last flush's duration the next flush may wait."""
MAX_COALESCE_SECONDS = 0.004
"""The longest a frame waits for a flush because of coalescing."""
SLOW_CLIENT_GRACE_SECONDS = 2.0
"""How long a slow client's close frame may take before its socket is aborted."""
HOLD_POLL_SECONDS = 0.02
"""How often an outlet holding frames for a slow client looks whether the transport drained."""


_Pending = bytes | SharedFrames | tuple[SequencedFrames, int]
"""One queued item: a frame of this connection's, or frames shared with a group's members
(sequenced ones with this member's first sequence id)."""


class Flusher:
    """Flushes every outlet that has pending frames, once per event-loop pass or less often.

    A flush costs one system call per connection. When flushes are expensive (a fan-out to
    thousands of connections), the next one waits up to ``COALESCE_FACTOR`` times as long as the
    last one took (at most ``MAX_COALESCE_SECONDS``), so the messages published meanwhile share
    that call: flushing never takes more than about a third of the loop's time, and a connection
    waits at most a few milliseconds. Cheap flushes still happen on the next pass.
    """

    __slots__ = ("_loop", "_next_flush", "_pending", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[CorkedOutlet] = []
        self._scheduled = False
        self._next_flush = 0.0

    def schedule(self, outlet: CorkedOutlet) -> None:
        self._pending.append(outlet)
        if not self._scheduled:
            self._scheduled = True
            delay = self._next_flush - self._loop.time()
            if delay > 0:
                self._loop.call_later(delay, self._flush)
            else:
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        started = self._loop.time()
        pending = self._pending
        self._pending = []
        self._scheduled = False
        for outlet in pending:
            outlet.flush()
        spent = self._loop.time() - started
        self._next_flush = started + spent + min(spent * COALESCE_FACTOR, MAX_COALESCE_SECONDS)


class CorkedOutlet:
    """One connection's outbound side: pending frames, the transport, the byte bound.

    Args:
        transport: the connection's transport, written to directly.
        flusher: the loop-pass flusher shared by all connections of the process.
        limit: bound of unsent bytes before the connection is closed as slow.
        closer: closes the WebSocket with a code and reason (the adapter's close handshake).
    """

    __slots__ = (
        "_closed",
        "_closer",
        "_flusher",
        "_held",
        "_held_bytes",
        "_limit",
        "_pending",
        "_poll",
        "_shared",
        "_size",
        "_transport",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        flusher: Flusher,
        limit: int,
        closer: Callable[[int, str], None],
    ) -> None:
        self._transport = transport
        self._flusher = flusher
        self._limit = limit
        self._closer = closer
        self._pending: _Pending | list[_Pending] | None = None
        self._shared: SharedFrames | SequencedFrames | None = None
        """The shared frames still open for appends, last in ``_pending``."""
        self._size = 0
        self._closed = False
        self._held: deque[tuple[float | None, bytes]] | None = None
        """Frames held back from a client that is behind, with their deadlines (monotonic):
        from the first message with a TTL that found it behind on. None: not holding."""
        self._held_bytes = 0
        self._poll: asyncio.TimerHandle | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, frame: bytes) -> None:
        """Queue one complete frame for the end of this loop pass."""
        if self._closed:
            return
        if self._shared is not None:
            self._shared.open = False  # this frame goes after them: no more appends there
            self._shared = None
        pending = self._pending
        if pending is None:
            self._pending = frame
            self._flusher.schedule(self)
        elif type(pending) is list:
            pending.append(frame)
        else:
            self._pending = [pending, frame]  # type: ignore[list-item]
        self._size += len(frame)
        # A burst over the bound within one pass is fine for a client that keeps up; one that
        # is already behind (unsent bytes in the transport) is cut off without waiting.
        if self._size > self._limit and self._transport.get_write_buffer_size():
            self._overflow()

    def send_expiring(self, frame: bytes, deadline: float) -> None:
        """Queue a frame that must not be written after ``deadline`` (monotonic seconds).

        A client that keeps up gets it as any frame. One that is behind (unsent bytes in the
        transport) gets it once the transport drains, unless the deadline passed by then.
        """
        if self._closed:
            return
        if self._held is None and not self._transport.get_write_buffer_size():
            self.send(frame)
            return
        held = self._hold_pending()
        if self._closed:
            return  # what was pending put it over its bound
        held.append((deadline, frame))
        self._held_bytes += len(frame)
        if self._held_bytes + self._transport.get_write_buffer_size() > self._limit:
            self._overflow()

    def share(self, shared: SharedFrames) -> bool:
        """Queue frames shared with the other members of a group (see ``deliver_to_group``)."""
        if self._closed:
            return True  # nothing reaches a closed outlet, shared or not
        if self._shared is not None:
            self._shared.open = False
        self._shared = shared
        pending = self._pending
        if pending is None:
            self._pending = shared
            self._flusher.schedule(self)
        elif type(pending) is list:
            pending.append(shared)
        else:
            self._pending = [pending, shared]  # type: ignore[list-item]
        return True

    def share_sequenced(self, frames: SequencedFrames, first: int) -> bool:
        """Queue a reliable group's shared frames, numbered for this member from ``first``."""
        if self._closed:
            return True  # the session keeps them all the same
        if self._shared is not None:
            self._shared.open = False
        self._shared = frames
        item = (frames, first)
        pending = self._pending
        if pending is None:
            self._pending = item
            self._flusher.schedule(self)
        elif type(pending) is list:
            pending.append(item)
        else:
            self._pending = [pending, item]  # type: ignore[list-item]
        return True

    def flush(self) -> None:
        """Write what is pending in one call; close the connection if it is over its bound."""
        pending = self._pending
        if pending is None or self._closed:
            return
        if self._held is not None:
            self._hold_pending()  # after the held frames, in order
            self._write_held()
            return
        self._pending = None
        self._size = 0
        if self._shared is not None:
            self._shared.open = False  # written now: later frames are this outlet's next write
            self._shared = None
        transport = self._transport
        if transport.is_closing():
            return
        if type(pending) is SharedFrames:
            transport.write(pending.joined())
        elif type(pending) is tuple:
            transport.write(pending[0].joined(pending[1]))
        elif type(pending) is list:
            transport.writelines(
                [
                    p.joined()
                    if isinstance(p, SharedFrames)
                    else p[0].joined(p[1])
                    if type(p) is tuple
                    else p  # type: ignore[misc]
                    for p in pending
                ]
            )
        else:
            transport.write(pending)  # type: ignore[arg-type]
        if transport.get_write_buffer_size() > self._limit:
            self._overflow()

    def close(self, code: int, reason: str) -> None:
        """Write what is pending now, then start the close handshake; later sends are dropped."""
        if self._closed:
            return
        if self._held is not None:
            self._hold_pending()
            self._write_held(everything=True)
        self.flush()
        self._closed = True
        self._closer(code, reason)

    def abort(self) -> None:
        """Drop the connection at once: no flush, no close handshake."""
        self.mark_closed()
        self._transport.abort()

    def mark_closed(self) -> None:
        """The socket is gone: drop pending frames and accept no more."""
        self._closed = True
        self._pending = None
        self._size = 0
        self._stop_holding()

    # -- frames held for a slow client --------------------------------------------------------

    def _hold_pending(self) -> deque[tuple[float | None, bytes]]:
        """Move what is pending to the held frames (starting to hold if need be)."""
        held = self._held
        if held is None:
            held = self._held = deque()
            self._poll = asyncio.get_running_loop().call_later(HOLD_POLL_SECONDS, self._drain)
        pending = self._pending
        if pending is None:
            return held
        self._pending = None
        self._size = 0
        if self._shared is not None:
            self._shared.open = False  # held now: later frames go after them
            self._shared = None
        items = pending if type(pending) is list else [pending]
        for item in items:
            if isinstance(item, SharedFrames):
                frame = item.joined()
            elif type(item) is tuple:
                frame = item[0].joined(item[1])
            else:
                frame = item  # type: ignore[assignment]
            held.append((None, frame))
            self._held_bytes += len(frame)
        if self._held_bytes + self._transport.get_write_buffer_size() > self._limit:
            self._overflow()
        return held

    def _write_held(self, *, everything: bool = False) -> None:
        """Write held frames while the transport has nothing unsent (all of them when
        ``everything``), dropping the ones past their deadline; stop holding once none is."""
        held = self._held
        transport = self._transport
        if held is None or transport.is_closing():
            return
        now = time.monotonic()
        while held and (everything or not transport.get_write_buffer_size()):
            deadline, frame = held.popleft()
            self._held_bytes -= len(frame)
            if deadline is None or now < deadline:
                transport.write(frame)
        if not held:
            self._stop_holding()
        else:
            # Past their deadline, the frames still waiting are dropped now, not when reached.
            live = [item for item in held if item[0] is None or now < item[0]]
            if len(live) < len(held):
                self._held = deque(live)
                self._held_bytes = sum(len(frame) for _, frame in live)

    def _drain(self) -> None:
        self._poll = None
        if self._closed or self._held is None:
            return
        self._write_held()
        if self._held is not None:
            self._poll = asyncio.get_running_loop().call_later(HOLD_POLL_SECONDS, self._drain)

    def _stop_holding(self) -> None:
        self._held = None
        self._held_bytes = 0
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None

    def _overflow(self) -> None:
        SLOW_CLIENT_CLOSES.inc()
        ACTIVITY.closed.add("too slow to read")
        log.debug("closing slow client: more than %d unsent bytes", self._limit)
        self.mark_closed()
        self._closer(CLOSE_SLOW_CLIENT, REASON_SLOW_CLIENT)
        transport = self._transport
        asyncio.get_running_loop().call_later(SLOW_CLIENT_GRACE_SECONDS, transport.abort)
