"""Event handlers that fail, stall, refuse or misbehave, played by an in-process aiohttp app.

The handler app runs on its own thread and event loop on a free loopback port (real sockets),
so a handler that stalls never stalls the test. Every hub in `HUBS` gets one handler,
`http://127.0.0.1:<port>/{hub}/{event}`, for all system and user events; a test installs a
`Rule` for its hub that decides each answer (the default: pass abuse protection, accept
connect with 204, echo user events). hubbub runs with `upstream_timeout_seconds = 1`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web
from aiohttp.test_utils import TestServer
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient

from tests.conftest import ACCESS_KEY, SECONDARY_KEY, Server, free_port, start_server, stop_server
from tests.integration._wire import JSON, Client, Wire, mint_client_token, query_string

WAIT = 5.0
"""Deadline of every single wait that is not about a retry schedule."""
TIMEOUT = 1.0
"""hubbub's upstream_timeout_seconds in this module."""

DOWN = "down"  # handler URL on a port nobody listens on
DOWN_QUIET = "downquiet"  # the same, without a connect handler
HUBS = [
    "dropper",
    "slowconnect",
    "slow",
    "flaky",
    "broken",
    "badreq",
    "redirects",
    "badconnect",
    "guarded",
    "guardedquiet",
    "sig",
    "seq",
    "state",
    "bye",
    "refuse",
    "slowhub",
    "fasthub",
    "replies",
    "originstar",
    "originhost",
    "originport",
    "origin204",
    "originother",
    "originnone",
    "origin401",
    "origin404",
    "marker",
    "anonymous",
    "grants",
    "invoke",
    "cookies",
    "ordered",
]


# --------------------------------------------------------------------------- the handler app


@dataclass
class Seen:
    """One request the handler app received."""

    method: str
    hub: str
    event: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received: float
    answered: float | None = None

    @property
    def connection_id(self) -> str | None:
        return self.headers.get("ce-connectionid")

    @property
    def ce_id(self) -> str | None:
        return self.headers.get("ce-id")

    def json(self) -> Any:
        return json.loads(self.body)


Rule = Callable[[Seen, web.Request], Awaitable[web.StreamResponse | None]]
"""Answers one request; None falls back to the default answer."""


class HandlerApp:
    """An aiohttp event handler on a thread of its own; records every request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.rules: dict[str, Rule] = {}
        self._seen: list[Seen] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: TestServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        app = web.Application()
        app.router.add_route("*", "/{hub}/{event}", self._handle)
        self._server = TestServer(app, host="127.0.0.1", port=self.port)
        asyncio.run_coroutine_threadsafe(self._server.start_server(), self._loop).result(10)

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def seen(
        self,
        hub: str,
        method: str | None = "POST",
        event: str | None = None,
        connection_id: str | None = None,
    ) -> list[Seen]:
        with self._lock:
            return [
                s
                for s in self._seen
                if s.hub == hub
                and (method is None or s.method == method)
                and (event is None or s.event == event)
                and (connection_id is None or s.connection_id == connection_id)
            ]

    def attempt(self, seen: Seen) -> int:
        """1 for the first delivery of this event, 2 for its first retry, ..."""
        with self._lock:
            return sum(
                1
                for s in self._seen
                if s.method == seen.method
                and s.hub == seen.hub
                and s.event == seen.event
                and s.connection_id == seen.connection_id
                and s.ce_id == seen.ce_id
                and s.received <= seen.received
            )

    async def wait_seen(
        self, what: str, hub: str, count: int = 1, answered: bool = False, **criteria: Any
    ) -> list[Seen]:
        """Poll until `count` matching requests were received (with `answered`: answered)."""
        deadline = time.monotonic() + WAIT
        while True:
            found = [s for s in self.seen(hub, **criteria) if s.answered or not answered]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"the handler did not see {count} x {what}: {found!r}")
            await asyncio.sleep(0.02)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(
            method=request.method,
            hub=request.match_info["hub"],
            event=request.match_info["event"],
            query={k: request.query.getall(k) for k in request.query},
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.read(),
            received=time.monotonic(),
        )
        with self._lock:
            self._seen.append(seen)
        try:
            rule = self.rules.get(seen.hub)
            response = await rule(seen, request) if rule is not None else None
            return response if response is not None else default_answer(seen)
        finally:
            seen.answered = time.monotonic()


def default_answer(seen: Seen) -> web.StreamResponse:
    if seen.method == "OPTIONS":
        return web.Response(headers={"WebHook-Allowed-Origin": "*"})
    if seen.event == "connect":
        return web.Response(status=204)
    if seen.event in ("connected", "disconnected"):
        return web.Response()
    return web.Response(body=seen.body, headers={"Content-Type": seen.headers["content-type"]})


def raw_answer(request: web.Request, status: int, body: bytes, headers: str = "") -> None:
    """Write a response by hand (e.g. one without Content-Type) and close the socket."""
    assert request.transport is not None
    head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    request.transport.write((head + headers + "\r\n").encode() + body)
    request.transport.close()


def connect_query(seen: Seen) -> dict[str, list[str]]:
    query: dict[str, list[str]] = seen.json()["query"]
    return query


# --------------------------------------------------------------------------- fixtures


@dataclass
class Stack:
    server: Server
    handler: HandlerApp

    def rule(self, hub: str) -> Callable[[Rule], Rule]:
        def install(fn: Rule) -> Rule:
            self.handler.rules[hub] = fn
            return fn

        return install

    def service(self, hub: str) -> WebPubSubServiceClient:
        return WebPubSubServiceClient.from_connection_string(self.server.connection_string, hub=hub)


def _config(handler_port: int, dead_port: int) -> str:
    def handler(hub: str, port: int, system: str) -> str:
        # A host name, not an address, for the cookie test: aiohttp keeps no cookies of an IP.
        host = "localhost" if hub == "cookies" else "127.0.0.1"
        return (
            f"[[hubs.{hub}.event_handlers]]\n"
            f'url_template = "http://{host}:{port}/{{hub}}/{{event}}"\n'
            'user_event_pattern = "*"\n'
            f"system_events = {system}\n"
        )

    every = '["connect", "connected", "disconnected"]'
    no_connect = '["connected", "disconnected"]'
    parts = [
        f"[server]\nupstream_timeout_seconds = {TIMEOUT:g}\n",
        f'[auth]\naccess_keys = ["{ACCESS_KEY}", "{SECONDARY_KEY}"]\n',
        handler(DOWN, dead_port, every),
        handler(DOWN_QUIET, dead_port, no_connect),
    ]
    parts.append("[hubs.anonymous]\nanonymous_connect = true\n")
    for hub in HUBS:
        parts.append(handler(hub, handler_port, no_connect if hub == "guardedquiet" else every))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    app = HandlerApp()
    app.start()
    tmp = tmp_path_factory.mktemp("upstream-faults")
    try:
        server = start_server(tmp, config_toml=_config(app.port, free_port()))
    except BaseException:
        app.stop()
        raise
    try:
        yield Stack(server, app)
    finally:
        stop_server(server)
        app.stop()


# --------------------------------------------------------------------------- helpers


async def handshake(
    stack: Stack,
    hub: str,
    user: str,
    query: list[tuple[str, str]] | None = None,
    wait: float = WAIT,
) -> int:
    """The HTTP status of a WebSocket handshake (101 when upgraded)."""
    token = mint_client_token(stack.server, hub, user=user)
    qs = query_string([("access_token", token), *(query or [])])
    url = yarl.URL(f"{stack.server.ws_endpoint}/client/hubs/{hub}?{qs}", encoded=True)
    async with aiohttp.ClientSession() as http:
        try:
            ws = await asyncio.wait_for(http.ws_connect(url, protocols=(JSON,)), wait)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101


async def send_event(
    client: Client, event: str, data: Any = "x", data_type: str = "text", wait: float = WAIT
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Send an `event` with an ackId; return the frames before its ack, and the ack."""
    ack_id = client.next_ack_id()
    await client.send_json(
        {"type": "event", "event": event, "dataType": data_type, "data": data, "ackId": ack_id}
    )
    before: list[dict[str, Any]] = []
    while True:
        frame = await client.recv_json(wait)
        if frame.get("type") == "ack" and frame.get("ackId") == ack_id:
            return before, frame
        before.append(frame)


def server_message(data_type: str, data: Any) -> dict[str, Any]:
    return {"type": "message", "from": "server", "dataType": data_type, "data": data}


def failed(ack: dict[str, Any]) -> bool:
    return ack.get("success") is False and ack.get("error", {}).get("name") == "InternalServerError"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hmac_hex(key: str, connection_id: str) -> str:
    return hmac.new(key.encode(), connection_id.encode(), hashlib.sha256).hexdigest()


async def connection_of(stack: Stack, hub: str, user: str) -> str:
    """The connection id the handler saw on the connect of `user`."""
    found = await stack.handler.wait_seen(f"connect of {user}", hub, event="connect", method="POST")
    for seen in found:
        if seen.headers.get("ce-userid") == user:
            assert seen.connection_id is not None
            return seen.connection_id
    raise AssertionError(f"no connect of {user}: {found!r}")


async def settle_notifications(stack: Stack, hub: str, wire: Wire) -> None:
    """Open and close one more connection and wait for its `disconnected`: notifications
    about earlier connections have been sent by then."""
    marker = await wire.connect(hub, user="settle-marker")
    await marker.ws.close()
    await stack.handler.wait_seen(
        "marker disconnected", hub, event="disconnected", connection_id=marker.connection_id
    )


# --------------------------------------------------------------------------- unreachable handler


async def test_handler_down(stack: Stack) -> None:
    started = time.monotonic()
    assert await handshake(stack, DOWN, "down-user") == 500
    async with Wire(stack.server) as wire:
        client = await wire.connect(DOWN_QUIET, user="down-quiet")
        _, ack = await send_event(client, "echo", "hi")
        assert failed(ack), ack
        await client.ping_pong()  # still open
        raw = await wire.connect(DOWN_QUIET, user="down-raw", protocols=())
        await raw.ws.send_str("hello")
        assert await raw.expect_close() == (1000, "")
    # nobody listens: abuse protection fails, so nothing waits for event retries
    assert time.monotonic() - started < 3


async def test_network_error_after_validation_is_retried(stack: Stack) -> None:
    @stack.rule("dropper")
    async def drop_first(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method == "POST" and seen.event == "drop" and stack.handler.attempt(seen) == 1:
            assert request.transport is not None
            request.transport.close()  # the connection dies without an answer
        return None

    async with Wire(stack.server) as wire:
        client = await wire.connect("dropper", user="dropped")
        started = time.monotonic()
        before, ack = await send_event(client, "drop", "again")
        elapsed = time.monotonic() - started
        assert before == [server_message("text", "again")]
        assert ack["success"] is True, ack
        await client.ping_pong()
    posts = stack.handler.seen("dropper", event="drop")
    assert len(posts) == 2
    assert posts[0].ce_id == posts[1].ce_id
    assert 0.9 <= posts[1].received - posts[0].received < 2.5
    assert elapsed >= 0.9


# --------------------------------------------------------------------------- timeouts


async def test_slow_handler_times_out(stack: Stack) -> None:
    @stack.rule("slowconnect")
    async def slow_connect(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method == "POST" and seen.event == "connect":
            await asyncio.sleep(2 * TIMEOUT)
        return None

    @stack.rule("slow")
    async def slow_events(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method == "POST" and seen.event in ("slow", "message"):
            await asyncio.sleep(2 * TIMEOUT)
            return web.Response(text="too late", content_type="text/plain")
        return None

    async def refused_connect() -> float:
        started = time.monotonic()
        assert await handshake(stack, "slowconnect", "slow-connect") == 500
        return time.monotonic() - started

    async with Wire(stack.server) as wire:
        client = await wire.connect("slow", user="slow-json")
        raw = await wire.connect("slow", user="slow-raw", protocols=())

        async def json_event() -> float:
            started = time.monotonic()
            before, ack = await send_event(client, "slow", "x")
            assert before == [] and failed(ack), (before, ack)
            return time.monotonic() - started

        async def raw_message() -> float:
            started = time.monotonic()
            await raw.ws.send_str("slow frame")
            assert await raw.expect_close() == (1000, "")
            return time.monotonic() - started

        times = await asyncio.gather(refused_connect(), json_event(), raw_message())
        for elapsed in times:
            assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 0.8, times
        # the late answer never reaches the client: wait until the handler gave it, then look
        await stack.handler.wait_seen("late answer", "slow", answered=True, event="slow")
        await client.ping_pong()
    # a timeout is not retried
    assert len(stack.handler.seen("slowconnect", event="connect")) == 1
    assert len(stack.handler.seen("slow", event="slow")) == 1
    assert len(stack.handler.seen("slow", event="message")) == 1


# --------------------------------------------------------------------------- retries


async def test_server_error_then_success_is_retried_once(stack: Stack) -> None:
    @stack.rule("flaky")
    async def fail_once(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method != "POST" or stack.handler.attempt(seen) > 1:
            return None
        if seen.event == "connect":
            return web.Response(status=503)
        if seen.event == "e408":
            return web.Response(status=408)
        if seen.event in ("e500", "message"):
            return web.Response(status=500, text="try again")
        return None

    async def connect_retried() -> float:
        started = time.monotonic()
        async with Wire(stack.server) as wire:
            client = await wire.connect("flaky", user="flaky-connect")
            assert client.connected is not None
        return time.monotonic() - started

    async with Wire(stack.server) as wire:
        # connect on this hub fails once per connection too: let those retries run alongside
        client_task = asyncio.create_task(wire.connect("flaky", user="flaky-json"))
        raw_task = asyncio.create_task(wire.connect("flaky", user="flaky-raw", protocols=()))
        connect_time = await connect_retried()
        client, raw = await client_task, await raw_task
        assert connect_time >= 0.9

        async def event(name: str) -> None:
            before, ack = await send_event(client, name, {"n": name}, "json")
            assert before == [server_message("json", {"n": name})]
            assert ack["success"] is True, ack

        async def raw_frame() -> None:
            await raw.ws.send_str("raw retry")
            assert await raw.recv_text() == "raw retry"

        await asyncio.gather(event("e500"), raw_frame())
        await event("e408")
        await client.ping_pong()  # exactly one reply per event: nothing else is pending
        await raw.ws.send_str("after")
        assert await raw.recv_text() == "after"

    for name in ("e500", "e408"):
        posts = stack.handler.seen("flaky", event=name)
        assert len(posts) == 2, (name, posts)
        assert posts[0].ce_id == posts[1].ce_id
        assert posts[0].body == posts[1].body
        assert 0.9 <= posts[1].received - posts[0].received < 2.5
    connects = [
        s
        for s in stack.handler.seen("flaky", event="connect")
        if s.headers.get("ce-userid") == "flaky-connect"
    ]
    assert [s.ce_id for s in connects] == ["0", "0"]


async def test_retries_give_up_after_four_attempts(stack: Stack) -> None:
    @stack.rule("broken")
    async def always_fail(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method != "POST":
            return None
        if seen.event == "connect":
            return web.Response(status=500) if "fail" in connect_query(seen) else None
        if seen.event in ("boom", "message"):
            return web.Response(status=502)
        return None

    async def connect_fails() -> None:
        status = await handshake(stack, "broken", "broken-connect", [("fail", "1")], wait=15)
        assert status == 500

    async with Wire(stack.server) as wire:
        client = await wire.connect("broken", user="broken-json")
        raw = await wire.connect("broken", user="broken-raw", protocols=())

        async def event_fails() -> None:
            before, ack = await send_event(client, "boom", wait=15)
            assert before == [] and failed(ack), (before, ack)

        async def raw_closed() -> None:
            await raw.ws.send_str("boom")
            assert await raw.expect_close(wait=15) == (1000, "")

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(connect_fails(), event_fails(), raw_closed()), 15)
        assert 8.5 <= time.monotonic() - started < 12
        await client.ping_pong()

    schedules = [
        [
            s
            for s in stack.handler.seen("broken", event="connect")
            if s.headers.get("ce-userid") == "broken-connect"
        ],
        stack.handler.seen("broken", event="boom"),
        stack.handler.seen("broken", event="message"),
    ]
    for posts in schedules:
        assert len(posts) == 4, posts
        assert len({s.ce_id for s in posts}) == 1
        gaps = [b.received - a.received for a, b in itertools.pairwise(posts)]
        for gap, expected in zip(gaps, (1.0, 3.0, 5.0), strict=True):
            assert expected - 0.1 <= gap < expected + 1.0, gaps


async def test_client_errors_are_not_retried(stack: Stack) -> None:
    @stack.rule("badreq")
    async def client_error(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method != "POST":
            return None
        if seen.event == "connect":
            reject = connect_query(seen).get("reject")
            return web.Response(status=int(reject[0]), text="no") if reject else None
        if seen.event in ("e400", "message"):
            return web.Response(status=400, text="bad")
        if seen.event == "e429":
            return web.Response(status=429, text="slow down")
        return None

    started = time.monotonic()
    assert await handshake(stack, "badreq", "badreq-400", [("reject", "400")]) == 400
    assert await handshake(stack, "badreq", "badreq-429", [("reject", "429")]) == 429
    async with Wire(stack.server) as wire:
        client = await wire.connect("badreq", user="badreq-json")
        for name in ("e400", "e429"):
            before, ack = await send_event(client, name)
            assert before == [] and failed(ack), (before, ack)
        await client.ping_pong()
        raw = await wire.connect("badreq", user="badreq-raw", protocols=())
        await raw.ws.send_bytes(b"\x00")
        assert await raw.expect_close() == (1000, "")
    assert time.monotonic() - started < 2.5
    for user in ("badreq-400", "badreq-429"):
        connects = [
            s
            for s in stack.handler.seen("badreq", event="connect")
            if s.headers["ce-userid"] == user
        ]
        assert len(connects) == 1
    for event in ("e400", "e429", "message"):
        assert len(stack.handler.seen("badreq", event=event)) == 1


# --------------------------------------------------------------------------- connect answers


BAD_CONNECT_BODIES = {
    "notjson": (b"this is not json", "application/json"),
    "array": (b"[1, 2]", "application/json"),
    "string": (b'"user"', "application/json"),
    "groups": (b'{"groups": "g1"}', "application/json"),
    "roles": (b'{"roles": [1]}', "application/json"),
    "userid": (b'{"userId": 5}', "application/json"),
    "subprotocol": (b'{"subprotocol": "not.offered"}', "application/json"),
}
GOOD_CONNECT_BODIES = {
    "null": (b"null", "application/json", None),
    "empty": (b"", "application/json", None),
    "object": (b"{}", "application/json", None),
    "texttype": (b'{"userId": "from-text"}', "text/plain", "from-text"),
    "lowercase": (b'{"userid": "lower"}', "application/json", "lower"),
}


async def test_a_redirecting_connect_handler_and_an_unsendable_user_id_fail_the_handshake(
    stack: Stack,
) -> None:
    """A connect handler answering 307 is not followed: the handshake fails with 500 and the
    handler saw that one POST. A token whose user id holds a line break cannot go out as the
    ``ce-userId`` header: the handshake fails with 500 and no connect reaches the handler."""

    @stack.rule("redirects")
    async def redirect(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method == "POST" and seen.event == "connect":
            return web.Response(status=307, headers={"Location": "/elsewhere/connect"})
        return None

    assert await handshake(stack, "redirects", "redirected") == 500
    connects = stack.handler.seen("redirects", event="connect")
    assert [s.headers.get("ce-userid") for s in connects] == ["redirected"]
    assert await handshake(stack, "redirects", "evil\r\nX-Injected: 1") == 500
    assert len(stack.handler.seen("redirects", event="connect")) == 1
    assert not any("x-injected" in s.headers for s in stack.handler.seen("redirects", None))


async def test_connect_response_bodies(stack: Stack) -> None:
    @stack.rule("badconnect")
    async def answer(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        case = connect_query(seen).get("case") if seen.event == "connect" else None
        if seen.method == "POST" and case:
            body, content_type = BAD_CONNECT_BODIES.get(case[0]) or GOOD_CONNECT_BODIES[case[0]][:2]
            return web.Response(body=body, headers={"Content-Type": content_type})
        return None

    for case in BAD_CONNECT_BODIES:
        status = await handshake(stack, "badconnect", f"bad-{case}", [("case", case)])
        assert status == 500, case
    async with Wire(stack.server) as wire:
        for case, (_, _, user) in GOOD_CONNECT_BODIES.items():
            client = await wire.connect("badconnect", user=f"good-{case}", query=[("case", case)])
            assert client.connected is not None
            assert client.connected["userId"] == (user or f"good-{case}"), case
            await client.ws.close()
        await settle_notifications(stack, "badconnect", wire)
    # no connected/disconnected for a refused connect
    for case in BAD_CONNECT_BODIES:
        refused = await connection_of(stack, "badconnect", f"bad-{case}")
        events = [s.event for s in stack.handler.seen("badconnect", connection_id=refused)]
        assert events == ["connect"], (case, events)


async def test_connect_groups_and_roles_replace_the_token(stack: Stack) -> None:
    answers = {
        "emptygroups": {"groups": []},
        "emptyroles": {"roles": []},
        "both": {"groups": ["app-group"], "roles": ["webpubsub.sendToGroup.app-group"]},
    }

    @stack.rule("grants")
    async def grant(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        case = connect_query(seen).get("case") if seen.event == "connect" else None
        if seen.method == "POST" and case:
            return web.json_response(answers[case[0]])
        return None

    token_grants: dict[str, Any] = {
        "groups": ["token-group"],
        "roles": ["webpubsub.joinLeaveGroup"],
    }
    async with Wire(stack.server) as wire:
        clients = {
            case: await wire.connect("grants", user=case, query=[("case", case)], **token_grants)
            for case in answers
        }
        await wire.send_to_group("grants", "token-group", "to token group")
        await wire.send_to_group("grants", "app-group", "to app group")
        # an empty groups list keeps the token's groups; the others follow the answer
        assert (await clients["emptygroups"].recv_json())["data"] == "to token group"
        assert (await clients["emptyroles"].recv_json())["data"] == "to token group"
        assert (await clients["both"].recv_json())["data"] == "to app group"
        for client in clients.values():
            await client.ping_pong()  # nothing else arrived
        # roles replace the token's; an empty list removes them all
        join = {"type": "joinGroup", "group": "elsewhere"}
        assert (await clients["emptygroups"].request(join))["success"] is True
        for case in ("emptyroles", "both"):
            ack = await clients[case].request(join)
            assert ack["success"] is False and ack["error"]["name"] == "Forbidden", (case, ack)
        send = {"type": "sendToGroup", "group": "app-group", "dataType": "text", "data": "hi"}
        assert (await clients["both"].request({**send, "noEcho": True}))["success"] is True


async def test_no_connected_or_disconnected_for_a_refused_connect(stack: Stack) -> None:
    @stack.rule("refuse")
    async def refuse(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method == "POST" and seen.event == "connect":
            if "no" in connect_query(seen):
                return web.Response(status=401, text="go away")
        return None

    assert await handshake(stack, "refuse", "refused", [("no", "1")]) == 401
    async with Wire(stack.server) as wire:
        await settle_notifications(stack, "refuse", wire)
    refused = await connection_of(stack, "refuse", "refused")
    assert [s.event for s in stack.handler.seen("refuse", connection_id=refused)] == ["connect"]


# --------------------------------------------------------------------------- abuse protection


async def test_abuse_protection_failure_is_retried_after_a_back_off(stack: Stack) -> None:
    allow = threading.Event()

    @stack.rule("guarded")
    async def guard(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method == "OPTIONS" and not allow.is_set():
            return web.Response(status=200)  # no WebHook-Allowed-Origin
        return None

    def probes() -> list[Seen]:
        return stack.handler.seen("guarded", method="OPTIONS")

    assert await handshake(stack, "guarded", "g1") == 500
    first = probes()
    assert len(first) == 1
    assert await handshake(stack, "guarded", "g2") == 500  # inside the 1 s back-off: no probe
    assert len(probes()) == 1
    await asyncio.sleep(1.2)
    assert await handshake(stack, "guarded", "g3") == 500  # probed again, fails again
    assert len(probes()) == 2
    assert 1.0 <= probes()[1].received - first[0].received < 2.0
    await asyncio.sleep(1.2)
    assert await handshake(stack, "guarded", "g4") == 500  # the back-off doubled to 2 s
    assert len(probes()) == 2
    allow.set()
    await asyncio.sleep(1.0)
    assert await handshake(stack, "guarded", "g5") == 101
    assert len(probes()) == 3
    assert await handshake(stack, "guarded", "g6") == 101  # success is remembered
    assert len(probes()) == 3
    # no event reached the handler while it was not validated
    users = [s.headers.get("ce-userid") for s in stack.handler.seen("guarded", event="connect")]
    assert users[:1] == ["g5"] and "g1" not in users and "g4" not in users
    for probe in probes():
        assert probe.event == "validate"
        assert probe.headers["webhook-request-origin"] == "127.0.0.1"
        assert probe.headers["ce-awpsversion"] == "1.0"
        assert "ce-signature" not in probe.headers
        assert "ce-connectionid" not in probe.headers


async def test_unvalidated_handler_gets_no_events(stack: Stack) -> None:
    @stack.rule("guardedquiet")
    async def guard(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method == "OPTIONS":
            return web.Response(status=401, headers={"WebHook-Allowed-Origin": "*"})
        return None

    async with Wire(stack.server) as wire:
        client = await wire.connect("guardedquiet", user="gq")  # connect is not handled
        _, ack = await send_event(client, "echo")
        assert failed(ack), ack
        await client.ping_pong()
        raw = await wire.connect("guardedquiet", user="gq-raw", protocols=())
        await raw.ws.send_str("hello")
        assert await raw.expect_close() == (1000, "")
        await client.ws.close()
    # the probes are the only requests: connected, user events and disconnected were dropped
    async with Wire(stack.server) as wire:
        await settle_notifications(stack, "marker", wire)
    seen = stack.handler.seen("guardedquiet", method=None)
    assert seen and {s.method for s in seen} == {"OPTIONS"}, seen


@pytest.mark.parametrize(
    ("hub", "status", "allowed", "valid"),
    [
        ("originstar", 200, "*", True),
        ("originhost", 200, "127.0.0.1", True),
        ("originport", 200, "127.0.0.1:8080", True),
        ("origin204", 204, "*", True),
        ("originother", 200, "example.com", False),
        ("originnone", 200, None, False),
        ("origin401", 401, "*", False),
        ("origin404", 404, "*", False),
    ],
)
async def test_abuse_protection_answers(
    stack: Stack, hub: str, status: int, allowed: str | None, valid: bool
) -> None:
    @stack.rule(hub)
    async def answer(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method == "OPTIONS":
            headers = {"WebHook-Allowed-Origin": allowed} if allowed is not None else {}
            return web.Response(status=status, headers=headers)
        return None

    assert await handshake(stack, hub, "probe-user") == (101 if valid else 500)
    posts = stack.handler.seen(hub, event="connect")
    assert len(posts) == (1 if valid else 0)
    assert len(stack.handler.seen(hub, method="OPTIONS")) == 1


# --------------------------------------------------------------------------- request details


async def test_signature_and_headers(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect("sig", user="signed", query=[("q", "1")])
        cid = client.connection_id
        _, ack = await send_event(client, "hello", "world")
        assert ack["success"] is True
        await client.ws.close()
    await stack.handler.wait_seen("disconnected", "sig", event="disconnected", connection_id=cid)
    posts = stack.handler.seen("sig", connection_id=cid)
    assert [s.event for s in posts] == ["connect", "connected", "hello", "disconnected"]
    for seen in posts:
        entries = seen.headers["ce-signature"].split(",")
        assert entries == [
            f"sha256={hmac_hex(ACCESS_KEY, cid)}",
            f"sha256={hmac_hex(SECONDARY_KEY, cid)}",
        ]
        # a validator holding either key accepts the request
        for key in (ACCESS_KEY, SECONDARY_KEY):
            assert any(
                hmac.compare_digest(e.strip(), f"sha256={hmac_hex(key, cid)}") for e in entries
            )
        assert seen.headers["ce-specversion"] == "1.0"
        assert seen.headers["ce-awpsversion"] == "1.0"
        assert seen.headers["ce-source"] == f"/hubs/sig/client/{cid}"
        assert seen.headers["ce-hub"] == "sig"
        assert seen.headers["ce-userid"] == "signed"
        assert seen.headers["ce-eventname"] == seen.event
        assert seen.headers["webhook-request-origin"] == "127.0.0.1"
        assert time.strptime(seen.headers["ce-time"], "%Y-%m-%dT%H:%M:%SZ")
    connect, connected, hello, disconnected = posts
    assert connect.headers["ce-type"] == "azure.webpubsub.sys.connect"
    assert connected.headers["ce-type"] == "azure.webpubsub.sys.connected"
    assert hello.headers["ce-type"] == "azure.webpubsub.user.hello"
    assert disconnected.headers["ce-type"] == "azure.webpubsub.sys.disconnected"
    assert "ce-subprotocol" not in connect.headers
    for seen in (connected, hello, disconnected):
        assert seen.headers["ce-subprotocol"] == JSON
    for seen in (connect, connected, disconnected):
        assert seen.headers["content-type"] == "application/json; charset=utf-8"
    assert hello.headers["content-type"] == "text/plain; charset=utf-8"
    body = connect.json()
    assert set(body) == {"claims", "query", "headers", "subprotocols", "clientCertificates"}
    assert body["query"] == {"q": ["1"]}
    assert body["subprotocols"] == [JSON]
    assert body["clientCertificates"] == []
    assert body["claims"]["sub"] == ["signed"]
    assert all(isinstance(v, list) for v in body["headers"].values())
    assert connected.json() == {}
    assert hello.body == b"world"
    assert disconnected.json() == {"reason": None}


async def test_event_ids_count_up_per_connection(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        first = await wire.connect("seq", user="seq-1")
        second = await wire.connect("seq", user="seq-2")
        for name in ("a", "b", "c"):
            await send_event(first, name)
        await send_event(second, "z")
        raw = await wire.connect("seq", user="seq-raw", protocols=())
        await raw.ws.send_str("m1")
        assert await raw.recv_text() == "m1"
        await raw.ws.send_str("m2")
        assert await raw.recv_text() == "m2"
        await first.ws.close()
        await second.ws.close()
        await raw.ws.close()
        raw_id = await connection_of(stack, "seq", "seq-raw")
        for cid in (first.connection_id, second.connection_id, raw_id):
            await stack.handler.wait_seen(
                "disconnected", "seq", event="disconnected", connection_id=cid
            )

    def ids(cid: str) -> list[tuple[str, int]]:
        posts = stack.handler.seen("seq", connection_id=cid)
        return sorted(((s.event, int(s.ce_id or -1)) for s in posts), key=lambda p: p[1])

    assert ids(first.connection_id) == [
        ("connect", 0),
        ("connected", 1),
        ("a", 2),
        ("b", 3),
        ("c", 4),
        ("disconnected", 5),
    ]
    assert ids(second.connection_id) == [
        ("connect", 0),
        ("connected", 1),
        ("z", 2),
        ("disconnected", 3),
    ]
    assert ids(raw_id) == [
        ("connect", 0),
        ("connected", 1),
        ("message", 2),
        ("message", 3),
        ("disconnected", 4),
    ]


async def test_connection_state_round_trip(stack: Stack) -> None:
    @stack.rule("state")
    async def states(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method != "POST":
            return None
        if seen.event == "connect":
            return web.Response(status=204, headers={"ce-connectionState": "s0"})
        if seen.event == "set":
            value = seen.body.decode()
            return web.Response(text="set", headers={"ce-connectionState": value})
        if seen.event == "keep":
            return web.Response(status=204)
        return None

    async with Wire(stack.server) as wire:
        client = await wire.connect("state", user="stateful")
        cid = client.connection_id
        await send_event(client, "keep")
        before, _ = await send_event(client, "set", "s1")
        assert before == [server_message("text", "set")]
        await send_event(client, "keep")
        await send_event(client, "set", "eyJrZXkiOiJhIn0=")
        await send_event(client, "keep")
        await client.ws.close()
    await stack.handler.wait_seen("disconnected", "state", event="disconnected", connection_id=cid)
    posts = stack.handler.seen("state", connection_id=cid)
    assert [(s.event, s.headers.get("ce-connectionstate")) for s in posts] == [
        ("connect", None),
        ("connected", "s0"),
        ("keep", "s0"),
        ("set", "s0"),
        ("keep", "s1"),
        ("set", "s1"),
        ("keep", "eyJrZXkiOiJhIn0="),
        ("disconnected", "eyJrZXkiOiJhIn0="),
    ]


async def test_a_cookie_set_by_one_answer_is_not_sent_with_other_events(stack: Stack) -> None:
    """Events of all connections share pooled sockets; state travels in ce-connectionState."""

    @stack.rule("cookies")
    async def set_cookie(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method == "POST" and seen.event == "login":
            response = web.Response(status=204)
            response.set_cookie("session", "of-the-first-connection")
            return response
        return None

    async with Wire(stack.server) as wire:
        first = await wire.connect("cookies", user="first")
        second = await wire.connect("cookies", user="second")
        await send_event(first, "login")
        await send_event(second, "after")
        await send_event(first, "after")
    posts = stack.handler.seen("cookies", event="after")
    assert len(posts) == 2
    assert [s.headers.get("cookie") for s in posts] == [None, None]


async def test_disconnected_reason(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        kicked = await wire.connect("bye", user="kicked")
        left = await wire.connect("bye", user="left")
        async with stack.service("bye") as service:
            await service.close_connection(kicked.connection_id, reason="maintenance window")
        assert await kicked.recv_json() == {
            "type": "system",
            "event": "disconnected",
            "message": "maintenance window",
        }
        assert (await kicked.expect_close())[0] == 1000
        await left.ws.close()
    for cid, reason in ((kicked.connection_id, "maintenance window"), (left.connection_id, None)):
        found = await stack.handler.wait_seen(
            "disconnected", "bye", event="disconnected", connection_id=cid
        )
        assert len(found) == 1
        assert found[0].json() == {"reason": reason}


async def test_a_connections_notifications_arrive_in_order(stack: Stack) -> None:
    """A slow ``connected`` answer is not overtaken by the connection's ``disconnected``."""

    @stack.rule("ordered")
    async def slow_connected(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.event == "connected":
            await asyncio.sleep(0.5)
        return None

    async with Wire(stack.server) as wire:
        client = await wire.connect("ordered", user="brief")
        await client.ws.close()
    found = await stack.handler.wait_seen(
        "disconnected", "ordered", event="disconnected", connection_id=client.connection_id
    )
    connected = stack.handler.seen("ordered", event="connected", connection_id=client.connection_id)
    assert len(connected) == 1 and connected[0].answered is not None
    assert found[0].received >= connected[0].answered
    assert [int(s.ce_id or 0) for s in (connected[0], found[0])] == [1, 2]


async def test_no_user_id_header_without_a_user(stack: Stack) -> None:
    async with Wire(stack.server) as wire:
        client = await wire.connect("anonymous", auth="none")
        assert client.connected is not None
        assert client.connected.get("userId") is None
        cid = client.connection_id
        await send_event(client, "anon")
        await client.ws.close()
    await stack.handler.wait_seen(
        "disconnected", "anonymous", event="disconnected", connection_id=cid
    )
    posts = stack.handler.seen("anonymous", connection_id=cid)
    assert [s.event for s in posts] == ["connect", "connected", "anon", "disconnected"]
    for seen in posts:
        assert "ce-userid" not in seen.headers, seen.headers
    assert "sub" not in posts[0].json()["claims"]


# --------------------------------------------------------------------------- replies


REPLIES: dict[str, tuple[bytes, str | None]] = {
    "text": ("t \u2603".encode(), "text/plain; charset=utf-8"),
    "json": (b'{"j": [1, 2]}', "application/json; charset=utf-8"),
    "octet": (b"\x00\x01", "application/octet-stream"),
    "none": (b"\x02\x03", None),
    "plainjson": (b'"quoted"', "application/json"),
}


async def test_reply_content_types(stack: Stack) -> None:
    @stack.rule("replies")
    async def reply(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method != "POST" or seen.event in ("connect", "connected", "disconnected"):
            return None
        kind = seen.event if seen.event != "message" else seen.body.decode()
        if kind == "empty":
            return web.Response(status=200)
        if kind == "nocontent":
            return web.Response(status=204)
        body, content_type = REPLIES[kind]
        if content_type is None:
            raw_answer(request, 200, body)
            return web.Response()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async with Wire(stack.server) as wire:
        client = await wire.connect("replies", user="replies-json")
        expected = {
            "text": server_message("text", "t \u2603"),
            "json": server_message("json", {"j": [1, 2]}),
            "octet": server_message("binary", b64(b"\x00\x01")),
            "none": server_message("binary", b64(b"\x02\x03")),
            "plainjson": server_message("json", "quoted"),
        }
        for kind, message in expected.items():
            before, ack = await send_event(client, kind)
            assert before == [message], kind
            assert ack["success"] is True
        for kind in ("empty", "nocontent"):
            before, ack = await send_event(client, kind)
            assert before == [] and ack["success"] is True, kind

        raw = await wire.connect("replies", user="replies-raw", protocols=())
        await raw.ws.send_str("text")
        assert await raw.recv_text() == "t \u2603"
        await raw.ws.send_str("json")
        assert await raw.recv_text() == '{"j": [1, 2]}'
        await raw.ws.send_str("octet")
        assert await raw.recv_bytes() == b"\x00\x01"
        await raw.ws.send_str("none")
        assert await raw.recv_bytes() == b"\x02\x03"
        await raw.ws.send_str("empty")
        await raw.ws.send_str("text")  # nothing came for "empty": the next frame is this reply
        assert await raw.recv_text() == "t \u2603"


async def test_invoke_gets_the_handler_reply(stack: Stack) -> None:
    """invoke calls the user event handler; its reply, or its failure, is the invokeResponse."""

    @stack.rule("invoke")
    async def answer(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method == "POST" and seen.event == "fail":
            return web.Response(status=400)
        return None

    async with Wire(stack.server) as wire:
        client = await wire.connect("invoke", user="invoker")
        await client.send_json(
            {
                "type": "invoke",
                "invocationId": "1",
                "target": "event",
                "event": "order",
                "dataType": "json",
                "data": {"n": 1},
            }
        )
        assert await client.recv_json() == {
            "type": "invokeResponse",
            "invocationId": "1",
            "success": True,
            "dataType": "json",
            "data": {"n": 1},
        }
        await client.send_json(
            {
                "type": "invoke",
                "invocationId": "2",
                "target": "event",
                "event": "fail",
                "dataType": "text",
                "data": "x",
            }
        )
        response = await client.recv_json()
        assert response["success"] is False and response["invocationId"] == "2"
        assert response["error"]["name"] == "InternalServerError"
        await client.ping_pong()


# --------------------------------------------------------------------------- isolation


async def test_slow_handler_does_not_block_others(stack: Stack) -> None:
    slow = 0.7 * TIMEOUT

    @stack.rule("slowhub")
    async def slow_rule(seen: Seen, request: web.Request) -> web.StreamResponse | None:
        if seen.method == "POST" and seen.event == "slow":
            await asyncio.sleep(slow)
            return web.Response(text="slow done", content_type="text/plain")
        return None

    async with Wire(stack.server) as wire:
        stuck = await wire.connect("slowhub", user="stuck")
        neighbour = await wire.connect("slowhub", user="neighbour")
        other_hub = await wire.connect("fasthub", user="elsewhere")
        for c in (stuck, neighbour, other_hub):  # validate both handlers beforehand
            await send_event(c, "warmup")

        started = time.monotonic()
        stuck_ack = stuck.next_ack_id()
        await stuck.send_json(
            {"type": "event", "event": "slow", "dataType": "text", "data": "s", "ackId": stuck_ack}
        )
        # the same connection's next event waits its turn
        await stuck.send_json(
            {"type": "event", "event": "after", "dataType": "text", "data": "a", "ackId": 99}
        )
        await stack.handler.wait_seen("slow event", "slowhub", event="slow")

        async def quick(client: Client) -> float:
            t0 = time.monotonic()
            before, ack = await send_event(client, "quick", "q")
            assert before == [server_message("text", "q")] and ack["success"] is True
            return time.monotonic() - t0

        quick_times = await asyncio.gather(quick(neighbour), quick(other_hub))
        assert max(quick_times) < slow / 2, quick_times
        assert time.monotonic() - started < slow  # both answered while the slow one ran

        frames = [await stuck.recv_json() for _ in range(4)]
        assert frames == [
            server_message("text", "slow done"),
            {"type": "ack", "ackId": stuck_ack, "success": True},
            server_message("text", "a"),
            {"type": "ack", "ackId": 99, "success": True},
        ]
        assert time.monotonic() - started >= slow
    after = stack.handler.seen("slowhub", event="after")
    slow_seen = stack.handler.seen("slowhub", event="slow")
    assert slow_seen[0].answered is not None
    assert after[0].received >= slow_seen[0].answered
