"""(j) a cluster on Redis: 2 nodes on 2 cores against 1 node, Redis CPU, session replication.

hubbub only. Three layouts run in the same invocation, each on fresh processes:

- ``1node``: the reference, one node with the in-memory engine, pinned to CPU 0;
- ``redis1``: one node on Redis (CPU 0), which shows what the engine itself costs;
- ``2nodes``: two nodes on one Redis, node A pinned to CPU 0 and node B to CPU 1.

``redis-server`` (no persistence) runs on CPU 1, as the harness and the load generators; so in
``2nodes`` node B shares its core with them (the machine has two): the deliveries/s ratio is
then a lower bound of what a second core gives, and the per-CPU-second ratio is the fair one.
Server CPU is the nodes' plus redis-server's, so "deliveries per server CPU-second" counts
Redis in.

Per layout: (1) one group of ``plan.fanout_members`` (1,000) members, 100 B REST sends, the
members spread over the nodes (member processes alternate between them; in ``2nodes`` half of
every publication crosses Redis), two publishers of 16 requests in flight each, one per node
(both on node A in the single-node layouts); (2) REST send-to-user, ``plan.users`` users with
one connection each spread over the nodes, two publishers of 96 in flight, one per node, each
sending to every other user (so about half of the calls reach a user on the other node).

Then session replication: ``2nodes`` with ``plan.reliable_members`` members on
``json.reliable.webpubsub.azure.v1`` (sequence ids checked, acks every second, as in (h)) in
one group spread over both nodes, 100 B REST sends through node A capped at
``plan.reliable_rate_cap`` msgs/s, once with ``[engine] session_replication`` on and once off.

Ratios are against the reference layout (or replication off) of the same repetition.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from harness.config import (
    FANOUT_CONCURRENCY,
    RELIABLE_SUBPROTOCOL,
    REPO,
    Plan,
)
from harness.measure import cpu_seconds, measure, sys_cpu_seconds
from harness.processes import Children, LoadProcess, log_file
from harness.results import Results, Row, eq, ge
from harness.scenarios.common import (
    Context,
    close_all,
    progress,
    start_members,
    start_publisher,
    verify_members,
)
from harness.scenarios.users import start_user_publishers
from harness.servers import ServerProcess, ServerUnavailable, free_port

LAYOUTS = ("1node", "redis1", "2nodes")
LAYOUT_NAMES = {
    "1node": "1 node (memory)",
    "redis1": "1 node on Redis",
    "2nodes": "2 nodes on Redis",
}
NODE_CPUS = (0, 1)
REDIS_BINARY = os.environ.get("HUBBUB_BENCH_REDIS_SERVER", "redis-server")
ACK_SECONDS = 1.0


class RedisProcess:
    """A redis-server without persistence on a free loopback port."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    async def start(cls, children: Children) -> RedisProcess:
        port = free_port()
        argv = [
            REDIS_BINARY,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ]
        try:
            with log_file("redis-server") as log:
                proc = await asyncio.create_subprocess_exec(*argv, cwd=REPO, stdout=log, stderr=log)
        except FileNotFoundError as exc:
            raise ServerUnavailable(
                f"{REDIS_BINARY} not found (Debian: apt-get install redis-server)"
            ) from exc
        children.add(proc)
        for _ in range(100):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.write(b"PING\r\n")
            answer = await reader.read(16)
            writer.close()
            if answer.startswith(b"+PONG"):
                return cls(proc, port)
        await children.stop(proc)
        raise ServerUnavailable("redis-server did not answer PING in 5 s")


class Cluster(ServerProcess):
    """The nodes of one layout and their Redis, measured as one server: CPU is the sum of
    all of them, the deliveries counted are every node's. ``port`` is node A's."""

    def __init__(self, nodes: Sequence[ServerProcess], redis: RedisProcess | None) -> None:
        super().__init__("hubbub", nodes[0].proc, nodes[0].port)
        self.nodes = list(nodes)
        self.redis = redis

    @classmethod
    async def start_layout(
        cls, children: Children, layout: str, replication: bool = True
    ) -> Cluster:
        redis = await RedisProcess.start(children) if layout != "1node" else None
        count = 2 if layout == "2nodes" else 1
        nodes = []
        for i in range(count):
            args = ["--redis-url", redis.url] if redis is not None else []
            env = {"HUBBUB_SESSION_REPLICATION": "true" if replication else "false"}
            nodes.append(
                await ServerProcess.start(
                    children,
                    "hubbub",
                    cpu=NODE_CPUS[i],
                    args=args,
                    env=env,
                    name=f"server-cluster-{layout}-{i}",
                )
            )
        return cls(nodes, redis)

    async def stop(self, children: Children) -> None:
        for node in self.nodes:
            await children.stop(node.proc)
        if self.redis is not None:
            await children.stop(self.redis.proc)

    def cpu_parts(self) -> dict[str, float]:
        """``nodes`` and ``redis``, and the parts of a node of several processes (the
        supervisor and workers of ``--workers``, which ``nodes`` counts in)."""
        parts = {"nodes": sum(node.cpu_seconds() for node in self.nodes)}
        if self.redis is not None:
            parts["redis"] = cpu_seconds(self.redis.proc.pid)
        for node in self.nodes:
            parts.update(node.cpu_parts())
        return parts

    def cpu_seconds(self) -> float:
        redis = cpu_seconds(self.redis.proc.pid) if self.redis is not None else 0.0
        return sum(node.cpu_seconds() for node in self.nodes) + redis

    def sys_cpu_seconds(self) -> float:
        redis = sys_cpu_seconds(self.redis.proc.pid) if self.redis is not None else 0.0
        return sum(node.sys_cpu_seconds() for node in self.nodes) + redis

    def placement(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node_cpus": [n.placement()["server_cpus"] for n in self.nodes]}
        for node in self.nodes:
            out.update({k: v for k, v in node.placement().items() if k != "server_cpus"})
        if self.redis is not None:
            out["redis_cpus"] = sorted(os.sched_getaffinity(self.redis.proc.pid))
        return out

    async def counted_deliveries(self) -> float | None:
        counts = await asyncio.gather(*(node.counted_deliveries() for node in self.nodes))
        return None if None in counts else sum(c for c in counts if c is not None)

    def node(self, index: int) -> ServerProcess:
        """Node ``index``, round robin over the nodes there are."""
        return self.nodes[index % len(self.nodes)]


async def start_members_over(
    children: Children,
    cluster: Cluster,
    count: int,
    *,
    per_group: int = 0,
    users: bool = False,
    subprotocol: str | None = None,
    ack_seconds: float | None = None,
) -> list[LoadProcess]:
    """``count`` members in :data:`MEMBER_WORKERS` processes, alternating between the nodes."""
    return await start_members(
        children,
        cluster.node(0),
        count,
        per_group=per_group,
        users=users,
        subprotocol=subprotocol,
        ack_seconds=ack_seconds,
        node_of=cluster.node,
        label="cluster",
    )


def _redis_us_per_publish(figures: dict[str, Any]) -> None:
    published = figures.get("published_per_s") or 0.0
    if "redis_cpu_util" in figures and published:
        figures["redis_cpu_us_per_publish"] = figures["redis_cpu_util"] / published * 1e6


async def _fanout(ctx: Context, cluster: Cluster) -> dict[str, Any]:
    plan, children = ctx.plan, ctx.children
    n = plan.fanout_members
    members = await start_members_over(children, cluster, n - 1, per_group=n)
    pubs: list[LoadProcess] = []
    try:
        for j in range(2):
            spec: dict[str, Any] = {
                "mode": "rest-group",
                "targets": ["g0"],
                "size": 100,
                "concurrency": FANOUT_CONCURRENCY // 2,
                "window": 0,
            }
            if j == 0:
                spec["probe_group"] = "g0"  # the n-th member, counted with the others
            pubs.append(await start_publisher(children, cluster.node(j), j, **spec))
        figures = await measure(plan, cluster, members, pubs, fan=n)
    finally:
        await close_all(children, pubs)
        await close_all(children, members)
    _redis_us_per_publish(figures)
    return figures


async def _users(ctx: Context, cluster: Cluster) -> dict[str, Any]:
    plan, children = ctx.plan, ctx.children
    members = await start_members_over(children, cluster, plan.users, users=True)
    pubs: list[LoadProcess] = []
    try:
        await start_user_publishers(children, cluster.node, plan.users, pubs)
        figures = await measure(plan, cluster, members, pubs, fan=1)
    finally:
        await close_all(children, pubs)
        await close_all(children, members)
    calls = figures["calls_per_s"]
    if calls:
        figures["server_cpu_us_per_call"] = figures["server_cpu_util"] / calls * 1e6
        if "redis_cpu_util" in figures:
            figures["redis_cpu_us_per_call"] = figures["redis_cpu_util"] / calls * 1e6
    return figures


async def _reliable(ctx: Context, replication: bool) -> dict[str, Any]:
    plan, children = ctx.plan, ctx.children
    n = plan.reliable_members
    cluster = await Cluster.start_layout(children, "2nodes", replication)
    try:
        members = await start_members_over(
            children,
            cluster,
            n,
            per_group=n,
            subprotocol=RELIABLE_SUBPROTOCOL,
            ack_seconds=ACK_SECONDS,
        )
        pub: LoadProcess | None = None
        try:
            pub = await start_publisher(
                children,
                cluster.node(0),
                0,
                mode="rest-group",
                targets=["g0"],
                size=100,
                concurrency=FANOUT_CONCURRENCY,
            )
            for m in members:
                await m.call("reset")
            ok0 = (await pub.call("stats"))["ok"]
            figures = await measure(
                plan, cluster, members, [pub], fan=n, rate=plan.reliable_rate_cap
            )
            ok1 = (await pub.call("stats"))["ok"]
            figures.update(await verify_members(members, ok1 - ok0))
        finally:
            if pub is not None:
                await pub.quit(children)
            await close_all(children, members)
    finally:
        await cluster.stop(children)
    figures["replication"] = replication
    _redis_us_per_publish(figures)
    return figures


def _ratios(figures: dict[str, Any], base: dict[str, Any], metrics: Sequence[str]) -> None:
    for metric in metrics:
        if base.get(metric):
            figures[f"{metric}_ratio"] = figures[metric] / base[metric]


async def run(ctx: Context, kind: str) -> None:
    if kind != "hubbub":
        return
    fanouts: dict[str, dict[str, Any]] = {}
    users: dict[str, dict[str, Any]] = {}
    for layout in LAYOUTS:
        cluster = await Cluster.start_layout(ctx.children, layout)
        try:
            fanouts[layout] = await _fanout(ctx, cluster)
            progress(f"j fan-out {layout}", kind, fanouts[layout])
            users[layout] = await _users(ctx, cluster)
            progress(f"j to-user {layout}", kind, users[layout])
        finally:
            await cluster.stop(ctx.children)
    for layout in LAYOUTS:
        _ratios(fanouts[layout], fanouts["1node"], ("deliveries_per_s", "deliveries_per_cpu_s"))
        _ratios(users[layout], users["1node"], ("calls_per_s",))
        ctx.record(f"j-fanout-{layout}", kind, fanouts[layout])
        ctx.record(f"j-users-{layout}", kind, users[layout])
    on = await _reliable(ctx, True)
    progress("j reliable repl on", kind, on)
    off = await _reliable(ctx, False)
    progress("j reliable repl off", kind, off)
    _ratios(on, off, ("deliveries_per_cpu_s",))
    if "redis_cpu_us_per_publish" in off:
        on["redis_cpu_us_per_publish_off"] = off["redis_cpu_us_per_publish"]
    ctx.record("j-reliable-on", kind, on)
    ctx.record("j-reliable-off", kind, off)


def rows(plan: Plan) -> list[Row]:
    n, u, r = plan.fanout_members, plan.users, plan.reliable_members
    out: list[Row] = []
    for layout in LAYOUTS:
        name = LAYOUT_NAMES[layout]
        two = layout == "2nodes"
        out += [
            Row(
                f"j-fanout-{layout}",
                "deliveries_per_s",
                f"(j) {name}: {n:,}-member group over the nodes, 100 B REST: deliveries/s",
                "{:,.0f}",
            ),
            Row(
                f"j-fanout-{layout}",
                "deliveries_per_cpu_s",
                f"(j) {name}: deliveries / server CPU-s (nodes + Redis)",
                "{:,.0f}",
            ),
        ]
        if layout != "1node":
            out += [
                Row(
                    f"j-fanout-{layout}",
                    "deliveries_per_s_ratio",
                    f"(j) {name} / 1 node: deliveries/s",
                    "{:.2f}x",
                    ">= 1.6x (load CPU shared)" if two else "",
                    ge("hubbub", 1.6) if two else None,
                ),
                Row(
                    f"j-fanout-{layout}",
                    "deliveries_per_cpu_s_ratio",
                    f"(j) {name} / 1 node: deliveries / server CPU-s",
                    "{:.2f}x",
                    ">= 0.8x" if two else "",
                    ge("hubbub", 0.8) if two else None,
                ),
                Row(
                    f"j-fanout-{layout}",
                    "redis_cpu_us_per_publish",
                    f"(j) {name}: Redis CPU per publish, us",
                    "{:,.1f}",
                    higher_is_better=False,
                ),
            ]
        out.append(
            Row(
                f"j-users-{layout}",
                "calls_per_s",
                f"(j) {name}: REST send-to-user, {u:,} users over the nodes: calls/s",
                "{:,.0f}",
            )
        )
        if layout != "1node":
            out.append(
                Row(
                    f"j-users-{layout}",
                    "calls_per_s_ratio",
                    f"(j) {name} / 1 node: send-to-user calls/s",
                    "{:.2f}x",
                )
            )
    out += [
        Row(
            "j-reliable-off",
            "deliveries_per_cpu_s",
            f"(j) 2 nodes, {r:,} json.reliable members, 100 B, replication off: "
            "deliveries / server CPU-s",
            "{:,.0f}",
        ),
        Row(
            "j-reliable-on",
            "deliveries_per_cpu_s",
            "(j) the same, replication on: deliveries / server CPU-s",
            "{:,.0f}",
        ),
        Row(
            "j-reliable-on",
            "deliveries_per_cpu_s_ratio",
            "(j) replication on / off: deliveries / server CPU-s",
            "{:.2f}x",
        ),
        Row(
            "j-reliable-on",
            "redis_cpu_us_per_publish",
            "(j) Redis CPU per publish, replication on / off, us",
            "{:,.0f}",
            higher_is_better=False,
            shown=("redis_cpu_us_per_publish", "redis_cpu_us_per_publish_off"),
        ),
        Row(
            "j-reliable-on",
            "exact_receivers",
            f"(j) replication on: receivers with every message once, in order, of {r:,} / "
            "sequence errors",
            "{:,.0f}",
            f"= {r:,} / 0",
            eq(r),
            shown=("exact_receivers", "sequence_errors"),
        ),
    ]
    return out


def notes(plan: Plan, results: Results) -> list[str]:
    if not any(k.startswith("j-") for k in results):
        return []
    return [
        "(j) is hubbub alone: the 1-node reference (in-memory engine, CPU 0), one node on "
        "Redis, and two nodes on one Redis (CPU 0 and CPU 1) run in the same invocation; "
        "server CPU is the nodes' plus redis-server's (on CPU 1, as the harness). The load "
        "generators "
        "share CPU 1 with node B, so the 2-node deliveries/s ratio is a lower bound of what "
        "a second core gives; per server CPU-second is the like-for-like figure. Members "
        "alternate between the nodes by process; the two publishers send one through each "
        "node. Replication on/off compares 2-node clusters with reliable members at "
        f"{plan.reliable_rate_cap:,.0f} msgs/s."
    ]
