"""What the official SDKs send with a TokenCredential, judged by hubbub's Entra validator.

A small https endpoint (the test CA, ``server/tls.py``'s context) stands where the node's REST
API will: it authenticates each bearer token with :class:`EntraValidator` and authorises the
operation by its data action, answering as the service (202, 200 with a token, 401, 403). It
shows that the SDKs' tokens, built by the test credentials, verify; that the SDKs ask for the
``https://webpubsub.azure.com/.default`` scope; and that neither SDK sends a bearer token over
plain http — the reason an Entra deployment needs TLS.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient

from hubbub.protocol.entra import (
    SCOPE,
    EntraSettings,
    EntraTokenError,
    EntraValidator,
    KeySet,
    Principal,
    principal_actions,
    tenant_issuers,
)
from hubbub.server.errors import error_response
from hubbub.server.tls import server_context
from tests._entra import OBJECT_ID, TENANT, AsyncTestCredential, TestKey, jwks
from tests._pki import Pki, make_pki
from tests.compat._node import NODE_DIR

KEY = TestKey()


@dataclass
class Endpoint:
    url: str
    http_url: str
    pki: Pki
    identities: list[str] = field(default_factory=list)


def _shape(segments: list[str]) -> str:
    return "/".join(s if i % 2 == 0 else "*" for i, s in enumerate(segments))


@pytest.fixture
async def endpoint(tmp_path: Path) -> AsyncIterator[Endpoint]:
    pki = make_pki(tmp_path / "pki")
    principal = Principal("app", object_id=OBJECT_ID, hubs={"chat": principal_actions("owner")})
    validator = EntraValidator(
        EntraSettings(issuers=tenant_issuers(TENANT), principals=(principal,)),
        KeySet.from_json(json.dumps(jwks(KEY))),
    )
    seen: list[str] = []

    async def api(request: web.Request) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        hub, *segments = request.match_info["tail"].split("/")
        try:
            identity = validator.check(token, hub, request.method, _shape(segments))
        except EntraTokenError as exc:
            return error_response(401, str(exc))
        except Exception as exc:  # EntraForbiddenError
            return error_response(getattr(exc, "status", 500), str(exc))
        seen.append(f"{scheme} {identity.object_id}")
        if segments == [":generateToken"]:
            return web.json_response({"token": "header.payload.signature"})
        return web.Response(status=202)

    app = web.Application()
    app.router.add_route("*", "/api/hubs/{tail:.+}", api)
    runner = web.AppRunner(app)
    await runner.setup()
    tls = web.TCPSite(
        runner,
        "127.0.0.1",
        0,
        ssl_context=server_context(str(pki.server.cert_file), str(pki.server.key_file)),
    )
    plain = web.TCPSite(runner, "127.0.0.1", 0)
    await tls.start()
    await plain.start()
    (_, tls_port), (_, plain_port) = runner.addresses[:2]
    yield Endpoint(f"https://localhost:{tls_port}", f"http://localhost:{plain_port}", pki, seen)
    await runner.cleanup()


async def test_python_sdk_tokens_verify_and_generate_token_is_called(endpoint: Endpoint) -> None:
    """send_to_all and get_client_access_token over https: the bearer verifies, the URL is wss."""
    credential = AsyncTestCredential(KEY)
    async with WebPubSubServiceClient(
        endpoint.url, "chat", credential, connection_verify=str(endpoint.pki.ca_file)
    ) as service:
        await service.send_to_all("hi", content_type="text/plain")
        token = await service.get_client_access_token(user_id="alice")
    assert token["baseUrl"] == endpoint.url.replace("https", "wss") + "/client/hubs/chat"
    assert token["url"] == token["baseUrl"] + "?access_token=header.payload.signature"
    assert endpoint.identities == [f"Bearer {OBJECT_ID}"] * 2
    assert set(credential.scopes) == {(SCOPE,)}


async def test_python_sdk_gets_the_services_403_for_another_hub(endpoint: Endpoint) -> None:
    """A principal without a role on the hub: 403 and the RBAC message reach the caller."""
    async with WebPubSubServiceClient(
        endpoint.url, "news", AsyncTestCredential(KEY), connection_verify=str(endpoint.pki.ca_file)
    ) as service:
        with pytest.raises(HttpResponseError) as caught:
            await service.send_to_all("hi", content_type="text/plain")
    assert caught.value.status_code == 403
    assert "hub/send/action permission is required" in str(caught.value)


async def test_python_sdk_sends_no_bearer_token_over_http(endpoint: Endpoint) -> None:
    """azure-core refuses before sending: TLS is what Entra needs."""
    async with WebPubSubServiceClient(endpoint.http_url, "chat", AsyncTestCredential(KEY)) as svc:
        with pytest.raises(ServiceRequestError, match="non-TLS"):
            await svc.send_to_all("hi", content_type="text/plain")
    assert endpoint.identities == []


async def _node(endpoint_url: str, ca_file: Path, calls: list[list[Any]]) -> tuple[Any, list[Any]]:
    """Run the calls with the JS SDK in a subprocess, the endpoint serving on this loop."""
    if shutil.which("node") is None:
        pytest.fail("Node.js is not on PATH; install Node.js 20+", pytrace=False)
    env = {
        **os.environ,
        "HUBBUB_ENDPOINT": endpoint_url,
        "HUBBUB_HUB": "chat",
        "HUBBUB_ENTRA_KEY": KEY.private_pem,
        "HUBBUB_ENTRA_KID": KEY.kid,
        "NODE_EXTRA_CA_CERTS": str(ca_file),
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
    out, err = await asyncio.wait_for(proc.communicate(), 45)
    assert proc.returncode == 0, err.decode()
    *_, scopes, outcomes = out.decode().splitlines()
    return json.loads(scopes)["scopes"], json.loads(outcomes)


@pytest.mark.node
async def test_js_sdk_tokens_verify_over_https(endpoint: Endpoint) -> None:
    """@azure/web-pubsub with a TokenCredential: the tokens verify; generateToken gives wss."""
    scopes, (sent, token) = await _node(
        endpoint.url,
        endpoint.pki.ca_file,
        [["sendToAll", "hi"], ["getClientAccessToken", {"userId": "alice"}]],
    )
    assert sent == {"ok": True, "value": None}
    assert token["ok"] and token["value"]["baseUrl"].startswith("wss://localhost:")
    assert scopes and all(s == [SCOPE] for s in scopes)
    assert endpoint.identities == [f"Bearer {OBJECT_ID}"] * 2


@pytest.mark.node
async def test_js_sdk_sends_no_bearer_token_over_http_even_allowing_insecure(
    endpoint: Endpoint,
) -> None:
    """allowInsecureConnection does not lift core-rest-pipeline's https rule for bearer tokens."""
    _, (outcome,) = await _node(endpoint.http_url, endpoint.pki.ca_file, [["sendToAll", "hi"]])
    assert not outcome["ok"] and "non-TLS" in outcome["error"]
    assert endpoint.identities == []
