"""In-process cost of a group fan-out, json against json.reliable: ns per delivery.

A group of ``--members`` connections on real corked outlets (``server/writer.py``) over
transports that only count what they are given; ``--burst`` publishes per flush, the flush run
by hand, and on the reliable subprotocol every member acks its highest sequence id once per
``--ack-every`` messages (as an SDK acking once a second at that rate). The "ids diverged"
case gives the reliable members different sequence ids (a few direct messages first), so
that neighbours' frames differ. No sockets, no event loop: the figure (process CPU time, so
that a busy machine's other work does not count) is the Python work of delivery, encode to
write call, the floor under bench scenario (h).

    python bench/fanout_micro.py [--members 1000] [--messages 3000] [--burst 3] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time

from hubbub.core.fanout import deliver, deliver_to_group
from hubbub.core.roles import RoleSet
from hubbub.core.state import Connection, Hub
from hubbub.protocol.codec import JSON_RELIABLE_SUBPROTOCOL, JSON_SUBPROTOCOL
from hubbub.protocol.messages import DataMessage, DataType, Payload
from hubbub.protocol.registry import codec_for
from hubbub.server.writer import CorkedOutlet, Flusher
from hubbub.types import ConnectionId, GroupName, HubName

G = GroupName("g0")


class CountingTransport(asyncio.Transport):
    """Takes writes as a socket would, keeps only their total size."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.bytes += len(data)
        self.writes += 1

    def writelines(self, list_of_data: object) -> None:
        self.write(b"".join(list_of_data))  # type: ignore[arg-type]

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


def run(
    subprotocol: str,
    size: int,
    members: int,
    messages: int,
    burst: int,
    ack_every: int,
    diverged: bool,
) -> float:
    """ns per delivery of one run."""
    loop = asyncio.new_event_loop()
    try:
        flusher = Flusher(loop)
        hub = Hub(HubName("h"))
        codec = codec_for(subprotocol)
        connections = []
        for i in range(members):
            outlet = CorkedOutlet(CountingTransport(), flusher, 1 << 30, lambda c, r: None)
            connection = Connection(ConnectionId(f"c{i}"), hub.name, None, RoleSet(), codec, outlet)
            hub.add(connection)
            hub.join(connection, G)
            connections.append(connection)
        if diverged:
            for i, connection in enumerate(connections):
                for _ in range(i % 7 + 1):
                    deliver([connection], DataMessage(Payload(DataType.TEXT, b"x"), None, None))
        flusher._flush()
        reliable = codec.reliable
        acked = [0] * members
        payload = Payload(DataType.TEXT, b"x" * size)
        msgs = [DataMessage(payload, G, None) for _ in range(burst)]
        gc.collect()
        started = time.process_time_ns()
        sent = 0
        while sent < messages:
            for m in msgs:
                deliver_to_group(hub, G, m)
            sent += burst
            flusher._flush()
            if reliable and sent % ack_every < burst:
                for i, connection in enumerate(connections):
                    session = connection.session
                    assert session is not None
                    acked[i] = session.next_sequence_id - 1
                    session.ack(acked[i])
        spent = time.process_time_ns() - started
        return spent / (sent * members)
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--burst", type=int, default=3)
    parser.add_argument("--ack-every", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="100,2048")
    args = parser.parse_args()
    cases = []
    for size in (int(s) for s in args.sizes.split(",")):
        cases += [
            (f"json {size} B", JSON_SUBPROTOCOL, size, False),
            (f"json.reliable {size} B", JSON_RELIABLE_SUBPROTOCOL, size, False),
            (f"json.reliable {size} B, ids diverged", JSON_RELIABLE_SUBPROTOCOL, size, True),
        ]
    figures: dict[str, list[float]] = {name: [] for name, *_ in cases}
    for _ in range(args.repeat):  # interleaved: a noisy neighbour hits every case alike
        for name, subprotocol, size, diverged in cases:
            figures[name].append(
                run(
                    subprotocol,
                    size,
                    args.members,
                    args.messages,
                    args.burst,
                    args.ack_every,
                    diverged,
                )
            )
    for name, values in figures.items():
        print(
            f"{name:40s} {statistics.median(values):7.0f} ns/delivery"
            f"  (min {min(values):.0f}, max {max(values):.0f})"
        )


if __name__ == "__main__":
    main()
