"""The official Python SDKs against a 3-node cluster: every client on its own node, each REST
call on the next node (the SDK closes its connection after each call), with the same
results as one node: sends to all, a group, a user and a connection; group membership,
permissions, existence checks, paged listings and closes of connections held elsewhere."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.pipeline.policies import HeadersPolicy
from azure.messaging.webpubsubclient.models import WebPubSubDataType
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.cluster.conftest import Cluster
from tests.compat._clients import (
    Clients,
    SdkClient,
    hub_path,
    rest_call,
    rest_url,
    wait_until,
)

pytestmark = [pytest.mark.redis, pytest.mark.compat, pytest.mark.timeout(60)]


class ClusterClients(Clients):
    """Clients of the cluster; the service client opens a TCP connection per call."""

    def __init__(self, cluster: Cluster, hub: str) -> None:
        super().__init__(cluster, hub)
        self.cluster = cluster
        self.svc = WebPubSubServiceClient.from_connection_string(
            cluster.connection_string,
            hub=hub,
            headers_policy=HeadersPolicy({"Connection": "close"}),
        )

    def on_node(self, **kwargs: Any) -> tuple[SdkClient, int]:
        """An opened SDK client and the port of the node it landed on."""
        routed = self.cluster.balancer.routed
        before = len(routed)
        client = self.sdk(**kwargs)
        ports = routed[before:]
        assert ports, "the client did not go through the balancer"
        return client, ports[-1]


@pytest.fixture
def clients(shared_cluster: Cluster, hub: str) -> Iterator[ClusterClients]:
    factory = ClusterClients(shared_cluster, hub)
    yield factory
    factory.close_all()


def _spread(clients: ClusterClients, count: int, **kwargs: Any) -> list[SdkClient]:
    """``count`` clients, round robin over the nodes (every node holds one when count >= 3)."""
    opened = [clients.on_node(**kwargs) for _ in range(count)]
    assert len({port for _, port in opened}) == min(count, 3), [p for _, p in opened]
    return [client for client, _ in opened]


def _texts(client: SdkClient, marker: str) -> list[Any]:
    return client.data_until(marker)


def test_rest_calls_land_on_every_node(clients: ClusterClients) -> None:
    """The balancer spreads the service client's calls: the fixture's premise."""
    routed = clients.cluster.balancer.routed
    before = len(routed)
    for _ in range(6):
        assert not clients.svc.connection_exists("nobody")
    assert set(routed[before:]) == {n.port for n in clients.cluster.nodes}


def test_sends_reach_connections_on_every_node(clients: ClusterClients) -> None:
    """send_to_all, send_to_group, send_to_user, send_to_connection across the nodes."""
    a, b, c = _spread(clients, 3, user_id="ann", roles=["webpubsub.joinLeaveGroup"])
    d = clients.sdk(user_id="bob")
    for client in (a, c):
        client.client.join_group("room")  # a client's join, on its own node
    svc = clients.svc
    svc.send_to_all("all-1", content_type="text/plain")
    svc.send_to_group("room", "room-1", content_type="text/plain")
    svc.send_to_user("bob", "bob-1", content_type="text/plain")
    svc.send_to_connection(b.connection_id, "b-1", content_type="text/plain")
    svc.send_to_all("end", content_type="text/plain")
    assert _texts(a, "end") == ["all-1", "room-1", "end"]
    assert _texts(b, "end") == ["all-1", "b-1", "end"]
    assert _texts(c, "end") == ["all-1", "room-1", "end"]
    assert _texts(d, "end") == ["all-1", "bob-1", "end"]
    svc.send_to_user("ann", "ann-1", content_type="text/plain")
    svc.send_to_all("end2", content_type="text/plain")
    for client in (a, b, c):
        assert _texts(client, "end2")[-2:] == ["ann-1", "end2"]


def test_group_membership_existence_and_listing(clients: ClusterClients) -> None:
    """add/remove a connection and a user held elsewhere; exists checks; a paged listing
    in connection id order with nextLinks, as one node answers it."""
    svc = clients.svc
    members = _spread(clients, 6, user_id="carol")
    ids = sorted(m.connection_id for m in members)
    for cid in ids:
        svc.add_connection_to_group("big", cid)
    assert svc.group_exists("big") and svc.user_exists("carol")
    assert all(svc.connection_exists(cid) for cid in ids)
    pages = [list(page) for page in svc.list_connections(group="big", maxpagesize=4).by_page()]
    assert [len(p) for p in pages] == [4, 2]
    assert [m.connection_id for page in pages for m in page] == ids
    assert {m.user_id for page in pages for m in page} == {"carol"}
    svc.remove_connection_from_group("big", ids[0])
    assert [m.connection_id for m in svc.list_connections(group="big")] == ids[1:]
    svc.remove_user_from_group("big", "carol")
    assert not svc.group_exists("big")
    svc.add_user_to_group("other", "carol")
    assert len(list(svc.list_connections(group="other"))) == 6
    svc.remove_user_from_all_groups("carol")
    assert not svc.group_exists("other")
    svc.add_connection_to_group("one", ids[2])
    svc.remove_connection_from_all_groups(ids[2])
    assert not svc.group_exists("one")


def test_add_user_to_group_answers_404_for_nobody(clients: ClusterClients, hub: str) -> None:
    """The count behind the 404 rule is cluster-wide: a user with connections elsewhere
    is found; a user with none anywhere is not."""
    _spread(clients, 3, user_id="dave")
    for _ in range(3):  # from each node
        clients.svc.add_user_to_group("g", "dave")
    url = rest_url(clients.cluster, hub_path(hub, "users", "nobody", "groups", "g"))
    assert rest_call(clients.cluster, "PUT", url).status == 404


def test_permissions_of_connections_held_elsewhere(clients: ClusterClients) -> None:
    """grant, check, revoke on a connection of another node, from every node."""
    svc = clients.svc
    (target,) = _spread(clients, 1)
    cid = target.connection_id
    for _ in range(3):
        assert not svc.has_permission("sendToGroup", cid, target_name="g")
    svc.grant_permission("sendToGroup", cid, target_name="g")
    for _ in range(3):
        assert svc.has_permission("sendToGroup", cid, target_name="g")
    target.client.send_to_group("g", "allowed", WebPubSubDataType.TEXT)  # in effect there
    svc.revoke_permission("sendToGroup", cid, target_name="g")
    for _ in range(3):
        assert not svc.has_permission("sendToGroup", cid, target_name="g")


def test_group_ops_by_filter(clients: ClusterClients, hub: str) -> None:
    """:addToGroups and :removeFromGroups with a filter reach every node's connections."""
    cluster = clients.cluster
    _spread(clients, 3, user_id="eve")
    _spread(clients, 3, user_id="frank")
    url = rest_url(cluster, hub_path(hub, ":addToGroups"))
    body = json.dumps({"groups": ["f1", "f2"], "filter": "userId eq 'eve'"}).encode()
    assert rest_call(cluster, "POST", url, body=body, content_type="application/json").status == 200
    assert {m.user_id for m in clients.svc.list_connections(group="f2")} == {"eve"}
    assert len(list(clients.svc.list_connections(group="f1"))) == 3
    url = rest_url(cluster, hub_path(hub, ":removeFromGroups"))
    body = json.dumps({"groups": ["f1"], "filter": "userId eq 'eve'"}).encode()
    assert rest_call(cluster, "POST", url, body=body, content_type="application/json").status == 200
    assert not clients.svc.group_exists("f1") and clients.svc.group_exists("f2")


def _closed(client: SdkClient) -> None:
    client.disconnected.wait_for()


def test_closes_reach_connections_on_every_node(clients: ClusterClients) -> None:
    """close a connection, a user's, a group's, then all: each from another node."""
    svc = clients.svc
    a, b, c = _spread(clients, 3, user_id="gus")
    d, e, f = _spread(clients, 3)
    svc.close_connection(a.connection_id, reason="one")
    _closed(a)
    wait_until(lambda: not svc.connection_exists(a.connection_id), "a gone")
    svc.close_user_connections("gus")
    for client in (b, c):
        _closed(client)
    wait_until(lambda: not svc.user_exists("gus"), "gus gone")
    for client in (d, e):
        svc.add_connection_to_group("closing", client.connection_id)
    svc.close_group_connections("closing")
    for client in (d, e):
        _closed(client)
    assert svc.connection_exists(f.connection_id)
    svc.close_all_connections()
    _closed(f)
    deadline = time.monotonic() + 5
    while svc.connection_exists(f.connection_id):
        assert time.monotonic() < deadline
        time.sleep(0.02)
