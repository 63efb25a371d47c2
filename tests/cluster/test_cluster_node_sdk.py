"""The JavaScript SDK suite (tests/compat/test_node_sdk.py: @azure/web-pubsub and
@azure/web-pubsub-client under Node.js) against the 3-node cluster: the same scenarios and
the same expected observations as against one node, each client on the next node."""

from __future__ import annotations

import os

import pytest

from tests.cluster.conftest import Cluster
from tests.compat import test_node_sdk
from tests.compat.test_node_sdk import SCENARIOS, NodeRun

pytestmark = [pytest.mark.node, pytest.mark.redis]

# The suite's tests, collected here too (with this module's fixtures).
globals().update({k: v for k, v in vars(test_node_sdk).items() if k.startswith("test_")})


@pytest.fixture(scope="module")
def node_run(shared_cluster: Cluster) -> NodeRun:
    """Every scenario once, in one Node process, against the cluster's balancer."""
    return test_node_sdk._run(shared_cluster, SCENARIOS, f"clusternodesdk{os.getpid()}")


@pytest.fixture(scope="module")
def rest_run(node_run: NodeRun) -> NodeRun:
    return node_run
