"""Plain REST sends answered by the fast lane (server/fastlane.py), over raw keep-alive sockets.

Every test runs against a node with the lane and one without it (``server.fast_lane = false``):
what a client sees is the same.

The lane answers a plain ``:send`` itself and gives every other request, and every request it
would refuse, to aiohttp unchanged. These tests pin what a client sees either way: the same
answers, in request order, on one connection that mixes both, with bodies split across writes
and requests pipelined in one write.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest

from tests.conftest import Server
from tests.integration._wire import (
    API_VERSION,
    RELIABLE,
    TIMEOUT,
    ServerLike,
    Wire,
    mint_rest_token,
    server_text,
)


@pytest.fixture
def server(server_either_lane: Server) -> Server:
    """Every test twice: with the REST fast lane, and with aiohttp answering every request."""
    return server_either_lane


def fast_sends(server: ServerLike) -> float:
    """The node's count of sends the lane answered (GET /metrics)."""
    with urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=TIMEOUT) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("hubbub_rest_fast_sends_total "):
                return float(line.split()[1])
    raise AssertionError("no hubbub_rest_fast_sends_total in /metrics")


class Http:
    """One keep-alive HTTP/1.1 connection written by hand."""

    def __init__(self, server: ServerLike) -> None:
        self.server = server
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def __aenter__(self) -> Http:
        self.reader, self.writer = await asyncio.open_connection(self.server.host, self.server.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()

    def request(
        self,
        path: str,
        body: bytes,
        *,
        method: str = "POST",
        query: str = f"api-version={API_VERSION}",
        content_type: str = "text/plain",
        token: str | None = None,
        extra: str = "",
    ) -> bytes:
        target = f"{path}?{query}" if query else path
        if token is None:
            token = mint_rest_token(self.server, f"{self.server.endpoint}{target}")
        return (
            f"{method} {target} HTTP/1.1\r\nHost: {self.server.host}:{self.server.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        ).encode() + body

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = b""
        if headers.get("content-length", "0") != "0":
            body = await asyncio.wait_for(
                self.reader.readexactly(int(headers["content-length"])), TIMEOUT
            )
        return status, headers, body


async def test_a_plain_send_reaches_the_user_and_answers_like_aiohttp(
    server: Server, hub: str
) -> None:
    """Without the lane, aiohttp answers both: the same answers, and no send counted."""
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="lane-user")
        async with Http(server) as http:
            path = f"/api/hubs/{hub}/users/lane-user/:send"
            before = fast_sends(server)
            http.writer.write(http.request(path, b"by the lane"))
            lane = await http.answer()
            assert await client.recv_json() == server_text("by the lane")
            counted = before + 1 if server.fast_lane else before
            assert fast_sends(server) == counted
            # messageTtlSeconds makes the lane step aside: aiohttp answers this one.
            query = f"api-version={API_VERSION}&messageTtlSeconds=10"
            http.writer.write(http.request(path, b"by aiohttp", query=query))
            classic = await http.answer()
            assert await client.recv_json() == server_text("by aiohttp")
            assert fast_sends(server) == counted
        assert lane[0] == classic[0] == 202
        assert set(lane[1]) == set(classic[1])
        assert lane[2] == classic[2] == b""


async def test_pipelined_requests_are_answered_in_order(server: ServerLike, hub: str) -> None:
    """Lane sends, then a request for aiohttp, then sends again: all answered in order."""
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="pipe-user")
        async with Http(server) as http:
            path = f"/api/hubs/{hub}/users/pipe-user/:send"
            health = f"HEAD /api/health HTTP/1.1\r\nHost: {server.host}\r\n\r\n".encode()
            burst = b"".join(
                [
                    http.request(path, b"m1"),
                    http.request(path, b"m2"),
                    health,
                    http.request(path, b"m3"),
                    http.request(path, b"m4"),
                ]
            )
            http.writer.write(burst)
            statuses = [(await http.answer())[0] for _ in range(5)]
        assert statuses == [202, 202, 200, 202, 202]
        got = [(await client.recv_json())["data"] for _ in range(4)]
        assert got == ["m1", "m2", "m3", "m4"]


async def test_a_send_split_across_many_writes(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="split-user")
        async with Http(server) as http:
            body = json.dumps({"text": "x" * 5000}).encode()
            data = http.request(
                f"/api/hubs/{hub}/users/split-user/:send", body, content_type="application/json"
            )
            for i in range(0, len(data), 7):
                http.writer.write(data[i : i + 7])
                await http.writer.drain()
            assert (await http.answer())[0] == 202
        message = await client.recv_json()
        assert message["dataType"] == "json"
        assert message["data"] == {"text": "x" * 5000}


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("bad-token", 401, "Unauthorized"),
        ("no-api-version", 400, "ApiVersionUnspecified"),
        ("content-type", 415, "UnsupportedMediaType"),
        ("bad-json", 400, "BadRequest"),
        ("bad-group", 400, "BadRequest"),
        ("too-big", 413, "RequestEntityTooLarge"),
    ],
)
async def test_a_refused_send_gets_the_services_error_and_the_socket_goes_on(
    server: ServerLike, hub: str, case: str, status: int, code: str
) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="err-user")
        async with Http(server) as http:
            path = f"/api/hubs/{hub}/users/err-user/:send"
            if case == "bad-token":
                data = http.request(path, b"x", token="not.a.token")
            elif case == "no-api-version":
                data = http.request(path, b"x", query="")
            elif case == "content-type":
                data = http.request(path, b"x", content_type="text/xml")
            elif case == "bad-json":
                data = http.request(path, b"{nope", content_type="application/json")
            elif case == "bad-group":
                data = http.request(f"/api/hubs/{hub}/groups/{'g' * 2000}/:send", b"x")
            else:
                data = http.request(path, b"x" * (1024 * 1024 + 1))
            http.writer.write(data)
            got, headers, body = await http.answer()
            assert got == status, body
            assert headers["x-ms-error-code"] == code
            detail = json.loads(body)
            assert detail.get("error", detail)["code"] == code  # api-version's is wrapped
            if case != "too-big":
                http.writer.write(http.request(path, b"after"))
                assert (await http.answer())[0] == 202
                assert await client.recv_json() == server_text("after")


async def test_a_send_that_asks_to_close_is_answered_then_closed(
    server: ServerLike, hub: str
) -> None:
    """``Connection: close``, even on an empty body (httptools then reports keep-alive)."""
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="close-user")
        async with Http(server) as http:
            path = f"/api/hubs/{hub}/users/close-user/:send"
            http.writer.write(http.request(path, b"", extra="Connection: close\r\n"))
            status, headers, _ = await http.answer()
            assert status == 202 and headers["connection"] == "close"
            assert await asyncio.wait_for(http.reader.read(), TIMEOUT) == b""  # closed
        assert await client.recv_json() == server_text("")


async def test_a_chunked_send_is_served_by_aiohttp(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="chunk-user")
        async with Http(server) as http:
            target = f"/api/hubs/{hub}/users/chunk-user/:send?api-version={API_VERSION}"
            token = mint_rest_token(server, f"{server.endpoint}{target}")
            http.writer.write(
                (
                    f"POST {target} HTTP/1.1\r\nHost: {server.host}\r\n"
                    f"Authorization: Bearer {token}\r\nContent-Type: text/plain\r\n"
                    "Transfer-Encoding: chunked\r\n\r\n5\r\nchunk\r\n3\r\ned!\r\n0\r\n\r\n"
                ).encode()
            )
            assert (await http.answer())[0] == 202
        assert await client.recv_json() == server_text("chunked!")


async def test_a_pipelined_burst_to_a_group_reaches_every_member_whole_and_in_order(
    server: ServerLike, hub: str
) -> None:
    """60 sends to one group in one write: the node handles them in one loop pass, so the
    members share their frames. Every member must still get exactly its messages, in order: a
    plain member, one that also gets a send of its own in the middle of the burst, one that
    also sits in a second group sent to in the middle. A group with a reliable member (its
    frames carry its own sequence ids) gets the same burst member by member."""
    async with Wire(server) as wire, Http(server) as http:
        plain = await wire.connect(hub, groups=["burst"])
        direct = await wire.connect(hub, groups=["burst"])
        both = await wire.connect(hub, groups=["burst", "side"])
        json_member = await wire.connect(hub, groups=["mixed"])
        reliable = await wire.connect(hub, groups=["mixed"], protocols=(RELIABLE,))

        def send(path: str, text: str) -> bytes:
            return http.request(f"/api/hubs/{hub}/{path}/:send", text.encode())

        requests = [send("groups/burst", f"g{i}") for i in range(60)]
        requests.insert(30, send("groups/side", "side"))
        requests.insert(20, send(f"connections/{direct.connection_id}", "own"))
        requests += [send("groups/mixed", f"m{i}") for i in range(30)]
        http.writer.write(b"".join(requests))
        for _ in requests:
            assert (await http.answer())[0] == 202

        def texts(frames: list[Any]) -> list[str]:
            return [f["data"] for f in frames]

        burst = [f"g{i}" for i in range(60)]
        assert texts(await plain.recv_many(60)) == burst
        assert texts(await direct.recv_many(61)) == [*burst[:20], "own", *burst[20:]]
        assert texts(await both.recv_many(61)) == [*burst[:30], "side", *burst[30:]]
        mixed = [f"m{i}" for i in range(30)]
        assert texts(await json_member.recv_many(30)) == mixed
        frames = await reliable.recv_many(30)
        assert texts(frames) == mixed
        assert [f["sequenceId"] for f in frames] == list(range(1, 31))
        for client in (plain, direct, both, json_member):
            await wire.marker(hub, client)
