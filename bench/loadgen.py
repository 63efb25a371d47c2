"""Load generator processes for ``bench/run.py``.

One process plays one role, given as JSON on the command line, and then obeys commands read
from stdin, one JSON object a line (``{"id": 1, "op": "connect"}``); each command gets one JSON
reply line on stdout with the same ``id``. Roles:

``members``
    Opens ``count`` WebSocket connections (member ``i`` joins group ``g{i // per_group}``) and
    counts the data frames they receive, per connection and in all. Counting does not parse
    JSON and, once the size of a data frame is known, not even frame by frame: all data frames
    of a run have the same size, so a received chunk is checked with a strided slice (every
    frame head must be a FIN text frame of that length) and counted in one step. Pings are
    answered, closes are counted. With ``subprotocol`` ``json.reliable.webpubsub.azure.v1`` the
    members behave as the client SDKs do: each checks that the ``sequenceId`` of every message
    is one more than the last (a run of frames of one size at a time: their ids are read with
    one regular-expression pass over the run and compared with the expected range), and sends
    ``{"type":"sequenceAck","sequenceId":N}`` for the highest id every ``ack_seconds`` (1 s, as
    the SDKs' timer; 0 never acks) when something new arrived. ``reset`` zeroes the
    per-connection counts and ``verify`` compares them with the number of messages published.
    Probe connections (every ``probe_every``-th, when switched on) read the send timestamp in
    each message for the latency scenario. With ``stall``, the members are slow consumers:
    each completes the handshake on a socket with a small ``SO_RCVBUF`` and then stops
    reading (``resume`` reads again, to see how the server closed them).

``echo``
    Opens ``count`` plain WebSocket connections (no subprotocol); during a ``run`` each one sends
    a ``size``-byte text frame and sends the next as soon as the echo arrives (closed loop;
    ``run`` with a ``rate``: frames at that rate in all, open loop),
    recording each round trip.

``handler``
    An upstream event handler (aiohttp) on ``port``: answers the abuse-protection probe
    (``OPTIONS`` with ``WebHook-Allowed-Origin: *``) and echoes every ``POST`` body back with its
    Content-Type.

``publisher``
    Publishes through REST (``rest-group``, ``rest-user``) or a client's ``sendToGroup``
    (``ws-group``), at the maximum rate (closed loop: ``concurrency`` requests in flight, and
    optionally at most ``window`` messages ahead of its own probe member) or at a fixed rate.

The client side is written on raw asyncio protocols (uvloop) so that the cost per received
message is a few C-level slice operations per chunk, far below the servers' cost per delivery.
Every loop is bounded by a message count and a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import jwt

SUBPROTOCOL = "json.webpubsub.azure.v1"
RELIABLE_SUBPROTOCOL = "json.reliable.webpubsub.azure.v1"
SEQUENCE_ID = re.compile(rb'"sequenceId":(\d+)\}')
"""The end of a reliable data message: its sequence id closes the JSON object."""
SEQUENCE_TAIL = 48
"""Bytes at the end of a reliable data frame that hold ``,"sequenceId":N}`` in full."""
ACK_SLICES = 10
"""Reliable members ack in this many slices per ``ack_seconds`` (each member once), so the
acks of a thousand members do not all leave in the same instant."""
API_VERSION = "2024-12-01"
MARKER = b'"bench":"'
TS_KEY = b'"t":"'
TS_DIGITS = 20
IP_BIND_ADDRESS_NO_PORT = 24
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
STALL_RCVBUF = 4096
"""SO_RCVBUF of a stalled member (the kernel doubles it), so its window fills at once."""
REST_STALL_SECONDS = 10.0
"""A REST publisher's run fails when it is this far past its end (a request went unanswered)."""

OP_TEXT = 0x1
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


def payload(size: int, ts: int) -> bytes:
    """A JSON object of exactly ``size`` bytes carrying a send timestamp (monotonic ns)."""
    pad = size - len(b'{"bench":"","t":""}') - TS_DIGITS
    return b'{"bench":"' + b"x" * max(pad, 0) + b'","t":"%020d"}' % ts


def client_frame(opcode: int, data: bytes) -> bytes:
    """A masked client frame (RFC 6455 §5.3)."""
    n = len(data)
    head = bytes((0x80 | opcode,))
    if n < 126:
        head += bytes((0x80 | n,))
    elif n < 65536:
        head += bytes((0x80 | 126,)) + n.to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    if not n:
        return head + key
    mask = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")
    return head + key + masked


@dataclass
class Server:
    kind: str  # "hubbub", "node" or "uws"
    host: str
    port: int
    key: str
    hub: str

    def client_path(
        self, group: str | None, user: str | None, roles: list[str], echo: bool = False
    ) -> str:
        base = f"/client/hubs/{self.hub}"
        if self.kind != "hubbub":
            # The references echo in-process when asked to (hubbub echoes through its handler).
            pairs = (("group", group), ("user", user), ("echo", "1" if echo else None))
            query = "&".join(f"{k}={v}" for k, v in pairs if v is not None)
            return base + ("?" + query if query else "")
        claims: dict[str, Any] = {
            "aud": f"http://{self.host}:{self.port}{base}",
            "exp": int(time.time()) + 6 * 3600,
        }
        if user is not None:
            claims["sub"] = user
        if group is not None:
            claims["webpubsub.group"] = [group]
        if roles:
            claims["role"] = roles
        token = jwt.encode(claims, self.key.encode(), algorithm="HS256")
        return f"{base}?access_token={token}"

    def rest_request(self, target: str, name: str, size: int) -> tuple[bytes, int]:
        """The request head for a REST send of a ``size``-byte body, and where the body goes."""
        path = f"/api/hubs/{self.hub}/{target}/{name}/:send?api-version={API_VERSION}"
        token = jwt.encode(
            {"aud": f"http://{self.host}:{self.port}{path}", "exp": int(time.time()) + 6 * 3600},
            self.key.encode(),
            algorithm="HS256",
        )
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n\r\n"
        ).encode()
        return head, size


@dataclass
class Stats:
    frames: int = 0
    opened: int = 0
    failed: int = 0
    lost: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    latencies_us: list[int] = field(default_factory=list)
    first_error: str = ""


class WsClient(asyncio.Protocol):
    """A WebSocket client connection that counts data frames without parsing them."""

    def __init__(
        self, server: Server, path: str, stats: Stats, subprotocol: str | None = SUBPROTOCOL
    ) -> None:
        self.stats = stats
        self.probe = False
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.on_frames: Any = None  # called with the count of data frames of each chunk
        self._open = False
        self._buf = b""
        self._partial = b""
        self._skip = 0
        self._size = 0  # size of a data frame, learned from the last one read in full
        self._header: list[bytes] = []  # its first header bytes, one bytes object each
        self.received = 0
        """Data frames this connection received (since the last ``reset``)."""
        key = base64.b64encode(os.urandom(16))
        self._accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        offer = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
        self._handshake = (
            f"GET {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            f"{offer}\r\n"
        ).encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._handshake)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._open:
            self.stats.lost += 1
        elif not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed during the handshake: {exc}"))

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self._open:
            self._frames(data)
            return
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head, rest = self._buf[:end], self._buf[end + 4 :]
        self._buf = b""
        status = head.split(b"\r\n", 1)[0]
        if not status.startswith(b"HTTP/1.1 101") or self._accept not in head:
            self.opened.set_exception(ConnectionError(status.decode("latin-1")))
            assert self.transport is not None
            self.transport.close()
            return
        self._open = True
        self.opened.set_result(True)
        if rest:
            self._frames(rest)

    def _frames(self, data: bytes) -> None:
        if self._partial:
            data = self._partial + data
            self._partial = b""
        n = len(data)
        pos = self._skip
        if pos >= n:
            self._skip = pos - n
            return
        size = self._size
        counted = 0
        while pos < n:
            if size and data[pos] == 0x81 and not self.probe:
                # Fast path: a run of data frames of the known size. Strided slices check that
                # every frame in the run starts with the same header bytes (opcode and length).
                run = n
                for k, byte in enumerate(self._header):
                    column = data[pos + k :: size]
                    run = min(run, len(column) - len(column.lstrip(byte)))
                if run:
                    counted += run
                    pos += run * size
                    continue
            if n - pos < 2:
                self._partial = data[pos:]
                pos = n
                break
            b0, b1 = data[pos], data[pos + 1]
            length = b1 & 0x7F
            header = 2
            if length >= 126:
                header = 4 if length == 126 else 10
                if n - pos < header:
                    self._partial = data[pos:]
                    pos = n
                    break
                length = int.from_bytes(data[pos + 2 : pos + header], "big")
            end = pos + header + length
            if end > n:
                self._partial = data[pos:]
                pos = n
                break
            opcode = b0 & 0x0F
            if opcode == OP_TEXT:
                body = data[pos + header : end]
                if body.find(MARKER) >= 0:
                    counted += 1
                    if size != header + length:
                        size = self._size = header + length
                        self._header = [data[i : i + 1] for i in range(pos, pos + min(header, 4))]
                    if self.probe:
                        self._latency(body)
            elif opcode == OP_PING:
                self.send(client_frame(OP_PONG, data[pos + header : end]))
            elif opcode == OP_CLOSE:
                code = int.from_bytes(data[pos + header : pos + header + 2], "big") if length else 0
                self.stats.closes[str(code)] = self.stats.closes.get(str(code), 0) + 1
                self.send(client_frame(OP_CLOSE, data[pos + header : pos + header + 2]))
                assert self.transport is not None
                self.transport.close()
            pos = end
        self._skip = pos - n
        if counted:
            self.received += counted
            self.stats.frames += counted
            if self.on_frames is not None:
                self.on_frames(counted)

    def _latency(self, body: bytes) -> None:
        i = body.find(TS_KEY)
        if i >= 0:
            sent = int(body[i + len(TS_KEY) : i + len(TS_KEY) + TS_DIGITS])
            self.stats.latencies_us.append((time.monotonic_ns() - sent) // 1000)


class SequencedClient(WsClient):
    """A member on a reliable subprotocol, as the SDKs are: sequence ids checked, acks sent.

    A frame is counted once its last byte arrived (its id must be read). Every data message
    must carry the ``sequenceId`` one above the last one; a gap or a repeat is an error
    (counted, the first one described), and the frame still counts as a delivery.
    """

    def __init__(self, server: Server, path: str, stats: Stats, subprotocol: str | None) -> None:
        super().__init__(server, path, stats, subprotocol)
        self.next_id = 1
        self.acked = 0
        self.errors = 0
        self.first_error = ""

    def ack(self) -> bool:
        """Acknowledge the highest id seen if it is new (the SDKs' 1 s timer); True if sent."""
        last = self.next_id - 1
        if last <= self.acked:
            return False
        self.acked = last
        self.send(client_frame(OP_TEXT, b'{"type":"sequenceAck","sequenceId":%d}' % last))
        return True

    def _error(self, text: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or text

    def _frames(self, data: bytes) -> None:
        if self._partial:
            data = self._partial + data
            self._partial = b""
        n = len(data)
        pos = 0
        size = self._size
        counted = 0
        slow_until = 0  # after a run that did not check out: frame by frame up to here
        while pos < n:
            if size and data[pos] == 0x81 and pos >= slow_until:
                # A run of complete frames of the known size (same header bytes), whose ids
                # must be the next ones in order.
                run = (n - pos) // size
                for k, byte in enumerate(self._header):
                    if not run:
                        break
                    column = data[pos + k : pos + run * size : size]
                    run = min(run, len(column) - len(column.lstrip(byte)))
                if run:
                    first = self.next_id
                    if size > SEQUENCE_TAIL:  # only the end of each frame holds its id
                        ends = range(pos + size, pos + run * size + 1, size)
                        tails = b"".join([data[e - SEQUENCE_TAIL : e] for e in ends])
                        ids = SEQUENCE_ID.findall(tails)
                    else:
                        ids = SEQUENCE_ID.findall(data, pos, pos + run * size)
                    got = list(map(int, ids))
                    if len(got) == run and got == list(range(first, first + run)):
                        counted += run
                        pos += run * size
                        self.next_id = first + run
                        continue
                    if len(got) == run:  # the frames before the first wrong id are fine
                        good = next(i for i, v in enumerate(got) if v != first + i)
                        counted += good
                        pos += good * size
                        self.next_id = first + good
                    else:
                        slow_until = pos + run * size
            if n - pos < 2:
                self._partial = data[pos:]
                break
            b0, b1 = data[pos], data[pos + 1]
            length = b1 & 0x7F
            header = 2
            if length >= 126:
                header = 4 if length == 126 else 10
                if n - pos < header:
                    self._partial = data[pos:]
                    break
                length = int.from_bytes(data[pos + 2 : pos + header], "big")
            end = pos + header + length
            if end > n:
                self._partial = data[pos:]
                break
            opcode = b0 & 0x0F
            if opcode == OP_TEXT:
                if data.find(MARKER, pos + header, end) >= 0:
                    counted += 1
                    self._sequence(SEQUENCE_ID.search(data, pos + header, end))
                    if size != header + length:
                        size = self._size = header + length
                        self._header = [data[i : i + 1] for i in range(pos, pos + min(header, 4))]
            elif opcode == OP_PING:
                self.send(client_frame(OP_PONG, data[pos + header : end]))
            elif opcode == OP_CLOSE:
                code = int.from_bytes(data[pos + header : pos + header + 2], "big") if length else 0
                self.stats.closes[str(code)] = self.stats.closes.get(str(code), 0) + 1
                self.send(client_frame(OP_CLOSE, data[pos + header : pos + header + 2]))
                assert self.transport is not None
                self.transport.close()
            pos = end
        if counted:
            self.received += counted
            self.stats.frames += counted
            if self.on_frames is not None:
                self.on_frames(counted)

    def _sequence(self, match: re.Match[bytes] | None) -> None:
        if match is None:
            self._error("a data message without sequenceId")
            return
        got = int(match.group(1))
        if got != self.next_id:
            what = "repeated" if got < self.next_id else "skipped to"
            self._error(f"sequenceId {what} {got} after {self.next_id - 1}")
        self.next_id = max(self.next_id, got + 1)


async def open_socket(server: Server, source_ip: str, rcvbuf: int = 0) -> socket.socket:
    """A connected non-blocking TCP socket from ``source_ip`` (a loopback address).

    ``rcvbuf`` (set before connecting, so the advertised window stays small) for a client that
    is meant to stop reading.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source_ip, 0))
        await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
    except BaseException:
        sock.close()
        raise
    return sock


async def open_ws(
    server: Server,
    source_ip: str,
    path: str,
    stats: Stats,
    subprotocol: str | None = SUBPROTOCOL,
    rcvbuf: int = 0,
    kind: type[WsClient] = WsClient,
) -> WsClient:
    loop = asyncio.get_running_loop()
    sock = await open_socket(server, source_ip, rcvbuf)
    _, client = await loop.create_connection(
        lambda: kind(server, path, stats, subprotocol), sock=sock
    )
    await asyncio.wait_for(client.opened, 30)
    return client


class HttpClient(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection, one request in flight; answers are counted, not parsed."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[bool] | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        text = self._tail + data
        # Bodies of 2xx answers are empty; an error answer's body never holds a status line.
        if text.find(b"HTTP/1.1 ") >= 0 and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(text.find(b"HTTP/1.1 2") >= 0)
            self._tail = b""
            return
        self._tail = text[-9:]

    async def request(self, data: bytes) -> bool:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter


class Role:
    def __init__(self, spec: dict[str, Any]) -> None:
        s = spec["server"]
        self.server = Server(s["kind"], s["host"], s["port"], s["key"], s["hub"])
        self.source_ip: str = spec.get("source_ip", "127.0.0.1")
        self.stats = Stats()

    async def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "stats":
            return self.snapshot()
        if op == "latencies":
            lat, self.stats.latencies_us = self.stats.latencies_us, []
            return {"latencies_us": lat}
        raise ValueError(f"unknown op {op!r}")

    def snapshot(self) -> dict[str, Any]:
        t = os.times()
        st = self.stats
        return {
            "frames": st.frames,
            "opened": st.opened,
            "failed": st.failed,
            "lost": st.lost,
            "closes": st.closes,
            "cpu": t.user + t.system,
            "error": st.first_error,
        }


class Members(Role):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.start: int = spec["start"]
        self.count: int = spec["count"]
        self.per_group: int = spec.get("per_group", 0)
        self.users: bool = spec.get("users", False)
        self.probe_every: int = spec.get("probe_every", 0)
        self.concurrency: int = spec.get("concurrency", 50)
        self.stall: bool = spec.get("stall", False)
        self.subprotocol: str = spec.get("subprotocol", SUBPROTOCOL)
        self.reliable = ".reliable." in self.subprotocol
        self.ack_seconds: float = spec.get("ack_seconds", 1.0)
        self.acks_sent = 0
        self.clients: list[WsClient] = []
        self._acker: asyncio.Task[None] | None = None

    async def connect(self) -> dict[str, Any]:
        sem = asyncio.Semaphore(self.concurrency)
        deadline = time.monotonic() + 300

        async def one(i: int) -> None:
            group = f"g{i // self.per_group}" if self.per_group else None
            user = f"u{i}" if self.users else None
            path = self.server.client_path(group, user, [])
            async with sem:
                if time.monotonic() > deadline:
                    self.stats.failed += 1
                    return
                try:
                    client = await open_ws(
                        self.server,
                        self.source_ip,
                        path,
                        self.stats,
                        subprotocol=self.subprotocol,
                        rcvbuf=STALL_RCVBUF if self.stall else 0,
                        kind=SequencedClient if self.reliable else WsClient,
                    )
                    if self.stall:
                        assert client.transport is not None
                        client.transport.pause_reading()
                except (TimeoutError, OSError, ConnectionError) as exc:
                    self.stats.failed += 1
                    self.stats.first_error = self.stats.first_error or repr(exc)
                    return
            self.stats.opened += 1
            self.clients.append(client)

        await asyncio.gather(*(one(i) for i in range(self.start, self.start + self.count)))
        if self.reliable and self.ack_seconds > 0:
            self._acker = asyncio.get_running_loop().create_task(self._ack_loop())
        return self.snapshot()

    async def _ack_loop(self) -> None:
        """Each member acks its highest sequence id once every ``ack_seconds``."""
        tick = 0
        while True:
            await asyncio.sleep(self.ack_seconds / ACK_SLICES)
            for client in self.clients[tick % ACK_SLICES :: ACK_SLICES]:
                if isinstance(client, SequencedClient) and client.ack():
                    self.acks_sent += 1
            tick += 1

    def verify(self, expected: int) -> dict[str, Any]:
        """Per-connection counts since ``reset`` against ``expected`` messages each."""
        counts = [c.received for c in self.clients]
        sequenced = [c for c in self.clients if isinstance(c, SequencedClient)]
        return {
            "clients": len(counts),
            "expected": expected,
            "exact": sum(1 for x in counts if x == expected),
            "short": sum(1 for x in counts if x < expected),
            "over": sum(1 for x in counts if x > expected),
            "min": min(counts, default=0),
            "max": max(counts, default=0),
            "sequence_errors": sum(c.errors for c in sequenced),
            "first_sequence_error": next((c.first_error for c in sequenced if c.errors), ""),
            "acks_sent": self.acks_sent,
        }

    async def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "connect":
            return await self.connect()
        if op == "probe":
            on = bool(args.get("on"))
            for i, client in enumerate(self.clients):
                client.probe = on and self.probe_every > 0 and i % self.probe_every == 0
            return {"probes": sum(c.probe for c in self.clients)}
        if op == "resume":
            # A stalled member reads again: what the server sent before closing (its close
            # frame among it) arrives, and the close codes are counted in ``closes``.
            for client in self.clients:
                if client.transport is not None and not client.transport.is_closing():
                    client.transport.resume_reading()
            return {}
        if op == "reset":
            for client in self.clients:
                client.received = 0
            return {}
        if op == "verify":
            return self.verify(int(args["expected"]))
        if op == "close":
            for client in self.clients:
                if client.transport is not None:
                    client.transport.close()
            return {}
        return await super().handle(op, args)


class Publisher(Role):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.mode: str = spec["mode"]  # rest-group, rest-user, ws-group
        self.targets: list[str] = spec["targets"]
        self.size: int = spec["size"]
        self.concurrency: int = spec.get("concurrency", 4)
        self.window: int = spec.get("window", 0)
        self.probe_group: str | None = spec.get("probe_group")
        self.published = 0
        self.ok = 0
        self.errors = 0
        self.probe: WsClient | None = None
        self.http: list[HttpClient] = []
        self.ws: WsClient | None = None
        self.heads: list[bytes] = []
        self.frame_heads: list[bytes] = []
        self._room = asyncio.Event()

    async def prepare(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        if self.probe_group is not None:
            path = self.server.client_path(self.probe_group, None, [])
            self.probe = await open_ws(self.server, self.source_ip, path, self.stats)
            self.probe.on_frames = self._probe_frames
        if self.mode == "ws-group":
            path = self.server.client_path(None, None, ["webpubsub.sendToGroup"])
            self.ws = await open_ws(self.server, self.source_ip, path, Stats())
            self.frame_heads = [
                b'{"type":"sendToGroup","group":'
                + json.dumps(t).encode()
                + b',"dataType":"json","data":'
                for t in self.targets
            ]
        else:
            target = "groups" if self.mode == "rest-group" else "users"
            self.heads = [self.server.rest_request(target, t, self.size)[0] for t in self.targets]
            for _ in range(self.concurrency):
                sock = await open_socket(self.server, self.source_ip)
                _, client = await loop.create_connection(HttpClient, sock=sock)
                self.http.append(client)
        return self.snapshot()

    def _probe_frames(self, count: int) -> None:
        if self._ahead() < self.window:
            self._room.set()

    def _ahead(self) -> int:
        return self.published - (self.probe.stats.frames if self.probe is not None else 0)

    async def _room_to_send(self, deadline: float) -> None:
        while self.window and self.probe is not None and self._ahead() >= self.window:
            self._room.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._room.wait(), max(0.0, min(1.0, deadline - time.monotonic()))
                )
            if time.monotonic() >= deadline:
                return

    def snapshot(self) -> dict[str, Any]:
        out = super().snapshot()
        out.update(
            published=self.published,
            ok=self.ok,
            errors=self.errors,
            probe_frames=self.probe.stats.frames if self.probe is not None else 0,
        )
        return out

    async def run(self, duration: float, rate: float | None, limit: int) -> dict[str, Any]:
        start = time.monotonic()
        deadline = start + duration
        slot = 0

        async def next_slot() -> bool:
            """Wait for the next send time; False when the run is over."""
            nonlocal slot
            if self.published >= limit or time.monotonic() >= deadline:
                return False
            if rate:
                due = start + slot / rate
                slot += 1
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                await self._room_to_send(deadline)
            return time.monotonic() < deadline and self.published < limit

        async def rest_worker(client: HttpClient, first: int) -> None:
            i = first
            while await next_slot():
                head = self.heads[i % len(self.heads)]
                i += 1
                self.published += 1
                try:
                    # No timeout per call (asyncio.wait_for costs a task each time): the whole
                    # run has one, below.
                    ok = await client.request(head + payload(self.size, time.monotonic_ns()))
                except ConnectionError:
                    self.errors += 1
                    return
                if ok:
                    self.ok += 1
                else:
                    self.errors += 1

        async def ws_worker() -> None:
            assert self.ws is not None
            i = 0
            while await next_slot():
                head = self.frame_heads[i % len(self.frame_heads)]
                i += 1
                self.published += 1
                self.ws.send(
                    client_frame(OP_TEXT, head + payload(self.size, time.monotonic_ns()) + b"}")
                )
                if i % 16 == 0 or rate:
                    await asyncio.sleep(0)

        if self.mode == "ws-group":
            await ws_worker()
        else:
            workers = asyncio.gather(*(rest_worker(c, k) for k, c in enumerate(self.http)))
            try:
                await asyncio.wait_for(workers, duration + REST_STALL_SECONDS)
            except TimeoutError:
                self.errors += 1  # a request went unanswered for that long
        out = self.snapshot()
        out["elapsed"] = time.monotonic() - start
        return out

    async def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "prepare":
            return await self.prepare()
        if op == "run":
            return await self.run(
                float(args["duration"]), args.get("rate"), int(args.get("limit", 10_000_000))
            )
        if op == "probe":
            if self.probe is not None:
                self.probe.probe = bool(args.get("on"))
            return {}
        return await super().handle(op, args)


class Echo(Role):
    """Plain WebSocket clients, each with one text frame in flight that the server echoes."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.count: int = spec["count"]
        self.size: int = spec.get("size", 100)
        self.concurrency: int = spec.get("concurrency", 50)
        self.clients: list[WsClient] = []
        self.sent = 0
        self._sent_before = 0
        self._deadline = 0.0
        self._paced = False

    async def connect(self) -> dict[str, Any]:
        sem = asyncio.Semaphore(self.concurrency)
        path = self.server.client_path(None, None, [], echo=True)

        async def one() -> None:
            async with sem:
                try:
                    client = await open_ws(self.server, self.source_ip, path, self.stats, None)
                except (TimeoutError, OSError, ConnectionError) as exc:
                    self.stats.failed += 1
                    self.stats.first_error = self.stats.first_error or repr(exc)
                    return
            client.probe = True  # every echo is parsed for its send time
            client.on_frames = self._next(client)
            self.stats.opened += 1
            self.clients.append(client)

        await asyncio.gather(*(one() for _ in range(self.count)))
        return self.snapshot()

    def _send(self, client: WsClient) -> None:
        self.sent += 1
        client.send(client_frame(OP_TEXT, payload(self.size, time.monotonic_ns())))

    def _next(self, client: WsClient) -> Any:
        def on_frames(count: int) -> None:
            if not self._paced and time.monotonic() < self._deadline:
                self._send(client)

        return on_frames

    async def run(self, duration: float, rate: float | None = None) -> dict[str, Any]:
        """Closed loop (each client sends its next frame when its echo arrives), or with
        ``rate`` open loop: frames at ``rate`` per second in all, the clients in turn,
        whatever is in flight."""
        start = time.monotonic()
        self._deadline = start + duration
        self._paced = rate is not None
        if rate is None:
            for client in self.clients:
                self._send(client)
            await asyncio.sleep(duration)
        else:
            turn = 0
            while (now := time.monotonic()) < self._deadline:
                due = int((now - start) * rate) - (self.sent - self._sent_before)
                for _ in range(due):
                    self._send(self.clients[turn % len(self.clients)])
                    turn += 1
                await asyncio.sleep(0.001)
        # The last frames in flight are answered (or not) within 10 s.
        for _ in range(200):
            if self.stats.frames >= self.sent:
                break
            await asyncio.sleep(0.05)
        out = self.snapshot()
        out["elapsed"] = time.monotonic() - start
        return out

    def snapshot(self) -> dict[str, Any]:
        out = super().snapshot()
        out["sent"] = self.sent
        return out

    async def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "connect":
            return await self.connect()
        if op == "run":
            self._sent_before = self.sent
            rate = args.get("rate")
            return await self.run(float(args["duration"]), None if rate is None else float(rate))
        return await super().handle(op, args)


class Handler:
    """The upstream event handler of the echo scenario: probe answered, every body echoed."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.port: int = spec["port"]
        self.requests = 0
        self.probes = 0
        self.runner: Any = None

    async def start(self) -> dict[str, Any]:
        from aiohttp import web

        async def handle(request: web.Request) -> web.StreamResponse:
            if request.method == "OPTIONS":
                self.probes += 1
                return web.Response(headers={"WebHook-Allowed-Origin": "*"})
            if request.method != "POST":
                return web.Response(status=405)
            self.requests += 1
            body = await request.read()
            kind = request.headers.get("Content-Type", "application/octet-stream")
            return web.Response(body=body, headers={"Content-Type": kind})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, backlog=1024).start()
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        t = os.times()
        return {"requests": self.requests, "probes": self.probes, "cpu": t.user + t.system}

    async def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        if op == "prepare":
            return await self.start()
        if op == "stats":
            return self.snapshot()
        raise ValueError(f"unknown op {op!r}")


async def serve(role: Role | Handler) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()

    def reply(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def execute(command: dict[str, Any]) -> None:
        try:
            result = await role.handle(command["op"], command)
        except Exception as exc:  # reported to the harness, which fails the run
            result = {"error": f"{type(exc).__name__}: {exc}"}
        result["id"] = command["id"]
        reply(result)

    while True:
        line = await reader.readline()
        if not line:
            return
        command = json.loads(line)
        if command["op"] == "quit":
            reply({"id": command["id"]})
            return
        task = loop.create_task(execute(command))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def main() -> None:
    spec = json.loads(sys.argv[1])
    if spec.get("nice"):
        # Publishers wake up promptly on the shared load CPU: their round trips pace the run.
        os.setpriority(os.PRIO_PROCESS, 0, int(spec["nice"]))
    roles: dict[str, type[Role] | type[Handler]] = {
        "members": Members,
        "publisher": Publisher,
        "echo": Echo,
        "handler": Handler,
    }
    role = roles[spec["role"]](spec)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(role))
    else:
        uvloop.run(serve(role))


if __name__ == "__main__":
    main()
