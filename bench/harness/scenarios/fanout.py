"""(a) one group of 1,000 members, REST and client publishers; (e) latency at half that rate."""

from __future__ import annotations

import asyncio
from typing import Any

from harness.config import (
    FANOUT_CONCURRENCY,
    LATENCY_PROBES,
    WORKER_CPUS,
    WORKERS_CPUS,
    Plan,
    fanout_window,
)
from harness.measure import measure, percentile
from harness.processes import LoadProcess
from harness.profiling import profile_server
from harness.results import Results, Row, ge, le, medians, ratio
from harness.scenarios.cluster import Cluster, RedisProcess
from harness.scenarios.common import Context, close_all, progress, start_members, start_publisher
from harness.servers import ServerProcess, WorkersProcess

FANOUT_VARIANTS = (("rest", 100), ("rest", 2048), ("ws", 100), ("ws", 2048))
WORKERS = 2
"""The worker processes of (e)'s second figure, ``hubbub serve --workers 2``."""
WORKERS_KEY = f"e-workers{WORKERS}"


async def run(ctx: Context, kind: str, want_a: bool, want_e: bool) -> None:
    """(a) one group of 1,000 members; (e) latency at half the measured maximum rate, and for
    hubbub the same again with ``--workers 2`` on Redis."""
    server = await ServerProcess.start(ctx.children, kind)
    try:
        await _fanout(ctx, kind, server, want_a, "e-latency" if want_e else None)
    finally:
        await ctx.children.stop(server.proc)
    if want_e and kind == "hubbub":
        await _latency_workers(ctx)


async def _latency_workers(ctx: Context) -> None:
    """(e) with ``hubbub serve --workers 2 --redis-url``: its own maximum REST 100 B rate, then
    the latency at half of it. The supervisor and workers may run on both CPUs (the scheduler
    places them; CPU 1 is shared with the load generators) unless :data:`WORKER_CPUS` pins
    each worker, redis-server on CPU 1 (the harness's, as in (j)); server CPU is the
    workers', the supervisor's and Redis's."""
    redis = await RedisProcess.start(ctx.children)
    try:
        node = await WorkersProcess.start_workers(
            ctx.children,
            WORKERS,
            redis.url,
            cpu=WORKERS_CPUS,
            worker_cpus=WORKER_CPUS,
            name="server-hubbub-workers",
        )
    except BaseException:
        await ctx.children.stop(redis.proc)
        raise
    cluster = Cluster([node], redis)
    try:
        await _fanout(ctx, "hubbub", cluster, False, WORKERS_KEY)
    finally:
        await cluster.stop(ctx.children)


async def _fanout(
    ctx: Context, kind: str, server: ServerProcess, want_a: bool, e_key: str | None
) -> None:
    """(a)'s variants (only REST 100 B without ``want_a``), then with ``e_key`` the latency at
    half of REST 100 B's rate, recorded under ``e_key`` with that window's figures as
    ``max_*``."""
    plan, children = ctx.plan, ctx.children
    profile = ctx.profile and e_key != WORKERS_KEY  # py-spy would sample the supervisor
    members_n = plan.fanout_members
    members = await start_members(
        children, server, members_n - 1, per_group=members_n, probes=LATENCY_PROBES
    )
    try:
        rest100: dict[str, Any] | None = None
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
                rest100 = figures
            if want_a:
                ctx.record(f"a-{path}-{size}", kind, figures)
            progress(f"a {path} {size} B", kind, figures)
        if e_key and rest100 and rest100["published_per_s"]:
            rate = rest100["published_per_s"] / 2
            figures = await _latency(ctx, kind, server, members, rate, profile)
            figures.update({f"max_{k}": v for k, v in rest100.items()})
            figures.update(server.placement())
            ctx.record(e_key, kind, figures)
            progress(f"e latency{'' if e_key == 'e-latency' else ' workers'}", kind, figures)
    finally:
        await close_all(children, members)


async def _latency(
    ctx: Context,
    kind: str,
    server: ServerProcess,
    members: list[LoadProcess],
    rate: float,
    profile: bool,
) -> dict[str, Any]:
    """p50/p99 of the probe members over a window of REST 100 B sends paced at ``rate``."""
    plan, children = ctx.plan, ctx.children
    members_n = plan.fanout_members
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
    return figures


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
    w = f"(e) hubbub --workers {WORKERS}"
    return [
        Row(
            "e-latency",
            "rate_msgs_per_s",
            "(e) publish rate used (half of max, REST 100 B) / max, msgs/s",
            "{:,.0f}",
            shown=("rate_msgs_per_s", "max_published_per_s"),
        ),
        Row(
            "e-latency",
            "deliveries_per_cpu_s",
            "(e) deliveries / server CPU-s at that rate",
            "{:,.0f}",
        ),
        Row(
            "e-latency",
            "server_cpu_util",
            "(e) server CPU at that rate, share of one core",
            "{:.0%}",
            higher_is_better=False,
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
        Row(
            WORKERS_KEY,
            "rate_msgs_per_s",
            f"{w} on Redis: publish rate used (half of its own max) / max, msgs/s",
            "{:,.0f}",
            shown=("rate_msgs_per_s", "max_published_per_s"),
        ),
        Row(
            WORKERS_KEY,
            "nodes_cpu_util",
            f"{w}: CPU of the workers + supervisor / of Redis at that rate, share of one core",
            "{:.0%}",
            higher_is_better=False,
            shown=("nodes_cpu_util", "redis_cpu_util"),
        ),
        Row(
            WORKERS_KEY,
            "p50_ms",
            f"{w}: end-to-end latency p50, ms",
            "{:.2f}",
            higher_is_better=False,
        ),
        Row(
            WORKERS_KEY,
            "p99_ms",
            f"{w}: end-to-end latency p99, ms",
            "{:.2f}",
            "<= 10 ms",
            le(10.0),
            higher_is_better=False,
        ),
    ]


def notes_e(plan: Plan, results: Results) -> list[str]:
    if WORKERS_KEY not in results:
        return []
    if WORKER_CPUS:
        pinned = ", ".join(f"worker {i + 1} on CPU {c}" for i, c in enumerate(WORKER_CPUS))
        placement = f"each worker is pinned (HUBBUB_BENCH_WORKER_CPUS: {pinned})"
    else:
        placement = (
            "the supervisor and the workers may run on both (not pinned one by one; the "
            "scheduler places them)"
        )
    return [
        f"(e) hubbub --workers {WORKERS} runs in the same invocation as the one-process "
        f"figure, on a fresh `hubbub serve --workers {WORKERS} --redis-url` and a fresh "
        "redis-server: its own maximum REST 100 B rate to the group (as (a)), then the "
        f"latency at half of it. The machine has two cores: {placement}, and they share "
        "CPU 1 with the load generators, the harness and redis-server (on CPU 1, as in (j)). "
        f"This understates what {WORKERS} dedicated cores give. Its server CPU is the "
        "workers' and the supervisor's, Redis's separately (per worker in the JSON, with the "
        "open files of each worker, which show how the kernel spread the connections)."
        + _busy_note(results)
    ]


def _busy_note(results: Results) -> str:
    """How full both CPUs were in the ``--workers`` latency window (medians)."""
    m = medians(results)[WORKERS_KEY].get("hubbub", {})
    if "server_cpu_util" not in m or "loadgen_cpu_util" not in m:
        return ""
    server, load = m["server_cpu_util"], m["loadgen_cpu_util"]
    return (
        f" At its latency rate the workers, supervisor and Redis used {server:.0%} of a core "
        f"and the load generators {load:.0%}: {(server + load) / 2:.0%} of the two cores."
    )
