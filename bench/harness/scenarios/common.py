"""What every scenario uses: the run context, member and publisher processes, progress lines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.config import MEMBER_WORKERS, PUBLISHER_NICE, Plan
from harness.processes import Children, LoadProcess
from harness.results import Results
from harness.servers import ServerProcess, server_spec


@dataclass
class Context:
    """One repetition of the scenarios: the plan, the started processes, where figures go."""

    plan: Plan
    children: Children
    results: Results
    profile: bool
    """Also sample hubbub with py-spy in this repetition (the first one of ``--profile``)."""

    def record(self, key: str, kind: str, figures: dict[str, Any]) -> None:
        self.results.setdefault(key, {}).setdefault(kind, []).append(figures)


async def start_members(
    children: Children,
    server: ServerProcess,
    count: int,
    *,
    per_group: int = 0,
    users: bool = False,
    probes: int = 0,
    subprotocol: str | None = None,
    ack_seconds: float | None = None,
    node_of: Callable[[int], ServerProcess] | None = None,
    label: str | None = None,
) -> list[LoadProcess]:
    """``count`` member connections spread over several processes and source addresses.

    ``node_of``: the server member process ``w`` connects to (a cluster's nodes in turn),
    instead of ``server``; ``label`` names the processes' logs and errors (default: the kind).

    With ``probes``, the first process holds that many of the members, at a higher priority,
    and reads the send time of each message when probing is on (the latency scenario); the
    bulk processes only count. ``subprotocol`` (default ``json.webpubsub.azure.v1``) and
    ``ack_seconds`` (reliable members: how often each acks, 0 never) go to every process.
    """
    workers: list[LoadProcess] = []
    slices: list[tuple[int, int, int]] = []  # start, count, probe_every
    first = min(probes, count)
    if first:
        slices.append((0, first, 1))
    share = -(-(count - first) // MEMBER_WORKERS)
    for w in range(MEMBER_WORKERS):
        start, n = first + w * share, min(share, count - first - w * share)
        if n > 0:
            slices.append((start, n, 0))
    for w, (start, n, probe_every) in enumerate(slices):
        spec = {
            "role": "members",
            "server": server_spec(server if node_of is None else node_of(w)),
            "source_ip": f"127.0.0.{2 + w}",
            "start": start,
            "count": n,
            "per_group": per_group,
            "users": users,
            "probe_every": probe_every,
            "concurrency": 50,
            "nice": PUBLISHER_NICE if probe_every else 0,
        }
        if subprotocol is not None:
            spec["subprotocol"] = subprotocol
        if ack_seconds is not None:
            spec["ack_seconds"] = ack_seconds
        name = label or server.kind
        workers.append(await LoadProcess.start(children, spec, f"members-{name}-{w}"))
    replies = await asyncio.gather(*(w.call("connect") for w in workers))
    opened = sum(r["opened"] for r in replies)
    if opened < count:
        errors = "; ".join(r["error"] for r in replies if r.get("error"))
        raise RuntimeError(
            f"{label or server.kind}: only {opened} of {count} connections opened: {errors}"
        )
    return workers


async def start_publisher(
    children: Children, server: ServerProcess, index: int, **spec: Any
) -> LoadProcess:
    full = {
        "role": "publisher",
        "server": server_spec(server),
        "source_ip": f"127.0.0.{10 + index}",
        "nice": PUBLISHER_NICE,
        **spec,
    }
    pub = await LoadProcess.start(children, full, f"publisher-{server.kind}-{index}")
    reply = await pub.call("prepare", limit_s=60)
    if reply.get("error"):
        raise RuntimeError(f"publisher: {reply['error']}")
    return pub


async def verify_members(members: Sequence[LoadProcess], expected: int) -> dict[str, Any]:
    """Every member's count since the last ``reset`` against ``expected`` (and, on a reliable
    subprotocol, its sequence checks), summed over the member processes."""
    replies = await asyncio.gather(*(m.call("verify", expected=expected) for m in members))
    return {
        "receivers": sum(r["clients"] for r in replies),
        "expected_per_receiver": expected,
        "exact_receivers": sum(r["exact"] for r in replies),
        "short_receivers": sum(r["short"] for r in replies),
        "over_receivers": sum(r["over"] for r in replies),
        "sequence_errors": sum(r["sequence_errors"] for r in replies),
        "first_sequence_error": next(
            (r["first_sequence_error"] for r in replies if r["first_sequence_error"]), ""
        ),
        "acks_sent": sum(r["acks_sent"] for r in replies),
    }


async def close_all(children: Children, procs: Sequence[LoadProcess]) -> None:
    await asyncio.gather(*(p.quit(children) for p in procs), return_exceptions=True)


def progress(label: str, kind: str, figures: dict[str, Any]) -> None:
    shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()}
    print(f"[{time.strftime('%H:%M:%S')}] {label:<18} {kind:<7} {shown}", flush=True)
