"""The scenarios, one module per scenario or family, and the order they run and report in.

Each module has ``run(ctx, kind)`` (one server kind, one repetition), ``rows(plan)`` (its table
rows) and, where it needs them, ``notes(plan, results)``. :data:`SCENARIOS` lists them in the
order of the report; :func:`run_scenarios` runs the selected ones in the order of the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.config import Plan
from harness.results import Results, Row
from harness.scenarios import cluster, echo, fanout, groups, idle, reliable, slow, unacked, users
from harness.scenarios.common import Context


def _no_notes(plan: Plan, results: Results) -> list[str]:
    return []


@dataclass(frozen=True)
class Scenario:
    letter: str
    summary: str
    rows: Callable[[Plan], list[Row]]
    notes: Callable[[Plan, Results], list[str]] = _no_notes
    load_keys: tuple[str, ...] = ()
    """Result keys whose server and load CPU use the report lists."""


SCENARIOS = (
    Scenario(
        "a",
        "one group of 1,000 members, 100 B and 2 KB, REST and client sendToGroup",
        fanout.rows_a,
        load_keys=("a-rest-100", "a-rest-2048", "a-ws-100", "a-ws-2048"),
    ),
    Scenario("b", "1,000 groups of 10 members, REST", groups.rows, load_keys=("b-groups",)),
    Scenario("c", "REST send-to-user, 1,000 users", users.rows, load_keys=("c-users",)),
    Scenario("d", "idle memory per connection", idle.rows, idle.notes),
    Scenario(
        "e",
        "latency at half the maximum rate of (a) REST 100 B; hubbub also with --workers 2",
        fanout.rows_e,
        fanout.notes_e,
    ),
    Scenario(
        "f", "plain WebSocket echo (hubbub: upstream handler)", echo.rows, echo.notes, ("f-echo",)
    ),
    Scenario("g", "slow consumers (hubbub only)", slow.rows),
    Scenario(
        "h",
        "one group of 1,000 json.reliable members (SDK-like acks) against json, REST",
        reliable.rows,
        reliable.notes,
        ("h-json-100", "h-json-2048", "h-reliable-100", "h-reliable-2048"),
    ),
    Scenario("i", "memory per reliable connection with unacked messages (hubbub)", unacked.rows),
    Scenario(
        "j",
        "a cluster on Redis: 2 nodes against 1, Redis CPU, session replication (hubbub)",
        cluster.rows,
        cluster.notes,
        ("j-fanout-1node", "j-fanout-2nodes", "j-users-1node", "j-users-2nodes"),
    ),
)
LETTERS = "".join(s.letter for s in SCENARIOS)


async def run_scenarios(ctx: Context, kind: str, wanted: set[str]) -> None:
    """The selected scenarios for one server kind, each on a fresh server."""
    if "a" in wanted or "e" in wanted:
        await fanout.run(ctx, kind, "a" in wanted, "e" in wanted)
    if "b" in wanted:
        await groups.run(ctx, kind)
    if "c" in wanted:
        await users.run(ctx, kind)
    if "d" in wanted:
        await idle.run(ctx, kind)
    if "f" in wanted:
        await echo.run(ctx, kind)
    if "g" in wanted:
        await slow.run(ctx, kind)
    if "h" in wanted:
        await reliable.run(ctx, kind)
    if "i" in wanted:
        await unacked.run(ctx, kind)
    if "j" in wanted:
        await cluster.run(ctx, kind)


def all_rows(plan: Plan) -> list[Row]:
    return [row for s in SCENARIOS for row in s.rows(plan)]


def all_notes(plan: Plan, results: Results) -> list[str]:
    return [note for s in SCENARIOS for note in s.notes(plan, results)]


def load_keys() -> list[str]:
    return [key for s in SCENARIOS for key in s.load_keys]
