"""Shared fixtures: a real hubbub server in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import websocket
from azure.messaging.webpubsubclient.aio._client import WebSocketAppAsync

from tests._entra import TestKey, write_jwks
from tests._pki import Pki, make_pki

if TYPE_CHECKING:
    from tests._redis import RedisServer

ACCESS_KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
SECONDARY_KEY = "secondary-key-0123456789-abcdefghijklmnopqrstuvwx"

# Hubs the test server knows by name; every other hub gets default settings
# (anonymous connect denied, no event handlers).
CONFIG_TOML = f"""
[auth]
access_keys = ["{ACCESS_KEY}", "{SECONDARY_KEY}"]

[hubs.anon]
anonymous_connect = true

[hubs.fastping]
keep_alive_seconds = 1
"""


@dataclass(frozen=True)
class Server:
    """A running hubbub node."""

    host: str
    port: int
    access_key: str
    secondary_key: str
    process: subprocess.Popen[bytes]
    fast_lane: bool = True
    """Plain REST sends are answered by the fast lane (``server.fast_lane``)."""
    tls: bool = False
    """The node serves https and wss."""

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def ws_endpoint(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}"

    @property
    def connection_string(self) -> str:
        return f"Endpoint={self.endpoint};AccessKey={self.access_key};Version=1.0;"

    @property
    def secondary_connection_string(self) -> str:
        return f"Endpoint={self.endpoint};AccessKey={self.secondary_key};Version=1.0;"


def free_port() -> int:
    """Return a TCP port that is free on the loopback interface right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    tmp: Path,
    extra_args: list[str] | None = None,
    config_toml: str = CONFIG_TOML,
    port: int | None = None,
    ca_file: Path | None = None,
    host: str = "127.0.0.1",
) -> Server:
    """Start `hubbub serve` in a subprocess and wait until its health endpoint answers.

    ``ca_file``: the node serves TLS with a certificate of this CA (the health check is https).
    """
    config = tmp / "hubbub.toml"
    config.write_text(config_toml)
    port = port or free_port()
    cmd = [
        sys.executable,
        "-m",
        "hubbub",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--config",
        str(config),
        *(extra_args or []),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HUBBUB_ACCESS_KEY", None)
    with open(tmp / "server.log", "wb") as log:  # the child holds its own copy
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 20
    scheme = "https" if ca_file is not None else "http"
    url = f"{scheme}://{'localhost' if ca_file is not None else '127.0.0.1'}:{port}/api/health"
    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"hubbub exited early: {(tmp / 'server.log').read_text()}")
        try:
            req = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(req, timeout=1, context=context) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("hubbub did not become healthy in 20 s")
        time.sleep(0.05)
    fast_lane = "fast_lane = false" not in config_toml
    name = "localhost" if ca_file is not None else "127.0.0.1"
    return Server(name, port, ACCESS_KEY, SECONDARY_KEY, proc, fast_lane, ca_file is not None)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


WITHOUT_LANE = "\n[server]\nfast_lane = false\n"
"""Configuration to add for a node whose fast lane is off (aiohttp answers every request)."""
FAST_LANE_MODES = [pytest.param(True, id="fast-lane"), pytest.param(False, id="no-fast-lane")]


@pytest.fixture(scope="session")
def lane_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One hubbub node shared by the whole session; tests use unique hub names to stay apart."""
    srv = start_server(tmp_path_factory.mktemp("hubbub"))
    yield srv
    stop_server(srv)


@pytest.fixture(scope="session", autouse=True)
def websocket_client_left_open() -> Iterator[list[websocket.WebSocket]]:
    """Each websocket-client connection whose ``close()`` leaves its socket open.

    websocket-client (under the sync Web PubSub SDK client) does so when the server closed the
    connection first: once it has answered the server's close frame, ``WebSocket.close()``
    returns early, and the socket lingers until garbage collection reports it (ResourceWarning)
    in whatever test runs then. ``websocket_client_sockets_closed`` closes them after each test.
    """
    left_open: list[websocket.WebSocket] = []
    close = websocket.WebSocket.close

    def close_keeping_what_is_left_open(
        self: websocket.WebSocket, *args: Any, **kwargs: Any
    ) -> None:
        if not self.connected and self.sock is not None:
            left_open.append(self)
        close(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(websocket.WebSocket, "close", close_keeping_what_is_left_open)
        yield left_open


@pytest.fixture(autouse=True)
def websocket_client_sockets_closed(
    websocket_client_left_open: list[websocket.WebSocket],
) -> Iterator[None]:
    """Close the sockets websocket-client left open during the test."""
    yield
    while websocket_client_left_open:
        sock = websocket_client_left_open.pop().sock
        if sock is not None:
            sock.close()


@pytest.fixture(scope="session", autouse=True)
def aio_sdk_client_sessions_closed() -> Iterator[None]:
    """The asyncio Web PubSub SDK client closes the aiohttp session of each of its connections.

    It does not when the task reading a connection is cancelled: that task awaits the client's
    reconnection attempts after the server closed the connection, and is cancelled when the
    client or the loop closes first; garbage collection then reports the session
    (ResourceWarning) in whatever test runs then.
    """
    run_forever: Callable[[WebSocketAppAsync], Awaitable[None]] = WebSocketAppAsync.run_forever

    async def run_forever_then_close(self: WebSocketAppAsync) -> None:
        try:
            await run_forever(self)
        finally:
            await self.session_close()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WebSocketAppAsync, "run_forever", run_forever_then_close)
        yield


@pytest.fixture(scope="session")
def server(lane_server: Server) -> Server:
    """The session's node (``lane_server``: REST modules may override ``server``)."""
    return lane_server


@pytest.fixture(scope="session")
def server_without_lane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second node shared by the session, with the fast lane off."""
    srv = start_server(
        tmp_path_factory.mktemp("hubbub-no-lane"), config_toml=CONFIG_TOML + WITHOUT_LANE
    )
    yield srv
    stop_server(srv)


@pytest.fixture(params=FAST_LANE_MODES)
def server_either_lane(request: pytest.FixtureRequest) -> Server:
    """The session's node, then the one without the fast lane: a REST module that takes its
    ``server`` from this runs each test against both."""
    name = "lane_server" if request.param else "server_without_lane"
    found: Server = request.getfixturevalue(name)
    return found


_hub_counter = 0


@pytest.fixture
def hub() -> str:
    """A hub name no other test uses (hubs are created implicitly)."""
    global _hub_counter
    _hub_counter += 1
    return f"hub{os.getpid()}x{_hub_counter}"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA with a server certificate (localhost, 127.0.0.1, ::1) and a client one."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def entra_key() -> TestKey:
    """The test Entra signing key; :mod:`tests._entra` makes tokens and credentials with it."""
    return TestKey()


@pytest.fixture(scope="session")
def jwks_file(tmp_path_factory: pytest.TempPathFactory, entra_key: TestKey) -> Path:
    """A JWKS file with the test signing key, as ``[auth.entra] jwks_file`` reads it."""
    return write_jwks(tmp_path_factory.mktemp("jwks") / "keys.json", entra_key)


@pytest.fixture
def redis_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port (tests/_redis.py); tests mark it ``redis``."""
    if request.node.get_closest_marker("redis") is None:
        pytest.fail("a test using redis_server must be marked @pytest.mark.redis", pytrace=False)
    from tests._redis import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()
