"""One node in this process over the loop's own TLS transport: REST (the fast lane and
aiohttp), an upgraded socket, the certificate renewed by its files changing, and the in-process
reload API taking a new key, a handler and anonymous connect while a socket stays open."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import pytest

from hubbub.config import Config, load_config
from hubbub.metrics import SLOW_CLIENT_CLOSES
from hubbub.server.app import Listening, serve
from tests._pki import Pki

KEY_A, KEY_B = "A" * 43, "B" * 43
JSON_SUBPROTOCOL = "json.webpubsub.azure.v1"


def write(
    path: Path,
    pki: Pki,
    key: str,
    *,
    fast_lane: bool = True,
    anonymous: bool = False,
    head_timeout: float = 15.0,
    outbound: int = 4 * 1024 * 1024,
    client_auth: str = "off",
) -> None:
    cert, cert_key = path.parent / "cert.pem", path.parent / "key.pem"
    if not cert.exists():
        shutil.copy(pki.server.cert_file, cert)
        shutil.copy(pki.server.key_file, cert_key)
    path.write_text(
        f'[server]\ntls_cert_file = "{cert}"\ntls_key_file = "{cert_key}"\n'
        f"fast_lane = {str(fast_lane).lower()}\n"
        f"request_head_timeout_seconds = {head_timeout}\n"
        f"max_outbound_bytes = {outbound}\n"
        f'tls_client_auth = "{client_auth}"\ntls_client_ca_file = "{pki.ca_file}"\n'
        f'[auth]\naccess_keys = ["{key}"]\n'
        f"[hubs.chat]\nanonymous_connect = {str(anonymous).lower()}\n"
    )


@dataclass
class Node:
    listening: Listening
    path: Path
    context: ssl.SSLContext

    @property
    def base(self) -> str:
        return f"https://localhost:{self.listening.config.port}"

    def rest_token(self, url: str, key: str) -> str:
        return jwt.encode({"aud": url, "exp": 2**31 - 1}, key.encode(), algorithm="HS256")

    def client_token(self, key: str, user: str = "u") -> str:
        claims = {"aud": f"{self.base}/client/hubs/chat", "sub": user, "exp": 2**31 - 1}
        return jwt.encode(claims, key.encode(), algorithm="HS256")

    async def send(self, session: aiohttp.ClientSession, text: str, key: str) -> int:
        url = f"{self.base}/api/hubs/chat/:send?api-version=2024-12-01"
        headers = {"Authorization": f"Bearer {self.rest_token(url, key)}"}
        headers["Content-Type"] = "text/plain"
        async with session.post(url, data=text, headers=headers, ssl=self.context) as r:
            return r.status


Starter = Callable[..., Awaitable[Node]]


@pytest.fixture
async def start(tmp_path: Path, pki: Pki) -> AsyncIterator[Starter]:
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def starting(
        fast_lane: bool = True, head_timeout: float = 15.0, outbound: int = 4 * 1024 * 1024
    ) -> Node:
        path = tmp_path / "hubbub.toml"
        write(path, pki, KEY_A, fast_lane=fast_lane, head_timeout=head_timeout, outbound=outbound)
        config = load_config(str(path), env={}, overrides={"port": 0})
        got: asyncio.Future[Listening] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()

        def load() -> Config:
            return load_config(str(path), env={}, overrides={"port": 0})

        task = asyncio.create_task(
            serve(config, started=got.set_result, stop=stop, load=load, poll_seconds=0.05)
        )
        stops.append((stop, task))
        listening = await asyncio.wait_for(got, 10)
        return Node(listening, path, ssl.create_default_context(cafile=str(pki.ca_file)))

    yield starting
    for stop, task in stops:
        stop.set()
        await asyncio.wait_for(task, 10)


async def peer_der(node: Node) -> bytes:
    _, writer = await asyncio.open_connection(
        "127.0.0.1",
        node.listening.config.port,
        ssl=node.context,
        server_hostname="localhost",
    )
    der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return der


@pytest.mark.parametrize("fast_lane", [True, False], ids=["fast-lane", "no-fast-lane"])
async def test_rest_and_a_socket_over_the_loops_tls_transport(
    start: Starter, fast_lane: bool
) -> None:
    node = await start(fast_lane)
    assert node.listening.addresses == [f"https://127.0.0.1:{node.listening.config.port}"]
    assert node.listening.config.connection_string.startswith("Endpoint=https://")
    async with aiohttp.ClientSession() as session:
        url = f"{node.base}/client/hubs/chat?access_token={node.client_token(KEY_A)}"
        async with session.ws_connect(url, protocols=[JSON_SUBPROTOCOL], ssl=node.context) as ws:
            assert (await ws.receive_json(timeout=5))["event"] == "connected"
            assert await node.send(session, "hello", KEY_A) == 202
            big = "x" * 300_000
            assert await node.send(session, big, KEY_A) == 202
            assert (await ws.receive_json(timeout=5))["data"] == "hello"
            assert (await ws.receive_json(timeout=5))["data"] == big
        # :generateToken over https: its audience is the https endpoint the client then uses
        token_url = f"{node.base}/api/hubs/chat/:generateToken?api-version=2024-12-01&userId=g"
        headers = {"Authorization": f"Bearer {node.rest_token(token_url, KEY_A)}"}
        async with session.post(token_url, headers=headers, ssl=node.context) as r:
            token = (await r.json())["token"]
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["aud"] == f"{node.base}/client/hubs/chat"
        url = f"{node.base}/client/hubs/chat?access_token={token}"
        async with session.ws_connect(url, protocols=[JSON_SUBPROTOCOL], ssl=node.context) as ws:
            assert (await ws.receive_json(timeout=5))["userId"] == "g"


async def test_a_renewed_certificate_is_loaded_when_its_files_change(
    start: Starter, pki: Pki
) -> None:
    """A renewal that writes new files under the same names, no signal: new handshakes get
    the new certificate, an open socket stays."""
    node = await start()
    assert await peer_der(node) == pki.server.der
    async with aiohttp.ClientSession() as session:
        url = f"{node.base}/client/hubs/chat?access_token={node.client_token(KEY_A)}"
        async with session.ws_connect(url, protocols=[JSON_SUBPROTOCOL], ssl=node.context) as ws:
            await ws.receive_json(timeout=5)
            renewed = pki.issue("renewed-in-place")
            shutil.copy(renewed.key_file, node.path.parent / "key.pem")
            shutil.copy(renewed.cert_file, node.path.parent / "cert.pem")
            for _ in range(200):
                if await peer_der(node) == renewed.der:
                    break
                await asyncio.sleep(0.02)
            assert await peer_der(node) == renewed.der
            assert await node.send(session, "still here", KEY_A) == 202
            assert (await ws.receive_json(timeout=5))["data"] == "still here"


async def test_the_reload_api_takes_a_new_key_and_hub_settings(start: Starter, pki: Pki) -> None:
    node = await start()
    async with aiohttp.ClientSession() as session:
        url = f"{node.base}/client/hubs/chat?access_token={node.client_token(KEY_A)}"
        async with session.ws_connect(url, protocols=[JSON_SUBPROTOCOL], ssl=node.context) as ws:
            await ws.receive_json(timeout=5)
            write(node.path, pki, KEY_B, anonymous=True)
            assert node.listening.reload()
            assert node.listening.reload() is False  # nothing changed since
            assert node.listening.live is not None
            assert node.listening.live.config.access_keys == (KEY_B,)
            assert await node.send(session, "old key", KEY_A) == 401
            assert await node.send(session, "new key", KEY_B) == 202
            assert (await ws.receive_json(timeout=5))["data"] == "new key"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url, ssl=node.context)
            assert refused.value.status == 401
            anonymous = f"{node.base}/client/hubs/chat"
            async with session.ws_connect(
                anonymous, protocols=[JSON_SUBPROTOCOL], ssl=node.context
            ) as other:
                assert (await other.receive_json(timeout=5))["event"] == "connected"
            node.path.write_text("[server]\nport = 'x'\n")
            assert node.listening.reload() is False  # refused: the running one stays
            assert await node.send(session, "kept", KEY_B) == 202
            assert (await ws.receive_json(timeout=5))["data"] == "kept"


async def test_a_tls_handshake_has_the_time_a_request_head_has(start: Starter) -> None:
    """A connection that never starts its handshake is dropped after
    ``request_head_timeout_seconds``, as a request head that never ends would be."""
    node = await start(head_timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", node.listening.config.port)
    began = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert asyncio.get_running_loop().time() - began < 3
    writer.close()


async def test_a_reliable_session_recovers_across_a_key_rotation(start: Starter, pki: Pki) -> None:
    """The key that signed a reconnection token removed, the session it names still recovers:
    the client dropped while the keys rotated gets its message on the new socket."""
    from websockets.asyncio.client import connect

    node = await start()
    reliable = "json.reliable.webpubsub.azure.v1"
    base = f"wss://localhost:{node.listening.config.port}/client/hubs/chat"
    url = f"{base}?access_token={node.client_token(KEY_A, 'r')}"
    ws = await connect(url, subprotocols=[reliable], ssl=node.context)  # type: ignore[list-item]
    connected = json.loads(await asyncio.wait_for(ws.recv(), 5))
    ws.transport.abort()  # dropped, not closed: the session waits for the client
    await ws.wait_closed()
    write(node.path, pki, KEY_B)
    assert node.listening.reload()
    async with aiohttp.ClientSession() as session:
        assert await node.send(session, "while away", KEY_B) == 202
    query = (
        f"?awps_connection_id={connected['connectionId']}"
        f"&awps_reconnection_token={connected['reconnectionToken']}"
    )
    async with connect(base + query, subprotocols=[reliable], ssl=node.context) as again:  # type: ignore[list-item]
        message = json.loads(await asyncio.wait_for(again.recv(), 5))
        assert message["data"] == "while away"


async def test_a_client_that_stops_reading_over_tls_is_closed_as_slow(start: Starter) -> None:
    """The bound of unsent bytes holds over TLS (the TLS transport's buffer counts): a client
    that stops reading is cut off, one that reads gets every message."""
    from websockets.asyncio.client import connect

    node = await start(outbound=64 * 1024)
    url = f"wss://localhost:{node.listening.config.port}/client/hubs/chat"
    stalled = await connect(
        f"{url}?access_token={node.client_token(KEY_A, 's')}", ssl=node.context, max_queue=1
    )
    stalled.transport.pause_reading()
    before = SLOW_CLIENT_CLOSES.value
    message, count = "x" * 32 * 1024, 200  # 6.4 MiB offered to each
    async with aiohttp.ClientSession() as session:
        healthy_url = f"{url}?access_token={node.client_token(KEY_A, 'h')}"
        async with session.ws_connect(healthy_url, ssl=node.context) as healthy:

            async def read_all() -> int:
                received = 0
                while received < count:
                    got = await healthy.receive(timeout=10)
                    assert got.type is aiohttp.WSMsgType.TEXT
                    received += 1
                return received

            reader = asyncio.create_task(read_all())
            for _ in range(count):
                assert await node.send(session, message, KEY_A) == 202
            assert await asyncio.wait_for(reader, 30) == count
    assert SLOW_CLIENT_CLOSES.value == before + 1
    stalled.transport.abort()


async def test_the_client_certificate_mode_changes_live(start: Starter, pki: Pki) -> None:
    """With a client CA configured at start, a reload turns ``required`` on and off again for
    the handshakes that follow."""
    node = await start()

    async def health(cert: bool) -> int | None:
        context = ssl.create_default_context(cafile=str(pki.ca_file))
        if cert:
            context.load_cert_chain(pki.client.cert_file, pki.client.key_file)
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{node.base}/api/health", ssl=context) as r:
                    return r.status
        except (aiohttp.ClientError, ssl.SSLError, ConnectionError):
            return None

    assert await health(cert=False) == 200
    write(node.path, pki, KEY_A, client_auth="required")
    assert node.listening.reload()
    assert await health(cert=False) is None
    assert await health(cert=True) == 200
    write(node.path, pki, KEY_A, client_auth="off")
    assert node.listening.reload()
    assert await health(cert=False) == 200
