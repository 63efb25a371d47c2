"""(a) one group of 1,000 members, REST and client publishers; (e) latency at half that rate."""

from __future__ import annotations

import asyncio

from harness.config import FANOUT_CONCURRENCY, LATENCY_PROBES, Plan, fanout_window
from harness.measure import measure, percentile
from harness.profiling import profile_server
from harness.results import Row, ge, le, ratio
from harness.scenarios.common import Context, close_all, progress, start_members, start_publisher
from harness.servers import ServerProcess

FANOUT_VARIANTS = (("rest", 100), ("rest", 2048), ("ws", 100), ("ws", 2048))


async def run(ctx: Context, kind: str, want_a: bool, want_e: bool) -> None:
    """(a) one group of 1,000 members; (e) latency at half the measured maximum rate."""
    plan, children = ctx.plan, ctx.children
    profile = ctx.profile
    server = await ServerProcess.start(children, kind)
    members_n = plan.fanout_members
    members = await start_members(
        children, server, members_n - 1, per_group=members_n, probes=LATENCY_PROBES
    )
    try:
        rest100: float | None = None
        variants = FANOUT_VARIANTS if want_a else (("rest", 100),)
        for path, size in variants:
            mode = "rest-group" if path == "rest" else "ws-group"
            pub = await start_publisher(
                children,
                server,
                0,
                mode=mode,
                targets=["g0"],
                size=size,
                concurrency=FANOUT_CONCURRENCY,
                window=0 if path == "rest" else fanout_window(size),
                probe_group="g0",
            )
            try:
                figures = await measure(plan, server, members, [pub], fan=members_n)
                if profile and kind == "hubbub" and (path, size) == ("rest", 100):
                    await profile_server(plan, server, [pub], "a-rest-100")
            finally:
                await pub.quit(children)
            if path == "rest" and size == 100:
                rest100 = figures["published_per_s"]
            if want_a:
                ctx.record(f"a-{path}-{size}", kind, figures)
            progress(f"a {path} {size} B", kind, figures)
        if want_e and rest100:
            rate = rest100 / 2
            pub = await start_publisher(
                children,
                server,
                0,
                mode="rest-group",
                targets=["g0"],
                size=100,
                concurrency=16,
                window=0,
                probe_group="g0",
            )
            try:
                await asyncio.gather(*(m.call("probe", on=True) for m in members))
                await asyncio.gather(*(m.call("latencies") for m in members))
                figures = await measure(
                    plan,
                    server,
                    members,
                    [pub],
                    fan=members_n,
                    rate=rate,
                    duration=plan.latency_seconds,
                )
                lat: list[int] = []
                for reply in await asyncio.gather(*(m.call("latencies") for m in members)):
                    lat.extend(reply["latencies_us"])
                await asyncio.gather(*(m.call("probe", on=False) for m in members))
                if profile and kind == "hubbub":
                    await profile_server(plan, server, [pub], "e-latency", rate=rate)
            finally:
                await pub.quit(children)
            lat.sort()
            figures.update(
                rate_msgs_per_s=rate,
                samples=len(lat),
                p50_ms=percentile(lat, 50) / 1000,
                p99_ms=percentile(lat, 99) / 1000,
                max_ms=(lat[-1] / 1000) if lat else float("nan"),
            )
            ctx.record("e-latency", kind, figures)
            progress("e latency", kind, figures)
    finally:
        await close_all(children, members)
        await children.stop(server.proc)


def rows_a(plan: Plan) -> list[Row]:
    return [
        Row(
            "a-rest-100",
            "deliveries_per_cpu_s",
            "(a) 1,000 members, 100 B, REST: deliveries / server CPU-s",
            "{:,.0f}",
            ">= 1,000,000; >= 8x Node ws; >= 0.5x uWS",
            ge("hubbub", 1e6),
            extra_checks=[ratio("node", 8), ratio("uws", 0.5)],
        ),
        Row(
            "a-rest-100",
            "deliveries_per_s",
            "(a) 1,000 members, 100 B, REST: deliveries/s",
            "{:,.0f}",
        ),
        Row(
            "a-rest-2048",
            "deliveries_per_s",
            "(a) 1,000 members, 2 KB, REST: deliveries/s",
            "{:,.0f}",
            ">= 300,000",
            ge("hubbub", 300_000),
        ),
        Row(
            "a-rest-2048",
            "deliveries_per_cpu_s",
            "(a) 1,000 members, 2 KB, REST: deliveries / server CPU-s",
            "{:,.0f}",
        ),
        Row(
            "a-ws-100",
            "deliveries_per_s",
            "(a) 1,000 members, 100 B, client sendToGroup: deliveries/s",
            "{:,.0f}",
        ),
        Row(
            "a-ws-100",
            "deliveries_per_cpu_s",
            "(a) 1,000 members, 100 B, client sendToGroup: deliveries / server CPU-s",
            "{:,.0f}",
        ),
        Row(
            "a-ws-2048",
            "deliveries_per_s",
            "(a) 1,000 members, 2 KB, client sendToGroup: deliveries/s",
            "{:,.0f}",
            ">= 300,000",
            ge("hubbub", 300_000),
        ),
    ]


def rows_e(plan: Plan) -> list[Row]:
    return [
        Row(
            "e-latency",
            "rate_msgs_per_s",
            "(e) publish rate used (half of max, REST 100 B), msgs/s",
            "{:,.0f}",
        ),
        Row(
            "e-latency",
            "deliveries_per_cpu_s",
            "(e) deliveries / server CPU-s at that rate",
            "{:,.0f}",
        ),
        Row(
            "e-latency",
            "p50_ms",
            "(e) end-to-end latency p50, ms",
            "{:.2f}",
            higher_is_better=False,
        ),
        Row(
            "e-latency",
            "p99_ms",
            "(e) end-to-end latency p99, ms",
            "{:.2f}",
            "<= 10 ms",
            le(10.0),
            higher_is_better=False,
        ),
    ]
