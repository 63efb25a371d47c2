"""In-process cost of one REST send through the fast lane: µs of Python per call.

A node built as ``hubbub serve`` builds it, its port fed whole requests as a socket would
(``Port.data_received``), 100 targets with a token each, round-robin: ``users`` sends to a user
with one connection, ``groups`` to a group of 10. Members sit on real corked outlets over
transports that only count (a flush every 4 calls, as several requests share a loop pass when
the lane is busy). No sockets, no event loop wake-ups: the figure (process CPU time, so that a
busy machine's other work does not count) is the Python work of a call, from the request's
bytes to the answer's and the members' write calls, the part of bench scenarios (b) and (c)
that is not the kernel's.

    PYTHONPATH=<src>:. python bench/lane_micro.py [--calls 30000] [--repeat 5]

Run it on two revisions' ``src/`` for an A/B comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import jwt

import hubbub.server.port as port_module
from hubbub.config import Config
from hubbub.core.roles import RoleSet
from hubbub.core.state import Connection
from hubbub.protocol.codec import JSON_SUBPROTOCOL
from hubbub.protocol.registry import codec_for
from hubbub.server.app import build
from hubbub.server.port import Port
from hubbub.server.writer import CorkedOutlet, Flusher
from hubbub.types import ConnectionId, GroupName, HubName, UserId

KEY = "k" * 32
TARGETS = 100


class CountingTransport(asyncio.Transport):
    """Takes writes as a socket would and counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: Any) -> None:
        self.writes += 1

    def writelines(self, list_of_data: Any) -> None:
        self.writes += 1

    def close(self) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def is_reading(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def run(kind: str, calls: int) -> float:
    """µs per call of one run."""
    parts = build(Config(access_keys=(KEY,)))
    await parts.broker.start(parts.node)
    flusher = Flusher(asyncio.get_running_loop())
    hub = parts.node.hubs.ensure(HubName("bench"))
    codec = codec_for(JSON_SUBPROTOCOL)
    for i in range(TARGETS):
        for j in range(10 if kind == "groups" else 1):
            outlet = CorkedOutlet(CountingTransport(), flusher, 1 << 30, lambda c, r: None)
            user = UserId(f"t{i}") if kind == "users" else None
            connection = Connection(
                ConnectionId(f"c{i}-{j}"), hub.name, user, RoleSet(), codec, outlet
            )
            hub.add(connection)
            if kind == "groups":
                hub.join(connection, GroupName(f"t{i}"))
    port_module.tcp_keepalive = lambda transport: None  # type: ignore[assignment]
    port = Port(None, parts.lane, parts.heads)  # type: ignore[arg-type]
    transport = CountingTransport()
    port.connection_made(transport)
    body = b'{"t":' + b"1" * 90 + b"}"
    requests = []
    for i in range(TARGETS):
        path = f"/api/hubs/bench/{kind}/t{i}/:send?api-version=2024-01-01"
        claims = {"aud": f"http://127.0.0.1:8080{path}", "exp": int(time.time()) + 3600}
        token = jwt.encode(claims, KEY, algorithm="HS256")
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    for request in requests:  # warm up: every token seen once
        port.data_received(request)
    flusher._flush()
    started = time.process_time_ns()
    for k in range(calls):
        port.data_received(requests[k % TARGETS])
        if k % 4 == 3:
            flusher._flush()
    spent = time.process_time_ns() - started
    assert transport.writes == TARGETS + calls, "every call answered"
    if parts.lane is not None:
        parts.lane.close()
    return spent / calls / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {"users": [], "groups": []}
    for _ in range(args.repeat):  # interleaved: a noisy neighbour hits both cases alike
        for kind in figures:
            figures[kind].append(asyncio.run(run(kind, args.calls)))
    for kind, values in figures.items():
        target = "a user (1 connection)" if kind == "users" else "a group of 10"
        print(
            f"REST send to {target:22s} {statistics.median(values):6.2f} us/call"
            f"  (min {min(values):.2f}, max {max(values):.2f})"
        )


if __name__ == "__main__":
    main()
