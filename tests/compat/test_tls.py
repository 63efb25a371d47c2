"""https and wss with the official SDKs, client certificates, and a live reload over TLS.

Each node is a real ``hubbub serve`` (uvloop's TLS transport) with the test CA's certificate:
the Python server SDK verifies it through ``connection_verify``, the sync client SDK
(websocket-client) through ``WEBSOCKET_CLIENT_CA_BUNDLE``, the asyncio SDKs (aiohttp) through
``SSL_CERT_FILE`` and the JavaScript SDKs through ``NODE_EXTRA_CA_CERTS``, as a user would
point them at a private CA. Client certificates go through ``websockets`` with an ``ssl``
context (the client SDKs do not take one) and, for REST, the server SDK's ``connection_cert``.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential
from azure.messaging.webpubsubclient.models import WebPubSubDataType
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests._pki import Pki
from tests.compat._clients import JSON_SUBPROTOCOL, SdkClient, sdk_options
from tests.compat._node import NODE_DIR
from tests.compat._tls import (
    Recorder,
    TlsServer,
    client_context,
    start_tls_server,
    wait_for,
)
from tests.conftest import ACCESS_KEY, SECONDARY_KEY

pytestmark = pytest.mark.compat


def config_toml(
    pki: Pki,
    *,
    keys: tuple[str, ...] = (ACCESS_KEY, SECONDARY_KEY),
    handler: str | None = None,
    client_auth: str = "off",
    cert: tuple[Path, Path] | None = None,
    extra: str = "",
) -> str:
    cert_file, key_file = cert or (pki.server.cert_file, pki.server.key_file)
    lines = [
        "[server]",
        f'tls_cert_file = "{cert_file}"',
        f'tls_key_file = "{key_file}"',
        f'tls_client_auth = "{client_auth}"',
    ]
    if client_auth != "off":
        lines.append(f'tls_client_ca_file = "{pki.ca_file}"')
    lines += [extra, "[auth]", "access_keys = [" + ", ".join(f'"{k}"' for k in keys) + "]"]
    lines += ["[hubs.anon]", "anonymous_connect = true"]
    if handler is not None:
        lines += [
            "[[hubs.certs.event_handlers]]",
            f'url_template = "{handler}"',
            'system_events = ["connect"]',
            'user_event_pattern = "*"',
            "[[hubs.anon.event_handlers]]",
            f'url_template = "{handler}"',
            'system_events = ["connect"]',
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    handler = Recorder()
    handler.start()
    yield handler
    handler.stop()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsServer]:
    """A node with TLS and no client certificates, shared by the module's SDK tests."""
    server = start_tls_server(tmp_path_factory.mktemp("tls"), config_toml(pki), pki.ca_file)
    yield server
    server.stop()


def service(server: TlsServer, hub: str, key: str = ACCESS_KEY, **kwargs: Any) -> Any:
    conn = f"Endpoint={server.endpoint};AccessKey={key};Version=1.0;"
    kwargs.setdefault("connection_verify", str(server.ca_file))
    return WebPubSubServiceClient.from_connection_string(conn, hub=hub, **kwargs)


def sdk_client(url: str) -> SdkClient:
    credential = WebPubSubClientCredential(client_access_url_provider=lambda: url)
    return SdkClient(WebPubSubClient(credential=credential, **sdk_options()))


@pytest.fixture
def trust_ca(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    """websocket-client (under the sync client SDK) trusts the test CA, as a user sets it."""
    monkeypatch.setenv("WEBSOCKET_CLIENT_CA_BUNDLE", str(pki.ca_file))


def test_printed_endpoint_and_sdk_urls_are_https_and_wss(tls_server: TlsServer) -> None:
    """The connection string says https, the server SDK's client URL wss, and both are true."""
    assert f"Endpoint=https://127.0.0.1:{tls_server.port};" in tls_server.output()
    assert f"listening on https://127.0.0.1:{tls_server.port}" in tls_server.output()
    url = service(tls_server, "h1").get_client_access_token(user_id="u")["url"]
    assert url.startswith(f"wss://localhost:{tls_server.port}/client/hubs/h1?access_token=")


def test_python_sdks_over_https_and_wss(tls_server: TlsServer, hub: str, trust_ca: None) -> None:
    """The server SDK's REST calls and the client SDK's socket, over TLS; the fast lane's send
    and the upgraded socket's frames both pass through the TLS transport."""
    svc = service(tls_server, hub)
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    client = sdk_client(svc.get_client_access_token(user_id="alice", roles=roles)["url"])
    client.open()
    try:
        svc.send_to_all("over the fast lane", content_type="text/plain")
        svc.send_to_all({"big": "x" * 200_000})  # many TLS records, aiohttp's route
        client.server_messages.wait_for(lambda m: m.data == "over the fast lane")
        client.server_messages.wait_for(lambda m: m.data == {"big": "x" * 200_000})
        assert svc.user_exists("alice")
        client.client.join_group("room")
        client.client.send_to_group("room", "echo", WebPubSubDataType.TEXT)
        client.group_messages.wait_for(lambda m: m.data == "echo")
    finally:
        client.close()


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_server: TlsServer) -> None:
    """Verification is real: without the test CA the server SDK refuses the certificate."""
    svc = service(tls_server, "h2", connection_verify=True)
    with pytest.raises(ServiceRequestError, match="CERTIFICATE_VERIFY_FAILED"):
        svc.send_to_all("nope", content_type="text/plain")


AIO_SCRIPT = """
import asyncio, sys
from azure.messaging.webpubsubclient.aio import WebPubSubClient
from azure.messaging.webpubsubclient.models import CallbackType
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient

async def main():
    svc = WebPubSubServiceClient.from_connection_string(sys.argv[1], hub="aio")
    async with svc:
        url = (await svc.get_client_access_token(user_id="bob"))["url"]
        got = asyncio.get_running_loop().create_future()
        async def on_message(args):
            got.done() or got.set_result(args.data)
        client = WebPubSubClient(url)
        await client.subscribe(CallbackType.SERVER_MESSAGE, on_message)
        async with client:
            await svc.send_to_user("bob", "hello aio", content_type="text/plain")
            print(url.split("?")[0], await asyncio.wait_for(got, 10))

asyncio.run(main())
"""


def test_asyncio_sdks_trust_the_ca_through_ssl_cert_file(tls_server: TlsServer) -> None:
    """The asyncio server and client SDKs (aiohttp) over https and wss, with SSL_CERT_FILE."""
    env = {**os.environ, "SSL_CERT_FILE": str(tls_server.ca_file)}
    proc = subprocess.run(
        [sys.executable, "-c", AIO_SCRIPT, tls_server.connection_string],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        f"wss://localhost:{tls_server.port}/client/hubs/aio",
        "hello",
        "aio",
    ]


@pytest.mark.node
def test_javascript_sdks_over_https_and_wss(tls_server: TlsServer) -> None:
    """@azure/web-pubsub and @azure/web-pubsub-client with NODE_EXTRA_CA_CERTS, and no
    ``allowInsecureConnection`` needed for an https endpoint."""
    if shutil.which("node") is None:
        pytest.fail("Node.js is not on PATH; install Node.js 20+", pytrace=False)
    if not (NODE_DIR / "node_modules" / "@azure" / "web-pubsub-client").is_dir():
        pytest.fail("run `npm ci --prefix tests/node` first", pytrace=False)
    env = {
        **os.environ,
        "NODE_EXTRA_CA_CERTS": str(tls_server.ca_file),
        "HUBBUB_CONNECTION_STRING": tls_server.connection_string,
        "HUBBUB_SECONDARY_CONNECTION_STRING": tls_server.secondary_connection_string,
    }
    proc = subprocess.run(
        ["node", "scenarios.mjs", "--hub", "jstls", "token_connect", "client_send_to_group"],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(proc.stdout.splitlines()[-1])["results"]
    token = results["token_connect"]["obs"]
    assert token["baseUrl"] == f"wss://localhost:{tls_server.port}/client/hubs/jstls_token_connect"
    assert token["connected"]["userId"] == "alice"
    assert results["client_send_to_group"]["ok"], results["client_send_to_group"]


# -- client certificates ------------------------------------------------------------------------


def raw_connect(server: TlsServer, path: str, context: ssl.SSLContext) -> Any:
    return connect(
        f"{server.ws_endpoint}{path}",
        ssl=context,
        subprotocols=[JSON_SUBPROTOCOL],  # type: ignore[list-item]
        open_timeout=5,
        close_timeout=1,
        proxy=None,
    )


def test_required_client_certificates(
    tmp_path: Path, pki: Pki, recorder: Recorder, trust_ca: None
) -> None:
    """``required``: a client without a certificate gets no TLS connection (the SDK fails to
    open); one with a certificate of the CA connects and its connect handler sees the
    certificate; the server SDK's REST calls present one too."""
    server = start_tls_server(
        tmp_path,
        config_toml(pki, handler=recorder.url("a"), client_auth="required"),
        pki.ca_file,
        health_cert=(pki.client.cert_file, pki.client.key_file),
    )
    try:
        cert = (str(pki.client.cert_file), str(pki.client.key_file))
        svc = service(server, "certs", connection_cert=cert)
        url = svc.get_client_access_token(user_id="carol")["url"]
        without = sdk_client(url)
        with pytest.raises(Exception):  # noqa: B017 - the SDK raises its own start error
            without.client.open()
        without.client.close()
        assert recorder.connects.get("a") is None  # refused before any event
        # refused in the handshake, or (TLS 1.3) the connection closed after it
        with pytest.raises((ServiceRequestError, ServiceResponseError)):
            service(server, "certs", retry_total=0).send_to_all("no", content_type="text/plain")
        path = url.removeprefix(server.ws_endpoint)
        context = client_context(pki.ca_file, (pki.client.cert_file, pki.client.key_file))
        with raw_connect(server, path, context) as ws:
            connected = json.loads(ws.recv(timeout=5))
            assert connected["event"] == "connected" and connected["userId"] == "carol"
            svc.send_to_user("carol", "with a certificate", content_type="text/plain")
            assert json.loads(ws.recv(timeout=5))["data"] == "with a certificate"
        ((body,),) = [recorder.connects["a"]]
        assert body["clientCertificates"] == [
            {"thumbprint": pki.client.sha1, "content": pki.client.pem.replace("\n", "\r\n")}
        ]
    finally:
        server.stop()


def test_optional_client_certificates(tmp_path: Path, pki: Pki, recorder: Recorder) -> None:
    """``optional``: a client without a certificate connects (the handler sees none), one with
    a certificate connects and the handler sees its thumbprint; anonymous connect as in the
    service's client-certificate guide."""
    server = start_tls_server(
        tmp_path, config_toml(pki, handler=recorder.url("a"), client_auth="optional"), pki.ca_file
    )
    try:
        with raw_connect(server, "/client/hubs/anon", client_context(pki.ca_file)) as ws:
            assert json.loads(ws.recv(timeout=5))["event"] == "connected"
        cert = (pki.client.cert_file, pki.client.key_file)
        with raw_connect(server, "/client/hubs/anon", client_context(pki.ca_file, cert)) as ws:
            assert json.loads(ws.recv(timeout=5))["event"] == "connected"
        first, second = recorder.connects["a"]
        assert first["clientCertificates"] == []
        assert [c["thumbprint"] for c in second["clientCertificates"]] == [pki.client.sha1]
        stranger = make_stranger(tmp_path)
        assert refused(server, client_context(pki.ca_file, stranger))
    finally:
        server.stop()


def refused(server: TlsServer, context: ssl.SSLContext) -> bool:
    """True when the node refuses the client's certificate: a TLS alert, or (TLS 1.3, where
    the client's side of the handshake ends before the server judges its certificate) the
    connection closed unanswered."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                # TLS 1.3: the alert (or the close) comes after the client's handshake ended;
                # wait for it. No answer within the timeout is no refusal: TimeoutError.
                return tls.recv(1024) == b""
        except (ssl.SSLError, ConnectionError):  # the alert, or the connection reset
            return True


def make_stranger(tmp_path: Path) -> tuple[Path, Path]:
    """A client certificate of another CA."""
    from tests._pki import make_pki

    other = make_pki(tmp_path / "other", "another CA")
    return other.client.cert_file, other.client.key_file


# -- live reload ---------------------------------------------------------------------------------


def peer_certificate(server: TlsServer) -> bytes:
    """The DER certificate a new handshake gets."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        context = client_context(server.ca_file)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_sighup_rotates_keys_handlers_and_the_certificate_while_clients_stay(
    tmp_path: Path, pki: Pki, recorder: Recorder, trust_ca: None
) -> None:
    """One SIGHUP to a real node: the first key removed (its REST calls and client tokens
    refused, the second key's accepted), the hub's handler changed and the certificate
    replaced, while a client connected before stays connected and keeps receiving. A bad file
    afterwards changes nothing and says why."""
    server = start_tls_server(tmp_path, config_toml(pki, handler=recorder.url("a")), pki.ca_file)
    try:
        old_svc = service(server, "certs")
        new_svc = service(server, "certs", key=SECONDARY_KEY)
        old_url = old_svc.get_client_access_token(user_id="early")["url"]
        early = sdk_client(old_url)
        early.open()
        assert len(recorder.connects["a"]) == 1
        assert peer_certificate(server) == pki.server.der

        renewed = pki.issue("renewed")
        before = len(server.output())
        server.reload(
            config_toml(
                pki,
                keys=(SECONDARY_KEY,),
                handler=recorder.url("b"),
                cert=(renewed.cert_file, renewed.key_file),
            )
        )
        output = server.output()[before:]
        assert "auth.access_keys: the primary key is the former secondary" in output
        assert "hubs.certs.event_handlers" in output and ACCESS_KEY not in output

        assert peer_certificate(server) == renewed.der  # new handshakes, new certificate
        new_svc.send_to_all("after the rotation", content_type="text/plain")
        early.server_messages.wait_for(lambda m: m.data == "after the rotation")
        assert early.client.is_connected()
        with pytest.raises(HttpResponseError) as refused:
            old_svc.send_to_all("old key", content_type="text/plain")
        assert refused.value.status_code == 401
        with pytest.raises(InvalidStatus) as handshake:
            raw_connect(
                server, old_url.removeprefix(server.ws_endpoint), client_context(pki.ca_file)
            )
        assert handshake.value.response.status_code == 401
        late = sdk_client(new_svc.get_client_access_token(user_id="late")["url"])
        late.open()
        wait_for(lambda: len(recorder.connects.get("b", [])) == 1, "connect event at b")
        assert len(recorder.connects["a"]) == 1
        late.close()
        early.client.send_event("after", "to the new handler", WebPubSubDataType.TEXT)
        wait_for(
            lambda: ("b", "after", b"to the new handler") in recorder.events, "user event at b"
        )
        assert [e for e in recorder.events if e[0] == "a"] == []

        server.reload("[server\n", expect="configuration not reloaded")
        assert "keeping the running one" in server.output()
        new_svc.send_to_all("still running", content_type="text/plain")
        early.server_messages.wait_for(lambda m: m.data == "still running")
        early.close()
    finally:
        server.stop()


def test_dev_tls_makes_a_ca_and_says_how_to_trust_it(tmp_path: Path) -> None:
    """``serve --dev-tls``: a local CA and certificate under the state directory, https in the
    connection string, and the variables that make the SDKs trust the CA printed."""
    state = tmp_path / "state"
    ca_file = state / "hubbub" / "dev-tls" / "ca.pem"
    env = {"XDG_STATE_HOME": str(state)}
    text = f'[auth]\naccess_keys = ["{ACCESS_KEY}"]\n'
    # The CA exists once the node runs; the health check waits for it.
    server = start_tls_server(tmp_path, text, ca_file, args=("--dev-tls",), env=env)
    try:
        output = server.output()
        assert f"SSL_CERT_FILE={ca_file}" in output
        assert f"NODE_EXTRA_CA_CERTS={ca_file}" in output
        assert f"Endpoint=https://127.0.0.1:{server.port};" in output
        service(server, "dev").send_to_all("trusted", content_type="text/plain")
        assert oct(os.stat(state / "hubbub" / "dev-tls" / "server-key.pem").st_mode & 0o777) == (
            "0o600"
        )
    finally:
        server.stop()
