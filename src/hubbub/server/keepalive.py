"""Keep-alive: WebSocket pings to every connection, and an end to the ones that went silent.

One timer per keep-alive interval serves every connection of that interval (hub setting
``keep_alive_seconds``, client-protocols.md §9) instead of one timer per connection: the ping
frame is built once and queued in each connection's corked outlet, so it shares the next
flush. Any frame from a client counts as a sign of life; a connection silent for
``PING_TIMEOUT_FACTOR`` intervals is aborted as a dropped connection (its reliable session, if
any, stays recoverable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from hubbub.logs import ACTIVITY
from hubbub.protocol.frames import OP_PING, frame

__all__ = ["PING_FRAME", "PING_TIMEOUT_FACTOR", "KeepAlive", "Pingable"]

log = logging.getLogger("hubbub.keepalive")

PING_FRAME = frame(OP_PING, b"")
PING_TIMEOUT_FACTOR = 3
"""Intervals without any frame from the client before it counts as gone (PingTimeout)."""


class Pingable(Protocol):
    """A connection as keep-alive sees it."""

    last_seen: float

    def ping(self, frame: bytes) -> None:
        """Queue a ping frame."""
        ...

    def abort(self) -> None:
        """Drop the connection without a close handshake."""
        ...


class KeepAlive:
    """Pings registered connections every interval; aborts silent ones."""

    def __init__(self) -> None:
        self._groups: dict[float, set[Pingable]] = {}
        self._tasks: dict[float, asyncio.Task[None]] = {}

    def add(self, connection: Pingable, interval: float) -> None:
        members = self._groups.setdefault(interval, set())
        members.add(connection)
        if interval not in self._tasks:
            self._tasks[interval] = asyncio.get_running_loop().create_task(self._tick(interval))

    def discard(self, connection: Pingable, interval: float) -> None:
        members = self._groups.get(interval)
        if members is not None:
            members.discard(connection)

    async def _tick(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        timeout = interval * PING_TIMEOUT_FACTOR
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for connection in list(self._groups.get(interval, ())):
                if now - connection.last_seen > timeout:
                    ACTIVITY.closed.add("silent")
                    log.debug("closing a connection silent for %.0f s (PingTimeout)", timeout)
                    self.discard(connection, interval)
                    connection.abort()
                else:
                    connection.ping(PING_FRAME)

    async def close(self) -> None:
        """Stop every timer."""
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
