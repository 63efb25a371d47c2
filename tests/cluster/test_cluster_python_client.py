"""tests/compat/test_python_client.py (the official Python SDKs) against the 3-node cluster: the
same tests and expectations as against one node, each client on the next node."""

from __future__ import annotations

import pytest

from tests.cluster._suite import suite
from tests.cluster.conftest import Cluster
from tests.compat import test_python_client

pytestmark = [pytest.mark.compat, pytest.mark.redis, pytest.mark.timeout(30)]

globals().update(suite(test_python_client))


@pytest.fixture(scope="module")
def server(shared_cluster: Cluster) -> Cluster:
    return shared_cluster
