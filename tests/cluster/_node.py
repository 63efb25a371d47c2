"""``hubbub serve`` as a cluster test runs it: the real command line, with the engine's
heartbeats and timeouts shortened (as tests/broker/conftest.py's ``FAST``), so that a killed
node leaves the registry and a restarted Redis is found again in about a second.

Usage: ``python -m tests.cluster._node serve --redis-url ... [hubbub serve's flags]``.
"""

from __future__ import annotations

import dataclasses
import sys

import hubbub.server.app
from hubbub.broker.redis import RedisSettings
from hubbub.cli import main

FAST = {
    "heartbeat_seconds": 0.2,
    "node_ttl_seconds": 1.5,
    "timeout_seconds": 0.5,
    "request_timeout_seconds": 2.0,
    "reconnect_min_seconds": 0.05,
    "reconnect_max_seconds": 0.3,
}


def fast_settings(**settings: object) -> RedisSettings:
    return dataclasses.replace(RedisSettings(**settings), **FAST)  # type: ignore[arg-type]


if __name__ == "__main__":
    setattr(hubbub.server.app, "RedisSettings", fast_settings)  # noqa: B010
    sys.exit(main(sys.argv[1:]))
