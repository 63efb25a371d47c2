"""The command line of ``bench/run.py``: options, the repetitions, the report."""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal
import sys
import time

from harness import servers
from harness.config import BENCH, LOAD_CPU, OUT, SERVERS, Plan
from harness.processes import Children
from harness.results import RESULTS_HEAD, Results, machine, write_report
from harness.scenarios import LETTERS, all_notes, all_rows, load_keys, run_scenarios
from harness.scenarios.common import Context
from harness.servers import ServerUnavailable

DESCRIPTION = (
    "The hubbub benchmark: hubbub against a Node.js ``ws`` and a uWebSockets reference, in one run."
)


async def main_async(args: argparse.Namespace) -> int:
    plan = Plan.make(args.quick, args.repeat)
    wanted = set(args.scenarios.split(",")) if args.scenarios else set(LETTERS)
    unknown = wanted - set(LETTERS)
    if unknown:
        print(f"unknown scenarios: {','.join(sorted(unknown))}", file=sys.stderr)
        return 2
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    rev = None
    if args.hubbub_rev:
        src = servers.snapshot(args.hubbub_rev)
        servers.use_hubbub_src(src)
        rev = src.parent.name.removeprefix("hubbub-")
        print(f"hubbub from {args.hubbub_rev} = {rev} ({src})", flush=True)
    info = machine()
    os.sched_setaffinity(0, {LOAD_CPU})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    children = Children()
    results: Results = {}
    unavailable: dict[str, str] = {}
    started = time.time()
    kinds = [s for s in SERVERS if s in (args.servers or ",".join(SERVERS)).split(",")]
    try:
        for rep in range(plan.repeat):
            print(f"== run {rep + 1} of {plan.repeat}", flush=True)
            ctx = Context(plan, children, results, args.profile and rep == 0)
            for kind in kinds:
                if kind in unavailable:
                    continue
                try:
                    await run_scenarios(ctx, kind, wanted)
                except ServerUnavailable as exc:
                    unavailable[kind] = str(exc).splitlines()[-1][:200]
                    print(f"!! {exc}", flush=True)
                finally:
                    await children.stop_all()
    finally:
        await children.stop_all()
    text = write_report(
        plan,
        all_rows(plan),
        all_notes(plan, results),
        load_keys(),
        info,
        results,
        unavailable,
        started,
        rev,
        args.hubbub_rev,
    )
    print(text)
    if not plan.quick and wanted == set(LETTERS) and tuple(kinds) == SERVERS:
        # Only a whole run replaces the table; a partial one stays in bench/out/.
        (BENCH / "RESULTS.md").write_text(RESULTS_HEAD + text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="small and short (~5 minutes)")
    parser.add_argument(
        "--scenarios", help=f"comma-separated subset of {','.join(LETTERS)} (default all)"
    )
    parser.add_argument("--servers", help="comma-separated subset of hubbub,node,uws (default all)")
    parser.add_argument("--repeat", type=int, help="runs per figure (default 3, quick 1)")
    parser.add_argument(
        "--hubbub-rev", help="benchmark hubbub's src/ at this git revision instead of the tree"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy samples of hubbub in extra windows of (a) REST 100 B, (b), (c), (e), (f), "
        "(h) (first repetition; bench/out/profile-hubbub-*)",
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
