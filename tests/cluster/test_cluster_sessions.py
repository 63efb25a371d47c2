"""Reliable sessions across the nodes of a cluster: a client whose connection drops and whose
reconnect lands on another node keeps its session (connection id, user, groups, every
unacked message once and in order): handed over by a live owner, or restored from the
replica in Redis after the owner's kill -9."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from azure.core.pipeline.policies import HeadersPolicy
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.cluster._helpers import (
    numbers as _numbers,
    open_on_node as _open,
    send_to_user as _send,
    wait_numbers as _wait_numbers,
)
from tests.cluster.conftest import Cluster
from tests.compat._clients import Clients, SdkClient

pytestmark = [pytest.mark.redis, pytest.mark.compat, pytest.mark.timeout(60)]


@pytest.fixture
def clients(cluster: Cluster, hub: str) -> Iterator[Clients]:
    factory = Clients(cluster, hub)
    factory.svc = WebPubSubServiceClient.from_connection_string(
        cluster.connection_string, hub=hub, headers_policy=HeadersPolicy({"Connection": "close"})
    )
    yield factory
    factory.close_all()


def _connection_ids(client: SdkClient) -> set[str]:
    return {args.connection_id for args in client.connected.snapshot()}


def test_session_is_handed_over_by_its_live_owner(cluster: Cluster, clients: Clients) -> None:
    """The link drops; messages sent meanwhile wait in the detached session; the reconnect
    lands on another node, which takes the session from the owner: all of them, once."""
    client, index, owner = _open(cluster, clients, "hana")
    cid = client.connection_id
    clients.svc.add_connection_to_group("stay", cid)
    _send(clients.svc, "hana", range(1, 11))
    _wait_numbers(client, 10)
    routed = len(cluster.balancer.routed)
    cluster.balancer.sever(index)
    _send(clients.svc, "hana", range(11, 21))  # to the detached session, on its owner
    deadline = time.monotonic() + 10
    while owner.port in cluster.balancer.routed[routed:] or len(cluster.balancer.routed) == routed:
        assert time.monotonic() < deadline, "no reconnect to another node"
        if owner.port in cluster.balancer.routed[routed:]:
            routed = len(cluster.balancer.routed)  # a REST call went there: not the client
        time.sleep(0.02)
    got = _wait_numbers(client, 20)
    _send(clients.svc, "hana", range(21, 31))
    clients.svc.send_to_group("stay", "31", content_type="text/plain")
    got = _wait_numbers(client, 31)
    assert got == list(range(1, 32)), got
    assert _connection_ids(client) == {cid}  # the same session, not a new connection
    assert clients.svc.connection_exists(cid)
    assert "handed over" in cluster.logs()


def test_session_survives_its_node_kill_9(cluster: Cluster, clients: Clients) -> None:
    """kill -9 of the owner while a publisher sends to the user: the reconnect on another
    node restores the session from its replica; nothing received twice, nothing out of
    order, everything sent before the kill and after the restore received. (What is sent
    while the session has no live owner, between the kill and the restore, reaches nobody.)"""
    client, _, owner = _open(cluster, clients, "ivan")
    cid = client.connection_id
    svc = clients.svc
    svc.add_connection_to_group("kept", cid)
    svc.grant_permission("sendToGroup", cid, target_name="kept")
    sent: list[int] = []
    stop = threading.Event()
    killed_after: list[int] = []

    def publish() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                clients.svc.send_to_user("ivan", str(n), content_type="text/plain")
            except Exception:
                n -= 1  # refused (its node died under the call): not sent
                continue
            sent.append(n)
            time.sleep(0.005)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        _wait_numbers(client, 30)
        killed_after.append(sent[-1])
        owner.kill()
        deadline = time.monotonic() + 20
        while "restored from its replica" not in cluster.logs():
            assert time.monotonic() < deadline, cluster.logs()
            time.sleep(0.05)
        restored_at = sent[-1]
        _wait_numbers(client, restored_at + 30)
    finally:
        stop.set()
        publisher.join(5)
    got = _numbers(client)
    assert len(got) == len(set(got)), "a message arrived twice"
    assert got == sorted(got), "out of order"
    before = killed_after[0]
    assert set(range(1, before + 1)) <= set(got), "lost a message sent before the kill"
    # One send may have been in flight while the restore was logged: it may go either way.
    lost = [n for n in sent if restored_at + 1 < n <= got[-1] and n not in got]
    assert not lost, f"lost after the restore: {lost}"
    assert _connection_ids(client) == {cid}
    # What the session had is restored with it, and stays after the dead node is reaped.
    time.sleep(2.0)  # the engine's node TTL in these tests is 1.5 s
    assert svc.connection_exists(cid) and svc.user_exists("ivan")
    assert [m.connection_id for m in svc.list_connections(group="kept")] == [cid]
    assert svc.has_permission("sendToGroup", cid, target_name="kept")


def test_session_moves_when_its_node_stops(cluster: Cluster, clients: Clients) -> None:
    """A graceful stop (SIGTERM) in a cluster keeps the reliable sessions while their clients
    recover them on other nodes: the same connection, nothing lost, nothing twice."""
    client, _, owner = _open(cluster, clients, "jo")
    cid = client.connection_id
    clients.svc.add_connection_to_group("club", cid)
    _send(clients.svc, "jo", range(1, 11))
    _wait_numbers(client, 10)
    owner.stop()
    assert "handed over to other nodes: 1 of 1" in owner.log_text(), owner.log_text()
    _send(clients.svc, "jo", range(11, 21))
    clients.svc.send_to_group("club", "21", content_type="text/plain")
    assert _wait_numbers(client, 21) == list(range(1, 22))
    assert _connection_ids(client) == {cid}
