"""Pure parts of the Redis engine: names, URL redaction, the writer's queue (no server)."""

from __future__ import annotations

import pytest

from hubbub.broker.channels import Interest, Names, valid_node_id
from hubbub.broker.redis import RedisBroker, RedisSettings, _safe_url
from hubbub.broker.redis_link import Writer
from hubbub.core.commands import Target
from hubbub.types import HubName


def test_channel_names() -> None:
    """One channel per interest, under the prefix; connections have no interest channel."""
    names = Names("p")
    hub = HubName("chat")
    assert names.channel(Interest(hub, Target.HUB)) == b"p:to:hub:chat"
    assert names.channel(Interest(hub, Target.GROUP, "a:b")) == b"p:to:group:chat:a:b"
    assert names.channel(Interest(hub, Target.USER, "ann")) == b"p:to:user:chat:ann"
    assert names.target_channel(hub, Target.GROUP, "a:b") == b"p:to:group:chat:a:b"
    assert names.node_channel("n1") == b"p:to:node:n1"
    with pytest.raises(ValueError):
        names.channel(Interest(hub, Target.CONNECTION, "c1"))


def test_node_ids() -> None:
    assert valid_node_id("host-1.example_2")
    assert not valid_node_id("a/b") and not valid_node_id("a:b") and not valid_node_id("")
    with pytest.raises(ValueError):
        RedisBroker(RedisSettings(node_id="bad/id"))
    assert valid_node_id(RedisBroker().node_id)  # the generated one


def test_passwords_never_reach_the_logs() -> None:
    assert _safe_url("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert _safe_url("rediss://:secret@host/1") == "rediss://:***@host/1"
    assert _safe_url("redis://host:6379/0") == "redis://host:6379/0"


async def test_writer_batches_only_the_last_unsent_command() -> None:
    """Operations of one kind share the last queued command; anything queued after it, or
    a full one, starts a new command; order is kept."""
    writer = Writer(timeout=1.0, max_queued_bytes=1 << 20)

    def header() -> list[bytes | str | int]:
        return [b"EVALSHA", "sha"]

    writer.extend("k", header, ("a",), limit=2)
    writer.extend("k", header, ("b",), limit=2)
    writer.extend("k", header, ("c",), limit=2)  # full: a new command
    writer.append([b"PING"])
    writer.extend("k", header, ("d",), limit=2)  # after another command: a new one
    assert writer._args == [
        [b"EVALSHA", "sha", "a", "b"],
        [b"EVALSHA", "sha", "c"],
        [b"PING"],
        [b"EVALSHA", "sha", "d"],
    ]
    assert writer.last == 4
    assert not writer.full(1000) and writer.full(2 << 20)
