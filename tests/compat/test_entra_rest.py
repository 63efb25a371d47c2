"""Microsoft Entra ID on a running node: the official server SDKs given a TokenCredential.

The node serves https with a certificate of the test CA (both SDKs send bearer tokens only over
TLS) and accepts Entra tokens signed by the test key (``[auth.entra]``, a JWKS file). The SDKs
call REST with them, mint client URLs through ``:generateToken``, and a client connects with
such a URL; each refusal (bad issuer, wrong audience, expired, unknown principal, forbidden hub,
a reader that sends) reaches the caller with the service's status and error body.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import HttpResponseError
from azure.messaging.webpubsubservice import WebPubSubServiceClient as SyncServiceClient
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient

from hubbub.protocol.entra import SCOPE
from tests._entra import (
    APP_ID,
    OBJECT_ID,
    OTHER_TENANT,
    TENANT,
    AsyncTestCredential,
    TestCredential,
    TestKey,
    jwks,
)
from tests._pki import Pki
from tests.compat._node import NODE_DIR
from tests.conftest import (
    CONFIG_TOML,
    FAST_LANE_MODES,
    Server,
    start_server,
    stop_server,
)

SUPPORTED_VERSIONS = "2021-10-01, 2022-11-01, 2023-07-01, 2024-01-01, 2024-12-01"
"""The service's ``api-supported-versions``."""
READER_ID = "5f0e6a4c-2b8d-4c1e-9a7f-0d3c6b2e1a90"
STRANGER_ID = "11111111-2222-4333-8444-555555555555"
STRANGER_APP = "66666666-7777-4888-9999-000000000000"


def entra_config(pki: Pki, jwks_file: Path, *, fast_lane: bool = True) -> str:
    lane = "" if fast_lane else "fast_lane = false\n"
    return CONFIG_TOML + (
        f'\n[server]\ntls_cert_file = "{pki.server.cert_file}"\n'
        f'tls_key_file = "{pki.server.key_file}"\n{lane}'
        f'\n[auth.entra]\ntenants = ["{TENANT}"]\njwks_file = "{jwks_file}"\n'
        f'\n[[auth.entra.principals]]\nname = "app"\nobject_id = "{OBJECT_ID}"\n'
        'hubs = { chat = "owner" }\n'
        f'\n[[auth.entra.principals]]\nname = "dashboard"\nobject_id = "{READER_ID}"\n'
        'hubs = { "*" = "reader" }\n'
    )


@pytest.fixture(scope="module")
def entra_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, jwks_file: Path
) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("entra"),
        config_toml=entra_config(pki, jwks_file),
        ca_file=pki.ca_file,
    )
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def entra_server_without_lane(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, jwks_file: Path
) -> Iterator[Server]:
    """The same node with the fast lane off: aiohttp reads every request."""
    srv = start_server(
        tmp_path_factory.mktemp("entra-no-lane"),
        config_toml=entra_config(pki, jwks_file, fast_lane=False),
        ca_file=pki.ca_file,
    )
    yield srv
    stop_server(srv)


def service(server: Server, pki: Pki, hub: str, **claims: Any) -> WebPubSubServiceClient:
    key: TestKey = claims.pop("key")
    return WebPubSubServiceClient(
        server.endpoint,
        hub,
        AsyncTestCredential(key, claims),
        connection_verify=str(pki.ca_file),
        retry_total=0,
    )


def answer(error: HttpResponseError) -> dict[str, Any]:
    """The error body the SDK got."""
    response: Any = error.response
    body: dict[str, Any] = json.loads(response.text())
    return body


def header(error: HttpResponseError, name: str) -> str:
    response: Any = error.response
    return str(response.headers[name])


async def connected(url: str, pki: Pki) -> tuple[aiohttp.ClientSession, Any, dict[str, Any]]:
    """A json.webpubsub.azure.v1 client on ``url`` and its ``connected`` message."""
    session = aiohttp.ClientSession()
    ws = await session.ws_connect(
        url,
        protocols=["json.webpubsub.azure.v1"],
        ssl=ssl.create_default_context(cafile=str(pki.ca_file)),
    )
    hello: dict[str, Any] = json.loads((await ws.receive(timeout=5)).data)
    assert hello["type"] == "system" and hello["event"] == "connected"
    return session, ws, hello


async def test_python_sdk_sends_and_mints_client_urls_with_entra(
    entra_server: Server, pki: Pki, entra_key: TestKey
) -> None:
    """get_client_access_token calls :generateToken; a client connects with its URL and gets
    what send_to_all sends (a plain send: the fast lane judges the Entra token)."""
    credential = AsyncTestCredential(entra_key)
    async with WebPubSubServiceClient(
        entra_server.endpoint, "chat", credential, connection_verify=str(pki.ca_file)
    ) as svc:
        token = await svc.get_client_access_token(user_id="alice", groups=["room"])
        assert token["url"].startswith(f"wss://localhost:{entra_server.port}/client/hubs/chat?")
        session, ws, hello = await connected(token["url"], pki)
        try:
            assert hello["userId"] == "alice"
            await svc.send_to_all("hello", content_type="text/plain")
            await svc.send_to_group("room", "to the room", content_type="text/plain")
            got = [json.loads((await ws.receive(timeout=5)).data) for _ in range(2)]
        finally:
            await ws.close()
            await session.close()
    assert [m["data"] for m in got] == ["hello", "to the room"]
    assert set(credential.scopes) == {(SCOPE,)}
    assert await fast_sends(entra_server, pki) >= 2


async def fast_sends(server: Server, pki: Pki) -> float:
    """hubbub_rest_fast_sends_total: the plain sends the fast lane answered."""
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.endpoint}/metrics", ssl=context) as resp,
    ):
        text = await resp.text()
    (line,) = [x for x in text.splitlines() if x.startswith("hubbub_rest_fast_sends_total ")]
    return float(line.split()[1])


def test_sync_python_sdk_with_entra(entra_server: Server, pki: Pki, entra_key: TestKey) -> None:
    """The sync client: a v2 token (azp), send, existence checks, a client token."""
    svc = SyncServiceClient(
        entra_server.endpoint,
        "chat",
        TestCredential(entra_key, {"version": "2.0"}),
        connection_verify=str(pki.ca_file),
    )
    with svc:
        svc.send_to_all({"hello": 1})
        assert svc.group_exists("nobody-here") is False
        token = svc.get_client_access_token(user_id="bob", minutes_to_expire=5)
    assert token["baseUrl"] == f"wss://localhost:{entra_server.port}/client/hubs/chat"


REFUSALS = [
    pytest.param({"tenant": OTHER_TENANT}, "chat", 401, "issuer is not trusted", id="bad-issuer"),
    pytest.param(
        {"audience": "https://management.azure.com"},
        "chat",
        401,
        "audience is not this service",
        id="wrong-audience",
    ),
    pytest.param({"lifetime": -600, "not_before": -4000}, "chat", 401, "has expired", id="expired"),
    pytest.param(
        {"object_id": STRANGER_ID, "app_id": STRANGER_APP},
        "chat",
        403,
        "hub/send/action permission is required",
        id="unknown-principal",
    ),
    pytest.param({}, "news", 403, "hub/send/action permission is required", id="forbidden-hub"),
    pytest.param(
        {"object_id": READER_ID}, "chat", 403, "hub/send/action permission", id="reader-sends"
    ),
]


@pytest.mark.parametrize(("claims", "hub", "status", "message"), REFUSALS)
async def test_python_sdk_gets_the_services_refusals(
    entra_server: Server,
    pki: Pki,
    entra_key: TestKey,
    claims: dict[str, Any],
    hub: str,
    status: int,
    message: str,
) -> None:
    async with service(entra_server, pki, hub, key=entra_key, **claims) as svc:
        with pytest.raises(HttpResponseError) as caught:
            await svc.send_to_all("hi", content_type="text/plain")
        with pytest.raises(HttpResponseError) as generate:
            await svc.get_client_access_token(user_id="alice")
    for error in (caught.value, generate.value):
        assert error.status_code == status
        body = answer(error)
        assert body["code"] == {401: "Unauthorized", 403: "Forbidden"}[status]
        assert header(error, "x-ms-error-code") == body["code"]
    assert message in answer(caught.value)["message"]
    if status == 403:
        assert "clientConnection/generateToken/action" in answer(generate.value)["message"]
    else:
        assert header(caught.value, "WWW-Authenticate").startswith("Bearer")


@pytest.mark.parametrize("fast_lane", FAST_LANE_MODES)
async def test_a_forbidden_caller_is_told_the_supported_versions(
    request: pytest.FixtureRequest, pki: Pki, entra_key: TestKey, fast_lane: bool
) -> None:
    """The 403 of a caller whose token verified carries api-supported-versions, as every
    answer past the token check does; the 401 of a token that does not verify does not. A plain
    send (the fast lane's path when it is on) and an existence check (aiohttp's) alike."""
    name = "entra_server" if fast_lane else "entra_server_without_lane"
    server: Server = request.getfixturevalue(name)
    assert server.fast_lane is fast_lane
    async with (
        service(server, pki, "news", key=entra_key) as forbidden,
        service(server, pki, "chat", key=entra_key, tenant=OTHER_TENANT) as untrusted,
    ):
        errors = []
        for svc in (forbidden, untrusted):
            with pytest.raises(HttpResponseError) as sent:
                await svc.send_to_all("hi", content_type="text/plain")
            with pytest.raises(HttpResponseError) as checked:
                await svc.group_exists("room")
            errors.append((sent.value, checked.value))
    for error in errors[0]:
        assert error.status_code == 403
        assert header(error, "api-supported-versions") == SUPPORTED_VERSIONS
    for error in errors[1]:
        assert error.status_code == 401
        response: Any = error.response
        assert "api-supported-versions" not in response.headers


async def test_reader_reads_and_a_key_not_published_is_401(
    entra_server: Server, pki: Pki, entra_key: TestKey
) -> None:
    """The reader role may ask whether a group exists; a token signed by an unknown key is 401."""
    async with service(entra_server, pki, "news", key=entra_key, object_id=READER_ID) as svc:
        assert await svc.group_exists("room") is False
    async with service(entra_server, pki, "chat", key=TestKey()) as svc:
        with pytest.raises(HttpResponseError) as caught:
            await svc.send_to_all("hi", content_type="text/plain")
    assert caught.value.status_code == 401
    assert "signing key is not known" in answer(caught.value)["message"]


async def test_app_id_principal_and_access_keys_still_work(
    tmp_path: Path, pki: Pki, jwks_file: Path, entra_key: TestKey
) -> None:
    """A principal named by app id alone; the access-key connection string works beside it."""
    config = (
        f'[server]\ntls_cert_file = "{pki.server.cert_file}"\n'
        f'tls_key_file = "{pki.server.key_file}"\n'
        f'[auth]\naccess_keys = ["{"k" * 40}"]\n'
        f'[auth.entra]\ntenants = ["{TENANT}"]\njwks_file = "{jwks_file}"\n'
        f'[[auth.entra.principals]]\napp_id = "{APP_ID}"\nhubs = {{ "*" = "owner" }}\n'
    )
    srv = start_server(tmp_path, config_toml=config, ca_file=pki.ca_file)
    try:
        async with service(srv, pki, "anyhub", key=entra_key, object_id=STRANGER_ID) as svc:
            await svc.send_to_all("hi", content_type="text/plain")
        keyed = WebPubSubServiceClient.from_connection_string(
            f"Endpoint={srv.endpoint};AccessKey={'k' * 40};Version=1.0;",
            "anyhub",
            connection_verify=str(pki.ca_file),
        )
        async with keyed:
            await keyed.send_to_all("hi", content_type="text/plain")
    finally:
        stop_server(srv)


async def test_local_development_mode_accepts_unsigned_checks_and_says_so(
    tmp_path: Path, pki: Pki
) -> None:
    """verify_signatures = false on loopback: any Entra-shaped token of the right audience is an
    owner; the log says so loudly; a wrong audience is still refused."""
    config = (
        f'[server]\ntls_cert_file = "{pki.server.cert_file}"\n'
        f'tls_key_file = "{pki.server.key_file}"\n'
        "[auth.entra]\nverify_signatures = false\n"
    )
    srv = start_server(tmp_path, config_toml=config, ca_file=pki.ca_file)
    try:
        async with service(srv, pki, "chat", key=TestKey()) as svc:
            await svc.send_to_all("hi", content_type="text/plain")
            token = await svc.get_client_access_token(user_id="dev")
        assert token["url"].startswith("wss://")
        async with service(srv, pki, "chat", key=TestKey(), audience="https://x.example") as svc:
            with pytest.raises(HttpResponseError) as caught:
                await svc.send_to_all("hi", content_type="text/plain")
        assert caught.value.status_code == 401
    finally:
        stop_server(srv)
    assert "WITHOUT checking their signatures" in (tmp_path / "server.log").read_text()


async def _node_calls(
    server: Server, pki: Pki, key: TestKey, calls: list[list[Any]], **claims: Any
) -> list[Any]:
    env = {
        **os.environ,
        "HUBBUB_ENDPOINT": server.endpoint,
        "HUBBUB_HUB": "chat",
        "HUBBUB_ENTRA_KEY": key.private_pem,
        "HUBBUB_ENTRA_KID": key.kid,
        "HUBBUB_ENTRA_CLAIMS": json.dumps(claims),
        "NODE_EXTRA_CA_CERTS": str(pki.ca_file),
    }
    proc = await asyncio.create_subprocess_exec(
        "node",
        "rest_calls.mjs",
        json.dumps(calls),
        cwd=NODE_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    outcomes: list[Any] = json.loads(out.decode().splitlines()[-1])
    return outcomes


@pytest.mark.node
async def test_js_sdk_with_a_token_credential(
    entra_server: Server, pki: Pki, entra_key: TestKey
) -> None:
    """@azure/web-pubsub with a TokenCredential: send, a client URL from :generateToken that a
    client connects with, and the 401 of another tenant and 403 of an unknown principal."""
    sent, token, exists = await _node_calls(
        entra_server,
        pki,
        entra_key,
        [["sendToAll", "hi"], ["getClientAccessToken", {"userId": "carol"}], ["userExists", "x"]],
    )
    assert sent == {"ok": True, "value": None}
    assert exists == {"ok": True, "value": False}
    session, ws, _ = await connected(token["value"]["url"], pki)
    await ws.close()
    await session.close()
    (tenant,) = await _node_calls(
        entra_server, pki, entra_key, [["sendToAll", "hi"]], tid=OTHER_TENANT
    )
    assert tenant["ok"] is False and tenant["status"] == 401 and tenant["code"] == "Unauthorized"
    (stranger,) = await _node_calls(
        entra_server, pki, entra_key, [["sendToAll", "hi"]], oid=STRANGER_ID, appid=STRANGER_APP
    )
    assert stranger["ok"] is False and stranger["status"] == 403
    assert stranger["code"] == "Forbidden"


@pytest.fixture
def jwks_url(entra_key: TestKey) -> Iterator[str]:
    """The test key's JWKS served over http on loopback (in a thread: the node reads it while
    the test waits for the node to start)."""
    document = json.dumps(jwks(entra_key)).encode()

    class Keys(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/common/discovery/v2.0/keys"
    server.shutdown()
    server.server_close()
    thread.join()


async def test_signing_keys_from_a_jwks_url(
    tmp_path: Path, pki: Pki, entra_key: TestKey, jwks_url: str
) -> None:
    """jwks_url: the node reads the keys at start; the SDK's tokens verify against them."""
    config = (
        f'[server]\ntls_cert_file = "{pki.server.cert_file}"\n'
        f'tls_key_file = "{pki.server.key_file}"\n'
        f'[auth.entra]\ntenants = ["{TENANT}"]\njwks_url = "{jwks_url}"\n'
        f'[[auth.entra.principals]]\nobject_id = "{OBJECT_ID}"\nhubs = {{ "*" = "owner" }}\n'
    )
    srv = start_server(tmp_path, config_toml=config, ca_file=pki.ca_file)
    try:
        async with service(srv, pki, "chat", key=entra_key) as svc:
            await svc.send_to_all("hi", content_type="text/plain")
            assert (await svc.get_client_access_token())["url"].startswith("wss://")
    finally:
        stop_server(srv)
    assert (
        f"Entra signing keys from {jwks_url}: {entra_key.kid}"
        in (tmp_path / "server.log").read_text()
    )
