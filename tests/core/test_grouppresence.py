"""Group presence events: which an event handler receives, and their CloudEvent."""

from __future__ import annotations

import json

import pytest

from hubbub.core.grouppresence import GroupPresenceSettings
from hubbub.protocol.cloudevents import EventContext, event_headers, group_presence_body


def test_event_names_and_filters() -> None:
    """Only the named events, only for groups matching a filter (none: every group)."""
    everything = GroupPresenceSettings.parse(["joined", "Left"])
    assert everything.wants("joined", "a.b") and everything.wants("left", "x")
    only_joined = GroupPresenceSettings.parse(["joined"], ["room-*", "team.**"])
    assert only_joined.wants("joined", "room-1")
    assert only_joined.wants("joined", "team.a.b")
    assert not only_joined.wants("joined", "room.1")
    assert not only_joined.wants("left", "room-1")
    assert not GroupPresenceSettings().wants("joined", "g")


@pytest.mark.parametrize(
    ("names", "filters", "text"),
    [
        (["joined", "entered"], [], "unknown group presence event 'entered'"),
        (["left"], ["a\\"], "lone"),
        (["left"], ["******"], "*"),
    ],
)
def test_invalid_settings(names: list[str], filters: list[str], text: str) -> None:
    """Unknown event names and invalid patterns are refused, naming the problem."""
    with pytest.raises(ValueError, match=text.replace("*", r"\*")):
        GroupPresenceSettings.parse(names, filters)


def test_the_cloud_event() -> None:
    """``azure.webpubsub.gp.joined``, ``ce-eventName: joined``, body ``{"group": ...}``."""
    context = EventContext("chat", "c1", "alice", "json.webpubsub.azure.v1", None, 7)
    headers = event_headers(
        context,
        "joined",
        True,
        "localhost",
        ("key",),
        "application/json; charset=utf-8",
        prefix="azure.webpubsub.gp.",
    )
    assert headers["ce-type"] == "azure.webpubsub.gp.joined"
    assert headers["ce-eventName"] == "joined"
    assert headers["ce-source"] == "/hubs/chat/client/c1"
    assert headers["ce-userId"] == "alice"
    assert json.loads(group_presence_body("room 1")) == {"group": "room 1"}
    system = event_headers(context, "connected", True, "localhost", ("key",), "x")
    assert system["ce-type"] == "azure.webpubsub.sys.connected"
