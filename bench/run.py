"""The hubbub benchmark: hubbub against a Node.js ``ws`` and a uWebSockets reference, in one run.

    python bench/run.py [--quick] [--scenarios a,b,c,d,e,f,g] [--repeat 3] [--profile]

The server under test runs pinned to CPU 0; the load generators (``bench/loadgen.py``, several
processes) and this harness run pinned to CPU 1. Server CPU time is read from
``/proc/<pid>/stat`` (utime + stime, all threads), memory from ``/proc/<pid>/status`` (VmRSS).
Every figure is the median of ``--repeat`` runs, each on a freshly started server, and each
hubbub figure is also given as a ratio to the references measured in the same invocation.

Results: ``bench/out/results.json`` (every run), ``bench/out/results.md`` (the table) and, for a
run that is not ``--quick``, ``bench/RESULTS.md``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
SERVER_CPU = 0
LOAD_CPU = 1
HUB = "bench"
ACCESS_KEY = "bench-access-key-0123456789abcdefghijklmnopqrstuvwxyz"
SERVERS = ("hubbub", "node", "uws")
SERVER_NAMES = {"hubbub": "hubbub", "node": "Node ws", "uws": "uWS (socketify)"}
MEMBER_WORKERS = 4
REPLY_LIMIT = 256 * 1024 * 1024
PUBLISHER_NICE = -10
LATENCY_PROBES = 20
"""Members of the fan-out group that read each message's send time in scenario (e)."""
FANOUT_CONCURRENCY = 32
"""REST requests in flight while publishing to one big group at the maximum rate."""
REST_CONCURRENCY = 96
"""REST requests in flight per publisher process in (b) and (c), where each call is cheap."""


def fanout_window(size: int) -> int:
    """Messages a publisher may be ahead of its probe member (bounds the buffered bytes)."""
    return 200 if size <= 100 else 32


CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = 1


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one invocation."""

    quick: bool
    repeat: int
    warmup: float
    measure: float
    latency_seconds: float
    fanout_members: int = 1000
    groups: int = 1000
    group_size: int = 10
    users: int = 1000
    idle_counts: tuple[int, ...] = (10_000, 50_000)
    echo_clients: int = 200
    slow_members: int = 500
    slow_stalled: int = 20
    slow_seconds: float = 20.0

    @staticmethod
    def make(quick: bool, repeat: int | None) -> Plan:
        if quick:
            return Plan(
                True,
                repeat or 1,
                0.5,
                1.5,
                2.0,
                idle_counts=(2_000, 5_000),
                echo_clients=100,
                slow_seconds=12.0,
            )
        return Plan(False, repeat or 3, 2.0, 4.0, 6.0)


# -- child processes -------------------------------------------------------------------------


def _pin(cpu: int) -> Callable[[], None]:
    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def log_file(name: str) -> BinaryIO:
    """A child's log under ``bench/out/logs`` (the child keeps its own descriptor)."""
    return (OUT / "logs" / f"{name}.log").open("ab")


class Children:
    """Every process this harness started; all are stopped on exit, error or Ctrl-C."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    def add(self, proc: asyncio.subprocess.Process) -> None:
        self.procs.append(proc)

    async def stop(self, proc: asyncio.subprocess.Process, grace: float = 3.0) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(p) for p in list(self.procs)), return_exceptions=True)

    def kill_all_now(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()


class LoadProcess:
    """A ``loadgen.py`` process driven by JSON-line commands."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self._next = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, children: Children, spec: dict[str, Any], name: str) -> LoadProcess:
        with log_file(name) as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(BENCH / "loadgen.py"),
                json.dumps(spec),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                preexec_fn=_pin(LOAD_CPU),
                limit=REPLY_LIMIT,
            )
        children.add(proc)
        return cls(proc, name)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        problem = "exited"
        try:
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    break
                reply = json.loads(line)
                waiter = self._waiting.pop(reply.get("id", -1), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(reply)
        except (ValueError, asyncio.LimitOverrunError) as exc:
            problem = f"sent an unreadable reply ({exc})"
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(RuntimeError(f"{self.name} {problem} (see out/logs)"))

    async def call(self, op: str, limit_s: float = 600, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self._next += 1
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[self._next] = waiter
        self.proc.stdin.write((json.dumps({"id": self._next, "op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        reply = await asyncio.wait_for(waiter, limit_s)
        if reply.get("error") and op not in ("stats", "connect", "prepare", "run"):
            raise RuntimeError(f"{self.name}: {reply['error']}")
        return reply

    async def quit(self, children: Children) -> None:
        with contextlib.suppress(Exception):
            await self.call("quit", limit_s=5)
        await children.stop(self.proc)
        self._reader.cancel()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


HUBBUB_SRC: Path | None = None
"""Where hubbub's sources are imported from: None for the installed/working tree."""


def snapshot(rev: str) -> Path:
    """Extract ``src/`` of a git revision (read-only: ``git archive``) under ``bench/out``."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()
    target = OUT / f"hubbub-{sha}"
    if not (target / "src" / "hubbub").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "src"], cwd=REPO, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target / "src"


class ServerProcess:
    """The server under test or a reference, pinned to the server CPU."""

    def __init__(self, kind: str, proc: asyncio.subprocess.Process, port: int) -> None:
        self.kind = kind
        self.proc = proc
        self.port = port

    @classmethod
    async def start(
        cls, children: Children, kind: str, config: Path | None = None
    ) -> ServerProcess:
        port = free_port()
        if kind == "hubbub":
            argv = [
                sys.executable,
                "-m",
                "hubbub",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--access-key",
                ACCESS_KEY,
                "--log-level",
                "warning",
            ]
            if config is not None:
                argv += ["--config", str(config)]
        elif kind == "node":
            argv = ["node", str(BENCH / "refs" / "ws_server.mjs"), str(port)]
        else:
            argv = [sys.executable, str(BENCH / "refs" / "uws_server.py"), str(port)]
        env = dict(os.environ)
        if kind == "hubbub" and HUBBUB_SRC is not None:
            env["PYTHONPATH"] = str(HUBBUB_SRC)
        with log_file(f"server-{kind}") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=REPO, env=env, stdout=log, stderr=log, preexec_fn=_pin(SERVER_CPU)
            )
        children.add(proc)
        server = cls(kind, proc, port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                break
            if await server.healthy():
                return server
            await asyncio.sleep(0.1)
        await children.stop(proc)
        tail = (OUT / "logs" / f"server-{kind}.log").read_text(errors="replace")[-600:]
        raise ServerUnavailable(f"{kind} did not start: {tail.strip()}")

    async def _http(self, request: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(request)
            await writer.drain()
            return await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()

    async def healthy(self) -> bool:
        try:
            answer = await self._http(
                b"HEAD /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
        except (TimeoutError, OSError):
            return False
        return answer.startswith(b"HTTP/1.1 200")

    async def counted_deliveries(self) -> float | None:
        """hubbub's own count (``hubbub_deliveries_total``); None for the references."""
        return await self.metric("hubbub_deliveries_total")

    async def metric(self, name: str) -> float | None:
        """One unlabelled value of hubbub's ``/metrics``; None for the references."""
        if self.kind != "hubbub":
            return None
        answer = await self._http(
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        for line in answer.decode(errors="replace").splitlines():
            if line.split(" ", 1)[0] == name:
                return float(line.split()[-1])
        return None

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


class ServerUnavailable(RuntimeError):
    """A reference server that cannot be installed or started here."""


# -- scenario building blocks ----------------------------------------------------------------


def server_spec(server: ServerProcess) -> dict[str, Any]:
    return {
        "kind": server.kind,
        "host": "127.0.0.1",
        "port": server.port,
        "key": ACCESS_KEY,
        "hub": HUB,
    }


async def start_members(
    children: Children,
    server: ServerProcess,
    count: int,
    *,
    per_group: int = 0,
    users: bool = False,
    probes: int = 0,
) -> list[LoadProcess]:
    """``count`` member connections spread over several processes and source addresses.

    With ``probes``, the first process holds that many of the members, at a higher priority,
    and reads the send time of each message when probing is on (the latency scenario); the
    bulk processes only count.
    """
    workers: list[LoadProcess] = []
    slices: list[tuple[int, int, int]] = []  # start, count, probe_every
    first = min(probes, count)
    if first:
        slices.append((0, first, 1))
    share = -(-(count - first) // MEMBER_WORKERS)
    for w in range(MEMBER_WORKERS):
        start, n = first + w * share, min(share, count - first - w * share)
        if n > 0:
            slices.append((start, n, 0))
    for w, (start, n, probe_every) in enumerate(slices):
        spec = {
            "role": "members",
            "server": server_spec(server),
            "source_ip": f"127.0.0.{2 + w}",
            "start": start,
            "count": n,
            "per_group": per_group,
            "users": users,
            "probe_every": probe_every,
            "concurrency": 50,
            "nice": PUBLISHER_NICE if probe_every else 0,
        }
        workers.append(await LoadProcess.start(children, spec, f"members-{server.kind}-{w}"))
    replies = await asyncio.gather(*(w.call("connect") for w in workers))
    opened = sum(r["opened"] for r in replies)
    if opened < count:
        errors = "; ".join(r["error"] for r in replies if r.get("error"))
        raise RuntimeError(f"{server.kind}: only {opened} of {count} connections opened: {errors}")
    return workers


async def start_publisher(
    children: Children, server: ServerProcess, index: int, **spec: Any
) -> LoadProcess:
    full = {
        "role": "publisher",
        "server": server_spec(server),
        "source_ip": f"127.0.0.{10 + index}",
        "nice": PUBLISHER_NICE,
        **spec,
    }
    pub = await LoadProcess.start(children, full, f"publisher-{server.kind}-{index}")
    reply = await pub.call("prepare", limit_s=60)
    if reply.get("error"):
        raise RuntimeError(f"publisher: {reply['error']}")
    return pub


@dataclass
class Sample:
    t: float
    server_cpu: float
    frames: int
    load_cpu: float
    ok: int
    published: int
    lost: int
    counted: float | None


async def sample(
    server: ServerProcess, members: Sequence[LoadProcess], publishers: Sequence[LoadProcess]
) -> Sample:
    t0 = time.monotonic()
    cpu0 = server.cpu_seconds()
    stats = await asyncio.gather(*(p.call("stats", limit_s=30) for p in [*members, *publishers]))
    t1 = time.monotonic()
    cpu1 = server.cpu_seconds()
    pub_stats = stats[len(members) :]
    return Sample(
        t=(t0 + t1) / 2,
        server_cpu=(cpu0 + cpu1) / 2,
        frames=sum(s["frames"] for s in stats[: len(members)])
        + sum(s["probe_frames"] for s in pub_stats),
        load_cpu=sum(s["cpu"] for s in stats),
        ok=sum(s["ok"] for s in pub_stats),
        published=sum(s["published"] for s in pub_stats),
        lost=sum(s["lost"] for s in stats),
        counted=None,
    )


async def measure(
    plan: Plan,
    server: ServerProcess,
    members: Sequence[LoadProcess],
    publishers: Sequence[LoadProcess],
    *,
    fan: int,
    rate: float | None = None,
    duration: float | None = None,
) -> dict[str, Any]:
    """Run the publishers and measure a steady window after a warm-up.

    ``fan`` is the number of deliveries one publication makes: once the run is over and the
    last messages have drained, every one of them must have arrived (``delivered_fraction``).
    """
    window = duration if duration is not None else plan.measure
    base = await sample(server, members, publishers)
    runs = [
        asyncio.ensure_future(
            p.call(
                "run",
                limit_s=window + plan.warmup + 60,
                duration=plan.warmup + window + 0.5,
                rate=rate,
            )
        )
        for p in publishers
    ]
    await asyncio.sleep(plan.warmup)
    s0 = await sample(server, members, publishers)
    s0.counted = await server.counted_deliveries()
    await asyncio.sleep(window)
    s1 = await sample(server, members, publishers)
    s1.counted = await server.counted_deliveries()
    results = await asyncio.gather(*runs)
    final = await sample(server, members, publishers)
    for _ in range(50):  # let the last deliveries drain before the next measurement
        await asyncio.sleep(0.2)
        last, final = final, await sample(server, members, publishers)
        if final.frames == last.frames:
            break
    errors = [r["error"] for r in results if r.get("error")]
    if errors:
        raise RuntimeError("; ".join(errors))
    dt = s1.t - s0.t
    cpu = s1.server_cpu - s0.server_cpu
    deliveries = s1.frames - s0.frames
    out: dict[str, Any] = {
        "deliveries_per_s": deliveries / dt,
        "deliveries_per_cpu_s": deliveries / cpu if cpu > 0 else 0.0,
        "calls_per_s": (s1.ok - s0.ok) / dt,
        "published_per_s": (s1.published - s0.published) / dt,
        "server_cpu_util": cpu / dt,
        "loadgen_cpu_util": (s1.load_cpu - s0.load_cpu) / dt,
        "errors": sum(r["errors"] for r in results),
        "lost_connections": s1.lost,
        "delivered_fraction": (final.frames - base.frames)
        / max(1, (final.published - base.published) * fan),
    }
    if s0.counted is not None and s1.counted is not None and deliveries:
        out["server_counted_ratio"] = (s1.counted - s0.counted) / deliveries
    return out


async def close_all(children: Children, procs: Sequence[LoadProcess]) -> None:
    await asyncio.gather(*(p.quit(children) for p in procs), return_exceptions=True)


# -- scenarios -------------------------------------------------------------------------------

Results = dict[str, dict[str, list[dict[str, Any]]]]
FANOUT_VARIANTS = (("rest", 100), ("rest", 2048), ("ws", 100), ("ws", 2048))


async def scenario_fanout(
    plan: Plan,
    children: Children,
    kind: str,
    want_a: bool,
    want_e: bool,
    results: Results,
    profile: bool,
) -> None:
    """(a) one group of 1,000 members; (e) latency at half the measured maximum rate."""
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
                results.setdefault(f"a-{path}-{size}", {}).setdefault(kind, []).append(figures)
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
            results.setdefault("e-latency", {}).setdefault(kind, []).append(figures)
            progress("e latency", kind, figures)
    finally:
        await close_all(children, members)
        await children.stop(server.proc)


async def profile_server(
    plan: Plan,
    server: ServerProcess,
    publishers: Sequence[LoadProcess],
    label: str,
    rate: float | None = None,
) -> None:
    """A py-spy sample of hubbub while ``publishers`` run (flat out unless ``rate``; unmeasured)."""
    out = OUT / f"profile-hubbub-{label}.txt"
    seconds = max(3, int(plan.measure))
    runs = [
        asyncio.ensure_future(p.call("run", duration=seconds + 2, rate=rate)) for p in publishers
    ]
    await asyncio.sleep(1)
    spy = await asyncio.create_subprocess_exec(
        "py-spy",
        "record",
        "--nonblocking",
        "-p",
        str(server.proc.pid),
        "-d",
        str(seconds),
        "-r",
        "250",
        "-f",
        "raw",
        "-o",
        str(out),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_pin(LOAD_CPU),
    )
    try:
        await asyncio.wait_for(spy.wait(), seconds + 30)
    finally:
        if spy.returncode is None:
            spy.kill()
            await spy.wait()
    await asyncio.gather(*runs)
    await asyncio.sleep(0.5)
    if out.exists():
        summary = summarize_profile(out.read_text(), label)
        (OUT / f"profile-hubbub-{label}-summary.txt").write_text(summary)
        print(summary, flush=True)


def summarize_profile(raw: str, label: str, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        # Frames read "function (file:line)"; group them per function.
        frames = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") else f for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    lines = [f"py-spy: {total} samples of hubbub during {label}", "", "self %:"]
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / max(total, 1):6.1f}  {name}")
    lines += ["", "inclusive %:"]
    for name, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * n / max(total, 1):6.1f}  {name}")
    return "\n".join(lines) + "\n"


async def scenario_groups(plan: Plan, children: Children, kind: str, results: Results) -> None:
    """(b) 1,000 groups of 10 members, REST sends round-robin over the groups."""
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
        finally:
            await pub.quit(children)
        results.setdefault("b-groups", {}).setdefault(kind, []).append(figures)
        progress("b 1000x10", kind, figures)
    finally:
        await close_all(children, members)
        await children.stop(server.proc)


async def scenario_users(
    plan: Plan, children: Children, kind: str, results: Results, profile: bool
) -> None:
    """(c) REST send-to-user: 1,000 users with one connection each, two publisher processes."""
    server = await ServerProcess.start(children, kind)
    members = await start_members(children, server, plan.users, users=True)
    pubs: list[LoadProcess] = []
    try:
        for j in range(2):
            targets = [f"u{i}" for i in range(j, plan.users, 2)]
            pubs.append(
                await start_publisher(
                    children,
                    server,
                    j,
                    mode="rest-user",
                    size=100,
                    targets=targets,
                    concurrency=REST_CONCURRENCY,
                )
            )
        figures = await measure(plan, server, members, pubs, fan=1)
        if profile and kind == "hubbub":
            await profile_server(plan, server, pubs, "c-send-to-user")
        results.setdefault("c-users", {}).setdefault(kind, []).append(figures)
        progress("c send-to-user", kind, figures)
    finally:
        await close_all(children, pubs)
        await close_all(children, members)
        await children.stop(server.proc)


ECHO_SIZE = 100


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


async def scenario_echo(
    plan: Plan, children: Children, kind: str, results: Results, profile: bool = False
) -> None:
    """(f) plain WebSocket echo: through an upstream handler (hubbub), in-process (references).

    ``plan.echo_clients`` plain connections each keep one 100 B text frame in flight (closed
    loop). For hubbub every frame is a ``message`` user event POSTed to the handler process
    (pinned to the load CPU), whose answer is the frame sent back.
    """
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
        if profile and kind == "hubbub":
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
    results.setdefault("f-echo", {}).setdefault(kind, []).append(figures)
    progress("f echo", kind, figures)


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


async def slow_run(plan: Plan, children: Children, kind: str, stalled: int) -> dict[str, Any]:
    """One run of (g): the members' latency and the server's RSS, with ``stalled`` slow ones."""
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


async def scenario_slow(plan: Plan, children: Children, kind: str, results: Results) -> None:
    """(g) slow consumers: the latency of the others with and without stalled members (hubbub).

    ``plan.slow_members`` members of one group (``LATENCY_PROBES`` of them read each message's
    send time) while a REST publisher sends 2 KB messages to the group at a fixed rate; in the
    second run ``plan.slow_stalled`` more members of the group never read. hubbub runs with a
    bounded outbound buffer; each stalled member must be closed and counted
    (``hubbub_slow_client_closes_total``) while the others' latency and the RSS stay put.
    """
    if kind != "hubbub":
        return
    base = await slow_run(plan, children, kind, 0)
    progress("g no slow", kind, base)
    slow = await slow_run(plan, children, kind, plan.slow_stalled)
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
    results.setdefault("g-slow", {}).setdefault(kind, []).append(figures)


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def idle_target(count: int) -> int:
    """What one process can hold under this machine's file limit (a margin for other files)."""
    return min(count, fd_limit() - 500)


async def scenario_idle(plan: Plan, children: Children, kind: str, results: Results) -> None:
    """(d) idle memory per connection: VmRSS before and after opening N idle connections."""
    for wanted in plan.idle_counts:
        n = idle_target(wanted)
        server = await ServerProcess.start(children, kind)
        members: list[LoadProcess] = []
        try:
            await asyncio.sleep(1.0)
            before = server.rss_kib()
            t0 = time.monotonic()
            members = await start_members(children, server, n)
            connect_s = time.monotonic() - t0
            await asyncio.sleep(2.0)
            after = server.rss_kib()
            stats = await asyncio.gather(*(m.call("stats") for m in members))
            opened = sum(s["opened"] for s in stats) - sum(s["lost"] for s in stats)
            figures = {
                "requested": wanted,
                "connections": opened,
                "rss_before_kib": before,
                "rss_after_kib": after,
                "kib_per_conn": (after - before) / max(opened, 1),
                "connect_s": connect_s,
                "capped_by_fd_limit": n < wanted,
            }
        finally:
            await close_all(children, members)
            await children.stop(server.proc)
        results.setdefault(f"d-idle-{wanted}", {}).setdefault(kind, []).append(figures)
        progress(f"d idle {wanted}", kind, figures)


def percentile(sorted_values: Sequence[int], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return float(sorted_values[k])


def progress(label: str, kind: str, figures: dict[str, Any]) -> None:
    shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()}
    print(f"[{time.strftime('%H:%M:%S')}] {label:<18} {kind:<7} {shown}", flush=True)


# -- report ----------------------------------------------------------------------------------


@dataclass
class Row:
    key: str
    metric: str
    label: str
    fmt: str
    target: str = ""
    check: Callable[[dict[str, float | None]], bool | None] | None = None
    higher_is_better: bool = True
    extra_checks: list[Callable[[dict[str, float | None]], bool | None]] = field(
        default_factory=list
    )
    shown: tuple[str, ...] = ()
    """Metrics shown together in the cell (``fmt`` each, joined by " / "); default ``metric``."""


def _ge(server: str, value: float) -> Callable[[dict[str, float | None]], bool | None]:
    def check(m: dict[str, float | None]) -> bool | None:
        v = m.get(server)
        return None if v is None else v >= value

    return check


def _le(value: float) -> Callable[[dict[str, float | None]], bool | None]:
    def check(m: dict[str, float | None]) -> bool | None:
        v = m.get("hubbub")
        return None if v is None else v <= value

    return check


def _eq(value: float) -> Callable[[dict[str, float | None]], bool | None]:
    def check(m: dict[str, float | None]) -> bool | None:
        v = m.get("hubbub")
        return None if v is None else v == value

    return check


def _ratio(ref: str, value: float) -> Callable[[dict[str, float | None]], bool | None]:
    def check(m: dict[str, float | None]) -> bool | None:
        h, r = m.get("hubbub"), m.get(ref)
        return None if h is None or not r else h / r >= value

    return check


def rows(plan: Plan) -> list[Row]:
    out = [
        Row(
            "a-rest-100",
            "deliveries_per_cpu_s",
            "(a) 1,000 members, 100 B, REST: deliveries / server CPU-s",
            "{:,.0f}",
            ">= 1,000,000; >= 8x Node ws; >= 0.5x uWS",
            _ge("hubbub", 1e6),
            extra_checks=[_ratio("node", 8), _ratio("uws", 0.5)],
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
            _ge("hubbub", 300_000),
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
            _ge("hubbub", 300_000),
        ),
        Row("b-groups", "deliveries_per_s", "(b) 1,000 groups x 10, REST: deliveries/s", "{:,.0f}"),
        Row("b-groups", "calls_per_s", "(b) 1,000 groups x 10, REST: sends/s", "{:,.0f}"),
        Row(
            "c-users",
            "calls_per_s",
            "(c) REST send-to-user: calls/s",
            "{:,.0f}",
            ">= 18,000",
            _ge("hubbub", 18_000),
        ),
    ]
    for wanted in plan.idle_counts:
        n = idle_target(wanted)
        capped = f" (capped at {n:,}: file limit)" if n < wanted else ""
        out.append(
            Row(
                f"d-idle-{wanted}",
                "kib_per_conn",
                f"(d) idle memory at {wanted:,} connections{capped}: KiB/conn",
                "{:.2f}",
                "<= 8 KiB",
                _le(8.0),
                higher_is_better=False,
            )
        )
        out.append(
            Row(
                f"d-idle-{wanted}",
                "connections",
                f"(d) connections held, {wanted:,} requested",
                "{:,.0f}",
                ">= 50,000 in one process" if wanted >= 50_000 else "",
                _ge("hubbub", 50_000) if wanted >= 50_000 else None,
            )
        )
    out += [
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
            _le(10.0),
            higher_is_better=False,
        ),
    ]
    f = (
        f"(f) plain WS echo, {plan.echo_clients} clients, 100 B (hubbub via upstream handler; "
        "refs: echo in-process, no upstream hop)"
    )
    out += [
        Row("f-echo", "echoes_per_s", f"{f}: echoes/s", "{:,.0f}"),
        Row("f-echo", "echoes_per_cpu_s", f"{f}: echoes / server CPU-s", "{:,.0f}"),
        Row("f-echo", "server_cpu_util", f"{f}: server CPU, %", "{:.0%}"),
        Row("f-echo", "p50_ms", f"{f}: round trip p50, ms", "{:.2f}", higher_is_better=False),
        Row("f-echo", "p99_ms", f"{f}: round trip p99, ms", "{:.2f}", higher_is_better=False),
    ]
    k = plan.slow_stalled
    g = (
        f"(g) {plan.slow_members} members, {SLOW_RATE:.0f} msgs/s of 2 KB (REST), "
        f"max_outbound_bytes {SLOW_OUTBOUND_BYTES // 1024} KiB"
    )
    out += [
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
            _eq(k),
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
    return out


def medians(results: Results) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, by_server in results.items():
        for kind, runs in by_server.items():
            keys = {k for r in runs for k, v in r.items() if isinstance(v, (int, float))}
            out.setdefault(key, {})[kind] = {
                k: statistics.median(float(r[k]) for r in runs if k in r) for k in sorted(keys)
            }
    return out


def render_table(
    plan: Plan, results: Results, unavailable: dict[str, str]
) -> tuple[str, list[dict[str, Any]]]:
    med = medians(results)
    head = (
        "| scenario | hubbub | Node ws | uWS | hubbub / Node ws | hubbub / uWS | target | met |\n"
        "|---|---:|---:|---:|---:|---:|---|---|\n"
    )
    lines = []
    table: list[dict[str, Any]] = []
    for row in rows(plan):
        values: dict[str, float | None] = {
            kind: med.get(row.key, {}).get(kind, {}).get(row.metric) for kind in SERVERS
        }

        def cell(kind: str, row: Row = row, values: dict[str, float | None] = values) -> str:
            v = values[kind]
            if v is None:
                return "n/a" if kind in unavailable else "-"
            if row.shown:
                got = med.get(row.key, {}).get(kind, {})
                return " / ".join(row.fmt.format(got[m]) if m in got else "-" for m in row.shown)
            return row.fmt.format(v)

        ratios = []
        for ref in ("node", "uws"):
            h, r = values["hubbub"], values[ref]
            ratios.append(f"{h / r:.2f}x" if h is not None and r else "-")
        checks = [row.check, *row.extra_checks] if row.check is not None else []
        verdicts = [check(values) for check in checks]
        met = None if None in verdicts or not verdicts else all(verdicts)
        met_text = "; ".join("yes" if v else "NO" if v is False else "?" for v in verdicts)
        lines.append(
            f"| {row.label} | {cell('hubbub')} | {cell('node')} | {cell('uws')} | "
            f"{ratios[0]} | {ratios[1]} | {row.target} | {met_text} |"
        )
        table.append(
            {
                "verdicts": verdicts,
                "scenario": row.key,
                "metric": row.metric,
                "label": row.label,
                "values": values,
                "target": row.target,
                "met": met,
            }
        )
    return head + "\n".join(lines) + "\n", table


ECHO_NOTE = (
    "(f) is not like for like: hubbub echoes through an upstream event handler (each frame is a "
    "`message` user event POSTed to a separate aiohttp handler process on the load CPU, whose "
    "answer is sent back), while Node ws and uWS echo in-process, no upstream hop (the frame "
    "is sent straight back by the reference server itself). The ratios in the (f) rows "
    "therefore include the cost of the upstream hop."
)


def load_side_note(plan: Plan, results: Results) -> str:
    """The load generators' own CPU use, to show they are not the bottleneck."""
    med = medians(results)
    parts = []
    keys = ("a-rest-100", "a-rest-2048", "a-ws-100", "a-ws-2048", "b-groups", "c-users", "f-echo")
    for key in keys:
        cells = []
        for kind in SERVERS:
            m = med.get(key, {}).get(kind)
            if m:
                cells.append(
                    f"{SERVER_NAMES[kind]} server {m['server_cpu_util'] * 100:.0f}% / "
                    f"load {m['loadgen_cpu_util'] * 100:.0f}%"
                )
        if cells:
            parts.append(f"| {key} | " + " | ".join(cells) + " |")
    if not parts:
        return ""
    return (
        "CPU use during the measured windows (server on CPU 0, all load generators together "
        "on CPU 1; a server below ~95% while the load generators are near 100% would mean "
        "the load side limits the figure):\n\n| scenario | | | |\n|---|---|---|---|\n"
        + "\n".join(parts)
        + "\n"
    )


def machine() -> dict[str, str]:
    def run(cmd: str) -> str:
        try:
            return subprocess.run(
                shlex.split(cmd), capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "unavailable"

    lscpu = run("lscpu")
    wanted = ("Architecture", "CPU(s)", "Model name", "Thread(s) per core", "Hypervisor vendor")
    cpu = "; ".join(
        line.split(":", 1)[0] + ": " + line.split(":", 1)[1].strip()
        for line in lscpu.splitlines()
        if line.split(":", 1)[0] in wanted
    )
    return {
        "nproc": run("nproc"),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": run("node --version"),
        "memory": run("free -g").splitlines()[1] if "Mem" in run("free -g") else "",
        "fd_limit": str(fd_limit()),
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def write_report(
    plan: Plan,
    info: dict[str, str],
    results: Results,
    unavailable: dict[str, str],
    started: float,
    rev: str | None,
    rev_arg: str | None,
) -> str:
    table, rows_json = render_table(plan, results, unavailable)
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    notes = []
    for kind, why in unavailable.items():
        notes.append(f"- {SERVER_NAMES[kind]}: not measured ({why}).")
    for wanted in plan.idle_counts:
        if idle_target(wanted) < wanted:
            notes.append(
                f"- (d) {wanted:,} connections cannot be opened to one process on this machine: "
                f"the open-file limit is {fd_limit():,} (hard) and the harness may not raise it "
                f"(no CAP_SYS_RESOURCE), so that row is measured at {idle_target(wanted):,}."
            )
    if "f-echo" in results:
        notes.append(f"- {ECHO_NOTE}")
    notes += [
        "- Ratios are hubbub / reference, measured in this invocation; the (a) ratio targets "
        "compare deliveries per server CPU-second, which stays exact when a server is not "
        "fully busy. For latency and memory rows a ratio above 1 means hubbub is worse.",
        "- The references check no token; hubbub verifies a JWT on every REST call and every "
        "connection, as the product does.",
        "- A reference whose server CPU stays below ~95% while the load CPU is near 100% "
        "(table below) was limited by this 2-core machine's single load CPU; its figures are "
        "then lower bounds, and so hubbub's ratios to it are upper bounds.",
        "- Latency runs from the publisher's write to a probe client's read (CLOCK_MONOTONIC), "
        "at half the rate (a) measured on the same server; it includes the load CPU's "
        "scheduling delays. A server whose cost per delivery rises at the lower rate (less "
        "coalescing per loop pass) can be nearly saturated there: see its CPU-s row.",
    ]
    md = [
        f"Command: `{command}`  ",
        f"hubbub: {describe_hubbub(rev, rev_arg)}  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, duration {time.time() - started:.0f} s, "
        f"{plan.repeat} run(s) per figure (median), windows of {plan.measure:.0f} s after "
        f"{plan.warmup:.0f} s warm-up.  ",
        f"Machine: nproc {info['nproc']}; {info['cpu']}; kernel {info['kernel']}; "
        f"Python {info['python']}; Node {info['node']}; open-file limit {info['fd_limit']}; "
        f"load average before the run {info['loadavg_at_start']}.",
        "",
        table,
        "\n".join(notes),
        "",
        load_side_note(plan, results),
    ]
    text = "\n".join(md)
    (OUT / "results.md").write_text(text)
    (OUT / "results.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": info,
                "plan": plan.__dict__,
                "unavailable": unavailable,
                "table": rows_json,
                "medians": medians(results),
                "runs": results,
            },
            indent=1,
            default=str,
        )
    )
    return text


def describe_hubbub(rev: str | None, rev_arg: str | None) -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    if rev:
        return f"revision {rev} (`--hubbub-rev {rev_arg}`)"
    dirty = " with uncommitted changes in src/" if git("status", "--porcelain", "src") else ""
    return f"working tree at {git('rev-parse', '--short', 'HEAD')}{dirty}"


RESULTS_HEAD = """# Benchmark results

The latest full run of `bench/run.py` (see `bench/README.md` for the method). Figures are
medians of repeated runs; ratios compare with the references measured in the same invocation.

"""


async def main_async(args: argparse.Namespace) -> int:
    plan = Plan.make(args.quick, args.repeat)
    wanted = set(args.scenarios.split(",")) if args.scenarios else set("abcdefg")
    unknown = wanted - set("abcdefg")
    if unknown:
        print(f"unknown scenarios: {','.join(sorted(unknown))}", file=sys.stderr)
        return 2
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    global HUBBUB_SRC
    rev = None
    if args.hubbub_rev:
        HUBBUB_SRC = snapshot(args.hubbub_rev)
        rev = HUBBUB_SRC.parent.name.removeprefix("hubbub-")
        print(f"hubbub from {args.hubbub_rev} = {rev} ({HUBBUB_SRC})", flush=True)
    info = machine()
    os.sched_setaffinity(0, {LOAD_CPU})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    children = Children()
    results: Results = {}
    unavailable: dict[str, str] = {}
    started = time.time()
    servers = [s for s in SERVERS if s in (args.servers or ",".join(SERVERS)).split(",")]
    try:
        for rep in range(plan.repeat):
            print(f"== run {rep + 1} of {plan.repeat}", flush=True)
            for kind in servers:
                if kind in unavailable:
                    continue
                try:
                    if "a" in wanted or "e" in wanted:
                        await scenario_fanout(
                            plan,
                            children,
                            kind,
                            "a" in wanted,
                            "e" in wanted,
                            results,
                            args.profile and rep == 0,
                        )
                    if "b" in wanted:
                        await scenario_groups(plan, children, kind, results)
                    if "c" in wanted:
                        await scenario_users(
                            plan, children, kind, results, args.profile and rep == 0
                        )
                    if "d" in wanted:
                        await scenario_idle(plan, children, kind, results)
                    if "f" in wanted:
                        await scenario_echo(
                            plan, children, kind, results, args.profile and rep == 0
                        )
                    if "g" in wanted:
                        await scenario_slow(plan, children, kind, results)
                except ServerUnavailable as exc:
                    unavailable[kind] = str(exc).splitlines()[-1][:200]
                    print(f"!! {exc}", flush=True)
                finally:
                    await children.stop_all()
    finally:
        await children.stop_all()
    text = write_report(plan, info, results, unavailable, started, rev, args.hubbub_rev)
    print(text)
    if not plan.quick and wanted == set("abcdefg") and tuple(servers) == SERVERS:
        # Only a whole run replaces the table; a partial one stays in bench/out/.
        (BENCH / "RESULTS.md").write_text(RESULTS_HEAD + text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small and short (~2 minutes)")
    parser.add_argument("--scenarios", help="comma-separated subset of a,b,c,d,e,f,g (default all)")
    parser.add_argument("--servers", help="comma-separated subset of hubbub,node,uws (default all)")
    parser.add_argument("--repeat", type=int, help="runs per figure (default 3, quick 1)")
    parser.add_argument(
        "--hubbub-rev", help="benchmark hubbub's src/ at this git revision instead of the tree"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy samples of hubbub during (a) REST 100 B and (c) (extra windows)",
    )
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    task = loop.create_task(main_async(args))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        print("interrupted: every started process was stopped", file=sys.stderr)
        return 130
    finally:
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
