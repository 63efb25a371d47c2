"""(g) slow consumers, hubbub only: the latency of the others with and without stalled members.

``plan.slow_members`` members of one group (``LATENCY_PROBES`` of them read each message's
send time) while a REST publisher sends 2 KB messages to the group at a fixed rate; in the
second run ``plan.slow_stalled`` more members of the group never read. hubbub runs with a
bounded outbound buffer; each stalled member must be closed and counted
(``hubbub_slow_client_closes_total``) while the others' latency and the RSS stay put.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from harness.config import LATENCY_PROBES, OUT, Plan
from harness.measure import measure, percentile
from harness.processes import LoadProcess
from harness.results import Row, eq
from harness.scenarios.common import Context, close_all, progress, start_members, start_publisher
from harness.servers import ServerProcess, server_spec

SLOW_OUTBOUND_BYTES = 1024 * 1024
"""hubbub's ``server.max_outbound_bytes`` in (g): unsent bytes per connection before closing."""
SLOW_RATE = 200.0
"""Publications per second in (g), REST, 2 KB each, to the one group."""
SLOW_SIZE = 2048
SLOW_CLOSES_METRIC = "hubbub_slow_client_closes_total"


def slow_config() -> Path:
    """hubbub's config for (g): a bounded outbound buffer per connection."""
    path = OUT / "hubbub-slow.toml"
    path.write_text(f"[server]\nmax_outbound_bytes = {SLOW_OUTBOUND_BYTES}\n")
    return path


async def slow_run(ctx: Context, kind: str, stalled: int) -> dict[str, Any]:
    """One run of (g): the members' latency and the server's RSS, with ``stalled`` slow ones."""
    plan, children = ctx.plan, ctx.children
    server = await ServerProcess.start(children, kind, slow_config())
    procs: list[LoadProcess] = []
    members: list[LoadProcess] = []
    try:
        slow: LoadProcess | None = None
        if stalled:
            spec = {
                "role": "members",
                "server": server_spec(server),
                "source_ip": "127.0.0.8",
                "start": 0,
                "count": stalled,
                "per_group": stalled,
                "stall": True,
                "concurrency": 20,
            }
            slow = await LoadProcess.start(children, spec, f"stalled-{kind}")
            procs.append(slow)
            reply = await slow.call("connect")
            if reply["opened"] < stalled:
                raise RuntimeError(
                    f"{kind}: only {reply['opened']} of {stalled} stalled members opened: "
                    f"{reply.get('error')}"
                )
        n = plan.slow_members
        members = await start_members(children, server, n - 1, per_group=n, probes=LATENCY_PROBES)
        procs += members
        pub = await start_publisher(
            children,
            server,
            0,
            mode="rest-group",
            targets=["g0"],
            size=SLOW_SIZE,
            concurrency=16,
            window=0,
            probe_group="g0",
        )
        procs.append(pub)
        await asyncio.gather(*(m.call("probe", on=True) for m in members))
        await asyncio.gather(*(m.call("latencies") for m in members))
        closes0 = await server.metric(SLOW_CLOSES_METRIC)
        rss0 = server.rss_kib()
        peak = rss0
        done = False

        async def watch_rss() -> None:
            nonlocal peak
            while not done:
                peak = max(peak, server.rss_kib())
                await asyncio.sleep(0.1)

        watcher = asyncio.ensure_future(watch_rss())
        try:
            figures = await measure(
                plan,
                server,
                members,
                [pub],
                fan=n,
                rate=SLOW_RATE,
                duration=plan.slow_seconds,
            )
        finally:
            done = True
            await watcher
        peak = max(peak, server.rss_kib())
        lat: list[int] = []
        for reply in await asyncio.gather(*(m.call("latencies") for m in members)):
            lat.extend(reply["latencies_us"])
        closes1 = await server.metric(SLOW_CLOSES_METRIC)
        codes: dict[str, int] = {}
        gone = 0
        if slow is not None:
            # Read again: the close frame, behind what the server had queued, shows the code.
            await slow.call("resume")
            for _ in range(25):
                await asyncio.sleep(0.2)
                st = await slow.call("stats")
                codes, gone = st["closes"], st["lost"]
                if gone >= stalled:
                    break
    finally:
        await close_all(children, procs)
        await children.stop(server.proc)
    lat.sort()
    figures.update(
        members=n,
        stalled=stalled,
        rate_msgs_per_s=SLOW_RATE,
        size=SLOW_SIZE,
        max_outbound_bytes=SLOW_OUTBOUND_BYTES,
        samples=len(lat),
        p50_ms=percentile(lat, 50) / 1000,
        p99_ms=percentile(lat, 99) / 1000,
        max_ms=(lat[-1] / 1000) if lat else float("nan"),
        rss_before_kib=rss0,
        rss_peak_kib=peak,
        rss_growth_mib=(peak - rss0) / 1024,
        slow_closes=(closes1 or 0.0) - (closes0 or 0.0) if closes1 is not None else None,
        close_codes_seen_by_stalled=codes,
        stalled_connections_gone=gone,
    )
    return figures


async def run(ctx: Context, kind: str) -> None:
    if kind != "hubbub":
        return
    plan = ctx.plan
    base = await slow_run(ctx, kind, 0)
    progress("g no slow", kind, base)
    slow = await slow_run(ctx, kind, plan.slow_stalled)
    progress(f"g {plan.slow_stalled} slow", kind, slow)
    figures: dict[str, Any] = {
        "base_p50_ms": base["p50_ms"],
        "base_p99_ms": base["p99_ms"],
        "slow_p50_ms": slow["p50_ms"],
        "slow_p99_ms": slow["p99_ms"],
        "base_rss_growth_mib": base["rss_growth_mib"],
        "slow_rss_growth_mib": slow["rss_growth_mib"],
        "slow_closes": slow["slow_closes"],
        "base_slow_closes": base["slow_closes"],
        "stalled": plan.slow_stalled,
        "base": base,
        "slow": slow,
    }
    ctx.record("g-slow", kind, figures)


def rows(plan: Plan) -> list[Row]:
    k = plan.slow_stalled
    g = (
        f"(g) {plan.slow_members} members, {SLOW_RATE:.0f} msgs/s of 2 KB (REST), "
        f"max_outbound_bytes {SLOW_OUTBOUND_BYTES // 1024} KiB"
    )
    return [
        Row(
            "g-slow",
            "slow_p99_ms",
            f"{g}: latency of the others p50/p99, ms, no slow clients / with {k} slow clients",
            "{:.2f}",
            higher_is_better=False,
            shown=("base_p50_ms", "base_p99_ms", "slow_p50_ms", "slow_p99_ms"),
        ),
        Row(
            "g-slow",
            "slow_closes",
            f"(g) slow clients closed (of {k})",
            "{:,.0f}",
            f"= {k}",
            eq(k),
        ),
        Row(
            "g-slow",
            "slow_rss_growth_mib",
            f"(g) server RSS growth, MiB, no slow clients / with {k} slow clients",
            "{:.1f}",
            higher_is_better=False,
            shown=("base_rss_growth_mib", "slow_rss_growth_mib"),
        ),
    ]
