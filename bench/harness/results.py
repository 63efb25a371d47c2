"""The report: table rows and their targets, medians, ``out/results.md`` and ``results.json``.

Each scenario module declares its own rows (:class:`Row`); this module renders them in the
order the scenarios are registered, adds the notes and the load generators' CPU table, and
writes the files. The caller decides whether ``bench/RESULTS.md`` is replaced.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.config import OUT, REPO, SERVER_NAMES, SERVERS, Plan
from harness.measure import fd_limit

Results = dict[str, dict[str, list[dict[str, Any]]]]
"""Per result key (``a-rest-100``), per server kind, the figures of every run."""

Check = Callable[[dict[str, float | None]], bool | None]


@dataclass
class Row:
    key: str
    metric: str
    label: str
    fmt: str
    target: str = ""
    check: Check | None = None
    higher_is_better: bool = True
    extra_checks: list[Check] = field(default_factory=list)
    shown: tuple[str, ...] = ()
    """Metrics shown together in the cell (``fmt`` each, joined by " / "); default ``metric``."""


def ge(server: str, value: float) -> Check:
    def check(m: dict[str, float | None]) -> bool | None:
        v = m.get(server)
        return None if v is None else v >= value

    return check


def le(value: float) -> Check:
    def check(m: dict[str, float | None]) -> bool | None:
        v = m.get("hubbub")
        return None if v is None else v <= value

    return check


def eq(value: float) -> Check:
    def check(m: dict[str, float | None]) -> bool | None:
        v = m.get("hubbub")
        return None if v is None else v == value

    return check


def ratio(ref: str, value: float) -> Check:
    def check(m: dict[str, float | None]) -> bool | None:
        h, r = m.get("hubbub"), m.get(ref)
        return None if h is None or not r else h / r >= value

    return check


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
    rows: Sequence[Row], results: Results, unavailable: dict[str, str]
) -> tuple[str, list[dict[str, Any]]]:
    med = medians(results)
    head = (
        "| scenario | hubbub | Node ws | uWS | hubbub / Node ws | hubbub / uWS | target | met |\n"
        "|---|---:|---:|---:|---:|---:|---|---|\n"
    )
    lines = []
    table: list[dict[str, Any]] = []
    for row in rows:
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


GENERAL_NOTES = [
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


def load_side_note(keys: Sequence[str], results: Results) -> str:
    """The load generators' own CPU use, to show they are not the bottleneck."""
    med = medians(results)
    parts = []
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


def write_report(
    plan: Plan,
    rows: Sequence[Row],
    scenario_notes: Sequence[str],
    load_keys: Sequence[str],
    info: dict[str, str],
    results: Results,
    unavailable: dict[str, str],
    started: float,
    rev: str | None,
    rev_arg: str | None,
) -> str:
    """Write ``out/results.md`` and ``out/results.json``; returns the markdown."""
    table, rows_json = render_table(rows, results, unavailable)
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    notes = [f"- {SERVER_NAMES[kind]}: not measured ({why})." for kind, why in unavailable.items()]
    notes += [f"- {note}" for note in scenario_notes]
    notes += GENERAL_NOTES
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
        load_side_note(load_keys, results),
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
