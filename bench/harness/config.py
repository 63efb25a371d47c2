"""Where things are, which CPU runs what, and the sizes of one invocation (:class:`Plan`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
OUT = BENCH / "out"
SERVER_CPU = 0
LOAD_CPU = 1
HUB = "bench"
ACCESS_KEY = "bench-access-key-0123456789abcdefghijklmnopqrstuvwxyz"
SERVERS = ("hubbub", "node", "uws")
SERVER_NAMES = {"hubbub": "hubbub", "node": "Node ws", "uws": "uWS (socketify)"}
MEMBER_WORKERS = 4
REPLY_LIMIT = 256 * 1024 * 1024
PUBLISHER_NICE = -10
WORKERS_CPUS = (SERVER_CPU, LOAD_CPU)
"""The CPUs the supervisor and workers of (e)'s ``--workers`` figure may use: both."""
WORKER_CPUS = tuple(
    int(c) for c in os.environ.get("HUBBUB_BENCH_WORKER_CPUS", "").split(",") if c.strip()
)
"""``HUBBUB_BENCH_WORKER_CPUS=0,1``: pin worker i of that figure to the i-th CPU listed
(default: not pinned one by one; the scheduler places them on :data:`WORKERS_CPUS`)."""
LATENCY_PROBES = 20
"""Members of the fan-out group that read each message's send time in scenario (e)."""
FANOUT_CONCURRENCY = 32
"""REST requests in flight while publishing to one big group at the maximum rate."""
REST_CONCURRENCY = 96
"""REST requests in flight per publisher process in (b) and (c), where each call is cheap."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
JSON_SUBPROTOCOL = "json.webpubsub.azure.v1"
RELIABLE_SUBPROTOCOL = "json.reliable.webpubsub.azure.v1"


def fanout_window(size: int) -> int:
    """Messages a publisher may be ahead of its probe member (bounds the buffered bytes)."""
    return 200 if size <= 100 else 32


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one invocation."""

    quick: bool
    repeat: int
    warmup: float
    measure: float
    latency_seconds: float
    fanout_members: int = 1000
    groups: int = 1000
    group_size: int = 10
    users: int = 1000
    idle_counts: tuple[int, ...] = (10_000, 50_000)
    echo_clients: int = 200
    slow_members: int = 500
    slow_stalled: int = 20
    slow_seconds: float = 20.0
    reliable_members: int = 1000
    reliable_rate_cap: float = 500.0
    unacked_connections: int = 10_000
    unacked_messages: int = 100

    @staticmethod
    def make(quick: bool, repeat: int | None) -> Plan:
        if quick:
            return Plan(
                True,
                repeat or 1,
                0.5,
                1.5,
                2.0,
                idle_counts=(2_000, 5_000),
                echo_clients=100,
                slow_seconds=12.0,
                unacked_connections=2_000,
            )
        return Plan(False, repeat or 3, 2.0, 4.0, 6.0)
