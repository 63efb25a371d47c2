"""Group state spoken by hand over real sockets: set, subscribe, snapshot, updates, unsubscribe.

The newest JavaScript client's protocol object does the same in tests/compat/test_node22_sdk.py;
here the rules around it: roles, limits, late subscribers, leaving (any origin), closing,
a group with no members, reliable sessions across a dropped socket, a fresh connection, and
protobuf.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from _proxy import CuttingProxy
from _wire import RELIABLE, ROLE_JOIN, ROLE_SEND, Client, Wire
from azure.messaging.webpubsubservice.aio import WebPubSubServiceClient
from test_reliable import Net, ack, resume, settle

from hubbub.protocol import webpubsub_pb2 as pb
from tests.conftest import Server

SET = "webpubsub.setGroupState"
GET = "webpubsub.getGroupState"
ROLES = [ROLE_JOIN, ROLE_SEND, SET, GET]
PROTOBUF = "protobuf.webpubsub.azure.v1"


@pytest.fixture
async def net(server: Server) -> AsyncIterator[Net]:
    """As in test_reliable: a direct wire and one through a proxy that can cut it."""
    async with CuttingProxy(server.host, server.port) as proxy:
        proxied = dataclasses.replace(server, port=proxy.port)
        async with Wire(server) as direct, Wire(proxied) as via:
            yield Net(server, direct, via, proxy)
        await settle(proxy)


async def acked(client: Client, message: dict[str, Any]) -> dict[str, Any]:
    """The ack of ``message`` as ``{"success": ...}`` plus the error, if any."""
    ack = await client.request(message)
    if ack["success"]:
        return {"success": True}
    return {"success": False, "name": ack["error"]["name"], "message": ack["error"]["message"]}


OK = {"success": True}


def set_state(group: str, state: dict[str, str] | None) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "setGroupState", "group": group}
    if state is not None:
        message["state"] = state
    return message


def subscribe(group: str) -> dict[str, Any]:
    return {"type": "subscribeGroupState", "group": group}


def items(message: dict[str, Any], client: dict[str, Client]) -> list[tuple[str, Any]]:
    """``(owner, state)`` per item, the owners named as in ``client``; checks updatedAt."""
    names = {c.connection_id: name for name, c in client.items()}
    assert all(isinstance(item["updatedAt"], int) for item in message["items"]), message
    return [(names[item["connectionId"]], item.get("state")) for item in message["items"]]


async def test_a_late_subscriber_sees_the_state_then_every_change(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        alice = await wire.connect(hub, user="alice", roles=ROLES, groups=["room"])
        bob = await wire.connect(hub, user="bob", roles=ROLES, groups=["room"])
        named = {"alice": alice, "bob": bob}
        assert await acked(alice, set_state("room", {"activity": "typing"})) == OK
        assert await acked(bob, subscribe("room")) == OK
        snapshot = await bob.recv_json()
        assert (snapshot["type"], snapshot["group"]) == ("groupStateSnapshot", "room")
        assert items(snapshot, named) == [("alice", {"activity": "typing"})]
        assert snapshot["items"][0]["userId"] == "alice"
        before = snapshot["items"][0]["updatedAt"]
        assert await acked(alice, set_state("room", {"activity": "idle", "mood": "ok"})) == OK
        update = await bob.recv_json()
        assert update["type"] == "groupStateUpdate"
        assert items(update, named) == [("alice", {"activity": "idle", "mood": "ok"})]
        assert update["items"][0]["updatedAt"] > before
        assert await acked(bob, set_state("room", {"me": "too"})) == OK
        assert items(await bob.recv_json(), named) == [("bob", {"me": "too"})]  # own, too
        await alice.ping_pong()  # alice did not subscribe: no updates
        assert await acked(alice, set_state("room", None)) == OK
        assert items(await bob.recv_json(), named) == [("alice", None)]
        assert await acked(alice, set_state("room", None)) == OK  # nothing left to clear
        assert await acked(bob, {"type": "unsubscribeGroupState", "group": "room"}) == OK
        assert await acked(bob, {"type": "unsubscribeGroupState", "group": "room"}) == OK
        assert await acked(alice, set_state("room", {"activity": "back"})) == OK
        await bob.ping_pong()


async def test_membership_and_roles_are_needed(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        scoped = await wire.connect(
            hub, user="s", roles=[ROLE_JOIN, f"{SET}.room", f"{GET}.room"], groups=["room", "hall"]
        )
        outsider = await wire.connect(hub, user="o", roles=ROLES)
        assert await acked(outsider, set_state("room", {"a": "1"})) == {
            "success": False,
            "name": "Forbidden",
            "message": "The client is not a member of group 'room'.",
        }
        assert (await acked(outsider, subscribe("room")))["name"] == "Forbidden"
        assert await acked(scoped, set_state("room", {"a": "1"})) == OK
        assert await acked(scoped, set_state("hall", {"a": "1"})) == {
            "success": False,
            "name": "Forbidden",
            "message": "The client has no permission to set the state of group 'hall'.",
        }
        assert await acked(scoped, subscribe("hall")) == {
            "success": False,
            "name": "Forbidden",
            "message": "The client has no permission to get the state of group 'hall'.",
        }
        assert await acked(scoped, subscribe("room")) == OK
        assert (await scoped.recv_json())["type"] == "groupStateSnapshot"
        assert (await acked(scoped, set_state(" ", {"a": "1"})))["name"] == "BadRequest"


async def test_limits_are_bad_requests(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        alice = await wire.connect(hub, user="alice", roles=ROLES, groups=["room"])
        too_many = {f"k{n}": "v" for n in range(33)}
        assert await acked(alice, set_state("room", too_many)) == {
            "success": False,
            "name": "BadRequest",
            "message": "The group state has more than 32 keys.",
        }
        long_value = {"k": "v" * 1025}
        assert (await acked(alice, set_state("room", long_value)))["name"] == "BadRequest"
        for n in range(100):
            await alice.join(f"g{n}")
            assert await acked(alice, subscribe(f"g{n}")) == OK
            assert (await alice.recv_json())["items"] == []
        assert await acked(alice, subscribe("room")) == {
            "success": False,
            "name": "BadRequest",
            "message": "A connection may subscribe to the state of at most 100 groups.",
        }


async def test_leaving_by_any_way_clears_the_record(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        watcher = await wire.connect(hub, user="w", roles=ROLES, groups=["room"])
        named = {"w": watcher}
        assert await acked(watcher, subscribe("room")) == OK
        assert (await watcher.recv_json())["items"] == []
        service = WebPubSubServiceClient.from_connection_string(server.connection_string, hub=hub)
        async with service:
            for name in ("by-client", "by-rest", "by-user", "by-close"):
                client = await wire.connect(hub, user=name, roles=ROLES, groups=["room"])
                named[name] = client
                assert await acked(client, set_state("room", {"who": name})) == OK
                assert items(await watcher.recv_json(), named) == [(name, {"who": name})]
                if name == "by-client":
                    await client.request({"type": "leaveGroup", "group": "room"})
                elif name == "by-rest":
                    await service.remove_connection_from_group("room", client.connection_id)
                elif name == "by-user":
                    await service.remove_user_from_all_groups(name)
                else:
                    await client.ws.close()
                assert items(await watcher.recv_json(), named) == [(name, None)]
            # Everyone else is gone: the group's state is the watcher's own, i.e. none.
            late = await wire.connect(hub, user="late", roles=ROLES, groups=["room"])
            assert await acked(late, subscribe("room")) == OK
            assert (await late.recv_json())["items"] == []


async def test_a_group_without_members_has_no_state(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        alice = await wire.connect(hub, user="alice", roles=ROLES, groups=["room"])
        assert await acked(alice, set_state("room", {"a": "1"})) == OK
        await alice.request({"type": "leaveGroup", "group": "room"})
        bob = await wire.connect(hub, user="bob", roles=ROLES, groups=["room"])
        assert await acked(bob, subscribe("room")) == OK
        assert (await bob.recv_json())["items"] == []


async def test_a_reliable_session_keeps_its_state_and_gets_missed_updates(
    net: Net, hub: str
) -> None:
    watcher = await net.via.connect(
        hub, user="w", roles=ROLES, groups=["room"], protocols=(RELIABLE,)
    )
    alice = await net.direct.connect(hub, user="alice", roles=ROLES, groups=["room"])
    named = {"w": watcher, "alice": alice}
    assert await acked(watcher, set_state("room", {"status": "here"})) == OK
    assert await acked(watcher, subscribe("room")) == OK
    snapshot = await watcher.recv_json()
    assert (items(snapshot, named), snapshot["sequenceId"]) == ([("w", {"status": "here"})], 1)
    await ack(watcher, 1)
    await net.drop()
    # Detached: the record stays (a snapshot still shows it), updates wait in the session.
    assert await acked(alice, subscribe("room")) == OK
    assert items(await alice.recv_json(), named) == [("w", {"status": "here"})]
    assert await acked(alice, set_state("room", {"status": "away"})) == OK
    assert items(await alice.recv_json(), named) == [("alice", {"status": "away"})]
    again = await resume(net.via, hub, watcher)
    missed = await again.recv_json()
    assert (missed["type"], items(missed, named), missed["sequenceId"]) == (
        "groupStateUpdate",
        [("alice", {"status": "away"})],
        2,
    )
    assert await acked(alice, set_state("room", None)) == OK  # still subscribed after recovery
    assert items(await again.recv_json(), named) == [("alice", None)]


async def test_a_new_connection_of_the_same_user_starts_without_state(
    server: Server, hub: str
) -> None:
    async with Wire(server) as wire:
        watcher = await wire.connect(hub, user="w", roles=ROLES, groups=["room"])
        old = await wire.connect(
            hub, user="alice", roles=ROLES, groups=["room"], protocols=(RELIABLE,)
        )
        named = {"w": watcher, "old": old}
        assert await acked(old, set_state("room", {"a": "1"})) == OK
        assert await acked(watcher, subscribe("room")) == OK
        assert items(await watcher.recv_json(), named) == [("old", {"a": "1"})]
        await old.ws.close()  # 1000: the session ends
        assert items(await watcher.recv_json(), named) == [("old", None)]
        new = await wire.connect(hub, user="alice", roles=ROLES, groups=["room"])
        named["new"] = new
        assert await acked(new, subscribe("room")) == OK
        assert items(await new.recv_json(), named) == []


async def test_protobuf_group_state(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(
            hub, user="p", roles=ROLES, groups=["room"], protocols=(PROTOBUF,)
        )
        down = pb.DownstreamMessage()
        down.ParseFromString(await client.recv_bytes())
        connection_id = down.system_message.connected_message.connection_id
        up = pb.UpstreamMessage()
        up.subscribe_group_state_message.group = "room"
        up.subscribe_group_state_message.ack_id = 1
        await client.ws.send_bytes(up.SerializeToString())
        down.ParseFromString(await client.recv_bytes())
        assert (down.ack_message.ack_id, down.ack_message.success) == (1, True)
        down.ParseFromString(await client.recv_bytes())
        assert down.WhichOneof("message") == "group_state_snapshot_message"
        assert down.group_state_snapshot_message.group == "room"
        up = pb.UpstreamMessage()
        up.set_group_state_message.group = "room"
        up.set_group_state_message.ack_id = 2
        up.set_group_state_message.state.entries["k"] = "v"
        await client.ws.send_bytes(up.SerializeToString())
        down.ParseFromString(await client.recv_bytes())
        assert (down.ack_message.ack_id, down.ack_message.success) == (2, True)
        down.ParseFromString(await client.recv_bytes())
        (item,) = down.group_state_update_message.items
        assert (item.connection_id, item.user_id, dict(item.state.entries)) == (
            connection_id,
            "p",
            {"k": "v"},
        )
        assert item.updated_at > 0
        up = pb.UpstreamMessage()
        up.set_group_state_message.group = "room"
        up.set_group_state_message.ack_id = 3
        await client.ws.send_bytes(up.SerializeToString())
        down.ParseFromString(await client.recv_bytes())
        down.ParseFromString(await client.recv_bytes())
        (item,) = down.group_state_update_message.items
        assert not item.HasField("state")


async def test_a_repeated_ack_id_is_a_duplicate(server: Server, hub: str) -> None:
    async with Wire(server) as wire:
        alice = await wire.connect(hub, user="alice", roles=ROLES, groups=["room"])
        for expected in (True, False):
            await alice.send_json({**set_state("room", {"a": "1"}), "ackId": 9})
            ack = await alice.recv_json()
            assert ack["success"] is expected
        assert ack["error"]["name"] == "Duplicate"
