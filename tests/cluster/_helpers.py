"""Helpers of the cluster tests: reliable SDK clients on a known node, numbered messages."""

from __future__ import annotations

import time

from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.cluster.conftest import Cluster, ClusterNode
from tests.compat._clients import Clients, SdkClient, data_of


def open_on_node(
    cluster: Cluster, clients: Clients, user: str
) -> tuple[SdkClient, int, ClusterNode]:
    """A reliable SDK client that reconnects; its balancer link and its node."""
    before = len(cluster.balancer.routed)
    client = clients.sdk(user_id=user, reconnect=True)
    index = len(cluster.balancer.routed) - 1
    assert index >= before
    port = cluster.balancer.routed[index]
    (node,) = [n for n in cluster.nodes if n.port == port]
    return client, index, node


def numbers(client: SdkClient) -> list[int]:
    """The numbers received, as the SDK takes them: a frame resent under a sequence id seen
    before is dropped by the SDK (a recovery resends what was not acked yet)."""
    seen: set[int] = set()
    frames = []
    for frame in client.wire.snapshot():
        sequence_id = frame.get("sequenceId")
        if sequence_id is not None:
            if sequence_id in seen:
                continue
            seen.add(sequence_id)
        frames.append(frame)
    return [int(d) for d in data_of(frames) if str(d).isdigit()]


def wait_numbers(client: SdkClient, last: int, seconds: float = 15.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while True:
        got = numbers(client)
        if got and got[-1] >= last:
            return got
        assert time.monotonic() < deadline, f"got {got[-5:]}, waiting for {last}"
        time.sleep(0.02)


def send_to_user(svc: WebPubSubServiceClient, user: str, values: range) -> None:
    for n in values:
        svc.send_to_user(user, str(n), content_type="text/plain")
