"""The two Redis connections of a node: an ordered, pipelined writer and a subscriber.

:class:`Writer` owns one connection. Commands are queued synchronously (publications,
registry batches, replies, routed messages) and written in order, as many as are queued, one
batch per round trip: under load a batch carries every command queued while the previous one
was in flight, so the cost per command falls as the load grows. Registry operations queued
back to back share one script call. Everything one node sends goes through its writer, which
is what keeps the order of one publisher's messages per target.

:class:`Subscriber` owns the other connection: the channels the node wants, the
(un)subscribe commands that make the connection match them, their confirmations (what
``sync()`` waits for) and the message loop.

Both raise out of ``run`` when their connection fails; the broker then starts over with new
connections. Neither knows what the messages mean.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError, ResponseError

__all__ = ["Arg", "Reply", "ServerInfo", "Subscriber", "Writer", "server_info"]

log = logging.getLogger("hubbub.broker.redis")

Reply = object
"""A decoded Redis reply (bytes, int, list, None) or a :class:`ResponseError`."""

Arg = bytes | str | int
Callback = Callable[[Reply], None]

MAX_BATCH = 512
"""Most commands in one write: bounds the time a batch holds the connection."""

MAX_BATCH_BYTES = 4 << 20
"""Payload bytes after which a write takes no further command (large messages go alone)."""

MAX_EXTEND_BYTES = 1 << 20
"""Payload bytes after which a batched script call takes no further operation."""


class Writer:
    """An ordered queue of Redis commands, flushed in batches over one connection."""

    def __init__(self, timeout: float, max_queued_bytes: int) -> None:
        self._timeout = timeout
        self._max_bytes = max_queued_bytes
        self._args: list[list[Arg]] = []
        self._sizes: list[int] = []
        self._callbacks: list[Callback | None] = []
        self._queued = 0  # commands ever queued
        self._taken = 0  # commands ever taken for writing
        self._done = 0  # commands ever answered
        self._bytes = 0
        self._open: tuple[str, int] | None = None  # the extendable command: (kind, its seq)
        self._open_ops = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self.batches = 0
        self.commands = 0

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def full(self, size: int) -> bool:
        """True when queueing ``size`` more bytes would pass the bound."""
        return self._bytes + size > self._max_bytes

    def append(self, args: list[Arg], callback: Callback | None = None, size: int = 0) -> int:
        """Queue one command; ``callback`` gets its reply. Returns its sequence number."""
        self._args.append(args)
        self._callbacks.append(callback)
        self._sizes.append(size)
        self._bytes += size
        self._queued += 1
        self._open = None
        self._wakeup.set()
        return self._queued

    def extend(
        self,
        kind: str,
        header: Callable[[], list[Arg]],
        items: Sequence[Arg],
        limit: int,
        callback: Callback | None = None,
        size: int = 0,
    ) -> int:
        """Add ``items`` to the queued command of ``kind`` when it is last, unsent and has
        fewer than ``limit`` operations; otherwise queue ``header() + items`` as a new one."""
        open_ = self._open
        if open_ is not None and open_[0] == kind and open_[1] > self._taken:
            index = open_[1] - self._taken - 1
            if self._open_ops < limit and self._sizes[index] + size <= MAX_EXTEND_BYTES:
                self._args[index].extend(items)
                self._sizes[index] += size
                self._bytes += size
                self._open_ops += 1
                return open_[1]
        seq = self.append([*header(), *items], callback, size)
        self._open = (kind, seq)
        self._open_ops = 1
        return seq

    @property
    def last(self) -> int:
        """The sequence number of the last command queued."""
        return self._queued

    async def wait(self, seq: int) -> None:
        """Until the command ``seq`` (and every one before it) is answered.

        Raises:
            ConnectionError: the connection failed first (see :meth:`fail`).
        """
        if self._done >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, future))
        await future

    def fail(self, exc: BaseException) -> int:
        """Drop every queued command and fail every waiter; returns how many were dropped."""
        dropped = self._queued - self._done
        self._args.clear()
        self._callbacks.clear()
        self._sizes.clear()
        self._bytes = 0
        self._open = None
        self._done = self._taken = self._queued
        while self._waiters:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(exc)
        return dropped

    async def run(self, conn: AbstractConnection) -> None:
        """Write batches until the connection fails (then raise)."""
        while True:
            while not self._args:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._flush(conn)

    async def _flush(self, conn: AbstractConnection) -> None:
        _require(conn)
        n, size = 0, 0
        sizes = self._sizes
        limit = min(len(sizes), MAX_BATCH)
        while n < limit and (n == 0 or size + sizes[n] <= MAX_BATCH_BYTES):
            size += sizes[n]
            n += 1
        args = self._args[:n]
        callbacks = self._callbacks[:n]
        del self._args[:n], self._callbacks[:n], self._sizes[:n]
        self._taken += n
        packed = _pack(args)
        async with asyncio.timeout(self._timeout):
            await conn.send_packed_command(packed, check_health=False)
            for callback in callbacks:
                try:
                    reply: Reply = await conn.read_response(disconnect_on_error=False)
                except ResponseError as exc:
                    reply = exc
                if callback is not None:
                    try:
                        callback(reply)
                    except Exception:
                        log.exception("redis engine: a reply handler failed")
        self._bytes -= size
        self._done += n
        self.batches += 1
        self.commands += n
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._done:
            _, future = waiters.popleft()
            if not future.done():
                future.set_result(None)


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What a server said it is."""

    name: str  # "redis" or "valkey"
    version: str
    sharded: bool  # SPUBLISH/SSUBSCRIBE are used

    def __str__(self) -> str:
        kind = "sharded" if self.sharded else "plain"
        return f"{self.name} {self.version}, {kind} pub/sub"


async def server_info(
    conn: AbstractConnection, sharded: bool | None, scripts: Iterable[str]
) -> ServerInfo:
    """Ask the server what it is and whether it has sharded pub/sub (``COMMAND INFO``: a
    Redis 6 answers nil), unless ``sharded`` says; load ``scripts``."""
    await conn.send_command("INFO", "server")
    info = await conn.read_response()
    text = info.decode() if isinstance(info, bytes) else str(info)
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    name = "valkey" if "valkey_version" in fields else "redis"
    version = fields.get(f"{name}_version", fields.get("redis_version", "?"))
    if sharded is None:
        await conn.send_command("COMMAND", "INFO", "SPUBLISH")
        reply = await conn.read_response()
        sharded = isinstance(reply, list) and bool(reply) and reply[0] is not None
    for script in scripts:
        await conn.send_command("SCRIPT", "LOAD", script)
        await conn.read_response()
    return ServerInfo(name, version, sharded)


def _pack(commands: Sequence[Sequence[Arg]]) -> bytes:
    """RESP-encode commands (hiredis, in C: redis-py's packer costs ~1 us per argument)."""
    # (hiredis 3 types the argument as a one-element tuple)
    return b"".join([hiredis.pack_command(tuple(args)) for args in commands])  # type: ignore[arg-type]


def _require(conn: AbstractConnection) -> None:
    """redis-py reconnects a closed connection on its own when asked to send: not ours."""
    if not conn.is_connected:
        raise RedisConnectionError("connection closed")


_CONFIRMATIONS = frozenset((b"ssubscribe", b"sunsubscribe", b"subscribe", b"unsubscribe"))
_MESSAGES = frozenset((b"smessage", b"message"))


class Subscriber:
    """The channels a node wants and the connection that listens to them."""

    def __init__(self, dispatch: Callable[[bytes], None]) -> None:
        self._dispatch = dispatch
        self.sharded = True
        self._wanted: set[bytes] = set()
        self._active: set[bytes] = set()
        self._dirty = False
        self._sent = 0
        self._confirmed = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._wakeup = asyncio.Event()
        self._conn: AbstractConnection | None = None
        self.last_pong = time.monotonic()
        self.received = 0

    @property
    def wanted(self) -> frozenset[bytes]:
        return frozenset(self._wanted)

    def want(self, channel: bytes) -> None:
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._changed()

    def unwant(self, channel: bytes) -> None:
        if channel in self._wanted:
            self._wanted.discard(channel)
            self._changed()

    def _changed(self) -> None:
        self._dirty = True
        self._wakeup.set()

    @property
    def pending(self) -> bool:
        """True while some wanted change is not yet confirmed by the server."""
        return self._dirty or self._confirmed < self._sent

    async def settled(self) -> None:
        """Until every change wanted so far is confirmed (returns at once when disconnected)."""
        if self._conn is None:
            return
        if self._dirty:
            await self._send_changes(self._conn)
        target = self._sent
        if self._confirmed >= target:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        await future

    def detach(self) -> None:
        """The connection is gone: nothing is active, waiters are released."""
        self._conn = None
        self._active.clear()
        self._sent = self._confirmed = 0
        self._dirty = bool(self._wanted)
        while self._waiters:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_result(None)

    async def run(self, conn: AbstractConnection) -> None:
        """Listen on ``conn`` and keep its subscriptions matching the wanted channels."""
        self._conn = conn
        self._dirty = bool(self._wanted)
        self.last_pong = time.monotonic()
        sender = asyncio.create_task(self._send_loop(conn))
        try:
            await self._read_loop(conn)
        finally:
            sender.cancel()

    async def ping(self) -> None:
        """Ask for a pong (seen by the read loop in :attr:`last_pong`)."""
        conn = self._conn
        if conn is not None:
            _require(conn)
            await conn.send_packed_command(conn.pack_command("PING"), check_health=False)

    async def _send_loop(self, conn: AbstractConnection) -> None:
        while True:
            while not self._dirty:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._send_changes(conn)

    async def _send_changes(self, conn: AbstractConnection) -> None:
        self._dirty = False
        add = [c for c in self._wanted if c not in self._active]
        remove = [c for c in self._active if c not in self._wanted]
        commands: list[tuple[Arg, ...]] = []  # packed by _pack
        if add:
            self._active.update(add)
            commands.append((b"SSUBSCRIBE" if self.sharded else b"SUBSCRIBE", *add))
        if remove:
            self._active.difference_update(remove)
            commands.append((b"SUNSUBSCRIBE" if self.sharded else b"UNSUBSCRIBE", *remove))
        if commands:
            self._sent += len(add) + len(remove)
            _require(conn)
            await conn.send_packed_command(_pack(commands), check_health=False)

    async def _read_loop(self, conn: AbstractConnection) -> None:
        dispatch = self._dispatch
        while True:
            response = await conn.read_response(disconnect_on_error=False)
            if isinstance(response, list) and response:
                kind = response[0]
                if kind in _MESSAGES:
                    self.received += 1
                    try:
                        dispatch(response[2])
                    except Exception:
                        log.exception("redis engine: a message could not be handled")
                elif kind in _CONFIRMATIONS:
                    self._confirm()
                elif kind == b"pong":
                    self.last_pong = time.monotonic()
            elif response == b"PONG":
                self.last_pong = time.monotonic()

    def _confirm(self) -> None:
        self._confirmed += 1
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._confirmed:
            _, future = waiters.popleft()
            if not future.done():
                future.set_result(None)
