"""hubbub driven by the newest official JavaScript SDKs under Node 22.

`tests/node22/scenarios.mjs` runs the scenarios with `@azure/web-pubsub-client` 1.1.0 (group
streams, invokeEvent with abort, the exported JSON protocol for group state) and
`@azure/web-pubsub` 1.2.0 (REST; it always sends api-version 2024-12-01, whatever its
`apiVersion` option says, so api-versions are tested with the Python SDK in
test_python_api_versions.py), as an application developer writes them, in one Node process
(each scenario in its own hub) and prints one JSON line of what the SDKs surfaced.
`tests/node22/upstream_app.mjs` is the application's event handler, written with
`@azure/web-pubsub-express` 1.1.0. Node itself is the registry's `node@22` package.

Needs `npm ci --prefix tests/node22` (scripts/test does it).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ACCESS_KEY, Server, free_port, start_server, stop_server

pytestmark = pytest.mark.node

NODE22_DIR = Path(__file__).resolve().parents[1] / "node22"
NODE = NODE22_DIR / "node_modules" / ".bin" / "node"
SCENARIOS_SCRIPT = NODE22_DIR / "scenarios.mjs"
UPSTREAM_SCRIPT = NODE22_DIR / "upstream_app.mjs"
NODE_RUN_TIMEOUT = 120  # seconds for the whole Node process; each scenario has its own 25 s limit

SCENARIOS = [
    "basics",
    "invoke_echo",
    "invoke_cancel",
    "stream_fragments",
    "stream_abort",
    "stream_forbidden",
    "stream_parallel",
    "stream_no_echo",
    "stream_publisher_gone",
    "stream_idle_timeout",
    "stream_invalid_fragment",
    "group_state",
    "client_metadata",
    "rest_metadata",
    "invalid_filter",
]


def _node_problem() -> str | None:
    if not NODE.exists():
        return f"{NODE} is missing; run `npm ci --prefix tests/node22` first"
    for package in ("@azure/web-pubsub", "@azure/web-pubsub-client", "@azure/web-pubsub-express"):
        if not (NODE22_DIR / "node_modules" / package / "package.json").is_file():
            return f"{package} is not installed; run `npm ci --prefix tests/node22` first"
    return None


@dataclass
class Stack:
    """A hubbub node plus the application's event handler (upstream_app.mjs)."""

    server: Server
    upstream: str
    app: subprocess.Popen[bytes]
    hub_prefix: str


def _hub_config(hub: str, upstream_port: int, extra: str = "") -> str:
    return (
        f"\n[hubs.{hub}]\n[[hubs.{hub}.event_handlers]]\n"
        f'url_template = "http://127.0.0.1:{upstream_port}/eventhandler/{{hub}}/{{event}}"\n'
        f'user_event_pattern = "*"\nsystem_events = ["connected", "disconnected"]\n{extra}'
    )


def _start_stack(tmp: Path, hub_prefix: str, scenarios: list[str], extra: str = "") -> Stack:
    hubs = [f"{hub_prefix}_{name}" for name in scenarios]
    port = free_port()
    config = f'[auth]\naccess_keys = ["{ACCESS_KEY}"]\n'
    config += "".join(_hub_config(hub, port, extra) for hub in hubs)
    hub_args = [arg for hub in hubs for arg in ("--hub", hub)]
    with open(tmp / "upstream.log", "wb") as log:  # the child holds its own copy
        app = subprocess.Popen(
            [str(NODE), str(UPSTREAM_SCRIPT), "--port", str(port), *hub_args],
            cwd=NODE22_DIR,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    upstream = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{upstream}/healthz", timeout=1):
                break
        except OSError as err:
            if app.poll() is not None or time.monotonic() > deadline:
                app.kill()
                log_text = (tmp / "upstream.log").read_text()
                raise RuntimeError(f"upstream app did not start: {log_text}") from err
            time.sleep(0.05)
    try:
        server = start_server(tmp, config_toml=config)
    except BaseException:
        app.kill()
        app.wait()
        raise
    return Stack(server, upstream, app, hub_prefix)


def _stop_stack(stack: Stack) -> None:
    stop_server(stack.server)
    stack.app.terminate()
    try:
        stack.app.wait(timeout=10)
    except subprocess.TimeoutExpired:
        stack.app.kill()
        stack.app.wait()


@dataclass
class NodeRun:
    """Results of one `node scenarios.mjs ...` run."""

    results: dict[str, Any] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    problem: str | None = None
    stderr: str = ""

    def obs(self, scenario: str) -> Any:
        if self.problem is not None:
            pytest.fail(self.problem, pytrace=False)
        result = self.results.get(scenario)
        if result is None:
            pytest.fail(f"scenario {scenario!r} reported nothing\n{self.stderr}", pytrace=False)
        if not result["ok"]:
            pytest.fail(f"scenario {scenario!r} failed: {result['error']}", pytrace=False)
        return result["obs"]


def _run_scenarios(stack: Stack, scenarios: list[str]) -> NodeRun:
    run = NodeRun()
    env = {
        **os.environ,
        "HUBBUB_CONNECTION_STRING": stack.server.connection_string,
        "HUBBUB_HUB": stack.hub_prefix,
        "HUBBUB_UPSTREAM": stack.upstream,
    }
    try:
        proc = subprocess.run(
            [str(NODE), str(SCENARIOS_SCRIPT), *scenarios],
            cwd=NODE22_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=NODE_RUN_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        run.problem = f"scenarios.mjs did not finish within {NODE_RUN_TIMEOUT} s"
        return run
    run.stderr = proc.stderr
    try:
        output = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        run.problem = f"scenarios.mjs printed no result (exit {proc.returncode}):\n{proc.stderr}"
        return run
    run.results = output["results"]
    run.unexpected = output["unexpected"]
    return run


@pytest.fixture(scope="module")
def node_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeRun]:
    """Every scenario once, in one Node process, against a hubbub node of its own."""
    problem = _node_problem()
    if problem is not None:
        yield NodeRun(problem=problem)
        return
    stack = _start_stack(tmp_path_factory.mktemp("node22"), f"n22x{os.getpid()}", SCENARIOS)
    try:
        yield _run_scenarios(stack, SCENARIOS)
    finally:
        _stop_stack(stack)


def test_scenario_list_matches_script() -> None:
    problem = _node_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    proc = subprocess.run(
        [str(NODE), str(SCENARIOS_SCRIPT), "--list"],
        cwd=NODE22_DIR,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    # group_presence runs on a stack of its own (test_group_presence_events).
    assert sorted(json.loads(proc.stdout)) == sorted([*SCENARIOS, "group_presence"])


def test_nothing_unexpected(node_run: NodeRun) -> None:
    node_run.obs("basics")
    assert node_run.unexpected == []


# --------------------------------------------------------------------------------------------
# what works today


def test_basics(node_run: NodeRun) -> None:
    assert node_run.obs("basics") == {
        "bob": [
            {
                "kind": "groupData",
                "group": "room",
                "fromUserId": "alice",
                "dataType": "text",
                "data": "hello",
            },
            {
                "kind": "serverData",
                "group": None,
                "fromUserId": None,
                "dataType": "json",
                "data": {"from": "rest"},
            },
        ]
    }


def test_invoke_event_answer_and_failure(node_run: NodeRun) -> None:
    failed = {"name": "InternalServerError", "message": "event handler answered 500"}
    assert node_run.obs("invoke_echo") == {
        "echoed": {"dataType": "json", "data": {"n": 1}},
        "failed": {"name": "InvocationError", "message": failed["message"], "errorDetail": failed},
    }


# --------------------------------------------------------------------------------------------
# invoke: a cancelled call must not hold the connection's next invocation


def test_invoke_cancel_does_not_block_the_next_invocation(node_run: NodeRun) -> None:
    assert node_run.obs("invoke_cancel") == {
        "cancelled": {"name": "InvocationError", "message": "Invocation cancelled by abortSignal."},
        "next": {"dataType": "text", "data": "next"},
        "after": "after",
    }


# --------------------------------------------------------------------------------------------
# group streams (openGroupStream / onGroupStream)


def fragment(seq: int, data_type: str, data: Any, user: str = "alice") -> dict[str, Any]:
    return {"seq": seq, "dataType": data_type, "data": data, "fromUserId": user}


def test_stream_fragments_reach_a_group_member_in_order(node_run: NodeRun) -> None:
    assert node_run.obs("stream_fragments") == {
        "streamIdMatches": True,
        "fragments": [
            fragment(1, "text", "A"),
            fragment(2, "json", {"n": 2}),
            fragment(3, "binary", {"base64": "CQgH"}),
        ],
        "error": None,
        "completed": True,
    }


def test_stream_abort_reaches_receivers_as_user_error(node_run: NodeRun) -> None:
    assert node_run.obs("stream_abort") == {
        "fragments": [fragment(1, "text", "partial")],
        "error": {"name": "UserError", "message": "gave up", "userErrorCode": "E42"},
        "completed": False,
    }


def test_stream_start_without_send_permission_is_forbidden(node_run: NodeRun) -> None:
    assert node_run.obs("stream_forbidden") == {
        "error": {
            "name": "Forbidden",
            "message": "The client has no permission to send message to group 'room'.",
        }
    }


def test_parallel_streams_of_one_connection_stay_apart(node_run: NodeRun) -> None:
    assert node_run.obs("stream_parallel") == {"a": "A1A2", "b": "B1", "completed": [True, True]}


def test_stream_no_echo_skips_the_publisher(node_run: NodeRun) -> None:
    assert node_run.obs("stream_no_echo") == {"aliceStreams": 0, "bobStreams": 1}


def test_stream_ends_cancelled_when_the_publisher_disconnects(node_run: NodeRun) -> None:
    assert node_run.obs("stream_publisher_gone") == {
        "fragments": [fragment(1, "text", "first")],
        "error": {"name": "Cancelled", "message": "The publisher of the stream disconnected."},
        "completed": False,
    }


def test_idle_stream_times_out_for_both_sides(node_run: NodeRun) -> None:
    assert node_run.obs("stream_idle_timeout") == {
        "receiver": {
            "fragments": [fragment(1, "text", "only")],
            "error": {
                "name": "IdleTimeout",
                "message": "Stream 'idle' was idle for more than 500 ms.",
            },
            "completed": False,
        },
        "publisherErrors": ["IdleTimeout"],
    }


def test_an_invalid_fragment_ends_the_stream_for_receivers_at_once(node_run: NodeRun) -> None:
    """A raw publisher's incomplete streamData: BadRequest for it, the SDK's receiver sees the
    stream end Cancelled well before any idle timeout, and a later fragment finds no stream."""
    message = "A stream fragment needs streamSequenceId, dataType and data."
    assert node_run.obs("stream_invalid_fragment") == {
        "receiver": {
            "fragments": [fragment(1, "text", "first")],
            "error": {"name": "Cancelled", "message": message},
            "completed": False,
        },
        "closed": "BadRequest",
        "late": "StreamNotFound",
    }


# --------------------------------------------------------------------------------------------
# group state, through the SDK's exported JSON reliable protocol on a raw WebSocket


def state_item(owner: str, state: dict[str, str] | None) -> dict[str, Any]:
    return {"owner": owner, "userId": owner, "state": state, "updatedAtIsNumber": True}


OK = {"success": True}
FORBIDDEN = {"success": False, "error": "Forbidden"}


def test_group_state(node_run: NodeRun) -> None:
    assert node_run.obs("group_state") == {
        "nonMemberSet": FORBIDDEN,
        "withoutRoleSet": FORBIDDEN,
        "withoutRoleSubscribe": FORBIDDEN,
        "subscribe": OK,
        "emptySnapshot": [],
        "set": OK,
        "update": {"group": "room", "items": [state_item("alice", {"activity": "typing"})]},
        "aliceSnapshot": [state_item("alice", {"activity": "typing"})],
        "cleared": [state_item("alice", None)],
        "unsubscribe": OK,
        "bobUpdatesAfterUnsubscribe": 0,
    }


def test_client_metadata_reaches_the_client(node_run: NodeRun) -> None:
    assert node_run.obs("client_metadata") == {
        "metadata": {"trace": "t2"},
        "data": "tagged",
        "fromUserId": "alice",
    }


# --------------------------------------------------------------------------------------------
# REST (@azure/web-pubsub 1.2.0)


def test_rest_metadata_header_reaches_the_client(node_run: NodeRun) -> None:
    assert node_run.obs("rest_metadata") == {"metadata": {"trace": "t1"}, "data": "hi"}


def test_invalid_filter_answer_is_the_services(node_run: NodeRun) -> None:
    # The SDK's own live test reads the service's text with JSON.parse(error.message).message.
    assert node_run.obs("invalid_filter") == {
        "name": "RestError",
        "statusCode": 400,
        "message": "Invalid syntax for 'invalid filter': Syntax error at position 14 in"
        " 'invalid filter'. (Parameter 'filter')",
    }


# --------------------------------------------------------------------------------------------
# group presence events (onGroupJoined / onGroupLeft of @azure/web-pubsub-express 1.1.0)


def test_group_presence_events(tmp_path: Path) -> None:
    problem = _node_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    extra = 'group_presence_events = ["joined", "left"]\n'
    stack = _start_stack(tmp_path, f"gp{os.getpid()}", ["group_presence"], extra)
    try:
        run = _run_scenarios(stack, ["group_presence"])
    finally:
        _stop_stack(stack)

    def event(kind: str, group: str) -> dict[str, Any]:
        return {"kind": kind, "group": group, "userId": "alice", "sameConnection": True}

    assert run.obs("group_presence") == {
        "explicit": [
            event("joined", "room"),
            event("joined", "other"),
            event("left", "room"),
            event("joined", "by-rest"),
            event("joined", "by-rest-too"),
            event("left", "by-rest-too"),
        ],
        "closing": ["disconnected", "left by-rest", "left other"],
    }
    assert run.unexpected == []
