"""A node restart as the official Python client SDK lives through it.

The node stops (SIGTERM): the client is sent ``disconnected`` with ``ServiceReload`` and a
1001 close. The node comes back on the same port with the same keys: the client's recovery is
refused (its session died with the old process), it reconnects afresh, rejoins its group and
receives what is published there.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from azure.core.pipeline.policies import RetryMode
from azure.messaging.webpubsubclient import WebPubSubClient, WebPubSubClientCredential

from tests.compat._clients import SDK_WAIT, SdkClient, client_url, service, wait_until
from tests.conftest import Server, start_server, stop_server

JOIN = "webpubsub.joinLeaveGroup"


def _stop(server: Server) -> int:
    server.process.terminate()
    try:
        return server.process.wait(15)
    except subprocess.TimeoutExpired:
        stop_server(server)
        raise AssertionError("hubbub did not exit within 15 s of SIGTERM") from None


def test_the_sdk_reconnects_and_rejoins_after_a_node_restart(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first_node = start_server(tmp_path / "a")
    nodes = [first_node]
    svc = service(first_node, "restart")
    credential = WebPubSubClientCredential(
        lambda: client_url(service(first_node, "restart"), user_id="ada", roles=[JOIN])
    )
    sdk = SdkClient(
        WebPubSubClient(
            credential,
            message_retry_total=0,
            reconnect_retry_total=40,
            reconnect_retry_backoff_factor=0.25,
            reconnect_retry_mode=RetryMode.Fixed,
            ack_timeout=SDK_WAIT,
            start_timeout=SDK_WAIT,
        )
    )
    try:
        sdk.client.open()
        first = sdk.connected.wait_for().connection_id
        sdk.client.join_group("room")
        wait_until(lambda: svc.group_exists("room"), "joined before the restart")

        assert _stop(first_node) == 0
        # The SDK's default protocol is reliable: it tries to recover before it reports a
        # disconnection, so the goodbye shows on the wire only.
        goodbye = {"type": "system", "event": "disconnected", "message": "ServiceReload"}
        sdk.wire.wait_for(lambda frame: frame == goodbye)

        second_node = start_server(tmp_path / "b", port=first_node.port)
        nodes.append(second_node)
        again = sdk.connected.wait_for(lambda e: e.connection_id != first, timeout=45)
        assert again.user_id == "ada"
        svc2 = service(second_node, "restart")
        wait_until(lambda: svc2.group_exists("room"), "rejoined after the restart", timeout=10)
        svc2.send_to_group("room", "welcome back", content_type="text/plain")
        message = sdk.group_messages.wait_for()
        assert (message.group, message.data) == ("room", "welcome back")
        svc2.close()
    finally:
        sdk.client.close()
        svc.close()
        for node in nodes:
            stop_server(node)
