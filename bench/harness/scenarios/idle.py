"""(d) idle memory per connection: VmRSS before and after opening N idle connections."""

from __future__ import annotations

import asyncio
import time

from harness.config import Plan
from harness.measure import fd_limit
from harness.processes import LoadProcess
from harness.results import Results, Row, ge, le
from harness.scenarios.common import Context, close_all, progress, start_members
from harness.servers import ServerProcess


def idle_target(count: int) -> int:
    """What one process can hold under this machine's file limit (a margin for other files)."""
    return min(count, fd_limit() - 500)


async def run(ctx: Context, kind: str) -> None:
    plan, children = ctx.plan, ctx.children
    for wanted in plan.idle_counts:
        n = idle_target(wanted)
        server = await ServerProcess.start(children, kind)
        members: list[LoadProcess] = []
        try:
            await asyncio.sleep(1.0)
            before = server.rss_kib()
            t0 = time.monotonic()
            members = await start_members(children, server, n)
            connect_s = time.monotonic() - t0
            await asyncio.sleep(2.0)
            after = server.rss_kib()
            stats = await asyncio.gather(*(m.call("stats") for m in members))
            opened = sum(s["opened"] for s in stats) - sum(s["lost"] for s in stats)
            figures = {
                "requested": wanted,
                "connections": opened,
                "rss_before_kib": before,
                "rss_after_kib": after,
                "kib_per_conn": (after - before) / max(opened, 1),
                "connect_s": connect_s,
                "capped_by_fd_limit": n < wanted,
            }
        finally:
            await close_all(children, members)
            await children.stop(server.proc)
        ctx.record(f"d-idle-{wanted}", kind, figures)
        progress(f"d idle {wanted}", kind, figures)


def rows(plan: Plan) -> list[Row]:
    out = []
    for wanted in plan.idle_counts:
        n = idle_target(wanted)
        capped = f" (capped at {n:,}: file limit)" if n < wanted else ""
        out.append(
            Row(
                f"d-idle-{wanted}",
                "kib_per_conn",
                f"(d) idle memory at {wanted:,} connections{capped}: KiB/conn",
                "{:.2f}",
                "<= 4 KiB",
                le(4.0),
                higher_is_better=False,
            )
        )
        out.append(
            Row(
                f"d-idle-{wanted}",
                "connections",
                f"(d) connections held, {wanted:,} requested",
                "{:,.0f}",
                ">= 50,000 in one process" if wanted >= 50_000 else "",
                ge("hubbub", 50_000) if wanted >= 50_000 else None,
            )
        )
    return out


def notes(plan: Plan, results: Results) -> list[str]:
    out = []
    for wanted in plan.idle_counts:
        if idle_target(wanted) < wanted:
            out.append(
                f"(d) {wanted:,} connections cannot be opened to one process on this machine: "
                f"the open-file limit is {fd_limit():,} (hard) and the harness may not raise it "
                f"(no CAP_SYS_RESOURCE), so that row is measured at {idle_target(wanted):,}."
            )
    return out
