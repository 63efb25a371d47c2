"""Redis engine: commands, queries and the registry across nodes (real redis-server)."""

from __future__ import annotations

import pytest

from hubbub.broker.base import Member
from hubbub.core.commands import (
    AddToGroup,
    AddUserToGroup,
    CheckPermission,
    CloseConnections,
    GrantPermission,
    GroupsByFilter,
    RemoveFromGroup,
    RemoveUserFromGroup,
    RevokePermission,
    Target,
)
from hubbub.core.roles import Permission
from hubbub.types import ConnectionId, GroupName, HubName, UserId
from tests.broker._util import HUB, settle
from tests.broker.conftest import StartNode

pytestmark = pytest.mark.redis

G = GroupName("room")
SEND = Permission.SEND_TO_GROUP


def ids(members: list[Member]) -> list[str]:
    return [m.connection_id for m in members]


async def test_add_user_to_group_sums_matches_across_nodes(start_node: StartNode) -> None:
    """AddUserToGroup counts the user's connections on every node (the 404 rule needs it)."""
    a, b, c = await start_node("a"), await start_node("b"), await start_node("c")
    a.connect(HUB, "a1", user="ann")
    b.connect(HUB, "b1", user="ann")
    b.connect(HUB, "b2", user="ann")
    b.connect(HUB, "b3", user="bob")
    await settle(a, b)
    assert await c.broker.command(AddUserToGroup(HUB, UserId("ann"), G)) == 3
    assert await c.broker.command(AddUserToGroup(HUB, UserId("nobody"), G)) == 0
    # The registry shows the joins as soon as the command returned.
    assert ids(await c.presence.group_members(HUB, G, None, 10)) == ["a1", "b1", "b2"]
    assert b.get(HUB, "b1").groups == {G}
    assert await a.broker.command(RemoveUserFromGroup(HUB, UserId("ann"), G)) == 3
    assert not await c.presence.group_exists(HUB, G)
    assert await a.broker.command(RemoveUserFromGroup(HUB, UserId("ann"), None)) == 3


async def test_connection_commands_reach_the_owner(start_node: StartNode) -> None:
    """Connection commands are applied by the node holding the connection, 1 or 0."""
    a, b = await start_node("a"), await start_node("b")
    b.connect(HUB, "b1")
    a.connect(HUB, "a1")
    await settle(a, b)
    b1 = ConnectionId("b1")
    assert await a.broker.command(AddToGroup(HUB, b1, G)) == 1
    assert await a.broker.command(AddToGroup(HUB, ConnectionId("a1"), G)) == 1  # local
    assert await a.broker.command(AddToGroup(HUB, ConnectionId("zz"), G)) == 0
    assert ids(await a.presence.group_members(HUB, G, None, 10)) == ["a1", "b1"]
    assert await a.broker.command(RemoveFromGroup(HUB, b1, G)) == 1
    assert ids(await a.presence.group_members(HUB, G, None, 10)) == ["a1"]
    assert await a.broker.command(AddToGroup(HUB, b1, GroupName("x"))) == 1
    assert await a.broker.command(RemoveFromGroup(HUB, b1, None)) == 1
    assert await a.presence.connection_groups(HUB, b1) == []


async def test_permissions_on_a_connection_held_elsewhere(start_node: StartNode) -> None:
    """Grant, revoke and check permission act on the owner node's connection."""
    a, b, c = await start_node("a"), await start_node("b"), await start_node("c")
    b.connect(HUB, "b1")
    await settle(b)
    b1 = ConnectionId("b1")
    assert not await c.broker.query(CheckPermission(HUB, b1, SEND, "g"))
    assert await a.broker.command(GrantPermission(HUB, b1, SEND, "g")) == 1
    assert await c.broker.query(CheckPermission(HUB, b1, SEND, "g"))
    assert not await c.broker.query(CheckPermission(HUB, b1, SEND, "other"))
    # While commands still include CheckPermission, command() answers it as a query.
    assert await c.broker.command(CheckPermission(HUB, b1, SEND, "g")) == 1
    assert await b.broker.query(CheckPermission(HUB, b1, SEND, "g"))  # local
    assert await a.broker.command(RevokePermission(HUB, b1, SEND, "g")) == 1
    assert not await c.broker.query(CheckPermission(HUB, b1, SEND, "g"))
    assert not await c.broker.query(CheckPermission(HUB, ConnectionId("zz"), SEND, None))
    assert await a.broker.command(GrantPermission(HUB, ConnectionId("zz"), SEND, None)) == 0


async def test_closes_by_target_count_across_nodes(start_node: StartNode) -> None:
    """Close by group, user, hub and connection reach every node holding a target."""
    a, b, c = await start_node("a"), await start_node("b"), await start_node("c")
    a.connect(HUB, "a1", user="ann", groups=["room"])
    b.connect(HUB, "b1", user="bob", groups=["room"])
    b.connect(HUB, "b2", user="ann")
    c.connect(HUB, "c1", user="cat")
    c.connect(HUB, "c2", user="cat")
    await settle(a, b, c)
    assert await c.broker.command(CloseConnections(HUB, Target.GROUP, "room", "bye")) == 2
    assert b.get(HUB, "b2").closed is None
    assert await a.broker.command(CloseConnections(HUB, Target.USER, "ann", "bye")) == 1
    assert await a.broker.command(CloseConnections(HUB, Target.CONNECTION, "c1", "bye")) == 1
    assert await a.broker.command(CloseConnections(HUB, Target.CONNECTION, "c1", "bye")) == 0
    assert ids(await a.presence.hub_connections(HUB, None, 10)) == ["c2"]
    excluded = frozenset({ConnectionId("c2")})
    assert await b.broker.command(CloseConnections(HUB, Target.HUB, "", "x", excluded)) == 0
    assert await b.broker.command(CloseConnections(HUB, Target.HUB, "", "x")) == 1
    assert not await a.presence.connection_exists(HUB, ConnectionId("c2"))
    assert await a.presence.hubs() == []


async def test_groups_by_filter_reaches_every_node_of_the_hub(start_node: StartNode) -> None:
    """``:addToGroups`` goes to every node with a connection in the hub, summed."""
    a, b, c = await start_node("a"), await start_node("b"), await start_node("c")
    a.connect(HUB, "a1")
    b.connect(HUB, "b1")
    b.connect(HUB, "b2")
    c.connect("elsewhere", "c1")
    await settle(a, b, c)
    assert await c.broker.command(GroupsByFilter(HUB, (G, GroupName("g2")), None, True)) == 3
    assert ids(await c.presence.group_members(HUB, GroupName("g2"), None, 10)) == [
        "a1",
        "b1",
        "b2",
    ]
    assert c.commands == []


async def test_registry_reads_and_paging(start_node: StartNode) -> None:
    """Presence: exists checks, group pages in id order with after/limit, listings."""
    a, b, c = await start_node("a"), await start_node("b"), await start_node("c")
    nodes = [a, b, c]
    for i in range(25):
        node = nodes[i % 3]
        node.connect(HUB, f"id{i:02d}", user=f"u{i % 4}", groups=["room"] if i % 2 == 0 else [])
    a.connect("other", "o1")
    await settle(*nodes)
    p = b.presence
    assert await p.connection_exists(HUB, ConnectionId("id07"))
    assert not await p.connection_exists(HUB, ConnectionId("id99"))
    assert not await p.connection_exists(HubName("other"), ConnectionId("id07"))
    assert await p.user_exists(HUB, UserId("u3"))
    assert not await p.user_exists(HUB, UserId("u9"))
    assert await p.group_exists(HUB, G)
    assert not await p.group_exists(HUB, GroupName("none"))
    evens = [f"id{i:02d}" for i in range(0, 25, 2)]
    first = await p.group_members(HUB, G, None, 5)
    assert ids(first) == evens[:5]
    assert first[1] == Member(ConnectionId("id02"), UserId("u2"))
    rest = await p.group_members(HUB, G, first[-1].connection_id, 100)
    assert ids(rest) == evens[5:]
    assert await p.group_members(HUB, G, ConnectionId("id24"), 5) == []
    assert ids(await p.group_members(HUB, G, ConnectionId("id05"), 2)) == ["id06", "id08"]
    assert len(await p.hub_connections(HUB, None, 1000)) == 25
    assert ids(await p.hub_connections(HUB, ConnectionId("id22"), 10)) == ["id23", "id24"]
    assert ids(await p.user_connections(HUB, UserId("u1"))) == [
        "id01",
        "id05",
        "id09",
        "id13",
        "id17",
        "id21",
    ]
    assert await p.connection_groups(HUB, ConnectionId("id04")) == [G]
    assert await p.hubs() == ["chat", "other"]
    assert await p.owner(HUB, ConnectionId("id04")) == "b"
    # Anonymous connections have no user.
    assert await p.hub_connections(HubName("other"), None, 10) == [Member(ConnectionId("o1"), None)]


async def test_disconnect_removes_every_trace(start_node: StartNode) -> None:
    """A removed connection leaves its groups, its user and (when last) its hub."""
    a, b = await start_node("a"), await start_node("b")
    conn = a.connect(HUB, "a1", user="ann", groups=["g1", "g2"])
    await settle(a)
    a.presence.remove_connection(HUB, conn.id, conn.user_id)  # not via leave(): directly
    await settle(a)
    p = b.presence
    assert not await p.connection_exists(HUB, conn.id)
    assert not await p.user_exists(HUB, UserId("ann"))
    assert not await p.group_exists(HUB, GroupName("g1"))
    assert await p.connection_groups(HUB, conn.id) == []
    assert await p.hubs() == []


async def test_paging_of_a_large_group(start_node: StartNode) -> None:
    """A group of 2,500 members pages in order, whatever the page size."""
    a, b = await start_node("a"), await start_node("b")
    for i in range(2500):
        (a if i % 2 else b).connect(HUB, f"c{i:05d}", groups=["big"])
    await settle(a, b)
    members = await a.presence.group_members(HUB, GroupName("big"), None, 5000)
    assert ids(members) == [f"c{i:05d}" for i in range(2500)]
    seen: list[str] = []
    after = None
    while True:
        page = await a.presence.group_members(HUB, GroupName("big"), after, 200)
        if not page:
            break
        seen += ids(page)
        after = page[-1].connection_id
    assert seen == ids(members)


async def test_old_owner_cannot_remove_a_connection_taken_over(start_node: StartNode) -> None:
    """After a hand-over the old owner's late cleanup (leave, remove) leaves the new
    owner's registration alone."""
    a, b = await start_node("a"), await start_node("b")
    conn = b.connect(HUB, "s1", user="ann", groups=["room"])
    await settle(b)
    a.presence.add_connection(HUB, conn.id, conn.user_id)  # the session resumed on a
    a.presence.join(HUB, G, conn.id)
    await settle(a)
    b.disconnect(conn)  # b's cleanup arrives after the take-over
    await settle(b)
    p = a.presence
    assert await p.owner(HUB, conn.id) == "a"
    assert ids(await p.group_members(HUB, G, None, 10)) == ["s1"]
    assert ids(await p.user_connections(HUB, UserId("ann"))) == ["s1"]
    b.presence.join(HUB, GroupName("late"), conn.id)  # nor join it anywhere
    await settle(b)
    assert await p.connection_groups(HUB, conn.id) == [G]
