"""Group state: per-member records, subscriptions, snapshots, updates, limits."""

from __future__ import annotations

import msgspec
import pytest

from hubbub.core.groupstate import (
    GroupStateError,
    GroupStateLimits,
    GroupStateRecord,
    GroupStateStore,
    may_get,
    may_set,
)
from hubbub.protocol.messages import GroupStateItem, GroupStateSnapshotMessage

TYPING = (("activity", "typing"),)


def test_set_replaces_the_record_and_returns_the_update() -> None:
    """Setting replaces a connection's whole record (no merge) with a newer ``updatedAt``."""
    store = GroupStateStore()
    first = store.set("room", "c1", "alice", (("a", "1"), ("b", "2")), 1000)
    assert first == GroupStateItem("c1", "alice", (("a", "1"), ("b", "2")), 1000)
    second = store.set("room", "c1", "alice", TYPING, 1000)
    assert second == GroupStateItem("c1", "alice", TYPING, 1001)
    assert store.snapshot("room") == GroupStateSnapshotMessage("room", (second,))


def test_clear_has_no_state_and_clearing_nothing_is_silent() -> None:
    """A clear's update item has no ``state``; clearing a missing record publishes nothing."""
    store = GroupStateStore()
    assert store.set("room", "c1", None, None, 5) is None
    store.set("room", "c1", None, TYPING, 5)
    assert store.set("room", "c1", None, None, 7) == GroupStateItem("c1", None, None, 7)
    assert store.snapshot("room").items == ()
    assert store.clear("room", "c1", 9) is None


def test_updated_at_is_strictly_increasing_even_if_the_clock_is_not() -> None:
    """A clock that stands still or goes back still gives newer stamps."""
    store = GroupStateStore()
    stamps = [
        store.set("g", "c", None, TYPING, now).updated_at  # type: ignore[union-attr]
        for now in (100, 100, 90, 101, 500)
    ]
    assert stamps == [100, 101, 102, 103, 500]


def test_records_are_per_group() -> None:
    """The same connection has independent records in different groups."""
    store = GroupStateStore()
    store.set("a", "c1", None, (("k", "a"),), 1)
    store.set("b", "c1", None, (("k", "b"),), 2)
    assert [i.state for i in store.snapshot("a").items] == [(("k", "a"),)]
    assert [i.state for i in store.snapshot("b").items] == [(("k", "b"),)]


def test_subscribe_returns_the_snapshot_ordered_by_connection_id() -> None:
    """A subscriber gets every member's record, by connection id; an empty group is []."""
    store = GroupStateStore()
    assert store.subscribe("empty", "c9") == GroupStateSnapshotMessage("empty", ())
    store.set("room", "c2", "bob", (("hand", "raised"),), 1)
    store.set("room", "c1", "alice", TYPING, 2)
    snapshot = store.subscribe("room", "c3")
    assert [item.connection_id for item in snapshot.items] == ["c1", "c2"]
    assert store.subscribers("room") == {"c3"}
    assert store.subscribe("room", "c3") == snapshot


def test_snapshot_is_capped() -> None:
    """A snapshot holds at most ``snapshot_items`` records, the first by connection id."""
    store = GroupStateStore(GroupStateLimits(snapshot_items=3))
    for n in range(10):
        store.set("big", f"c{n}", None, TYPING, n)
    assert [i.connection_id for i in store.snapshot("big").items] == ["c0", "c1", "c2"]
    assert len(store.records("big")) == 10


def test_unsubscribe_is_idempotent() -> None:
    """Unsubscribing twice, or without a subscription, is harmless."""
    store = GroupStateStore()
    store.subscribe("room", "c1")
    store.unsubscribe("room", "c1")
    store.unsubscribe("room", "c1")
    store.unsubscribe("other", "c2")
    assert store.subscribers("room") == frozenset()


def test_leaving_clears_the_record_and_the_subscription() -> None:
    """A member that leaves loses its record (update for the others) and its subscription."""
    store = GroupStateStore()
    store.set("room", "c1", "alice", TYPING, 1)
    store.subscribe("room", "c1")
    store.subscribe("room", "c2")
    assert store.left("room", "c1", 2) == GroupStateItem("c1", "alice", None, 2)
    assert store.subscribers("room") == {"c2"}
    assert store.left("room", "c2", 3) is None
    assert store.subscribers("room") == frozenset()


def test_an_ended_connection_clears_everything() -> None:
    """Every record of an ended connection is cleared, each with its update."""
    store = GroupStateStore()
    store.set("b", "c1", None, TYPING, 1)
    store.set("a", "c1", None, TYPING, 2)
    store.set("a", "c2", None, TYPING, 3)
    store.subscribe("a", "c1")
    store.subscribe("z", "c1")
    assert store.ended("c1", 10) == [
        ("a", GroupStateItem("c1", None, None, 10)),
        ("b", GroupStateItem("c1", None, None, 11)),
    ]
    assert store.subscribers("a") == frozenset() and store.subscribers("z") == frozenset()
    assert [i.connection_id for i in store.snapshot("a").items] == ["c2"]
    assert store.ended("c1", 12) == []


@pytest.mark.parametrize(
    ("state", "text"),
    [
        (tuple((f"k{n}", "v") for n in range(33)), "The group state has more than 32 keys."),
        ((("", "v"),), "Group state keys must be 1 to 128 characters long."),
        ((("k" * 129, "v"),), "Group state keys must be 1 to 128 characters long."),
        ((("k", "v" * 1025),), "The group state value of 'k' is longer than 1024 characters."),
        (tuple((f"k{n}", "\u00e9" * 500) for n in range(5)), "exceeds 4096 bytes."),
    ],
)
def test_limits(state: tuple[tuple[str, str], ...], text: str) -> None:
    """A record breaking a limit is refused as BadRequest and changes nothing."""
    store = GroupStateStore()
    store.set("room", "c1", None, TYPING, 1)
    with pytest.raises(GroupStateError) as info:
        store.set("room", "c1", None, state, 2)
    assert info.value.name == "BadRequest"
    assert str(info.value).endswith(text)
    assert store.snapshot("room").items[0].state == TYPING


def test_subscription_limit() -> None:
    """A connection subscribes to at most ``max_subscriptions`` groups; resubscribing is free."""
    store = GroupStateStore(GroupStateLimits(max_subscriptions=2))
    store.subscribe("a", "c1")
    store.subscribe("b", "c1")
    store.subscribe("a", "c1")
    with pytest.raises(GroupStateError):
        store.subscribe("c", "c1")
    store.unsubscribe("a", "c1")
    store.subscribe("c", "c1")


def test_roles() -> None:
    """The chat roles, for every group or one."""
    assert may_set(["webpubsub.setGroupState"], "room")
    assert may_set(["webpubsub.setGroupState.room"], "room")
    assert not may_set(["webpubsub.setGroupState.other"], "room")
    assert not may_set(["webpubsub.getGroupState"], "room")
    assert may_get(["webpubsub.joinLeaveGroup", "webpubsub.getGroupState"], "room")
    assert not may_get([], "room")


def test_records_cross_a_network_unchanged() -> None:
    """Records round-trip through msgpack, for the engine to share them."""
    record = GroupStateRecord("c1", None, TYPING, 1741652400000)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(record), type=GroupStateRecord) == record
