"""(f) plain WebSocket echo: through an upstream handler (hubbub), in-process (references)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from harness.config import HUB, OUT, PUBLISHER_NICE, Plan
from harness.measure import percentile
from harness.processes import LoadProcess
from harness.profiling import profile_server
from harness.results import Results, Row
from harness.scenarios.common import Context, progress
from harness.servers import ServerProcess, free_port, server_spec

ECHO_SIZE = 100

ECHO_NOTE = (
    "(f) is not like for like: hubbub echoes through an upstream event handler (each frame is a "
    "`message` user event POSTed to a separate aiohttp handler process on the load CPU, whose "
    "answer is sent back), while Node ws and uWS echo in-process, no upstream hop (the frame "
    "is sent straight back by the reference server itself). The ratios in the (f) rows "
    "therefore include the cost of the upstream hop."
)


def echo_config(handler_port: int) -> Path:
    """hubbub's config for (f): the bench hub hands every user event to the echo handler."""
    path = OUT / "hubbub-echo.toml"
    path.write_text(
        f"[hubs.{HUB}]\n\n"
        f"[[hubs.{HUB}.event_handlers]]\n"
        f'url_template = "http://127.0.0.1:{handler_port}/{{event}}"\n'
        'user_event_pattern = "*"\n'
        "system_events = []\n"
    )
    return path


async def run(ctx: Context, kind: str) -> None:
    """``plan.echo_clients`` plain connections each keep one 100 B text frame in flight (closed
    loop). For hubbub every frame is a ``message`` user event POSTed to the handler process
    (pinned to the load CPU), whose answer is the frame sent back.
    """
    plan, children = ctx.plan, ctx.children
    handler: LoadProcess | None = None
    config = None
    if kind == "hubbub":
        port = free_port()
        handler = await LoadProcess.start(
            children, {"role": "handler", "port": port}, f"handler-{kind}"
        )
        await handler.call("prepare", limit_s=30)
        config = echo_config(port)
    server = await ServerProcess.start(children, kind, config)
    spec = {
        "role": "echo",
        "server": server_spec(server),
        "source_ip": "127.0.0.2",
        "count": plan.echo_clients,
        "size": ECHO_SIZE,
        "nice": PUBLISHER_NICE,
    }
    echo = await LoadProcess.start(children, spec, f"echo-{kind}")
    load = [echo] if handler is None else [echo, handler]
    try:
        reply = await echo.call("connect", limit_s=120)
        if reply["opened"] < plan.echo_clients:
            raise RuntimeError(
                f"{kind}: only {reply['opened']} of {plan.echo_clients} echo connections "
                f"opened: {reply.get('error')}"
            )

        async def snap() -> tuple[float, float, dict[str, Any], list[dict[str, Any]]]:
            t0, cpu0 = time.monotonic(), server.cpu_seconds()
            stats = await asyncio.gather(*(p.call("stats", limit_s=30) for p in load))
            t1, cpu1 = time.monotonic(), server.cpu_seconds()
            return (t0 + t1) / 2, (cpu0 + cpu1) / 2, stats[0], stats

        run = asyncio.ensure_future(
            echo.call(
                "run",
                limit_s=plan.warmup + plan.measure + 60,
                duration=plan.warmup + plan.measure + 0.5,
            )
        )
        await asyncio.sleep(plan.warmup)
        t0, cpu0, e0, all0 = await snap()
        await echo.call("latencies")  # drop the warm-up's round trips
        await asyncio.sleep(plan.measure)
        t1, cpu1, e1, all1 = await snap()
        lat: list[int] = sorted((await echo.call("latencies"))["latencies_us"])
        final = await run
        if ctx.profile and kind == "hubbub":
            await profile_server(plan, server, [echo], "f-echo")
    finally:
        await echo.quit(children)
        if handler is not None:
            await handler.quit(children)
        await children.stop(server.proc)
    dt, cpu = t1 - t0, cpu1 - cpu0
    echoes = e1["frames"] - e0["frames"]
    figures: dict[str, Any] = {
        "clients": plan.echo_clients,
        "echoes_per_s": echoes / dt,
        "echoes_per_cpu_s": echoes / cpu if cpu > 0 else 0.0,
        "server_cpu_util": cpu / dt,
        "loadgen_cpu_util": (sum(s["cpu"] for s in all1) - sum(s["cpu"] for s in all0)) / dt,
        "samples": len(lat),
        "p50_ms": percentile(lat, 50) / 1000,
        "p99_ms": percentile(lat, 99) / 1000,
        "max_ms": (lat[-1] / 1000) if lat else float("nan"),
        "lost_connections": final["lost"],
        "delivered_fraction": final["frames"] / max(1, final["sent"]),
    }
    if handler is not None:
        figures["upstream_calls_per_s"] = (all1[1]["requests"] - all0[1]["requests"]) / dt
        figures["handler_cpu_util"] = (all1[1]["cpu"] - all0[1]["cpu"]) / dt
    ctx.record("f-echo", kind, figures)
    progress("f echo", kind, figures)


def rows(plan: Plan) -> list[Row]:
    f = (
        f"(f) plain WS echo, {plan.echo_clients} clients, 100 B (hubbub via upstream handler; "
        "refs: echo in-process, no upstream hop)"
    )
    return [
        Row("f-echo", "echoes_per_s", f"{f}: echoes/s", "{:,.0f}"),
        Row("f-echo", "echoes_per_cpu_s", f"{f}: echoes / server CPU-s", "{:,.0f}"),
        Row("f-echo", "server_cpu_util", f"{f}: server CPU, %", "{:.0%}"),
        Row("f-echo", "p50_ms", f"{f}: round trip p50, ms", "{:.2f}", higher_is_better=False),
        Row("f-echo", "p99_ms", f"{f}: round trip p99, ms", "{:.2f}", higher_is_better=False),
    ]


def notes(plan: Plan, results: Results) -> list[str]:
    return [ECHO_NOTE] if "f-echo" in results else []
