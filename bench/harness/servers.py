"""The servers under test: hubbub and the two references, started fresh and pinned to CPU 0;
and hubbub with ``--workers N``, several node processes behind one port."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from harness import measure
from harness.config import ACCESS_KEY, BENCH, HUB, OUT, REPO, SERVER_CPU
from harness.processes import Children, log_file, pin

_hubbub_src: Path | None = None
"""Where hubbub's sources are imported from: None for the installed/working tree."""


def use_hubbub_src(src: Path | None) -> None:
    """Run hubbub from ``src`` (a ``src/`` directory) instead of the installed package."""
    global _hubbub_src
    _hubbub_src = src


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


class ServerUnavailable(RuntimeError):
    """A reference server that cannot be installed or started here."""


class ServerProcess:
    """The server under test or a reference, pinned to the server CPU."""

    def __init__(self, kind: str, proc: asyncio.subprocess.Process, port: int) -> None:
        self.kind = kind
        self.proc = proc
        self.port = port

    @classmethod
    async def start(
        cls,
        children: Children,
        kind: str,
        config: Path | None = None,
        *,
        cpu: int | Collection[int] | None = SERVER_CPU,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        name: str | None = None,
    ) -> ServerProcess:
        """Start ``kind`` on a free port and wait until it is healthy.

        ``cpu``: the CPU or CPUs it is pinned to (None: those of the harness, CPU 1, which it
        inherits); ``args`` and ``env``: more flags
        and variables for hubbub; ``name``: its log's name (default ``server-<kind>``).
        """
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
            argv += args
        elif kind == "node":
            argv = ["node", str(BENCH / "refs" / "ws_server.mjs"), str(port)]
        else:
            argv = [sys.executable, str(BENCH / "refs" / "uws_server.py"), str(port)]
        environment = {**os.environ, **(env or {})}
        if kind == "hubbub" and _hubbub_src is not None:
            environment["PYTHONPATH"] = str(_hubbub_src)
        log_name = name or f"server-{kind}"
        with log_file(log_name) as log:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=REPO,
                env=environment,
                stdout=log,
                stderr=log,
                preexec_fn=pin(cpu) if cpu is not None else None,
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
        tail = (OUT / "logs" / f"{log_name}.log").read_text(errors="replace")[-600:]
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
        return measure.cpu_seconds(self.proc.pid)

    def sys_cpu_seconds(self) -> float:
        """The kernel's share of :meth:`cpu_seconds`."""
        return measure.sys_cpu_seconds(self.proc.pid)

    def cpu_parts(self) -> dict[str, float]:
        """CPU time of the parts of a server made of several processes, by part (a cluster's
        nodes and Redis, the workers of ``--workers``); empty for one process."""
        return {}

    def placement(self) -> dict[str, Any]:
        """Where the server's processes run (the CPUs each may use), for the JSON."""
        return {"server_cpus": sorted(os.sched_getaffinity(self.proc.pid))}

    def rss_kib(self) -> int:
        return measure.rss_kib(self.proc.pid)


class WorkersProcess(ServerProcess):
    """``hubbub serve --workers N``: a supervisor and the N node processes it forks, all on
    one port (``SO_REUSEPORT``: the kernel spreads the connections over the workers).

    CPU time is the supervisor's plus every worker's. ``/metrics`` answers with the figures of
    whichever worker the connection reached, so there is no server count of deliveries.
    """

    workers = 0

    @classmethod
    async def start_workers(
        cls,
        children: Children,
        workers: int,
        redis_url: str,
        *,
        cpu: int | Collection[int] | None,
        worker_cpus: Sequence[int] = (),
        name: str,
    ) -> WorkersProcess:
        """Start ``workers`` workers on Redis at ``redis_url`` and wait until every one of
        them listens (the supervisor prints the connection string then). ``cpu``: the
        supervisor's CPUs, which the workers inherit; ``worker_cpus``: then pin worker ``i``
        to ``worker_cpus[i]`` (a replaced worker gets the supervisor's CPUs)."""
        log = OUT / "logs" / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        server = await cls.start(
            children,
            "hubbub",
            cpu=cpu,
            args=["--workers", str(workers), "--redis-url", redis_url],
            name=name,
        )
        assert isinstance(server, WorkersProcess)
        server.workers = workers
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and server.proc.returncode is None:
            with log.open("rb") as f:
                f.seek(offset)
                if b"Connection string:" in f.read():
                    for pid, one in zip(server.worker_pids(), worker_cpus, strict=False):
                        os.sched_setaffinity(pid, {one})
                    return server
            await asyncio.sleep(0.1)
        await children.stop(server.proc)
        raise ServerUnavailable(f"hubbub --workers {workers}: not every worker listened in 30 s")

    def worker_pids(self) -> list[int]:
        return measure.descendants(self.proc.pid)

    def _each(self, read: Callable[[int], float]) -> dict[str, float]:
        """``read`` of the supervisor and of each worker (0 for a worker that is gone)."""
        parts = {"supervisor": read(self.proc.pid)}
        pids = self.worker_pids()
        for i in range(self.workers):
            try:
                parts[f"worker{i + 1}"] = read(pids[i])
            except (IndexError, OSError):
                parts[f"worker{i + 1}"] = 0.0
        return parts

    def cpu_parts(self) -> dict[str, float]:
        return self._each(measure.cpu_seconds)

    def cpu_seconds(self) -> float:
        return sum(self.cpu_parts().values())

    def sys_cpu_seconds(self) -> float:
        return sum(self._each(measure.sys_cpu_seconds).values())

    async def counted_deliveries(self) -> float | None:
        return None

    def placement(self) -> dict[str, Any]:
        pids = self.worker_pids()
        return {
            **super().placement(),
            "worker_cpus": [sorted(os.sched_getaffinity(pid)) for pid in pids],
            "worker_open_files": [len(os.listdir(f"/proc/{pid}/fd")) for pid in pids],
        }

    def rss_kib(self) -> int:
        return measure.rss_kib(self.proc.pid) + sum(
            measure.rss_kib(pid) for pid in self.worker_pids()
        )


def server_spec(server: ServerProcess) -> dict[str, Any]:
    """How a load generator reaches ``server``."""
    return {
        "kind": server.kind,
        "host": "127.0.0.1",
        "port": server.port,
        "key": ACCESS_KEY,
        "hub": HUB,
    }
