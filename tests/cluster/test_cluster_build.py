"""What ``build()`` makes of ``engine.redis_url``: nothing runs, so no Redis is needed."""

from __future__ import annotations

import dataclasses

from hubbub.broker.memory import MemoryBroker
from hubbub.broker.redis import RedisBroker
from hubbub.config import load_config
from hubbub.server.app import build


def test_memory_engine_without_a_redis_url() -> None:
    parts = build(load_config(None, env={}))
    assert isinstance(parts.broker, MemoryBroker) and parts.cluster is None
    assert not parts.node.replicating


def test_redis_engine_for_a_redis_url() -> None:
    """The Redis engine, a node id of its own per node, the node as its cluster member and
    the session settings passed on."""
    config = load_config(
        None,
        env={"HUBBUB_REDIS_URL": "redis://127.0.0.1:1/3", "HUBBUB_SESSION_REPLICATION": "true"},
    )
    first, second = build(config), build(config)
    assert isinstance(first.broker, RedisBroker) and first.cluster is first.broker
    assert first.node.presence is first.broker.presence
    assert first.broker.node_id != second.broker.node_id
    settings = first.broker.settings
    assert settings.url == "redis://127.0.0.1:1/3" and settings.replicate_sessions
    assert settings.session_timeout_seconds == config.session_timeout_seconds
    assert first.node.replicating
    off = build(dataclasses.replace(config, session_replication=False))
    assert isinstance(off.broker, RedisBroker) and not off.broker.settings.replicate_sessions
    assert not off.node.replicating
