"""(i) memory per reliable connection holding unacknowledged messages (hubbub only).

``plan.unacked_connections`` members of one group on ``json.reliable.webpubsub.azure.v1``
that read everything and never ack, so the service keeps every message it sent them (it must,
for a recovery). VmRSS is read before they connect, after they connect (an idle reliable
connection) and after ``plan.unacked_messages`` REST publishes of 100 B to the group have
reached every member (their sequence ids checked as in (h)).
"""

from __future__ import annotations

import asyncio
import time

from harness.config import RELIABLE_SUBPROTOCOL, Plan
from harness.processes import LoadProcess
from harness.results import Row
from harness.scenarios.common import (
    Context,
    close_all,
    progress,
    start_members,
    start_publisher,
    verify_members,
)
from harness.scenarios.idle import idle_target
from harness.servers import ServerProcess

SIZE = 100
DELIVERY_LIMIT_S = 120.0


async def run(ctx: Context, kind: str) -> None:
    if kind != "hubbub":
        return  # the references have no reliable protocol
    plan, children = ctx.plan, ctx.children
    n = idle_target(plan.unacked_connections)
    messages = plan.unacked_messages
    server = await ServerProcess.start(children, kind)
    members: list[LoadProcess] = []
    pub: LoadProcess | None = None
    try:
        await asyncio.sleep(1.0)
        rss0 = server.rss_kib()
        members = await start_members(
            children, server, n, per_group=n, subprotocol=RELIABLE_SUBPROTOCOL, ack_seconds=0
        )
        await asyncio.sleep(2.0)
        rss1 = server.rss_kib()
        pub = await start_publisher(
            children, server, 0, mode="rest-group", targets=["g0"], size=SIZE, concurrency=4
        )
        for m in members:
            await m.call("reset")
        t0 = time.monotonic()
        await pub.call("run", duration=DELIVERY_LIMIT_S, limit=messages)
        checks = await verify_members(members, messages)
        while checks["exact_receivers"] < n and time.monotonic() - t0 < DELIVERY_LIMIT_S:
            await asyncio.sleep(0.5)
            checks = await verify_members(members, messages)
        await asyncio.sleep(2.0)
        rss2 = server.rss_kib()
        stats = await asyncio.gather(*(m.call("stats") for m in members))
        held = sum(s["opened"] for s in stats) - sum(s["lost"] for s in stats)
    finally:
        if pub is not None:
            await pub.quit(children)
        await close_all(children, members)
        await children.stop(server.proc)
    figures = {
        "connections": held,
        "messages": messages,
        "size": SIZE,
        "rss_before_kib": rss0,
        "rss_connected_kib": rss1,
        "rss_unacked_kib": rss2,
        "kib_per_idle_conn": (rss1 - rss0) / max(n, 1),
        "kib_per_conn": (rss2 - rss0) / max(n, 1),
        "unacked_bytes_per_message": (rss2 - rss1) * 1024 / max(n * messages, 1),
        "capped_by_fd_limit": n < plan.unacked_connections,
        **checks,
    }
    ctx.record("i-unacked", kind, figures)
    progress("i unacked", kind, figures)


def rows(plan: Plan) -> list[Row]:
    n = idle_target(plan.unacked_connections)
    m = plan.unacked_messages
    at = f"(i) {n:,} json.reliable connections"
    return [
        Row("i-unacked", "kib_per_idle_conn", f"{at}, idle: KiB/conn", "{:.2f}"),
        Row(
            "i-unacked",
            "kib_per_conn",
            f"{at}, each holding {m} unacked 100 B messages: KiB/conn",
            "{:.2f}",
            higher_is_better=False,
        ),
        Row(
            "i-unacked",
            "unacked_bytes_per_message",
            f"{at}: server memory per unacked message, bytes",
            "{:,.0f}",
            higher_is_better=False,
        ),
        Row(
            "i-unacked",
            "exact_receivers",
            f"{at}: connections that got all {m} messages in order / sequence errors",
            "{:,.0f}",
            shown=("exact_receivers", "sequence_errors"),
        ),
    ]
