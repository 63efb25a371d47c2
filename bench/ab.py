"""A/B: the same scenarios on two hubbub sources, alternating, in one invocation.

``python bench/ab.py --a main --scenarios b,c [--b WORKTREE_SRC] [--repeat 3] [--quick]``

With ``--rate N`` the publishers of (b) and (c) send N calls/s (paced) instead of flat out, so
that both sides do the same work per loop pass: server CPU per call grows as the rate falls
(fewer requests share a wake-up), and a flat-out rate on a busy machine differs from one run
to the next.

``--a`` and ``--b`` are git revisions (extracted with ``git archive`` as ``--hubbub-rev`` does) or
``tree`` (this checkout's ``src/``; the default for ``--b``). Each repetition runs every selected
scenario on A, then on B (then B, A in the next repetition, so neither side always goes first),
each on a fresh server; the table gives both medians and B / A. On a busy machine the figures
that contention distorts least are the CPU-time ones (server CPU per call, deliveries per server
CPU-second) and memory; wall-clock rates are shown but compare poorly.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import resource
import statistics
import sys
from pathlib import Path
from typing import Any

from harness import measure as measuring, servers
from harness.config import LOAD_CPU, OUT, REPO, Plan
from harness.processes import Children
from harness.results import Results
from harness.scenarios import groups, run_scenarios, users
from harness.scenarios.common import Context

FIGURES = (
    "server_cpu_us_per_call",
    "server_sys_share",
    "deliveries_per_cpu_s",
    "calls_per_s",
    "deliveries_per_s",
    "kib_per_conn",
    "kib_per_idle_conn",
    "unacked_bytes_per_message",
    "echoes_per_s",
    "echoes_per_cpu_s",
    "p99_ms",
    "rtt_p50_ms",
    "rtt_p99_ms",
)


async def _paced(rate: float, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``measure`` at ``rate`` calls/s over all publishers together."""
    publishers = args[3] if len(args) > 3 else kwargs["publishers"]
    kwargs["rate"] = rate / max(1, len(publishers))
    return await measuring.measure(*args, **kwargs)


def _source(rev: str) -> Path:
    return REPO / "src" if rev == "tree" else servers.snapshot(rev)


def _medians(results: Results) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for key, by_kind in results.items():
        runs: list[dict[str, Any]] = by_kind.get("hubbub", [])
        for name in FIGURES:
            values = [r[name] for r in runs if isinstance(r.get(name), (int, float))]
            if values:
                out[(key, name)] = statistics.median(values)
    return out


async def main_async(args: argparse.Namespace) -> int:
    plan = Plan.make(args.quick, args.repeat)
    if args.rate:
        paced = functools.partial(_paced, float(args.rate))
        groups.measure = users.measure = paced  # type: ignore[attr-defined]
    wanted = set(args.scenarios.split(","))
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    sides = {"A": _source(args.a), "B": _source(args.b)}
    print(f"A = {args.a} ({sides['A']}), B = {args.b} ({sides['B']})", flush=True)
    os.sched_setaffinity(0, {LOAD_CPU})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    children = Children()
    results: dict[str, Results] = {"A": {}, "B": {}}
    try:
        for rep in range(plan.repeat):
            order = ("A", "B") if rep % 2 == 0 else ("B", "A")
            for side in order:
                print(f"== run {rep + 1} of {plan.repeat}: {side}", flush=True)
                servers.use_hubbub_src(sides[side])
                ctx = Context(plan, children, results[side], False)
                try:
                    await run_scenarios(ctx, "hubbub", wanted)
                finally:
                    await children.stop_all()
    finally:
        await children.stop_all()
    a, b = _medians(results["A"]), _medians(results["B"])
    lines = [f"| figure | A ({args.a}) | B ({args.b}) | B / A |", "|---|---:|---:|---:|"]
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        ratio = f"{vb / va:.3f}" if va and vb is not None else "-"
        fa = "-" if va is None else f"{va:,.2f}"
        fb = "-" if vb is None else f"{vb:,.2f}"
        lines.append(f"| {key[0]} {key[1]} | {fa} | {fb} | {ratio} |")
    text = "\n".join(lines)
    print(text)
    (OUT / "ab.md").write_text(text + "\n")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="git revision of side A, or 'tree'")
    parser.add_argument("--b", default="tree", help="git revision of side B, or 'tree' (default)")
    parser.add_argument("--scenarios", required=True, help="comma-separated letters, e.g. b,c")
    parser.add_argument("--repeat", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument("--rate", type=float, help="(b) and (c): calls/s in all, paced")
    parser.add_argument("--quick", action="store_true", help="small and short windows")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
