"""Child processes: pinning, logs, stopping them all, and the ``loadgen.py`` command channel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Collection
from typing import Any, BinaryIO

from harness.config import BENCH, LOAD_CPU, OUT, REPLY_LIMIT


def pin(cpu: int | Collection[int]) -> Callable[[], None]:
    """A ``preexec_fn`` that pins the child to ``cpu`` (one CPU or several) before it
    ``exec``s."""
    cpus = {cpu} if isinstance(cpu, int) else set(cpu)

    def pin_child() -> None:
        os.sched_setaffinity(0, cpus)

    return pin_child


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
                preexec_fn=pin(LOAD_CPU),
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
