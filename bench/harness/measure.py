"""What the harness reads: CPU time and RSS from ``/proc``, and the publish-and-count window.

Server CPU time is ``utime + stime`` of ``/proc/<pid>/stat`` (all threads of the process) over
the measured window; memory is ``VmRSS`` of ``/proc/<pid>/status``.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import CLK_TCK, Plan
from harness.processes import LoadProcess

if TYPE_CHECKING:
    from harness.servers import ServerProcess


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def sys_cpu_seconds(pid: int) -> float:
    """The kernel's share of :func:`cpu_seconds` (``stime``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / CLK_TCK


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (children first, then theirs), as ``/proc`` lists them."""
    out: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop(0)
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:  # the task or the process is gone
                continue
            out += children
            todo += children
    return out


def rss_kib(pid: int) -> int:
    """A process's resident set size in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fd_limit() -> int:
    """The open-file hard limit (this process and its children)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def cpu_us_per_call(figures: dict[str, Any]) -> float:
    """Server CPU time per answered call over a window, in microseconds."""
    calls = figures["calls_per_s"]
    return figures["server_cpu_util"] / calls * 1e6 if calls else float("nan")


def percentile(sorted_values: Sequence[int], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return float(sorted_values[k])


@dataclass
class Sample:
    t: float
    server_cpu: float
    server_sys_cpu: float
    frames: int
    load_cpu: float
    ok: int
    published: int
    lost: int
    counted: float | None
    parts: dict[str, float]
    """CPU time of each part of a server made of several processes (see ``cpu_parts``)."""


async def sample(
    server: ServerProcess, members: Sequence[LoadProcess], publishers: Sequence[LoadProcess]
) -> Sample:
    t0 = time.monotonic()
    cpu0 = server.cpu_seconds()
    parts0 = server.cpu_parts()
    sys0 = server.sys_cpu_seconds()
    stats = await asyncio.gather(*(p.call("stats", limit_s=30) for p in [*members, *publishers]))
    t1 = time.monotonic()
    cpu1 = server.cpu_seconds()
    parts1 = server.cpu_parts()
    sys1 = server.sys_cpu_seconds()
    pub_stats = stats[len(members) :]
    return Sample(
        t=(t0 + t1) / 2,
        server_cpu=(cpu0 + cpu1) / 2,
        server_sys_cpu=(sys0 + sys1) / 2,
        frames=sum(s["frames"] for s in stats[: len(members)])
        + sum(s["probe_frames"] for s in pub_stats),
        load_cpu=sum(s["cpu"] for s in stats),
        ok=sum(s["ok"] for s in pub_stats),
        published=sum(s["published"] for s in pub_stats),
        lost=sum(s["lost"] for s in stats),
        counted=None,
        parts={k: (parts0[k] + parts1[k]) / 2 for k in parts0},
    )


async def measure(
    plan: Plan,
    server: ServerProcess,
    members: Sequence[LoadProcess],
    publishers: Sequence[LoadProcess],
    *,
    fan: int,
    rate: float | None = None,
    duration: float | None = None,
) -> dict[str, Any]:
    """Run the publishers and measure a steady window after a warm-up.

    ``fan`` is the number of deliveries one publication makes: once the run is over and the
    last messages have drained, every one of them must have arrived (``delivered_fraction``).
    """
    window = duration if duration is not None else plan.measure
    base = await sample(server, members, publishers)
    runs = [
        asyncio.ensure_future(
            p.call(
                "run",
                limit_s=window + plan.warmup + 60,
                duration=plan.warmup + window + 0.5,
                rate=rate,
            )
        )
        for p in publishers
    ]
    await asyncio.sleep(plan.warmup)
    s0 = await sample(server, members, publishers)
    s0.counted = await server.counted_deliveries()
    await asyncio.sleep(window)
    s1 = await sample(server, members, publishers)
    s1.counted = await server.counted_deliveries()
    results = await asyncio.gather(*runs)
    final = await sample(server, members, publishers)
    for _ in range(50):  # let the last deliveries drain before the next measurement
        await asyncio.sleep(0.2)
        last, final = final, await sample(server, members, publishers)
        if final.frames == last.frames:
            break
    errors = [r["error"] for r in results if r.get("error")]
    if errors:
        raise RuntimeError("; ".join(errors))
    dt = s1.t - s0.t
    cpu = s1.server_cpu - s0.server_cpu
    deliveries = s1.frames - s0.frames
    out: dict[str, Any] = {
        "deliveries_per_s": deliveries / dt,
        "deliveries_per_cpu_s": deliveries / cpu if cpu > 0 else 0.0,
        "calls_per_s": (s1.ok - s0.ok) / dt,
        "published_per_s": (s1.published - s0.published) / dt,
        "server_cpu_util": cpu / dt,
        "server_sys_share": (s1.server_sys_cpu - s0.server_sys_cpu) / cpu if cpu > 0 else 0.0,
        "loadgen_cpu_util": (s1.load_cpu - s0.load_cpu) / dt,
        "errors": sum(r["errors"] for r in results),
        "lost_connections": s1.lost,
        "delivered_fraction": (final.frames - base.frames)
        / max(1, (final.published - base.published) * fan),
    }
    for part, used in s1.parts.items():
        out[f"{part}_cpu_util"] = (used - s0.parts[part]) / dt
    if s0.counted is not None and s1.counted is not None and deliveries:
        out["server_counted_ratio"] = (s1.counted - s0.counted) / deliveries
    return out
