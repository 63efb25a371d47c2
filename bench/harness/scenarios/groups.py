"""(b) 1,000 groups of 10 members, REST sends round-robin over the groups."""

from __future__ import annotations

from harness.config import REST_CONCURRENCY, Plan
from harness.measure import cpu_us_per_call, measure
from harness.profiling import profile_server
from harness.results import Row, le
from harness.scenarios.common import Context, close_all, progress, start_members, start_publisher
from harness.servers import ServerProcess


async def run(ctx: Context, kind: str) -> None:
    plan, children = ctx.plan, ctx.children
    server = await ServerProcess.start(children, kind)
    members = await start_members(
        children, server, plan.groups * plan.group_size, per_group=plan.group_size
    )
    try:
        pub = await start_publisher(
            children,
            server,
            0,
            mode="rest-group",
            size=100,
            targets=[f"g{i}" for i in range(plan.groups)],
            concurrency=REST_CONCURRENCY,
        )
        try:
            figures = await measure(plan, server, members, [pub], fan=plan.group_size)
            figures["server_cpu_us_per_call"] = cpu_us_per_call(figures)
            if ctx.profile and kind == "hubbub":
                await profile_server(plan, server, [pub], "b-groups")
        finally:
            await pub.quit(children)
        ctx.record("b-groups", kind, figures)
        progress("b 1000x10", kind, figures)
    finally:
        await close_all(children, members)
        await children.stop(server.proc)


def rows(plan: Plan) -> list[Row]:
    return [
        Row("b-groups", "deliveries_per_s", "(b) 1,000 groups x 10, REST: deliveries/s", "{:,.0f}"),
        Row("b-groups", "calls_per_s", "(b) 1,000 groups x 10, REST: sends/s", "{:,.0f}"),
        Row(
            "b-groups",
            "deliveries_per_cpu_s",
            "(b) 1,000 groups x 10, REST: deliveries / server CPU-s",
            "{:,.0f}",
        ),
        Row(
            "b-groups",
            "server_cpu_us_per_call",
            "(b) 1,000 groups x 10, REST: server CPU per publish (10 members), us",
            "{:,.0f}",
            "<= 90 us",
            le(90.0),
            higher_is_better=False,
        ),
    ]
