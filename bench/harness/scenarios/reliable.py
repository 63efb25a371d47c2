"""(h) fan-out to members on ``json.reliable.webpubsub.azure.v1``, against json in the same run.

One group of 1,000 members, REST publishes of 100 B and 2 KB (32 requests in flight, at most
``plan.reliable_rate_cap`` messages per second). The members behave as the client SDKs do:
every message's ``sequenceId`` must be one above the last (a gap or a repeat is an error),
and each member acks its highest id once a second (``{"type":"sequenceAck",...}``). After
each run every member's count must equal the number of messages published (no loss, no
duplicate). The same run with members on ``json.webpubsub.azure.v1`` (counted exactly too)
gives the json figure the reliable one is compared with; the references, which have no
reliable protocol, run the json part only.

Why a cap: a reliable connection may hold 1,000 unacknowledged messages; members that ack once
a second must therefore receive fewer than about 1,000 messages a second, or the service closes
them (as it would close an SDK client). 500 msgs/s leaves room for late acks.
"""

from __future__ import annotations

from typing import Any

from harness.config import FANOUT_CONCURRENCY, JSON_SUBPROTOCOL, RELIABLE_SUBPROTOCOL, Plan
from harness.measure import measure
from harness.processes import LoadProcess
from harness.profiling import profile_server
from harness.results import Results, Row, eq, ge
from harness.scenarios.common import (
    Context,
    close_all,
    progress,
    start_members,
    start_publisher,
    verify_members,
)
from harness.servers import ServerProcess

SIZES = (100, 2048)
ACK_SECONDS = 1.0


async def fanout(ctx: Context, kind: str, subprotocol: str) -> dict[int, dict[str, Any]]:
    """Both sizes on one fresh server whose members speak ``subprotocol``; figures by size."""
    plan, children = ctx.plan, ctx.children
    reliable = subprotocol == RELIABLE_SUBPROTOCOL
    label = "reliable" if reliable else "json"
    n = plan.reliable_members
    server = await ServerProcess.start(children, kind)
    members = await start_members(
        children,
        server,
        n,
        per_group=n,
        subprotocol=subprotocol,
        ack_seconds=ACK_SECONDS if reliable else None,
    )
    out: dict[int, dict[str, Any]] = {}
    try:
        for size in SIZES:
            pub: LoadProcess = await start_publisher(
                children,
                server,
                0,
                mode="rest-group",
                targets=["g0"],
                size=size,
                concurrency=FANOUT_CONCURRENCY,
            )
            try:
                for m in members:
                    await m.call("reset")
                ok0 = (await pub.call("stats"))["ok"]
                figures = await measure(
                    plan, server, members, [pub], fan=n, rate=plan.reliable_rate_cap
                )
                ok1 = (await pub.call("stats"))["ok"]
                figures.update(await verify_members(members, ok1 - ok0))
                figures["subprotocol"] = subprotocol
                figures["rate_cap_msgs_per_s"] = plan.reliable_rate_cap
                if ctx.profile and kind == "hubbub":
                    await profile_server(
                        plan, server, [pub], f"h-{label}-{size}", rate=plan.reliable_rate_cap
                    )
            finally:
                await pub.quit(children)
            out[size] = figures
            progress(f"h {label} {size} B", kind, figures)
    finally:
        await close_all(children, members)
        await children.stop(server.proc)
    return out


async def run(ctx: Context, kind: str) -> None:
    plain = await fanout(ctx, kind, JSON_SUBPROTOCOL)
    for size, figures in plain.items():
        ctx.record(f"h-json-{size}", kind, figures)
    if kind != "hubbub":
        return
    reliable = await fanout(ctx, kind, RELIABLE_SUBPROTOCOL)
    for size, figures in reliable.items():
        base = plain[size]
        figures["json_deliveries_per_cpu_s"] = base["deliveries_per_cpu_s"]
        figures["json_published_per_s"] = base["published_per_s"]
        if base["deliveries_per_cpu_s"]:
            figures["ratio_to_json"] = (
                figures["deliveries_per_cpu_s"] / base["deliveries_per_cpu_s"]
            )
        ctx.record(f"h-reliable-{size}", kind, figures)


def rows(plan: Plan) -> list[Row]:
    n = plan.reliable_members
    cap = f"REST <= {plan.reliable_rate_cap:,.0f} msgs/s"
    out = []
    for size in SIZES:
        b = "100 B" if size == 100 else "2 KB"
        out += [
            Row(
                f"h-json-{size}",
                "deliveries_per_cpu_s",
                f"(h) {n:,} json members, {b}, {cap}: deliveries / server CPU-s",
                "{:,.0f}",
            ),
            Row(
                f"h-reliable-{size}",
                "deliveries_per_cpu_s",
                f"(h) {n:,} json.reliable members (ids checked, acks every 1 s), {b}, {cap}: "
                "deliveries / server CPU-s",
                "{:,.0f}",
            ),
            Row(
                f"h-reliable-{size}",
                "ratio_to_json",
                f"(h) json.reliable / json per server CPU-s, {b} (hubbub, same run)",
                "{:.2f}x",
                ">= 0.6x",
                ge("hubbub", 0.6),
            ),
            Row(
                f"h-reliable-{size}",
                "published_per_s",
                f"(h) {b}: publish rate reached, msgs/s, json / json.reliable",
                "{:,.0f}",
                shown=("json_published_per_s", "published_per_s"),
            ),
            Row(
                f"h-reliable-{size}",
                "exact_receivers",
                f"(h) {b}: json.reliable receivers with every message once, in order, "
                f"of {n:,} / sequence errors",
                "{:,.0f}",
                f"= {n:,} / 0",
                eq(n),
                shown=("exact_receivers", "sequence_errors"),
            ),
        ]
    return out


def notes(plan: Plan, results: Results) -> list[str]:
    if not any(k.startswith("h-") for k in results):
        return []
    return [
        "(h) runs the same publisher twice on hubbub, once to members on "
        "`json.webpubsub.azure.v1` and once to members on `json.reliable.webpubsub.azure.v1` "
        "that check every sequence id and ack once a second as the SDKs do; the ratio row "
        "compares the two per server CPU-second. The references have no reliable protocol: "
        "their (h) figures are the json part. Publishing is capped at "
        f"{plan.reliable_rate_cap:,.0f} msgs/s, below the 1,000 unacknowledged messages a "
        "reliable connection may hold between two acks a second apart."
    ]
