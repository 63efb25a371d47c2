"""Event handlers served by a real `@azure/web-pubsub-express` application.

`tests/node/upstream_app.mjs` is an express app written like the Azure quick starts: one
`WebPubSubEventHandler` per hub (connect, user events, connected, disconnected) plus the
server SDK for broadcasts. hubbub's hubs point their event handlers at it; the tests drive
hubbub with the Python client SDK, the Python server SDK and plain aiohttp WebSockets, then
read back what the app saw from its `/recorded` endpoint.

Needs Node.js 20+ and `npm ci --prefix tests/node`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest
from azure.messaging.webpubsubclient.aio import (
    WebPubSubClient as AioWebPubSubClient,
    WebPubSubClientCredential,
)
from azure.messaging.webpubsubclient.models import (
    CallbackType,
    OnConnectedArgs,
    OnGroupDataMessageArgs,
    OnServerDataMessageArgs,
    SendMessageError,
    WebPubSubDataType,
)
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient as AioServiceClient

from tests.conftest import ACCESS_KEY, SECONDARY_KEY, Server, free_port, start_server, stop_server
from tests.integration._wire import (
    JSON,
    RELIABLE,
    Client,
    Wire,
    mint_client_token,
    query_string,
    raw_handshake,
)

pytestmark = pytest.mark.node

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
APP = NODE_DIR / "upstream_app.mjs"
WAIT = 5.0
"""Deadline of every single wait."""

CHAT = "chat"  # every event goes to the app
ROUTED = "routed"  # two handlers, first match wins
QUIET = "quiet"  # only connected/disconnected
STRICT = "strict"  # abuse protection answers `127.0.0.1:<port>`
FOREIGN = "foreign"  # abuse protection answers another host; connect is handled
FOREIGN_QUIET = "foreignquiet"  # abuse protection answers another host; connect is not handled
TWO_ORIGINS = "twoorigins"  # abuse protection answers another host and then ours
ALL_SYSTEM = '["connect", "connected", "disconnected"]'


@dataclass
class Stack:
    """hubbub plus the express app its event handlers point at."""

    server: Server
    app_url: str
    app: subprocess.Popen[bytes]
    log: Path

    async def recorded(self) -> dict[str, list[dict[str, Any]]]:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.app_url}/recorded") as resp:
                assert resp.status == 200
                data: dict[str, list[dict[str, Any]]] = await resp.json()
                return data

    async def wait_for(
        self,
        what: str,
        pred: Callable[[dict[str, Any]], bool],
        count: int = 1,
        kind: str = "events",
    ) -> list[dict[str, Any]]:
        """Poll the app until `count` recorded items of `kind` match `pred`."""
        deadline = time.monotonic() + WAIT
        while True:
            recorded = await self.recorded()
            found = [item for item in recorded[kind] if pred(item)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the app did not record {count} x {what} within {WAIT} s; "
                    f"it has {recorded[kind]!r}"
                )
            await asyncio.sleep(0.05)

    async def events_of(self, connection_id: str) -> list[dict[str, Any]]:
        return [e for e in (await self.recorded())["events"] if e["connectionId"] == connection_id]

    async def event(self, connection_id: str, kind: str, count: int = 1) -> dict[str, Any]:
        found = await self.wait_for(
            f"{kind} of {connection_id}",
            lambda e: e["connectionId"] == connection_id and e["kind"] == kind,
            count,
        )
        return found[count - 1]

    async def requests_of(self, connection_id: str, event: str) -> list[dict[str, Any]]:
        return [
            r
            for r in (await self.recorded())["requests"]
            if r["method"] == "POST"
            and r["headers"].get("ce-connectionid") == connection_id
            and r["headers"].get("ce-eventname") == event
        ]

    async def request(self, connection_id: str, event: str) -> dict[str, Any]:
        found = await self.wait_for(
            f"POST {event} of {connection_id}",
            lambda r: (
                r["method"] == "POST"
                and r["headers"].get("ce-connectionid") == connection_id
                and r["headers"].get("ce-eventname") == event
            ),
            kind="requests",
        )
        return found[0]

    def service(self, hub: str) -> AioServiceClient:
        return AioServiceClient.from_connection_string(self.server.connection_string, hub=hub)


def _config(app_port: int) -> str:
    base = f"http://127.0.0.1:{app_port}/eventhandler/{{hub}}/{{event}}"

    def handler(hub: str, url: str, events: str, pattern: str | None = "*") -> str:
        text = f'[[hubs.{hub}.event_handlers]]\nurl_template = "{url}"\nsystem_events = {events}\n'
        if pattern is not None:
            text += f'user_event_pattern = "{pattern}"\n'
        return text

    return "\n".join(
        [
            f'[auth]\naccess_keys = ["{ACCESS_KEY}", "{SECONDARY_KEY}"]\n',
            handler(CHAT, base, ALL_SYSTEM),
            handler(ROUTED, base + "?handler=first", '["connect"]', "echo,count"),
            handler(ROUTED, base + "?handler=second", ALL_SYSTEM),
            handler(QUIET, base, '["connected", "disconnected"]', None),
            handler(STRICT, base, ALL_SYSTEM),
            handler(FOREIGN, base, ALL_SYSTEM),
            handler(FOREIGN_QUIET, base, '["connected", "disconnected"]'),
            handler(TWO_ORIGINS, base, ALL_SYSTEM),
        ]
    )


def _node_problem() -> str | None:
    if shutil.which("node") is None:
        return "Node.js is not on PATH; install Node.js 20+ to run the express handler tests"
    for package in ("@azure/web-pubsub-express", "@azure/web-pubsub", "express"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            return f"{package} is not installed; run `npm ci --prefix tests/node` first"
    return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    problem = _node_problem()
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    tmp = tmp_path_factory.mktemp("upstream-express")
    app_port = free_port()
    server = start_server(tmp, config_toml=_config(app_port))
    log = tmp / "app.log"
    hubs = [CHAT, ROUTED, QUIET, f"{STRICT}=http://127.0.0.1:{app_port}"]
    hubs += [
        f"{FOREIGN}=https://foreign.example.net",
        f"{FOREIGN_QUIET}=https://foreign.example.net",
        f"{TWO_ORIGINS}=https://foreign.example.net,http://127.0.0.1:{app_port}",
    ]
    cmd = ["node", str(APP), "--port", str(app_port)]
    cmd += ["--connection-string", server.connection_string]
    for hub in hubs:
        cmd += ["--hub", hub]
    with open(log, "wb") as out:
        app = subprocess.Popen(cmd, cwd=NODE_DIR, stdout=out, stderr=subprocess.STDOUT)
    app_url = f"http://127.0.0.1:{app_port}"
    try:
        _wait_listening(app, f"{app_url}/healthz", log)
        yield Stack(server, app_url, app, log)
    finally:
        app.terminate()
        try:
            app.wait(timeout=5)
        except subprocess.TimeoutExpired:
            app.kill()
            app.wait()
        stop_server(server)


def _wait_listening(app: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while True:
        if app.poll() is not None:
            raise RuntimeError(f"the express app exited early: {log.read_text()}")
        try:
            with opener.open(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the express app did not listen within 20 s: {log.read_text()}")
        time.sleep(0.05)


def signature(server: Server, connection_id: str) -> str:
    return ",".join(
        "sha256=" + hmac.new(k.encode(), connection_id.encode(), hashlib.sha256).hexdigest()
        for k in (server.access_key, server.secondary_key)
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


CE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def assert_common_headers(
    stack: Stack, headers: dict[str, str], hub: str, connection_id: str, event: str
) -> None:
    system = event in ("connect", "connected", "disconnected")
    prefix = "azure.webpubsub.sys." if system else "azure.webpubsub.user."
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-awpsversion"] == "1.0"
    assert headers["ce-type"] == prefix + event
    assert headers["ce-source"] == f"/hubs/{hub}/client/{connection_id}"
    assert headers["ce-hub"] == hub
    assert headers["ce-connectionid"] == connection_id
    assert headers["ce-eventname"] == event
    assert headers["ce-signature"] == signature(stack.server, connection_id)
    assert headers["webhook-request-origin"] == "127.0.0.1"
    assert CE_TIME.match(headers["ce-time"]), headers["ce-time"]
    assert headers["ce-id"].isdigit(), headers["ce-id"]


async def send_event(
    client: Client, event: str, data: Any = "x", data_type: str = "text"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Send an `event` with an ackId; return the frames before its ack, and the ack."""
    ack_id = client.next_ack_id()
    await client.send_json(
        {"type": "event", "event": event, "dataType": data_type, "data": data, "ackId": ack_id}
    )
    before: list[dict[str, Any]] = []
    while True:
        frame = await client.recv_json()
        if frame.get("type") == "ack" and frame.get("ackId") == ack_id:
            return before, frame
        before.append(frame)


def server_message(data_type: str, data: Any) -> dict[str, Any]:
    return {"type": "message", "from": "server", "dataType": data_type, "data": data}


# --------------------------------------------------------------------------- SDK clients


@dataclass
class SdkClient:
    """The asyncio Python client SDK with its server and group messages recorded."""

    client: AioWebPubSubClient
    messages: list[tuple[str, Any, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    connected: OnConnectedArgs | None = None

    async def start(self) -> OnConnectedArgs:
        opened = asyncio.Event()

        async def on_connected(args: OnConnectedArgs) -> None:
            self.connected = args
            opened.set()

        async def on_server(args: OnServerDataMessageArgs) -> None:
            self.messages.append(("server", args.data_type, args.data))
            self.changed.set()

        async def on_group(args: OnGroupDataMessageArgs) -> None:
            self.messages.append((f"group:{args.group}", args.data_type, args.data))
            self.changed.set()

        await self.client.subscribe(CallbackType.CONNECTED, on_connected)
        await self.client.subscribe(CallbackType.SERVER_MESSAGE, on_server)
        await self.client.subscribe(CallbackType.GROUP_MESSAGE, on_group)
        await self.client.open()
        await asyncio.wait_for(opened.wait(), WAIT)
        assert self.connected is not None
        return self.connected

    @property
    def connection_id(self) -> str:
        assert self.connected is not None
        return str(self.connected.connection_id)

    async def wait_message(self, data: Any) -> tuple[str, Any, Any]:
        """The first recorded message whose data equals `data`."""
        deadline = time.monotonic() + WAIT
        while True:
            for message in self.messages:
                if message[2] == data or (
                    isinstance(message[2], memoryview | bytes) and bytes(message[2]) == data
                ):
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no message {data!r} within {WAIT} s; got {self.messages}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass


def sdk_client(provider: str | Callable[[], Any]) -> SdkClient:
    credential = WebPubSubClientCredential(provider)
    client = AioWebPubSubClient(
        credential,
        message_retry_total=0,
        reconnect_retry_total=0,
        ack_timeout=WAIT,
        start_timeout=WAIT,
    )
    return SdkClient(client)


@pytest.fixture
async def clients() -> AsyncIterator[list[SdkClient]]:
    opened: list[SdkClient] = []
    yield opened
    for c in opened:
        await c.client.close()


async def client_url(stack: Stack, hub: str, user: str, **kwargs: Any) -> str:
    async with stack.service(hub) as service:
        token = await service.get_client_access_token(user_id=user, **kwargs)
        return str(token["url"])


# --------------------------------------------------------------------------- abuse protection


async def test_abuse_protection_probe_once_per_handler(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        first = await wire.connect(CHAT, user="probe-1")
        second = await wire.connect(CHAT, user="probe-2")
        await stack.event(first.connection_id, "connected")
        await stack.event(second.connection_id, "connected")
    probes = [
        r
        for r in (await stack.recorded())["requests"]
        if r["method"] == "OPTIONS" and r["url"].startswith(f"/eventhandler/{CHAT}/")
    ]
    assert len(probes) == 1, probes
    assert probes[0]["url"] == f"/eventhandler/{CHAT}/validate"
    headers = probes[0]["headers"]
    assert headers["webhook-request-origin"] == "127.0.0.1"
    assert headers["ce-awpsversion"] == "1.0"
    assert "ce-signature" not in headers
    assert "ce-connectionid" not in headers


async def test_allowed_origin_with_port_is_accepted(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect(STRICT, user="strict", query=[("userId", "strict-app")])
        assert client.connected is not None
        assert client.connected["userId"] == "strict-app"
        before, ack = await send_event(client, "echo", "hi")
        assert before == [server_message("text", "hi")]
        assert ack["success"] is True
    probe = await stack.wait_for(
        "strict probe",
        lambda r: r["method"] == "OPTIONS" and r["url"] == f"/eventhandler/{STRICT}/validate",
        kind="requests",
    )
    assert probe[0]["headers"]["webhook-request-origin"] == "127.0.0.1"


async def test_one_of_several_allowed_origins_is_accepted(stack: Stack) -> None:
    # allowedEndpoints with two entries: one WebHook-Allowed-Origin header line per host
    async with Wire(stack.server) as wire:
        client = await wire.connect(TWO_ORIGINS, user="two", query=[("userId", "two-app")])
        assert client.connected is not None
        assert client.connected["userId"] == "two-app"


async def test_foreign_allowed_origin_blocks_every_event(stack: Stack) -> None:
    token = mint_client_token(stack.server, FOREIGN, user="foreigner")
    result = await raw_handshake(
        stack.server, f"/client/hubs/{FOREIGN}?access_token={token}", protocols=[JSON]
    )
    assert result.status == 500, result
    async with Wire(stack.server) as wire:
        # connect is not handled here: accepted on the token; connected and events go nowhere
        client = await wire.connect(FOREIGN_QUIET, user="foreigner")
        ack = await client.request(
            {"type": "event", "event": "echo", "dataType": "text", "data": "hi"}
        )
        assert ack["success"] is False and ack["error"]["name"] == "InternalServerError", ack
        await client.ping_pong()
        raw = await wire.connect(FOREIGN_QUIET, user="foreigner-raw", protocols=())
        await raw.ws.send_str("hello")
        assert await raw.expect_close() == (1000, "")
        await client.ws.close()
    # a handled hub shows the app is reachable; the blocked hubs got their probe only
    async with Wire(stack.server) as wire:
        marker = await wire.connect(CHAT, user="foreign-marker")
        await stack.event(marker.connection_id, "connected")
    recorded = await stack.recorded()
    for hub in (FOREIGN, FOREIGN_QUIET):
        seen = [r for r in recorded["requests"] if r["url"].startswith(f"/eventhandler/{hub}/")]
        assert seen, f"no abuse-protection check for {hub}"
        assert {r["method"] for r in seen} == {"OPTIONS"}, seen
        assert not [e for e in recorded["events"] if e["hub"] == hub]


# --------------------------------------------------------------------------- connect


@pytest.mark.parametrize("auth", ["query", "header"])
async def test_connect_event_request(stack: Stack, auth: Literal["query", "header"]) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect(
            CHAT,
            user="conn-user",
            roles=["webpubsub.joinLeaveGroup"],
            auth=auth,
            query=[("foo", "bar"), ("foo", "baz"), ("tag", f"connect-{auth}")],
        )
        cid = client.connection_id
        connect = await stack.event(cid, "connect")
        request = await stack.request(cid, "connect")
    assert connect["query"] == {"foo": ["bar", "baz"], "tag": [f"connect-{auth}"]}
    assert connect["subprotocols"] == [JSON]
    assert connect["clientCertificates"] == []
    assert connect["claims"]["sub"] == ["conn-user"]
    assert connect["claims"]["role"] == ["webpubsub.joinLeaveGroup"]
    header_names = {name.lower() for name in connect["headers"]}
    assert "authorization" not in header_names
    assert "sec-websocket-protocol" in header_names
    assert connect["userId"] == "conn-user"
    headers = request["headers"]
    assert_common_headers(stack, headers, CHAT, cid, "connect")
    assert headers["ce-id"] == "0"
    assert headers["ce-userid"] == "conn-user"
    assert "ce-subprotocol" not in headers
    assert "ce-connectionstate" not in headers
    assert headers["content-type"].startswith("application/json")


async def test_connect_response_sets_user_groups_roles_and_state(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect(
            CHAT,
            user="token-user",
            roles=["webpubsub.joinLeaveGroup"],
            groups=["token-group"],
            query=[
                ("userId", "app-user"),
                ("groups", "g1"),
                ("groups", "g2"),
                ("roles", "webpubsub.sendToGroup.g1"),
            ],
        )
        assert client.connected is not None
        assert client.connected["userId"] == "app-user"
        cid = client.connection_id
        # groups from the response replace the token's
        await wire.send_to_group(CHAT, "token-group", "not for you")
        await wire.send_to_group(CHAT, "g2", "g2 message")
        frame = await client.recv_json()
        assert frame["data"] == "g2 message", frame
        # roles from the response replace the token's
        ack = await client.request({"type": "joinGroup", "group": "other"})
        assert ack["success"] is False and ack["error"]["name"] == "Forbidden", ack
        send = {"type": "sendToGroup", "dataType": "text", "data": "x", "noEcho": True}
        ack = await client.request({**send, "group": "g1"})
        assert ack["success"] is True, ack
        ack = await client.request({**send, "group": "g2"})
        assert ack["success"] is False and ack["error"]["name"] == "Forbidden", ack
        connected = await stack.event(cid, "connected")
        assert connected["userId"] == "app-user"
        assert connected["states"] == {"connectedAt": "connect"}
        request = await stack.request(cid, "connected")
        assert_common_headers(stack, request["headers"], CHAT, cid, "connected")
        assert request["headers"]["ce-id"] == "1"
        assert request["headers"]["ce-userid"] == "app-user"
        assert request["headers"]["ce-subprotocol"] == JSON
        assert request["headers"]["content-type"].startswith("application/json")


async def test_connect_response_chooses_an_offered_subprotocol(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect(
            CHAT, user="sub-user", protocols=(JSON, RELIABLE), query=[("subprotocol", RELIABLE)]
        )
        assert client.protocol == RELIABLE
        assert client.connected is not None
        assert "reconnectionToken" in client.connected
        request = await stack.request(client.connection_id, "connected")
        assert request["headers"]["ce-subprotocol"] == RELIABLE
        # on the reliable subprotocol the reply carries a sequence id
        before, ack = await send_event(client, "echo", "seq")
        assert ack["success"] is True
        assert [{k: v for k, v in f.items() if k != "sequenceId"} for f in before] == [
            server_message("text", "seq")
        ]
        assert isinstance(before[0].get("sequenceId"), int), before
        connect = await stack.event(client.connection_id, "connect")
        assert connect["subprotocols"] == [JSON, RELIABLE]


async def test_connect_response_with_unoffered_subprotocol_fails(stack: Stack) -> None:
    token = mint_client_token(stack.server, CHAT, user="bad-sub")
    query = query_string([("access_token", token), ("subprotocol", RELIABLE)])
    result = await raw_handshake(stack.server, f"/client/hubs/{CHAT}?{query}", protocols=[JSON])
    assert result.status == 500, result


async def test_connect_without_response_body_uses_the_token(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect(CHAT, user="empty-user", query=[("empty", "1")])
        assert client.connected is not None
        assert client.connected["userId"] == "empty-user"
        connected = await stack.event(client.connection_id, "connected")
        assert connected["userId"] == "empty-user"
        assert connected["states"] == {}
        request = await stack.request(client.connection_id, "connected")
        assert "ce-connectionstate" not in request["headers"]


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_connect_rejected_by_the_app(stack: Stack, status: int) -> None:
    tag = f"refused-{status}"
    token = mint_client_token(stack.server, CHAT, user=tag)
    query = query_string([("access_token", token), ("reject", str(status)), ("tag", tag)])
    result = await raw_handshake(stack.server, f"/client/hubs/{CHAT}?{query}", protocols=[JSON])
    assert result.status == status, result
    connect = await stack.wait_for(
        f"connect {tag}", lambda e: e["kind"] == "connect" and e["userId"] == tag
    )
    refused = connect[0]["connectionId"]
    # a later connection's disconnected shows the notifications of the refused one are done
    async with Wire(stack.server) as wire:
        marker = await wire.connect(CHAT, user=f"{tag}-marker")
        await marker.ws.close()
    await stack.event(marker.connection_id, "disconnected")
    kinds = [e["kind"] for e in await stack.events_of(refused)]
    assert kinds == ["connect"]


async def test_sdk_client_is_rejected_with_401(stack: Stack) -> None:
    url = await client_url(stack, CHAT, "sdk-refused")
    client = sdk_client(url + "&reject=401")
    with pytest.raises(Exception):  # noqa: B017 - the SDK surfaces the handshake failure
        await client.start()
    await client.client.close()
    # the app saw the connect and refused it; no connected event followed
    connect = await stack.wait_for(
        "sdk connect", lambda e: e["kind"] == "connect" and e["userId"] == "sdk-refused"
    )
    async with Wire(stack.server) as wire:
        marker = await wire.connect(CHAT, user="sdk-refused-marker")
        await marker.ws.close()
    await stack.event(marker.connection_id, "disconnected")
    refused = {e["connectionId"] for e in connect}
    assert not [
        e
        for e in (await stack.recorded())["events"]
        if e["connectionId"] in refused and e["kind"] != "connect"
    ]


# --------------------------------------------------------------------------- user events


async def test_user_events_from_the_python_sdk(stack: Stack, clients: list[SdkClient]) -> None:
    client = sdk_client(await client_url(stack, CHAT, "py-user"))
    clients.append(client)
    await client.start()
    cid = client.connection_id
    await client.client.send_event("echo", "hello \u2603", WebPubSubDataType.TEXT)
    await client.client.send_event("echo", {"a": [1, None]}, WebPubSubDataType.JSON)
    await client.client.send_event("echo", memoryview(b"\x00\x01\xff"), WebPubSubDataType.BINARY)
    assert await client.wait_message("hello \u2603") == ("server", "text", "hello \u2603")
    assert await client.wait_message({"a": [1, None]}) == ("server", "json", {"a": [1, None]})
    source, data_type, _ = await client.wait_message(b"\x00\x01\xff")
    assert (source, data_type) == ("server", "binary")
    users = await stack.wait_for(
        "3 user events", lambda e: e["connectionId"] == cid and e["kind"] == "user", 3
    )
    assert [(e["dataType"], e["data"]) for e in users] == [
        ("text", "hello \u2603"),
        ("json", {"a": [1, None]}),
        ("binary", b64(b"\x00\x01\xff")),
    ]
    requests = await stack.requests_of(cid, "echo")
    assert [r["headers"]["content-type"] for r in requests] == [
        "text/plain; charset=utf-8",
        "application/json; charset=utf-8",
        "application/octet-stream",
    ]
    for r in requests:
        assert_common_headers(stack, r["headers"], CHAT, cid, "echo")
        assert r["headers"]["ce-userid"] == "py-user"
        assert r["headers"]["ce-subprotocol"] == RELIABLE
    assert [int(r["headers"]["ce-id"]) for r in requests] == [2, 3, 4]


async def test_reply_comes_before_the_ack(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect(CHAT, user="order-user")
        cases: list[tuple[str, str, Any, dict[str, Any] | None]] = [
            ("echo", "text", "t", {"dataType": "text", "data": "t"}),
            ("echo", "json", {"k": "v"}, {"dataType": "json", "data": {"k": "v"}}),
            ("echo", "binary", b64(b"\x01\x02"), {"dataType": "binary", "data": b64(b"\x01\x02")}),
            ("count", "text", "n", {"dataType": "json", "data": {"count": 4}}),
            ("silent", "text", "s", None),
        ]
        for event, data_type, data, reply in cases:
            ack_id = client.next_ack_id()
            await client.send_json(
                {
                    "type": "event",
                    "event": event,
                    "dataType": data_type,
                    "data": data,
                    "ackId": ack_id,
                }
            )
            if reply is not None:
                assert await client.recv_json() == {"type": "message", "from": "server", **reply}
            assert await client.recv_json() == {"type": "ack", "ackId": ack_id, "success": True}
        # without an ackId the reply still comes, and nothing else
        await client.send_json({"type": "event", "event": "echo", "dataType": "text", "data": "na"})
        assert await client.recv_json() == {
            "type": "message",
            "from": "server",
            "dataType": "text",
            "data": "na",
        }
        await client.ping_pong()


async def test_app_failure_gives_an_error_ack(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect(CHAT, user="reject-user")
        ack = await client.request(
            {"type": "event", "event": "reject", "dataType": "text", "data": "x"}
        )
        assert ack["success"] is False, ack
        assert ack["error"]["name"] == "InternalServerError", ack
        # the connection stays open and usable
        await client.ping_pong()
        ack = await client.request(
            {"type": "event", "event": "silent", "dataType": "text", "data": "x"}
        )
        assert ack["success"] is True, ack
        rejected = await stack.requests_of(client.connection_id, "reject")
        assert len(rejected) == 1  # a 401 is not retried


async def test_sdk_error_ack_for_a_failing_event(stack: Stack, clients: list[SdkClient]) -> None:
    client = sdk_client(await client_url(stack, CHAT, "py-reject"))
    clients.append(client)
    await client.start()
    with pytest.raises(SendMessageError) as exc:
        await client.client.send_event("reject", "x", WebPubSubDataType.TEXT)
    assert exc.value.error_detail is not None
    assert exc.value.error_detail.name == "InternalServerError"
    assert client.client.is_connected()


async def test_connection_state_round_trip(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect(CHAT, user="state-user")
        cid = client.connection_id
        for expected in (1, 2, 3):
            await client.send_json(
                {"type": "event", "event": "count", "dataType": "text", "data": "c"}
            )
            reply = await client.recv_json()
            assert reply["data"] == {"count": expected}, reply
        await client.ws.close()
    disconnected = await stack.event(cid, "disconnected")
    assert disconnected["states"] == {"connectedAt": "connect", "count": 3}
    users = [e for e in await stack.events_of(cid) if e["kind"] == "user"]
    assert [e["states"] for e in users] == [
        {"connectedAt": "connect"},
        {"connectedAt": "connect", "count": 1},
        {"connectedAt": "connect", "count": 2},
    ]


async def test_plain_websocket_client_message_events(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect(CHAT, user="plain-user", protocols=())
        assert client.protocol is None
        await client.ws.send_str("plain \u2603")
        assert await client.recv_text() == "plain \u2603"
        await client.ws.send_bytes(b"\x00bin\xff")
        assert await client.recv_bytes() == b"\x00bin\xff"
        connect = await stack.wait_for(
            "plain connect", lambda e: e["kind"] == "connect" and e["userId"] == "plain-user"
        )
        cid = connect[0]["connectionId"]
        requests = await stack.requests_of(cid, "message")
        assert [r["headers"]["content-type"] for r in requests] == [
            "text/plain; charset=utf-8",
            "application/octet-stream",
        ]
        for r in requests:
            assert_common_headers(stack, r["headers"], CHAT, cid, "message")
            assert "ce-subprotocol" not in r["headers"]
        users = [e for e in await stack.events_of(cid) if e["kind"] == "user"]
        assert [(e["eventName"], e["dataType"], e["data"]) for e in users] == [
            ("message", "text", "plain \u2603"),
            ("message", "binary", b64(b"\x00bin\xff")),
        ]


async def test_plain_client_closed_when_the_app_fails(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect(QUIET, user="quiet-plain", protocols=())
        await client.ws.send_str("nobody handles this")
        assert await client.expect_close() == (1000, "")


# --------------------------------------------------------------------------- connected/disconnected


async def test_disconnected_reasons(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        by_client = await wire.connect(CHAT, user="leaver")
        by_rest = await wire.connect(CHAT, user="kicked")
        await by_client.ws.close()
        async with stack.service(CHAT) as service:
            await service.close_connection(by_rest.connection_id, reason="kicked out")
        assert await by_rest.recv_json() == {
            "type": "system",
            "event": "disconnected",
            "message": "kicked out",
        }
    left = await stack.event(by_client.connection_id, "disconnected")
    kicked = await stack.event(by_rest.connection_id, "disconnected")
    assert left["reason"] is None
    assert kicked["reason"] == "kicked out"
    for cid in (by_client.connection_id, by_rest.connection_id):
        assert [e["kind"] for e in await stack.events_of(cid)] == [
            "connect",
            "connected",
            "disconnected",
        ]
        request = await stack.request(cid, "disconnected")
        assert_common_headers(stack, request["headers"], CHAT, cid, "disconnected")
        assert request["headers"]["ce-subprotocol"] == JSON
        assert request["headers"]["ce-connectionstate"]  # the state set on connect


async def test_no_connect_handler_and_no_user_event_handler(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect(QUIET, user="quiet-user", query=[("userId", "ignored")])
        assert client.connected is not None
        assert client.connected["userId"] == "quiet-user"  # no connect handler: the token decides
        cid = client.connection_id
        await stack.event(cid, "connected")
        ack = await client.request(
            {"type": "event", "event": "echo", "dataType": "text", "data": "x"}
        )
        assert ack["success"] is False and ack["error"]["name"] == "InternalServerError", ack
        await client.ping_pong()
        await client.ws.close()
    await stack.event(cid, "disconnected")
    assert [e["kind"] for e in await stack.events_of(cid)] == ["connected", "disconnected"]
    request = await stack.request(cid, "connected")
    assert request["headers"]["ce-id"] == "1"  # connect (id 0) was not sent


async def test_first_matching_handler_wins(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect(ROUTED, user="routed-user")
        cid = client.connection_id
        for event in ("echo", "count", "other"):
            _, ack = await send_event(client, event, event)
            assert ack["success"] is True, ack
        await client.ws.close()
    await stack.event(cid, "disconnected")
    posts = [
        r
        for r in (await stack.recorded())["requests"]
        if r["method"] == "POST" and r["headers"].get("ce-connectionid") == cid
    ]
    routes = {r["headers"]["ce-eventname"]: urllib.parse.urlsplit(r["url"]) for r in posts}
    handler_of = {
        name: urllib.parse.parse_qs(url.query)["handler"][0] for name, url in routes.items()
    }
    assert handler_of == {
        "connect": "first",
        "connected": "second",
        "echo": "first",
        "count": "first",
        "other": "second",
        "disconnected": "second",
    }
    assert routes["echo"].path == f"/eventhandler/{ROUTED}/echo"


# --------------------------------------------------------------------------- chat application


async def test_chat_application_flow(stack: Stack, clients: list[SdkClient]) -> None:
    """The quick-start chat: negotiate → connect → the app joins the room → chat → broadcast."""

    def negotiate(user: str) -> Callable[[], Any]:
        async def provider() -> str:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{stack.app_url}/negotiate", params={"id": user}) as resp:
                    assert resp.status == 200
                    url = str((await resp.json())["url"])
            return url + "&room=lobby"

        return provider

    alice = sdk_client(negotiate("alice"))
    bob = sdk_client(negotiate("bob"))
    clients += [alice, bob]
    assert (await alice.start()).user_id == "alice"
    assert (await alice.wait_message("alice joined lobby"))[1] == "text"
    assert (await bob.start()).user_id == "bob"
    await alice.wait_message("bob joined lobby")
    await bob.wait_message("bob joined lobby")

    await alice.client.send_event("chat", "hello everyone", WebPubSubDataType.TEXT)
    assert await alice.wait_message("sent") == ("server", "text", "sent")
    said = {"from": "alice", "message": "hello everyone"}
    for c in (alice, bob):
        assert (await c.wait_message(said))[1] == "json"

    # the app knows who is where; the server SDK reaches the same connections
    async with stack.service(CHAT) as service:
        assert await service.group_exists("lobby")
        assert await service.user_exists("bob")
        await service.send_to_all("server announcement", content_type="text/plain")
    await alice.wait_message("server announcement")
    await bob.wait_message("server announcement")

    chats = await stack.wait_for(
        "chat event", lambda e: e["kind"] == "user" and e["eventName"] == "chat"
    )
    assert chats[0]["userId"] == "alice"
    assert chats[0]["states"] == {"room": "lobby", "connectedAt": "connect"}


async def test_app_saw_no_errors(stack: Stack) -> None:
    assert stack.app.poll() is None, stack.log.read_text()
    assert (await stack.recorded())["errors"] == []
