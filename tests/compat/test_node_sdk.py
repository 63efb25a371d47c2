"""hubbub driven by the official JavaScript SDKs under Node.js.

`tests/node/scenarios.mjs` runs every scenario with `@azure/web-pubsub` (REST) and
`@azure/web-pubsub-client` (WebSocket) against the session's hubbub node, all in one Node
process (each scenario in its own hub), and prints one JSON line of what the SDKs surfaced.
Each test below asserts the exact observations of one scenario.

Needs Node.js 20+ and the pinned packages: `npm ci --prefix tests/node`.
One scenario can be run by hand against a running node, e.g.
`node tests/node/scenarios.mjs --connection-string "$CS" --hub h1 send_to_all`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.conftest import FAST_LANE_MODES, Server

pytestmark = pytest.mark.node

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SCRIPT = NODE_DIR / "scenarios.mjs"
NODE_RUN_TIMEOUT = 90  # seconds for the whole Node process; each scenario has its own 20 s limit

SCENARIOS = [
    "token_connect",
    "send_to_all",
    "send_to_user",
    "send_to_connection",
    "group_send",
    "group_users",
    "group_connections",
    "exists",
    "close_connection",
    "close_user_connections",
    "close_all_connections",
    "group_close_all",
    "permissions",
    "remove_from_all_groups",
    "list_connections",
    "add_remove_connections_to_groups",
    "wrong_key",
    "secondary_key",
    "names_and_escaping",
    "payloads",
    "token_validation",
    "client_wildcard_roles",
    "client_connected",
    "client_join_leave",
    "client_send_to_group",
    "client_send_event",
    "client_forbidden",
    "client_json_protocol",
    "client_stop",
    "client_anonymous_and_url_forms",
    "client_keepalive",
    "client_rest_close_reconnect",
    "client_json_rest_close_reconnect",
]
REST_SCENARIOS = [name for name in SCENARIOS if not name.startswith("client_")]
"""The scenarios of the server SDK (@azure/web-pubsub), with clients where they need them."""

RELIABLE = "json.reliable.webpubsub.azure.v1"
JSON_V1 = "json.webpubsub.azure.v1"

# Outcome shapes produced by the `rest()` and `op()` helpers in scenarios.mjs.
OK: dict[str, Any] = {"ok": True}
ACKED: dict[str, Any] = {"ok": True, "isDuplicated": False}
DUPLICATE: dict[str, Any] = {"ok": True, "isDuplicated": True}
FORBIDDEN: dict[str, Any] = {"ok": False, "error": "SendMessageError", "errorDetail": "Forbidden"}
INTERNAL_ERROR: dict[str, Any] = {
    "ok": False,
    "error": "SendMessageError",
    "errorDetail": "InternalServerError",
}


class ServerLike(Protocol):
    @property
    def endpoint(self) -> str: ...
    @property
    def ws_endpoint(self) -> str: ...
    @property
    def connection_string(self) -> str: ...
    @property
    def secondary_connection_string(self) -> str: ...


def value(v: Any) -> dict[str, Any]:
    """A successful REST call that returned `v` (e.g. an exists check)."""
    return {"ok": True, "value": v}


def status(code: int) -> dict[str, Any]:
    """A REST call the SDK rejected with a RestError carrying this HTTP status."""
    return {"ok": False, "error": "RestError", "statusCode": code}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def srv(data_type: str, data: Any) -> dict[str, Any]:
    """A `server-message` event as normalised by scenarios.mjs."""
    return {"from": "server", "dataType": data_type, "data": data}


def grp(group: str, data_type: str, data: Any, from_user: str | None = None) -> dict[str, Any]:
    """A `group-message` event as normalised by scenarios.mjs."""
    return {
        "from": "group",
        "group": group,
        "fromUserId": from_user,
        "dataType": data_type,
        "data": data,
    }


def connected(user: str | None, conn: str = "c1") -> dict[str, Any]:
    return {"event": "connected", "connectionId": conn, "userId": user}


def disconnected(message: str | None, conn: str = "c1") -> dict[str, Any]:
    return {"event": "disconnected", "connectionId": conn, "message": message}


STOPPED: dict[str, Any] = {"event": "stopped"}


def closed_by_rest(user: str | None, reason: str) -> list[dict[str, Any]]:
    """Lifecycle of a client without auto-reconnect whose connection the server closed."""
    return [connected(user), disconnected(reason), STOPPED]


@dataclass
class NodeRun:
    """Results of one `node scenarios.mjs ...` run."""

    hub_prefix: str
    server: ServerLike
    results: dict[str, Any] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    problem: str | None = None
    stderr: str = ""

    def hub(self, scenario: str) -> str:
        return f"{self.hub_prefix}_{scenario}"

    def obs(self, scenario: str) -> dict[str, Any]:
        if self.problem is not None:
            pytest.fail(self.problem, pytrace=False)
        result = self.results.get(scenario)
        if result is None:
            pytest.fail(f"scenario {scenario!r} reported nothing\n{self.stderr}", pytrace=False)
        if not result["ok"]:
            steps = " -> ".join(result.get("steps", []))
            pytest.fail(
                f"scenario {scenario!r} failed: {result['error']}\nsteps: {steps}",
                pytrace=False,
            )
        obs: dict[str, Any] = result["obs"]
        return obs


def _node_problem() -> str | None:
    if shutil.which("node") is None:
        return "Node.js is not on PATH; install Node.js 20+ to run the JavaScript SDK tests"
    for package in ("@azure/web-pubsub", "@azure/web-pubsub-client", "ws"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            return (
                f"{package} is not installed in {NODE_DIR / 'node_modules'}; "
                "run `npm ci --prefix tests/node` first"
            )
    return None


@pytest.fixture(scope="module")
def node_run(server: ServerLike) -> NodeRun:
    """Every scenario once, in one Node process, against the session's server."""
    return _run(server, SCENARIOS, f"nodesdk{os.getpid()}")


@pytest.fixture(scope="module", params=FAST_LANE_MODES)
def rest_run(
    request: pytest.FixtureRequest, node_run: NodeRun, server_without_lane: Server
) -> NodeRun:
    """The server SDK's scenarios, against the session's server and again against a node that
    answers every REST request with aiohttp (no fast lane)."""
    if request.param:
        return node_run
    return _run(server_without_lane, REST_SCENARIOS, f"nodesdknolane{os.getpid()}")


def _run(server: ServerLike, scenarios: list[str], hub_prefix: str) -> NodeRun:
    run = NodeRun(hub_prefix=hub_prefix, server=server)
    run.problem = _node_problem()
    if run.problem is not None:
        return run
    cmd = ["node", str(SCRIPT), "--hub", run.hub_prefix, *scenarios]
    env = {
        **os.environ,
        "HUBBUB_CONNECTION_STRING": server.connection_string,
        "HUBBUB_SECONDARY_CONNECTION_STRING": server.secondary_connection_string,
    }
    try:
        proc = subprocess.run(
            cmd,
            cwd=NODE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=NODE_RUN_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        run.problem = f"node did not finish within {NODE_RUN_TIMEOUT} s; stderr:\n{exc.stderr!r}"
        return run
    run.stderr = proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        run.problem = (
            f"node exited with {proc.returncode} without a JSON result\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
        return run
    report = json.loads(lines[-1])
    run.results = report["results"]
    run.unexpected = report["unexpected"]
    return run


# --------------------------------------------------------------------------- harness


def test_scenario_list_matches_script() -> None:
    problem = _node_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    proc = subprocess.run(
        ["node", str(SCRIPT), "--list"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(proc.stdout) == SCENARIOS


def test_no_unhandled_errors_in_node(node_run: NodeRun, rest_run: NodeRun) -> None:
    for run in (node_run, rest_run):
        if run.problem is not None:
            pytest.fail(run.problem, pytrace=False)
        assert run.unexpected == []


# --------------------------------------------------------------------------- server SDK


def test_token_connect(rest_run: NodeRun) -> None:
    server = rest_run.server
    hub = rest_run.hub("token_connect")
    obs = rest_run.obs("token_connect")
    assert obs["hub"] == hub
    assert obs["baseUrl"] == f"{server.ws_endpoint}/client/hubs/{hub}"
    assert obs["urlIsBasePlusToken"] is True
    assert obs["claims"] == {
        "aud": f"{server.endpoint}/client/hubs/{hub}",
        "sub": "alice",
        "role": ["webpubsub.joinLeaveGroup.room", "webpubsub.sendToGroup"],
        "groups": ["lobby"],
        "lifetimeSeconds": 1800,
    }
    assert obs["connected"] == {"userId": "alice", "connectionIdIsNonEmptyString": True}
    assert obs["subprotocol"] == RELIABLE
    assert obs["lobbyExists"] is True
    assert obs["joinRoom"] == ACKED
    assert obs["joinOther"] == FORBIDDEN
    assert obs["sendToRoom"] == ACKED
    assert obs["messages"] == [
        grp("lobby", "json", {"hello": "lobby"}),
        grp("room", "text", "hi room", "alice"),
    ]
    assert obs["canJoinRoom"] is True
    assert obs["canJoinOther"] is False
    assert obs["userExists"] is True


def test_send_to_all(rest_run: NodeRun) -> None:
    obs = rest_run.obs("send_to_all")
    assert obs["sends"] == {
        name: OK
        for name in (
            "json",
            "text",
            "buffer",
            "arrayBuffer",
            "jsonString",
            "jsonNumber",
            "excluded",
            "excludedTwo",
            "filterUser",
            "filterNull",
        )
    }
    everyone = [
        srv("json", {"kind": "json", "n": [1, 2, 3], "nested": {"ok": True}, "none": None}),
        srv("text", "plain text ✓"),
        srv("binary", b64(bytes([0, 1, 2, 253, 254, 255]))),
        srv("binary", b64(bytes([9, 8, 7]))),
        srv("json", "a json string"),
        srv("json", 42),
    ]
    assert obs["received"] == {
        "a": [
            *everyone,
            srv("json", {"step": "excluded"}),
            srv("json", {"step": "filter-u1"}),
        ],
        "b": [*everyone, srv("json", {"step": "excluded-two"})],
        "c": [
            *everyone,
            srv("json", {"step": "excluded"}),
            srv("json", {"step": "filter-null"}),
        ],
    }


def test_send_to_user(rest_run: NodeRun) -> None:
    obs = rest_run.obs("send_to_user")
    assert obs["sends"] == {
        name: OK for name in ("json", "text", "binary", "unknownUser", "filtered")
    }
    alice = [srv("json", {"to": "alice"}), srv("binary", b64(b"bin"))]
    assert obs["received"] == {
        "a1": alice,
        "a2": [*alice, srv("json", {"step": "filtered"})],
        "b": [srv("text", "hi bob")],
    }


def test_send_to_connection(rest_run: NodeRun) -> None:
    obs = rest_run.obs("send_to_connection")
    assert obs["sends"] == {name: OK for name in ("json", "text", "binary", "unknownConnection")}
    assert obs["received"] == {
        "a": [srv("json", {"to": "a"}), srv("binary", b64(bytes([1, 2, 3])))],
        "b": [srv("text", "text for b")],
    }


def test_group_send_with_excluded_and_filter(rest_run: NodeRun) -> None:
    obs = rest_run.obs("group_send")
    assert all(outcome == OK for outcome in obs["sends"].values()), obs["sends"]
    assert len(obs["sends"]) == 8
    members = [
        grp("g", "json", {"hello": "g"}),
        grp("g", "text", "text to g"),
        grp("g", "binary", b64(bytes([1, 2]))),
    ]
    assert obs["received"] == {
        "a": [
            *members,
            grp("g", "json", {"step": "excluded"}),
            grp("g", "json", {"step": "filter-u1"}),
        ],
        "b": [*members, grp("g", "json", {"step": "filter-and-excluded"})],
        "c": members,
        "d": [],
    }


def test_group_add_remove_user(rest_run: NodeRun) -> None:
    obs = rest_run.obs("group_users")
    assert obs == {
        "existsBefore": False,
        "addAlice": OK,
        "existsAfterAdd": True,
        "membersAfterAdd": ["a1", "a2"],
        "afterAdd": {
            "a1": [grp("team", "json", {"n": 1})],
            "a2": [grp("team", "json", {"n": 1})],
            "b": [],
        },
        "removeAlice": OK,
        "existsAfterRemove": False,
        "afterRemove": {"a1": [], "a2": [], "b": []},
        "addGhost": status(404),
        "removeGhost": OK,
    }


def test_group_add_remove_connection(rest_run: NodeRun) -> None:
    obs = rest_run.obs("group_connections")
    assert obs == {
        "addA": OK,
        "addAAgain": OK,
        "phase1": {"a": [grp("g", "json", {"n": 1})], "b": []},
        "addB": OK,
        "members": ["a", "b"],
        "phase2": {"a": [grp("g", "json", {"n": 2})], "b": [grp("g", "json", {"n": 2})]},
        "removeA": OK,
        "phase3": {"a": [], "b": [grp("g", "json", {"n": 3})]},
        "addUnknown": status(404),
        "removeUnknown": OK,
    }


def test_exists_checks(rest_run: NodeRun) -> None:
    obs = rest_run.obs("exists")
    assert obs == {
        "userAlice": True,
        "userNobody": False,
        "connectionA": True,
        "connectionUnknown": False,
        "groupG": True,
        "groupUnknown": False,
        "groupGAfterRemove": False,
        "connectionAAfterStop": False,
        "userAliceAfterStop": False,
    }


def test_close_connection_with_reason(rest_run: NodeRun) -> None:
    obs = rest_run.obs("close_connection")
    assert obs == {
        "closeR": OK,
        "closeJ": OK,
        "closeUnknown": OK,
        # reliable client: recovery is refused with 1008, then it stops (autoReconnect off)
        "r": closed_by_rest("rel", "bye reliable"),
        "j": closed_by_rest("json", "bye json"),
        "k": [connected("keep")],
        # close code of the socket the SDK gave up on: the refused recovery attempt (1008)
        # for the reliable client, the REST close itself (1000) for the json client
        "closeCodes": {"r": [1008], "j": [1000]},
        "existsR": False,
        "existsJ": False,
        "existsK": True,
        "kStillReceives": [],
    }


def test_close_user_connections(rest_run: NodeRun) -> None:
    obs = rest_run.obs("close_user_connections")
    assert obs == {
        "close": OK,
        "closeUnknown": OK,
        "a1": closed_by_rest("alice", "alice is out"),
        "a2": closed_by_rest("alice", "alice is out"),
        "b": [connected("bob")],
        "aliceExists": False,
        "bobExists": True,
    }


def test_close_all_connections(rest_run: NodeRun) -> None:
    obs = rest_run.obs("close_all_connections")
    assert obs == {
        "close": OK,
        "a": closed_by_rest("alice", "maintenance"),
        "b": closed_by_rest(None, "maintenance"),
        "c": closed_by_rest("carol", "maintenance"),
        "existsA": False,
        "existsB": False,
        "existsC": False,
    }


def test_group_close_all_connections(rest_run: NodeRun) -> None:
    obs = rest_run.obs("group_close_all")
    assert obs == {
        "close": OK,
        "closeEmpty": OK,
        "a": closed_by_rest("alice", "group closed"),
        "b": closed_by_rest("bob", "group closed"),
        "c": [connected("carol")],
        "groupG": False,
        "membersH": ["c"],
        "existsC": True,
    }


def test_grant_revoke_has_permission(rest_run: NodeRun) -> None:
    obs = rest_run.obs("permissions")
    assert obs == {
        "canJoinGBefore": False,
        "joinGBefore": FORBIDDEN,
        "grantJoinG": OK,
        "canJoinG": True,
        "canJoinH": False,
        "joinG": ACKED,
        "joinH": FORBIDDEN,
        "canSendGBefore": False,
        "sendGBefore": FORBIDDEN,
        "grantSendG": OK,
        "canSendG": True,
        "sendG": ACKED,
        "revokeSendG": OK,
        "canSendGAfterRevoke": False,
        "sendGAfterRevoke": FORBIDDEN,
        "revokeJoinG": OK,
        "canJoinGAfterRevoke": False,
        "leaveGAfterRevoke": FORBIDDEN,
        # revoking a permission does not remove existing membership
        "stillMemberOfG": ["a"],
        "messages": [grp("g", "text", "after grant", "pa")],
        "grantUnknown": status(404),
        "revokeUnknown": OK,
        "hasUnknown": value(False),
    }


def test_remove_connection_and_user_from_all_groups(rest_run: NodeRun) -> None:
    obs = rest_run.obs("remove_from_all_groups")
    both = [grp("g1", "json", {"g": 1, "n": 1}), grp("g2", "json", {"g": 2, "n": 1})]
    assert obs == {
        "removeConnection": OK,
        "phase1": {"a": [], "b": both, "c": both},
        "removeUser": OK,
        "phase2": {
            "a": [],
            "b": [],
            "c": [grp("g1", "json", {"g": 1, "n": 2}), grp("g2", "json", {"g": 2, "n": 2})],
        },
        "membersG1": ["c"],
        "membersG2": ["c"],
        "removeUnknownUser": OK,
        "removeUnknownConnection": OK,
    }


def test_list_connections_in_group_paged(rest_run: NodeRun) -> None:
    obs = rest_run.obs("list_connections")
    assert obs == {
        "pageSizes": [2, 2, 1],
        "paged": [
            {"connection": "anon", "userId": None},
            {"connection": "p0", "userId": "u0"},
            {"connection": "p1", "userId": "u1"},
            {"connection": "p2", "userId": "u2"},
            {"connection": "p3", "userId": "u3"},
        ],
        "unpagedCount": 5,
        "topPageSizes": [2, 1],
        "toppedDistinct": 3,
        "emptyGroup": [[]],
        "iterated": ["anon", "p0", "p1", "p2", "p3"],
    }


def test_add_remove_connections_to_groups_with_filter(rest_run: NodeRun) -> None:
    obs = rest_run.obs("add_remove_connections_to_groups")
    alice_phase1 = [
        grp("ga", "json", {"to": "ga", "n": 1}),
        grp("gb", "json", {"to": "gb", "n": 1}),
    ]
    assert obs == {
        "addAlice": OK,
        "membersGa": ["a1", "a2"],
        "membersGb": ["a1", "a2"],
        "phase1": {
            "a1": alice_phase1,
            "a2": alice_phase1,
            "b": [],
            "c": [],
        },
        "removeA1": OK,
        "addAnonymous": OK,
        "addInGroup": OK,
        "membersGaAfter": ["a2"],
        "membersGbAfter": ["a1", "a2"],
        "membersGc": ["c"],
        "membersGd": ["a1", "a2"],
        "phase2": {
            "a1": [],
            "a2": [grp("ga", "json", {"to": "ga", "n": 2})],
            "b": [],
            "c": [grp("gc", "json", {"to": "gc", "n": 2})],
        },
        "addNoMatch": OK,
        "groupGe": False,
    }


def test_wrong_access_key_is_rejected_with_401(rest_run: NodeRun) -> None:
    obs = rest_run.obs("wrong_key")
    assert obs == {
        "sendToAll": status(401),
        "sendToUser": status(401),
        "userExists": status(401),
        "groupExists": status(401),
        "addUser": status(401),
        "closeAll": status(401),
        "listConnections": status(401),
        "clientStart": {"ok": False, "mentions401": True},
        "goodKeyStillWorks": OK,
    }


def test_secondary_access_key(rest_run: NodeRun) -> None:
    obs = rest_run.obs("secondary_key")
    assert obs == {
        "userId": "sec",
        "send": OK,
        "userExists": value(True),
        "received": [srv("json", {"via": "secondary"})],
    }


def test_names_needing_escaping(rest_run: NodeRun) -> None:
    obs = rest_run.obs("names_and_escaping")
    user = "Zoë O'Brien+1"
    group = "chat room #1 ü"
    assert obs == {
        "connectedUserId": user,
        "userExists": True,
        "groupExists": True,
        "members": ["a"],
        "sendToUser": OK,
        "sendToGroup": OK,
        "filter": "userId eq 'Zoë O''Brien+1'",
        "sendFiltered": OK,
        "addPlainToGroup": OK,
        "membersAfterAdd": ["a", "b"],
        "received": {
            "a": [
                srv("json", {"to": "user"}),
                grp(group, "json", {"to": "group"}),
                srv("json", {"to": "filtered"}),
                grp(group, "json", {"to": "group", "n": 2}),
            ],
            "b": [grp(group, "json", {"to": "group", "n": 2})],
        },
    }


def test_payload_sizes_and_ttl(rest_run: NodeRun) -> None:
    obs = rest_run.obs("payloads")
    assert obs == {
        "ttl": OK,
        "bigText": OK,
        "bigBinary": OK,
        "emptyText": OK,
        "join": ACKED,
        "clientBig": ACKED,
        "received": [
            {"from": "server", "dataType": "json", "length": None, "matches": True},
            {"from": "server", "dataType": "text", "length": 300 * 1024, "matches": True},
            {
                "from": "server",
                "dataType": "binary",
                "length": len(b64(bytes(200 * 1024))),
                "matches": True,
            },
            {"from": "server", "dataType": "text", "length": 0, "matches": True},
            {
                "from": "group",
                "dataType": "binary",
                "length": len(b64(bytes(150 * 1024))),
                "matches": True,
            },
        ],
    }


def test_client_token_validation(rest_run: NodeRun) -> None:
    obs = rest_run.obs("token_validation")
    assert obs == {
        "expiredTokenExpIsPast": True,
        "expired": {"ok": False, "status": "401"},
        "otherHubToken": {"ok": False, "status": "401"},
        "whitespaceGroup": {"ok": False, "status": "400"},
        "oneMinute": {"ok": True},
    }


# --------------------------------------------------------------------------- client SDK


def test_client_wildcard_roles(node_run: NodeRun) -> None:
    obs = node_run.obs("client_wildcard_roles")
    assert obs == {
        "joinChat1": ACKED,
        "joinChatDot": FORBIDDEN,  # `*` does not cross a `.`
        "joinOther": FORBIDDEN,
        "sendTeamDeep": ACKED,  # `**` does
        "sendTeam": FORBIDDEN,
        "sendChat1": FORBIDDEN,  # a join role is no send role
        "members": ["a"],
    }


def test_client_connected_event(node_run: NodeRun) -> None:
    obs = node_run.obs("client_connected")
    assert obs == {
        "a": [connected("alice")],
        "b": [connected(None)],
        "distinctIds": True,
        "subprotocol": RELIABLE,
        "hasReconnectionToken": True,
        # three sends to the connection, one to the user, then the barrier marker
        "sequenceIds": [1, 2, 3, 4, 5],
        "messages": [
            srv("json", {"n": 1}),
            srv("json", {"n": 2}),
            srv("json", {"n": 3}),
            srv("text", "to alice"),
            srv("text", "__barrier_1__"),
        ],
    }


def test_client_join_leave_group(node_run: NodeRun) -> None:
    obs = node_run.obs("client_join_leave")
    assert obs == {
        "existsBefore": False,
        "join": ACKED,
        "joinB": ACKED,
        "members": ["a", "b"],
        "phase1": {"a": [grp("room", "json", {"n": 1})], "b": [grp("room", "json", {"n": 1})]},
        "leave": ACKED,
        "leaveB": ACKED,
        "existsAfterLeave": False,
        "phase2": {"a": [], "b": []},
        "joinWithAckId": ACKED,
        # the service answers a repeated ackId with `Duplicate`, which the SDK treats as success
        "joinSameAckId": DUPLICATE,
        "leaveNotJoined": ACKED,
        "membersAgain": ["a"],
    }


def test_client_send_to_group_data_types_and_no_echo(node_run: NodeRun) -> None:
    obs = node_run.obs("client_send_to_group")
    assert obs["joinA"] == ACKED
    assert obs["joinB"] == ACKED
    assert obs["sends"] == {
        "jsonEcho": ACKED,
        "textNoEcho": ACKED,
        "binaryEcho": ACKED,
        "binaryNoEcho": ACKED,
        "textEchoExplicit": ACKED,
        "jsonNumber": ACKED,
        "fireAndForget": ACKED,
        "fafArrived": "group",
        "fromNonMember": ACKED,
    }
    json_msg = grp("chat", "json", {"hello": "json", "list": [1, "two"]}, "alice")
    binary = grp("chat", "binary", b64(bytes([1, 2, 3, 4])), "bob")
    explicit = grp("chat", "text", "explicit echo", "alice")
    faf = grp("chat", "json", {"faf": True}, "bob")
    outside = grp("chat", "text", "from outside", "carol")
    assert obs["received"] == {
        "a": [json_msg, binary, grp("chat", "binary", b64(b"\xff"), "bob"), explicit, faf, outside],
        "b": [
            json_msg,
            grp("chat", "text", "text, no echo", "alice"),
            binary,
            explicit,
            grp("chat", "json", 7, "alice"),
            faf,
            outside,
        ],
        "c": [],
    }


def test_client_send_event_without_handler(node_run: NodeRun) -> None:
    obs = node_run.obs("client_send_event")
    assert obs == {
        "sendEvent": INTERNAL_ERROR,
        "sendEventText": INTERNAL_ERROR,
        "fireAndForget": ACKED,
        "stillConnected": True,
        "stillReceives": [],
        "lifecycle": [connected("alice")],
    }


def test_client_forbidden_without_role(node_run: NodeRun) -> None:
    obs = node_run.obs("client_forbidden")
    assert obs == {
        "noRoleJoin": FORBIDDEN,
        "noRoleLeave": FORBIDDEN,
        "noRoleSend": FORBIDDEN,
        "scopedJoinG1": ACKED,
        "scopedJoinG2": FORBIDDEN,
        "scopedSendG1": ACKED,
        "scopedSendG2": FORBIDDEN,
        "membersG1": ["b"],
        "received": {"a": [], "b": [grp("g1", "text", "yes", "bob")]},
        "lifecycleA": [connected("alice")],
    }


def test_client_json_protocol(node_run: NodeRun) -> None:
    obs = node_run.obs("client_json_protocol")
    common = [
        grp("g", "json", {"from": "a"}, "alice"),
        srv("binary", b64(b"server")),
        grp("g", "text", "group text"),
    ]
    assert obs == {
        "a": [connected("alice")],
        "subprotocol": JSON_V1,
        "hasReconnectionToken": False,
        "joinA": ACKED,
        "joinB": ACKED,
        "send": ACKED,
        "sendNoEcho": ACKED,
        "received": {
            "a": [common[0], grp("g", "text", "from b", "bob"), *common[1:]],
            "b": common,
        },
        "sequenceIds": [None],
        "sendEvent": INTERNAL_ERROR,
        "forbidden": FORBIDDEN,
    }


def test_client_stop(node_run: NodeRun) -> None:
    obs = node_run.obs("client_stop")
    # JS stop() closes without a status code; whether a reliable session lingers for
    # recovery is not asserted (obs["existsRDiagnostic"]).
    assert obs["r"] == [connected("rel"), disconnected(None), STOPPED]
    assert obs["j"] == [connected("json"), disconnected(None), STOPPED]
    assert obs["existsJ"] is False
    assert obs["jAfterRestart"] == [
        connected("json"),
        disconnected(None),
        STOPPED,
        connected("json", "c2"),
    ]


def test_client_anonymous_and_url_forms(node_run: NodeRun) -> None:
    obs = node_run.obs("client_anonymous_and_url_forms")
    assert obs == {
        "anon": [connected(None)],
        "anonSubprotocol": RELIABLE,
        "noToken": {"ok": False, "mentions401": True},
        "query": [connected("q")],
        "queryReceived": [srv("json", {"via": "query url"})],
    }


def test_client_keepalive_pings_are_answered(node_run: NodeRun) -> None:
    obs = node_run.obs("client_keepalive")
    assert obs == {"lifecycle": [connected("alice")], "received": []}


def _assert_reconnected_after_rest_close(obs: dict[str, Any], close_code: int) -> None:
    assert obs == {
        "join": ACKED,
        "close": OK,
        "lifecycle": [connected("alice"), disconnected("kicked"), connected("alice", "c2")],
        "closeCodes": [close_code],
        "existsOld": False,
        "existsNew": True,
        "userId": "alice",
        "membersRoom": ["a"],
        "afterReconnect": [grp("room", "json", {"after": "reconnect"})],
    }


def test_client_rest_close_then_reconnects(node_run: NodeRun) -> None:
    # json.reliable: the SDK tries to recover, hubbub refuses with 1008, the SDK then opens a
    # new connection and rejoins the groups it joined itself.
    _assert_reconnected_after_rest_close(node_run.obs("client_rest_close_reconnect"), 1008)


def test_client_json_rest_close_then_reconnects(node_run: NodeRun) -> None:
    # json.webpubsub.azure.v1: no recovery; the SDK reconnects right after the 1000 close
    _assert_reconnected_after_rest_close(node_run.obs("client_json_rest_close_reconnect"), 1000)
