"""Wire-level helpers for the integration tests: JWT minting, WebSocket clients, REST calls.

Everything here talks to a running hubbub node over real sockets; nothing imports the server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol

import aiohttp
import jwt
import yarl
from aiohttp import ClientWebSocketResponse, WSMessage, WSMsgType
from multidict import CIMultiDict

TIMEOUT = 5.0
"""Upper bound for every single wait on the network."""

JSON = "json.webpubsub.azure.v1"
RELIABLE = "json.reliable.webpubsub.azure.v1"
API_VERSION = "2024-12-01"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

ROLE_JOIN = "webpubsub.joinLeaveGroup"
ROLE_SEND = "webpubsub.sendToGroup"


class ServerLike(Protocol):
    """The parts of the `server` fixture the helpers use."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def access_key(self) -> str: ...
    @property
    def secondary_key(self) -> str: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def ws_endpoint(self) -> str: ...


def compact(obj: Any) -> str:
    """Compact JSON text, keys in insertion order."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- tokens


def client_audience(server: ServerLike, hub: str) -> str:
    return f"{server.endpoint}/client/hubs/{hub}"


def mint_client_token(
    server: ServerLike,
    hub: str,
    *,
    user: str | None = None,
    roles: str | Sequence[str] | None = None,
    groups: str | Sequence[str] | None = None,
    key: str | None = None,
    aud: str | None = None,
    lifetime: int = 3600,
    nbf: int | None = None,
    algorithm: str = "HS256",
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A client access token as the service SDKs produce it (HS256 over the UTF-8 key)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": aud if aud is not None else client_audience(server, hub),
        "iat": now,
        "exp": now + lifetime,
    }
    if nbf is not None:
        claims["nbf"] = nbf
    if user is not None:
        claims["sub"] = user
    if roles is not None:
        claims["role"] = roles if isinstance(roles, str) else list(roles)
    if groups is not None:
        claims["webpubsub.group"] = groups if isinstance(groups, str) else list(groups)
    if extra:
        claims.update(extra)
    if algorithm == "none":
        return jwt.encode(claims, "", algorithm="none")
    secret = (key if key is not None else server.access_key).encode()
    with warnings.catch_warnings():
        # short keys for HS384/HS512 only trigger an advisory warning
        warnings.simplefilter("ignore")
        return jwt.encode(claims, secret, algorithm=algorithm)


def mint_rest_token(server: ServerLike, url: str, key: str | None = None) -> str:
    """A REST bearer token: `aud` is the full request URL, as every SDK signs it."""
    secret = (key if key is not None else server.access_key).encode()
    return jwt.encode({"aud": url, "exp": int(time.time()) + 60}, secret, algorithm="HS256")


def query_string(params: Sequence[tuple[str, str]]) -> str:
    return urllib.parse.urlencode(list(params), quote_via=urllib.parse.quote)


# --------------------------------------------------------------------------- raw handshake


@dataclass
class HandshakeResult:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json_body(self) -> Any:
        return json.loads(self.body)


async def raw_handshake(
    server: ServerLike,
    target: str,
    *,
    protocols: Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
    upgrade: bool = True,
) -> HandshakeResult:
    """Send one hand-written HTTP/1.1 (upgrade) request and return the status line, headers, body.

    On a 101 the Sec-WebSocket-Accept value is verified and the socket is dropped right away.
    """
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(server.host, server.port), TIMEOUT
    )
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {target} HTTP/1.1", f"Host: {server.host}:{server.port}"]
        if upgrade:
            lines += [
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
            ]
        else:
            lines.append("Connection: close")
        if protocols is not None:
            lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        resp_headers: CIMultiDict[str] = CIMultiDict()
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                resp_headers.add(name.strip(), value.strip())
        body = b""
        if status == 101:
            expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            assert resp_headers.get("Sec-WebSocket-Accept") == expected, resp_headers
        elif "Content-Length" in resp_headers:
            length = int(resp_headers["Content-Length"])
            body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
        elif resp_headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = await asyncio.wait_for(_read_chunked(reader), TIMEOUT)
        return HandshakeResult(status, resp_headers, body)
    finally:
        writer.close()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return out
        out += await reader.readexactly(size)
        await reader.readexactly(2)


# --------------------------------------------------------------------------- clients


@dataclass
class Client:
    """One open WebSocket connection plus what its handshake told us."""

    ws: ClientWebSocketResponse
    protocol: str | None
    connected_text: str | None = None
    connected: dict[str, Any] | None = None
    user: str | None = None
    ack_counter: int = field(default=0)

    @property
    def connection_id(self) -> str:
        assert self.connected is not None, "raw clients have no connected message"
        return str(self.connected["connectionId"])

    def next_ack_id(self) -> int:
        self.ack_counter += 1
        return self.ack_counter

    async def recv(self, wait: float = TIMEOUT) -> WSMessage:
        try:
            return await self.ws.receive(timeout=wait)
        except TimeoutError:
            raise AssertionError(f"no frame arrived within {wait} s") from None

    async def recv_text(self, wait: float = TIMEOUT) -> str:
        msg = await self.recv(wait)
        assert msg.type == WSMsgType.TEXT, f"expected a text frame, got {msg.type!r} {msg.data!r}"
        return str(msg.data)

    async def recv_bytes(self, wait: float = TIMEOUT) -> bytes:
        msg = await self.recv(wait)
        assert msg.type == WSMsgType.BINARY, (
            f"expected a binary frame, got {msg.type!r} {msg.data!r}"
        )
        return bytes(msg.data)

    async def recv_json(self, wait: float = TIMEOUT) -> Any:
        return json.loads(await self.recv_text(wait))

    async def recv_many(self, count: int) -> list[Any]:
        return [await self.recv_json() for _ in range(count)]

    async def send_json(self, obj: Any) -> None:
        await self.ws.send_str(compact(obj))

    async def expect_close(self, wait: float = TIMEOUT) -> tuple[int | None, str]:
        """The next frame must be the server's close frame; returns (code, reason)."""
        msg = await self.recv(wait)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING), (
            f"expected the connection to close, got {msg.type!r} {msg.data!r}"
        )
        if msg.type == WSMsgType.CLOSE:
            return int(msg.data), str(msg.extra or "")
        return self.ws.close_code, ""

    async def ping_pong(self) -> None:
        """Round-trip an application ping: earlier frames were handled, nothing else is pending."""
        await self.send_json({"type": "ping"})
        assert await self.recv_json() == {"type": "pong"}

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a message with a fresh ackId and return its ack (the next frame)."""
        ack_id = self.next_ack_id()
        await self.send_json({**message, "ackId": ack_id})
        ack = await self.recv_json()
        assert ack.get("type") == "ack" and ack.get("ackId") == ack_id, ack
        return dict(ack)

    async def join(self, group: str) -> None:
        ack = await self.request({"type": "joinGroup", "group": group})
        assert ack["success"] is True, ack


def ok_ack(ack_id: int) -> dict[str, Any]:
    return {"type": "ack", "ackId": ack_id, "success": True}


class Wire:
    """Owns one aiohttp session and every WebSocket opened through it."""

    def __init__(self, server: ServerLike) -> None:
        self.server = server
        self._http: aiohttp.ClientSession | None = None
        self._clients: list[Client] = []

    async def __aenter__(self) -> Wire:
        self._http = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for client in self._clients:
            if not client.ws.closed:
                try:
                    await asyncio.wait_for(client.ws.close(), 2)
                except (TimeoutError, aiohttp.ClientError, OSError):
                    pass
        await self.http.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None
        return self._http

    # ------------------------------------------------------------------ websocket

    async def connect(
        self,
        hub: str,
        *,
        user: str | None = None,
        roles: str | Sequence[str] | None = None,
        groups: str | Sequence[str] | None = None,
        token: str | None = None,
        auth: Literal["query", "header", "none"] = "query",
        protocols: Sequence[str] = (JSON,),
        path: str | None = None,
        query: Sequence[tuple[str, str]] = (),
        autoping: bool = True,
        read_connected: bool = True,
    ) -> Client:
        """Open a WebSocket; for JSON subprotocols also read and check the `connected` frame."""
        if auth != "none" and token is None:
            token = mint_client_token(self.server, hub, user=user, roles=roles, groups=groups)
        params = list(query)
        headers: dict[str, str] = {}
        if auth == "query":
            assert token is not None
            params.append(("access_token", token))
        elif auth == "header":
            headers["Authorization"] = f"Bearer {token}"
        target = path if path is not None else f"/client/hubs/{hub}"
        url = f"{self.server.ws_endpoint}{target}"
        if params:
            url += ("&" if "?" in url else "?") + query_string(params)
        ws = await asyncio.wait_for(
            self.http.ws_connect(
                yarl.URL(url, encoded=True),
                protocols=tuple(protocols),
                headers=headers,
                autoping=autoping,
                max_msg_size=8 * 1024 * 1024,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
            ),
            TIMEOUT,
        )
        client = Client(ws=ws, protocol=ws.protocol, user=user)
        self._clients.append(client)
        is_json = ws.protocol is not None and ws.protocol.lower() in (JSON, RELIABLE)
        if is_json and read_connected:
            text = await client.recv_text()
            client.connected_text = text
            client.connected = json.loads(text)
            assert client.connected is not None
            assert client.connected.get("type") == "system", text
            assert client.connected.get("event") == "connected", text
        return client

    # ------------------------------------------------------------------ REST

    async def rest(
        self,
        method: str,
        path: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: bytes | str | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        url = f"{self.server.endpoint}{path}?" + query_string(
            [("api-version", API_VERSION), *params]
        )
        headers = {
            **(headers or {}),
            "Authorization": f"Bearer {mint_rest_token(self.server, url)}",
        }
        if content_type is not None:
            headers["Content-Type"] = content_type
        data = body.encode() if isinstance(body, str) else body
        async with self.http.request(
            method,
            yarl.URL(url, encoded=True),
            headers=headers,
            data=data,
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        ) as resp:
            return resp.status, await resp.read()

    async def _send(self, path: str, body: bytes | str, content_type: str) -> None:
        status, text = await self.rest("POST", path, body=body, content_type=content_type)
        assert status == 202, (status, text)

    async def send_to_all(
        self, hub: str, body: bytes | str, content_type: str = "text/plain"
    ) -> None:
        await self._send(f"/api/hubs/{hub}/:send", body, content_type)

    async def send_to_connection(
        self, hub: str, connection_id: str, body: bytes | str, content_type: str = "text/plain"
    ) -> None:
        path = f"/api/hubs/{hub}/connections/{urllib.parse.quote(connection_id, safe='')}/:send"
        await self._send(path, body, content_type)

    async def send_to_user(
        self, hub: str, user: str, body: bytes | str, content_type: str = "text/plain"
    ) -> None:
        await self._send(
            f"/api/hubs/{hub}/users/{urllib.parse.quote(user)}/:send", body, content_type
        )

    async def send_to_group(
        self, hub: str, group: str, body: bytes | str, content_type: str = "text/plain"
    ) -> None:
        await self._send(
            f"/api/hubs/{hub}/groups/{urllib.parse.quote(group)}/:send", body, content_type
        )

    async def marker(self, hub: str, client: Client, text: str = "marker") -> None:
        """Send a text marker to one JSON client over REST and assert it is the next frame."""
        await self.send_to_connection(hub, client.connection_id, text)
        assert await client.recv_json() == server_text(text)


def server_text(text: str) -> dict[str, Any]:
    return {"type": "message", "from": "server", "dataType": "text", "data": text}


async def closed_with(ws: ClientWebSocketResponse) -> tuple[int, str]:
    """Read until the server's close frame (text frames before it are skipped): its code and
    reason."""
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type is WSMsgType.CLOSE:
            return int(msg.data), str(msg.extra)
        assert msg.type is WSMsgType.TEXT, msg
