"""(c) REST send-to-user: 1,000 users with one connection each, two publisher processes."""

from __future__ import annotations

from collections.abc import Callable

from harness.config import REST_CONCURRENCY, Plan
from harness.measure import cpu_us_per_call, measure
from harness.processes import Children, LoadProcess
from harness.profiling import profile_server
from harness.results import Row, ge, ratio
from harness.scenarios.common import Context, close_all, progress, start_members, start_publisher
from harness.servers import ServerProcess


async def start_user_publishers(
    children: Children,
    node_of: Callable[[int], ServerProcess],
    users: int,
    pubs: list[LoadProcess],
) -> None:
    """Two REST send-to-user publishers into ``pubs``, publisher ``j`` to every other one of
    ``users`` users through ``node_of(j)``."""
    for j in range(2):
        pubs.append(
            await start_publisher(
                children,
                node_of(j),
                j,
                mode="rest-user",
                size=100,
                targets=[f"u{i}" for i in range(j, users, 2)],
                concurrency=REST_CONCURRENCY,
            )
        )


async def run(ctx: Context, kind: str) -> None:
    plan, children = ctx.plan, ctx.children
    server = await ServerProcess.start(children, kind)
    members = await start_members(children, server, plan.users, users=True)
    pubs: list[LoadProcess] = []
    try:
        await start_user_publishers(children, lambda j: server, plan.users, pubs)
        figures = await measure(plan, server, members, pubs, fan=1)
        figures["server_cpu_us_per_call"] = cpu_us_per_call(figures)
        if ctx.profile and kind == "hubbub":
            await profile_server(plan, server, pubs, "c-send-to-user")
        ctx.record("c-users", kind, figures)
        progress("c send-to-user", kind, figures)
    finally:
        await close_all(children, pubs)
        await close_all(children, members)
        await children.stop(server.proc)


def rows(plan: Plan) -> list[Row]:
    return [
        Row(
            "c-users",
            "calls_per_s",
            "(c) REST send-to-user: calls/s",
            "{:,.0f}",
            ">= 18,000; >= 1.3x uWS",
            ge("hubbub", 18_000),
            extra_checks=[ratio("uws", 1.3)],
        ),
        Row(
            "c-users",
            "server_cpu_us_per_call",
            "(c) REST send-to-user: server CPU per call, us",
            "{:,.0f}",
            higher_is_better=False,
        ),
    ]
