"""py-spy samples of hubbub during extra, unmeasured windows (``--profile``)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence

from harness.config import LOAD_CPU, OUT, Plan
from harness.processes import LoadProcess, pin
from harness.servers import ServerProcess


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
        preexec_fn=pin(LOAD_CPU),
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
