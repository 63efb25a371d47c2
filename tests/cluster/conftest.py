"""Fixtures of the cluster tests: three real ``hubbub serve`` nodes (tests/cluster/_node.py)
on one redis-server, behind a round-robin TCP balancer (tests/cluster/_balancer.py) whose
address is the cluster's public endpoint: each REST call (the SDK is told to close its
connection after each), each client and each reconnect lands on the next node."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests._redis import RedisServer
from tests.cluster._balancer import Balancer
from tests.conftest import ACCESS_KEY, SECONDARY_KEY, free_port

NODES = 3

CONFIG = """
[server]
public_endpoint = "{endpoint}"
session_timeout_seconds = 30

[auth]
access_keys = ["{key}", "{secondary}"]

[engine]
redis_url = "{redis}"
session_replication = {replication}

[hubs.anon]
anonymous_connect = true

[hubs.fastping]
keep_alive_seconds = 1
"""
# The hubs of the single-node test server (tests/conftest.py), for the suites run on both.


@dataclass
class ClusterNode:
    port: int
    log: Path
    config: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "tests.cluster._node",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--config",
            str(self.config),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in ("HUBBUB_ACCESS_KEY", "HUBBUB_REDIS_URL", "HUBBUB_CONFIG"):
            env.pop(name, None)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait_healthy(self, seconds: float = 20.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + seconds
        request = urllib.request.Request(f"{self.endpoint}/api/health", method="HEAD")
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited early: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(request, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"node not healthy in {seconds:.0f} s: {self.log.read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Cluster:
    """A ServerLike (tests/compat/_clients.py) whose endpoint is the balancer."""

    redis: RedisServer
    balancer: Balancer
    nodes: list[ClusterNode] = field(default_factory=list)
    access_key: str = ACCESS_KEY
    secondary_key: str = SECONDARY_KEY

    @property
    def endpoint(self) -> str:
        return self.balancer.endpoint

    @property
    def ws_endpoint(self) -> str:
        return "ws" + self.balancer.endpoint[4:]

    @property
    def connection_string(self) -> str:
        return f"Endpoint={self.endpoint};AccessKey={self.access_key};Version=1.0;"

    @property
    def secondary_connection_string(self) -> str:
        return f"Endpoint={self.endpoint};AccessKey={self.secondary_key};Version=1.0;"

    def logs(self) -> str:
        return "\n".join(f"--- node {n.port}\n{n.log_text()}" for n in self.nodes)


def start_cluster(tmp: Path, redis: RedisServer, balancer: Balancer, replication: bool) -> Cluster:
    cluster = Cluster(redis, balancer)
    text = CONFIG.format(
        endpoint=balancer.endpoint,
        key=ACCESS_KEY,
        secondary=SECONDARY_KEY,
        redis=redis.url,
        replication="true" if replication else "false",
    )
    for i in range(NODES):
        config = tmp / f"node{i}.toml"
        config.write_text(text)
        cluster.nodes.append(ClusterNode(free_port(), tmp / f"node{i}.log", config))
    for node in cluster.nodes:
        node.spawn()
    for node in cluster.nodes:
        node.wait_healthy()
    balancer.backends = [n.port for n in cluster.nodes]
    return cluster


@pytest.fixture
def cluster(redis_server: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes on a fresh redis-server, replication on; a test may kill and restart
    nodes and Redis. Marks: the test is ``redis``."""
    with Balancer([]) as balancer:
        running = start_cluster(tmp_path, redis_server, balancer, replication=True)
        try:
            yield running
        finally:
            for node in running.nodes:
                node.stop()


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes shared by a module's tests (which leave the Redis and the nodes up)."""
    from tests._redis import redis_binary

    tmp = tmp_path_factory.mktemp("cluster")
    redis = RedisServer(tmp, redis_binary())
    redis.start()
    try:
        with Balancer([]) as balancer:
            running = start_cluster(tmp, redis, balancer, replication=True)
            try:
                yield running
            finally:
                for node in running.nodes:
                    node.stop()
    finally:
        redis.kill()
