"""Redis stopped and restarted under a running cluster: local delivery goes on, REST calls
that need the cluster answer 503 ServiceUnavailable (with Retry-After) while it is away and
deliver nothing, the nodes reconnect, resubscribe and re-register by themselves, nothing
crashes, and every acknowledged (202) send reaches every member."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import pytest
from azure.core.pipeline.policies import HeadersPolicy
from azure.messaging.webpubsubclient.models import SendMessageError, WebPubSubDataType
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.cluster._helpers import open_on_node, send_to_user, wait_numbers
from tests.cluster.conftest import Cluster, ClusterNode
from tests.compat._clients import (
    Clients,
    SdkClient,
    assert_error,
    data_of,
    hub_path,
    rest_call,
    rest_token,
)
from tests.conftest import ACCESS_KEY

pytestmark = [pytest.mark.redis, pytest.mark.compat, pytest.mark.timeout(60)]


@pytest.fixture
def clients(cluster: Cluster, hub: str) -> Iterator[Clients]:
    factory = Clients(cluster, hub)
    factory.svc = WebPubSubServiceClient.from_connection_string(
        cluster.connection_string, hub=hub, headers_policy=HeadersPolicy({"Connection": "close"})
    )
    yield factory
    factory.close_all()


def _send(cluster: Cluster, node: ClusterNode, hub: str, group: str, text: str) -> int:
    url = f"{node.endpoint}{hub_path(hub, 'groups', group, ':send')}?api-version=2024-12-01"
    token = rest_token(url, ACCESS_KEY)
    response = rest_call(
        cluster, "POST", url, body=text.encode(), content_type="text/plain", token=token
    )
    if response.status == 503:
        assert_error(response, 503)
        assert response.json()["code"] == "ServiceUnavailable"
        assert response.headers.get("Retry-After") == "1"
    return response.status


def _metrics(node: ClusterNode) -> str:
    with urllib.request.urlopen(f"{node.endpoint}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _texts(client: SdkClient) -> list[str]:
    return [str(d) for d in data_of(client.wire.snapshot())]


def _until(condition: object, what: str, seconds: float = 15.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_redis_stop_and_restart(cluster: Cluster, clients: Clients, hub: str) -> None:
    nodes = cluster.nodes
    members = [
        clients.sdk(roles=["webpubsub.sendToGroup.g", "webpubsub.joinLeaveGroup.g"])
        for _ in range(3)
    ]
    for member in members:
        clients.svc.add_connection_to_group("g", member.connection_id)
    acked: list[str] = []
    refused: list[str] = []

    def send(node: ClusterNode, text: str) -> int:
        text = f"{text}.{len(acked) + len(refused)}"  # each send its own text
        status = _send(cluster, node, hub, "g", text)
        (acked if status == 202 else refused).append(text)
        return status

    for i, node in enumerate(nodes):
        assert send(node, f"before-{i}") == 202
    cluster.redis.stop()
    for i, node in enumerate(nodes):
        _until(lambda n=node, i=i: send(n, f"down-{i}") == 503, "no 503 while Redis is away")
        assert 'hubbub_engine_state{state="degraded"} 1.0' in _metrics(node)
    url = f"{nodes[0].endpoint}{hub_path(hub, 'groups', 'g')}?api-version=2024-12-01"
    status = rest_call(cluster, "HEAD", url, token=rest_token(url, ACCESS_KEY)).status
    assert status == 503  # an exists check needs the registry
    # Local delivery goes on: a client's group send reaches the members of its own node.
    sender = members[0]
    try:
        sender.client.send_to_group("g", "local", WebPubSubDataType.TEXT, no_echo=False)
    except SendMessageError:
        pass  # acked with an error: the other nodes' copies could not be handed to Redis
    _until(lambda: "local" in _texts(sender), "no local delivery while Redis is away")
    cluster.redis.restart()
    for i, node in enumerate(nodes):
        _until(lambda n=node, i=i: send(n, f"after-{i}") == 202, "the node did not come back")
    _until(
        lambda: len(list(clients.svc.list_connections(group="g"))) == 3,
        "the members were not registered again",
    )
    for i, node in enumerate(nodes):
        assert send(node, f"final-{i}") == 202
        assert 'hubbub_engine_state{state="ready"} 1.0' in _metrics(node)
    for member in members:
        _until(
            lambda m=member: any(t.startswith("final-2.") for t in _texts(m)),
            "no delivery after the restart",
        )
        got = _texts(member)
        wanted = [t for t in acked if not t.startswith("after-")]  # those sent once all are back
        assert all(t in got for t in wanted), (wanted, got)
        assert not any(t in got for t in refused), "a refused (503) send was delivered"
        assert len([t for t in got if t != "local"]) == len(set(got) - {"local"})
    for node in nodes:
        assert node.process is not None and node.process.poll() is None, "a node crashed"
    logs = cluster.logs()
    assert "unavailable" in logs and "back after" in logs
    assert "Traceback" not in logs, logs


def _all_ready(cluster: Cluster) -> bool:
    return all('hubbub_engine_state{state="ready"} 1.0' in _metrics(n) for n in cluster.nodes)


def test_redis_pause_and_resume(cluster: Cluster, clients: Clients, hub: str) -> None:
    """SIGSTOP: a node sees the frozen server when a round trip takes too long, answers 503
    meanwhile, and comes back after SIGCONT; nothing crashes."""
    node = cluster.nodes[0]
    assert _send(cluster, node, hub, "g", "before") == 202
    cluster.redis.pause()
    try:
        _until(lambda: _send(cluster, node, hub, "g", "paused") == 503, "no 503 while paused")
    finally:
        cluster.redis.resume()
    _until(lambda: _send(cluster, node, hub, "g", "after") == 202, "not back after the pause")
    _until(lambda: _all_ready(cluster), "a node did not come back")
    assert all(n.process is not None and n.process.poll() is None for n in cluster.nodes)
    assert "Traceback" not in cluster.logs()


def test_replicas_survive_a_redis_restart(cluster: Cluster, clients: Clients) -> None:
    """A restarted Redis starts empty: the nodes write their replicas again, so a session
    still survives its node's kill -9 afterwards."""
    client, _, owner = open_on_node(cluster, clients, "kim")
    cid = client.connection_id
    send_to_user(clients.svc, "kim", range(1, 11))
    wait_numbers(client, 10)
    cluster.redis.restart()
    _until(lambda: cluster.logs().count("back after") >= 3, "the nodes did not come back")
    _until(lambda: _all_ready(cluster), "the nodes are not ready")
    _until(lambda: clients.svc.connection_exists(cid), "not registered again")
    assert "session replicas written again: 1" in owner.log_text()
    send_to_user(clients.svc, "kim", range(11, 21))
    wait_numbers(client, 20)
    owner.kill()
    _until(lambda: "restored from its replica" in cluster.logs(), "not restored", 20)
    send_to_user(clients.svc, "kim", range(21, 31))
    assert wait_numbers(client, 30) == list(range(1, 31))
    assert {args.connection_id for args in client.connected.snapshot()} == {cid}
