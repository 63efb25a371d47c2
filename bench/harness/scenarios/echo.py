"""(f) plain WebSocket echo: through an upstream handler (hubbub), in-process (references)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Protocol

from harness import measure
from harness.config import BENCH, HUB, LOAD_CPU, OUT, PUBLISHER_NICE, REPO, Plan
from harness.processes import Children, LoadProcess, log_file, pin
from harness.profiling import profile_server
from harness.results import Results, Row, ge, le
from harness.scenarios.common import Context, progress
from harness.servers import ServerProcess, ServerUnavailable, free_port, server_spec

ECHO_SIZE = 100
ECHO_RATE = 8_000
"""Echoes/s of the paced (open-loop) window: the target rate."""

ECHO_NOTE = (
    "(f) is not like for like: hubbub echoes through an upstream event handler (each frame is a "
    "`message` user event POSTed to a separate aiohttp handler process on the load CPU, whose "
    "answer is sent back), while Node ws and uWS echo in-process, no upstream hop (the frame "
    "is sent straight back by the reference server itself). The ratios in the (f) rows "
    "therefore include the cost of the upstream hop."
)


def echo_config(url_template: str, name: str = "hubbub-echo.toml") -> Path:
    """hubbub's config for (f): the bench hub hands every user event to the echo handler."""
    path = OUT / name
    path.write_text(
        f"[hubs.{HUB}]\n\n"
        f"[[hubs.{HUB}.event_handlers]]\n"
        f'url_template = "{url_template}"\n'
        'user_event_pattern = "*"\n'
        "system_events = []\n"
    )
    return path


class Handler(Protocol):
    """An upstream event handler on the load CPU: its request count and CPU time so far."""

    async def stats(self) -> dict[str, Any]: ...

    async def quit(self, children: Children) -> None: ...


class AiohttpHandler:
    """``loadgen.py``'s ``handler`` role: a bare aiohttp app that echoes every POST body."""

    def __init__(self, proc: LoadProcess) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, children: Children, port: int) -> AiohttpHandler:
        proc = await LoadProcess.start(
            children, {"role": "handler", "port": port}, "handler-hubbub"
        )
        await proc.call("prepare", limit_s=30)
        return cls(proc)

    async def stats(self) -> dict[str, Any]:
        return await self.proc.call("stats", limit_s=30)

    async def quit(self, children: Children) -> None:
        await self.proc.quit(children)


class ExpressHandler:
    """``refs/express_handler.mjs``: express with ``@azure/web-pubsub-express``, echoing."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    @classmethod
    async def start(cls, children: Children, port: int) -> ExpressHandler:
        script = BENCH / "refs" / "express_handler.mjs"
        with log_file("handler-express") as log:
            proc = await asyncio.create_subprocess_exec(
                "node",
                str(script),
                str(port),
                HUB,
                cwd=REPO,
                stdout=log,
                stderr=log,
                preexec_fn=pin(LOAD_CPU),
            )
        children.add(proc)
        handler = cls(proc, port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.returncode is None:
            try:
                await handler.stats()
                return handler
            except (OSError, ValueError, IndexError):
                await asyncio.sleep(0.1)
        await children.stop(proc)
        raise ServerUnavailable(
            "the express handler did not start (npm ci --prefix bench/refs?): see out/logs"
        )

    async def stats(self) -> dict[str, Any]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        return {"requests": body["requests"], "cpu": measure.cpu_seconds(self.proc.pid)}

    async def quit(self, children: Children) -> None:
        await children.stop(self.proc)


async def run(ctx: Context, kind: str) -> None:
    """(f) for every server kind; for hubbub also through the express SDK's handler."""
    await echo(ctx, kind, "aiohttp" if kind == "hubbub" else None)
    if kind == "hubbub":
        await echo(ctx, kind, "express")


async def echo(ctx: Context, kind: str, handler_kind: str | None) -> None:
    """``plan.echo_clients`` plain connections each keep one 100 B text frame in flight (closed
    loop). For hubbub every frame is a ``message`` user event POSTed to the handler process
    (pinned to the load CPU), whose answer is the frame sent back.
    """
    plan, children = ctx.plan, ctx.children
    handler: Handler | None = None
    config = None
    if handler_kind == "aiohttp":
        port = free_port()
        handler = await AiohttpHandler.start(children, port)
        config = echo_config(f"http://127.0.0.1:{port}/{{event}}")
    elif handler_kind == "express":
        port = free_port()
        handler = await ExpressHandler.start(children, port)
        config = echo_config(
            f"http://127.0.0.1:{port}/eventhandler/{{event}}", "hubbub-echo-express.toml"
        )
    key = "f-echo-express" if handler_kind == "express" else "f-echo"
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
    try:
        reply = await echo.call("connect", limit_s=120)
        if reply["opened"] < plan.echo_clients:
            raise RuntimeError(
                f"{kind}: only {reply['opened']} of {plan.echo_clients} echo connections "
                f"opened: {reply.get('error')}"
            )

        figures = await _window(ctx, server, echo, handler, handler_kind, None)
        ctx.record(key, kind, figures)
        progress("f echo express" if handler_kind == "express" else "f echo", kind, figures)
        if ctx.profile and kind == "hubbub":
            await profile_server(plan, server, [echo], key)
        if handler_kind is not None:
            # The same at a set rate, open loop: the round trip without the closed loop's queue
            # (200 frames always in flight make p50 = 200 / rate at saturation).
            # The express handler (on the load CPU, beside the clients) saturates below the
            # target rate: it is paced at half its own saturation rate.
            rate = ECHO_RATE if handler_kind == "aiohttp" else int(figures["echoes_per_s"] / 2)
            paced = await _window(ctx, server, echo, handler, handler_kind, rate)
            ctx.record(f"{key}-paced", kind, paced)
            progress(f"f echo {handler_kind} at {rate:,}/s", kind, paced)
    finally:
        await echo.quit(children)
        if handler is not None:
            await handler.quit(children)
        await children.stop(server.proc)


async def _window(
    ctx: Context,
    server: ServerProcess,
    echo: LoadProcess,
    handler: Handler | None,
    handler_kind: str | None,
    rate: int | None,
) -> dict[str, Any]:
    """One warm-up and measured window: closed loop, or open loop at ``rate`` frames/s."""
    plan = ctx.plan

    async def snap() -> tuple[float, float, dict[str, Any], list[dict[str, Any]]]:
        t0, cpu0 = time.monotonic(), server.cpu_seconds()
        waits = [echo.call("stats", limit_s=30)]
        if handler is not None:
            waits.append(handler.stats())
        stats = list(await asyncio.gather(*waits))
        t1, cpu1 = time.monotonic(), server.cpu_seconds()
        return (t0 + t1) / 2, (cpu0 + cpu1) / 2, stats[0], stats

    run = asyncio.ensure_future(
        echo.call(
            "run",
            limit_s=plan.warmup + plan.measure + 60,
            duration=plan.warmup + plan.measure + 0.5,
            rate=rate,
        )
    )
    await asyncio.sleep(plan.warmup)
    t0, cpu0, e0, all0 = await snap()
    await echo.call("latencies")  # drop the warm-up's round trips
    await asyncio.sleep(plan.measure)
    t1, cpu1, e1, all1 = await snap()
    lat: list[int] = sorted((await echo.call("latencies"))["latencies_us"])
    final = await run
    dt, cpu = t1 - t0, cpu1 - cpu0
    echoes = e1["frames"] - e0["frames"]
    figures: dict[str, Any] = {
        "clients": plan.echo_clients,
        "rate": rate,
        "echoes_per_s": echoes / dt,
        "echoes_per_cpu_s": echoes / cpu if cpu > 0 else 0.0,
        "server_cpu_util": cpu / dt,
        "loadgen_cpu_util": (sum(s["cpu"] for s in all1) - sum(s["cpu"] for s in all0)) / dt,
        "samples": len(lat),
        "p50_ms": measure.percentile(lat, 50) / 1000,
        "p99_ms": measure.percentile(lat, 99) / 1000,
        "max_ms": (lat[-1] / 1000) if lat else float("nan"),
        "lost_connections": final["lost"],
        "delivered_fraction": final["frames"] / max(1, final["sent"]),
    }
    if handler is not None:
        figures["upstream_calls_per_s"] = (all1[1]["requests"] - all0[1]["requests"]) / dt
        figures["handler_cpu_util"] = (all1[1]["cpu"] - all0[1]["cpu"]) / dt
    if handler_kind is not None:
        figures["handler"] = handler_kind
    return figures


def rows(plan: Plan) -> list[Row]:
    f = (
        f"(f) plain WS echo, {plan.echo_clients} clients, 100 B (hubbub via upstream handler; "
        "refs: echo in-process, no upstream hop)"
    )
    x = (
        f"(f) plain WS echo, {plan.echo_clients} clients, 100 B, hubbub via an upstream handler "
        "written with @azure/web-pubsub-express (express 5)"
    )
    p = f"(f) the same, {ECHO_RATE:,} frames/s offered (open loop)"
    xp = "(f) express handler, half its saturation rate offered (open loop)"
    return [
        Row(
            "f-echo",
            "echoes_per_s",
            f"{f}: echoes/s",
            "{:,.0f}",
            ">= 8,000 (hubbub, one core)",
            ge("hubbub", 8_000),
        ),
        Row("f-echo", "echoes_per_cpu_s", f"{f}: echoes / server CPU-s", "{:,.0f}"),
        Row("f-echo", "server_cpu_util", f"{f}: server CPU, %", "{:.0%}"),
        Row("f-echo", "p50_ms", f"{f}: round trip p50, ms", "{:.2f}", higher_is_better=False),
        Row(
            "f-echo",
            "p99_ms",
            f"{f}: round trip p99 at saturation (closed loop), ms",
            "{:.2f}",
            higher_is_better=False,
        ),
        Row("f-echo-paced", "echoes_per_s", f"{p}: echoes/s", "{:,.0f}"),
        Row("f-echo-paced", "server_cpu_util", f"{p}: server CPU, %", "{:.0%}"),
        Row(
            "f-echo-paced",
            "p99_ms",
            f"{p}: round trip p50 / p99, ms",
            "{:.2f}",
            "p99 <= 20 ms",
            le(20.0),
            higher_is_better=False,
            shown=("p50_ms", "p99_ms"),
        ),
        Row("f-echo-express", "echoes_per_s", f"{x}: echoes/s", "{:,.0f}"),
        Row("f-echo-express", "echoes_per_cpu_s", f"{x}: echoes / server CPU-s", "{:,.0f}"),
        Row("f-echo-express", "handler_cpu_util", f"{x}: handler CPU, %", "{:.0%}"),
        Row(
            "f-echo-express",
            "p99_ms",
            f"{x}: round trip p50 / p99 at saturation (closed loop), ms",
            "{:.2f}",
            higher_is_better=False,
            shown=("p50_ms", "p99_ms"),
        ),
        Row("f-echo-express-paced", "echoes_per_s", f"{xp}: echoes/s", "{:,.0f}"),
        Row(
            "f-echo-express-paced",
            "p99_ms",
            f"{xp}: round trip p50 / p99, ms",
            "{:.2f}",
            higher_is_better=False,
            shown=("p50_ms", "p99_ms"),
        ),
    ]


ECHO_PACED_NOTE = (
    f"(f) closed loop: every client keeps one frame in flight, so at saturation a round trip "
    f"waits behind the other clients' frames (p50 is about clients / rate): that window gives "
    f"the rate. The open-loop window then offers {ECHO_RATE:,} frames/s in all (the express "
    f"handler, which saturates below that on the load CPU, half its own saturation rate), the "
    f"clients in turn, and its p50 / p99 is the round trip at that rate."
)


def notes(plan: Plan, results: Results) -> list[str]:
    return [ECHO_NOTE, ECHO_PACED_NOTE] if "f-echo" in results else []
