"""azure-messaging-webpubsubservice (sync) against hubbub: every data-plane route.

Routes the SDK has no method for (`:addToGroups`, `:removeFromGroups`, health, and
requests the SDK cannot malform) are called with a self-signed bearer token.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import jwt
import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpResponse
from azure.messaging.webpubsubclient.models import (
    SendMessageError,
    WebPubSubDataType,
    WebPubSubProtocolType,
)
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from azure.messaging.webpubsubservice._operations._operations import (
    WebPubSubServiceClientOperationsMixin as GeneratedOperations,
)
from websockets.exceptions import InvalidStatus

from tests.compat._clients import (
    Clients,
    RawClient,
    ServerLike,
    assert_error,
    hub_path,
    members,
    rest_call,
    rest_token,
    rest_url,
    service,
)
from tests.conftest import Server

pytestmark = [pytest.mark.compat, pytest.mark.timeout(20)]


@pytest.fixture
def server(server_either_lane: Server) -> Server:
    """Every test twice: with the REST fast lane, and with aiohttp answering every request."""
    return server_either_lane


TEXT = "text/plain"
TEXT_DATA: Final = WebPubSubDataType.TEXT
OCTETS = "application/octet-stream"


@pytest.fixture
def clients(server: ServerLike, hub: str) -> Iterator[Clients]:
    factory = Clients(server, hub)
    yield factory
    factory.close_all()


@pytest.fixture
def svc(clients: Clients) -> WebPubSubServiceClient:
    return clients.svc


def _groups_op(server: ServerLike, hub: str, op: str, body: Any) -> Any:
    url = rest_url(server, hub_path(hub, f":{op}"))
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return rest_call(server, "POST", url, body=payload, content_type="application/json")


def _wait_gone(svc: WebPubSubServiceClient, cid: str) -> None:
    deadline = time.monotonic() + 5
    while svc.connection_exists(cid):
        assert time.monotonic() < deadline, f"connection {cid} still exists"
        time.sleep(0.02)


def _status(call: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """The HTTP status of an SDK call that must fail."""
    with pytest.raises(HttpResponseError) as exc:
        call(*args, **kwargs)
    return int(exc.value.status_code or 0)


def _list(svc: WebPubSubServiceClient, group: str, **kwargs: Any) -> list[Any]:
    return list(svc.list_connections(group=group, **kwargs))


# ----------------------------------------------------------- health


def test_health_head(server: ServerLike) -> None:
    resp = rest_call(server, "HEAD", server.endpoint + "/api/health", auth=False)
    assert resp.status == 200
    assert resp.body == b""


# ----------------------------------------------------------- send to all


def test_send_to_all_json_dict(clients: Clients, svc: WebPubSubServiceClient) -> None:
    sdk = clients.sdk()
    js = clients.json()
    plain = clients.raw()
    payload = {"greeting": "hello", "n": 1, "nested": {"ok": True, "list": [1, 2]}}

    svc.send_to_all(payload)

    msg = sdk.server_messages.wait_for()
    assert (msg.data_type, msg.data, msg.sequence_id) == ("json", payload, 1)
    frame = js.wait_json(lambda f: f.get("type") == "message")
    assert frame == {"type": "message", "from": "server", "dataType": "json", "data": payload}
    # A plain client gets the request body verbatim, as a text frame.
    assert plain.frames.wait_for() == json.dumps(payload)


def test_send_to_all_json_string_keeps_quotes(
    clients: Clients, svc: WebPubSubServiceClient
) -> None:
    sdk = clients.sdk()
    plain = clients.raw()

    svc.send_to_all("just a string")  # default content type: application/json

    assert plain.frames.wait_for() == '"just a string"'
    msg = sdk.server_messages.wait_for()
    assert (msg.data_type, msg.data) == ("json", "just a string")


def test_send_to_all_text_plain(clients: Clients, svc: WebPubSubServiceClient) -> None:
    sdk = clients.sdk()
    js = clients.json()
    plain = clients.raw()

    svc.send_to_all("hello, plain text", content_type=TEXT)

    msg = sdk.server_messages.wait_for()
    assert (msg.data_type, msg.data) == ("text", "hello, plain text")
    frame = js.wait_json(lambda f: f.get("type") == "message")
    assert frame == {
        "type": "message",
        "from": "server",
        "dataType": "text",
        "data": "hello, plain text",
    }
    received = plain.frames.wait_for()
    assert isinstance(received, str)
    assert received == "hello, plain text"


def test_send_to_all_binary(clients: Clients, svc: WebPubSubServiceClient) -> None:
    sdk = clients.sdk()
    js = clients.json()
    plain = clients.raw()
    blob = bytes(range(256))

    svc.send_to_all(blob, content_type=OCTETS)  # type: ignore[call-overload]

    msg = sdk.server_messages.wait_for()
    assert msg.data_type == "binary"
    assert bytes(msg.data) == blob
    frame = js.wait_json(lambda f: f.get("type") == "message")
    assert (frame["from"], frame["dataType"]) == ("server", "binary")
    assert base64.b64decode(frame["data"]) == blob
    received = plain.frames.wait_for()
    assert isinstance(received, bytes)
    assert received == blob


def test_send_to_all_text_charset_and_unicode(
    clients: Clients, svc: WebPubSubServiceClient
) -> None:
    sdk = clients.sdk()
    plain = clients.raw()

    svc.send_to_all("zoë ✓ 漢字", content_type="text/plain; charset=utf-8")
    svc.send_to_all({"name": "zoë ✓"})

    assert plain.frames_until("zoë ✓ 漢字") == ["zoë ✓ 漢字"]
    assert json.loads(plain.frames.wait_count(2)[1]) == {"name": "zoë ✓"}
    assert sdk.data_until({"name": "zoë ✓"}) == ["zoë ✓ 漢字", {"name": "zoë ✓"}]


def test_send_to_all_excluded(clients: Clients, svc: WebPubSubServiceClient) -> None:
    a, b, c = clients.sdk(), clients.sdk(), clients.sdk()

    svc.send_to_all(
        "not-for-a-or-b", content_type=TEXT, excluded=[a.connection_id, b.connection_id]
    )
    svc.send_to_all("not-for-c", content_type=TEXT, excluded=[c.connection_id])
    svc.send_to_all("marker", content_type=TEXT)

    assert a.data_until("marker") == ["not-for-c", "marker"]
    assert b.data_until("marker") == ["not-for-c", "marker"]
    assert c.data_until("marker") == ["not-for-a-or-b", "marker"]


def test_send_to_all_filter(clients: Clients, svc: WebPubSubServiceClient) -> None:
    u1 = clients.sdk(user_id="u1", groups=["gx"])
    u2 = clients.sdk(user_id="u2")
    anon = clients.sdk()

    svc.send_to_all("f1", content_type=TEXT, filter="userId eq 'u1'")
    svc.send_to_all(
        "f2", content_type=TEXT, filter=f"connectionId eq '{anon.connection_id}' or userId eq 'u2'"
    )
    svc.send_to_all("f3", content_type=TEXT, filter="'gx' in groups")
    svc.send_to_all("f4", content_type=TEXT, filter="startswith(userId, 'u')")
    svc.send_to_all("f5", content_type=TEXT, filter="userId in ('u2', 'nobody')")
    svc.send_to_all("marker", content_type=TEXT)

    assert u1.data_until("marker") == ["f1", "f3", "f4", "marker"]
    assert u2.data_until("marker") == ["f2", "f4", "f5", "marker"]
    assert anon.data_until("marker") == ["f2", "marker"]


# ----------------------------------------------------------- user / connection


def test_send_to_user_and_filter(clients: Clients, svc: WebPubSubServiceClient) -> None:
    alice1 = clients.sdk(user_id="alice", groups=["vip"])
    alice2 = clients.sdk(user_id="alice")
    bob = clients.sdk(user_id="bob")
    alice_plain = clients.raw(user_id="alice")

    svc.send_to_user("alice", {"to": "alice"})
    svc.send_to_user("alice", "vip-only", content_type=TEXT, filter="'vip' in groups")
    svc.send_to_user("nobody", "void", content_type=TEXT)  # unknown user: accepted, no-op
    svc.send_to_all("marker", content_type=TEXT)

    assert alice1.data_until("marker") == [{"to": "alice"}, "vip-only", "marker"]
    assert alice2.data_until("marker") == [{"to": "alice"}, "marker"]
    assert bob.data_until("marker") == ["marker"]
    assert alice_plain.frames_until("marker") == [json.dumps({"to": "alice"}), "marker"]
    msg = alice2.server_messages.wait_for(lambda m: m.data == {"to": "alice"})
    assert msg.data_type == "json"


def test_send_to_connection(clients: Clients, svc: WebPubSubServiceClient) -> None:
    a, b = clients.sdk(), clients.sdk()

    svc.send_to_connection(a.connection_id, {"direct": True})
    svc.send_to_connection(a.connection_id, "direct text", content_type=TEXT)
    svc.send_to_connection(a.connection_id, b"\x00direct\xff", content_type=OCTETS)  # type: ignore[call-overload]
    svc.send_to_connection("no-such-connection", "void", content_type=TEXT)  # accepted, no-op
    svc.send_to_all("marker", content_type=TEXT)

    assert a.data_until("marker") == [
        {"direct": True},
        "direct text",
        base64.b64encode(b"\x00direct\xff").decode(),
        "marker",
    ]
    assert b.data_until("marker") == ["marker"]
    binary = a.server_messages.wait_for(lambda m: m.data_type == "binary")
    assert bytes(binary.data) == b"\x00direct\xff"


# ----------------------------------------------------------- groups


def test_send_to_group_excluded_and_filter(clients: Clients, svc: WebPubSubServiceClient) -> None:
    a = clients.sdk(user_id="u1", groups=["room"])
    b = clients.sdk(user_id="u2", groups=["room"])
    c = clients.sdk(user_id="u3")

    svc.send_to_group("room", "all-members", content_type=TEXT)
    svc.send_to_group("room", "not-a", content_type=TEXT, excluded=[a.connection_id])
    svc.send_to_group("room", "only-u1", content_type=TEXT, filter="userId eq 'u1'")
    svc.send_to_group("empty-group", "void", content_type=TEXT)  # no members: accepted
    svc.send_to_all("marker", content_type=TEXT)

    assert a.data_until("marker") == ["all-members", "only-u1", "marker"]
    assert b.data_until("marker") == ["all-members", "not-a", "marker"]
    assert c.data_until("marker") == ["marker"]
    msg = a.group_messages.wait_for(lambda m: m.data == "all-members")
    assert (msg.group, msg.data_type, msg.from_user_id) == ("room", "text", None)
    frame = a.wire.wait_for(lambda f: f.get("data") == "all-members")
    assert frame["from"] == "group"
    assert frame["group"] == "room"
    assert frame.get("fromUserId") is None


def test_send_to_group_content_types_to_plain_client(
    clients: Clients, svc: WebPubSubServiceClient
) -> None:
    plain = clients.raw(groups=["rg"])
    payload = {"k": [1, "two", None]}

    svc.send_to_group("rg", payload)
    svc.send_to_group("rg", "group text", content_type=TEXT)
    svc.send_to_group("rg", b"\x01\x02\x03", content_type=OCTETS)  # type: ignore[call-overload]
    svc.send_to_group("rg", "marker", content_type=TEXT)

    assert plain.frames_until("marker") == [
        json.dumps(payload),
        "group text",
        b"\x01\x02\x03",
        "marker",
    ]


def test_message_ttl_seconds(
    server: ServerLike, hub: str, clients: Clients, svc: WebPubSubServiceClient
) -> None:
    # The SDK's send_* methods do not forward `message_ttl_seconds`; it goes in as a raw param.
    a = clients.sdk(user_id="ttl", groups=["g"])

    svc.send_to_all("ttl-all", content_type=TEXT, params={"messageTtlSeconds": 10})
    svc.send_to_user("ttl", "ttl-user", content_type=TEXT, params={"messageTtlSeconds": 300})
    svc.send_to_group("g", "ttl-group", content_type=TEXT, params={"messageTtlSeconds": 0})
    svc.send_to_connection(
        a.connection_id, "ttl-conn", content_type=TEXT, params={"messageTtlSeconds": 60}
    )

    assert a.data_until("ttl-conn") == ["ttl-all", "ttl-user", "ttl-group", "ttl-conn"]
    for bad in (301, -1, "soon"):
        params = {"messageTtlSeconds": bad}
        assert _status(svc.send_to_all, "x", content_type=TEXT, params=params) == 400
        assert _status(svc.send_to_group, "g", "x", content_type=TEXT, params=params) == 400
    url = rest_url(server, hub_path(hub, "users", "ttl", ":send"), [("messageTtlSeconds", "301")])
    assert_error(rest_call(server, "POST", url, body=b"x", content_type=TEXT), 400)


def test_add_and_remove_connection_to_group(clients: Clients, svc: WebPubSubServiceClient) -> None:
    a, b = clients.sdk(), clients.sdk()
    assert not svc.group_exists("g")

    svc.add_connection_to_group("g", a.connection_id)
    svc.add_connection_to_group("g", a.connection_id)  # idempotent
    assert svc.group_exists("g")
    assert members(svc, "g") == {a.connection_id}
    svc.send_to_group("g", "in-g", content_type=TEXT)
    svc.remove_connection_from_group("g", a.connection_id)
    assert not svc.group_exists("g")
    svc.send_to_group("g", "after-remove", content_type=TEXT)
    svc.remove_connection_from_group("g", "no-such-connection")  # 204 as well
    svc.send_to_all("marker", content_type=TEXT)

    assert a.data_until("marker") == ["in-g", "marker"]
    assert b.data_until("marker") == ["marker"]
    assert a.group_messages.wait_for().group == "g"


def test_add_unknown_connection_to_group_is_404(svc: WebPubSubServiceClient) -> None:
    with pytest.raises(ResourceNotFoundError) as exc:
        svc.add_connection_to_group("g", "no-such-connection")
    assert exc.value.status_code == 404


def test_add_user_to_group_affects_current_connections_only(
    clients: Clients, svc: WebPubSubServiceClient
) -> None:
    first = clients.sdk(user_id="carol")
    svc.add_user_to_group("team", "carol")
    later = clients.sdk(user_id="carol")

    svc.send_to_group("team", "team-msg", content_type=TEXT)
    svc.send_to_user("carol", "marker", content_type=TEXT)

    assert first.data_until("marker") == ["team-msg", "marker"]
    assert later.data_until("marker") == ["marker"]
    assert members(svc, "team") == {first.connection_id}


def test_add_user_without_connection_is_404(clients: Clients, svc: WebPubSubServiceClient) -> None:
    clients.sdk(user_id="someone-else")
    with pytest.raises(ResourceNotFoundError) as exc:
        svc.add_user_to_group("team", "ghost")
    assert exc.value.status_code == 404
    assert not svc.group_exists("team")


def test_remove_user_from_group_and_all_groups(
    clients: Clients, svc: WebPubSubServiceClient
) -> None:
    d1 = clients.sdk(user_id="dave", groups=["g1", "g2"])
    d2 = clients.sdk(user_id="dave", groups=["g1", "g2"])
    erin = clients.sdk(user_id="erin", groups=["g2"])

    svc.remove_user_from_group("g1", "dave")
    assert not svc.group_exists("g1")
    assert members(svc, "g2") == {d1.connection_id, d2.connection_id, erin.connection_id}
    svc.send_to_group("g1", "g1-after", content_type=TEXT)
    svc.send_to_group("g2", "g2-still", content_type=TEXT)
    svc.remove_user_from_all_groups("dave")
    assert members(svc, "g2") == {erin.connection_id}
    svc.send_to_group("g2", "g2-after-all", content_type=TEXT)
    svc.remove_user_from_group("g1", "ghost")  # unknown user: 204
    svc.remove_user_from_all_groups("ghost")
    svc.send_to_all("marker", content_type=TEXT)

    assert d1.data_until("marker") == ["g2-still", "marker"]
    assert d2.data_until("marker") == ["g2-still", "marker"]
    assert erin.data_until("marker") == ["g2-still", "g2-after-all", "marker"]


def test_remove_connection_from_all_groups(clients: Clients, svc: WebPubSubServiceClient) -> None:
    a = clients.sdk(groups=["g1", "g2"])
    b = clients.sdk(groups=["g1"])

    svc.remove_connection_from_all_groups(a.connection_id)
    svc.remove_connection_from_all_groups("no-such-connection")  # 204 as well

    assert not svc.group_exists("g2")
    assert members(svc, "g1") == {b.connection_id}
    svc.send_to_group("g1", "g1-msg", content_type=TEXT)
    svc.send_to_all("marker", content_type=TEXT)
    assert a.data_until("marker") == ["marker"]
    assert b.data_until("marker") == ["g1-msg", "marker"]


def test_add_and_remove_connections_to_groups(
    server: ServerLike, hub: str, clients: Clients, svc: WebPubSubServiceClient
) -> None:
    a = clients.sdk(user_id="u1")
    b = clients.sdk(user_id="u2")

    resp = _groups_op(
        server, hub, "addToGroups", {"groups": ["g1", "g2"], "filter": "userId eq 'u1'"}
    )
    assert resp.status == 200, resp.body
    assert members(svc, "g1") == members(svc, "g2") == {a.connection_id}

    resp = _groups_op(server, hub, "addToGroups", {"groups": ["g3"]})  # no filter: everyone
    assert resp.status == 200, resp.body
    assert members(svc, "g3") == {a.connection_id, b.connection_id}

    resp = _groups_op(
        server, hub, "removeFromGroups", {"groups": ["g3"], "filter": "userId eq 'u2'"}
    )
    assert resp.status == 200, resp.body
    assert members(svc, "g3") == {a.connection_id}

    resp = _groups_op(server, hub, "removeFromGroups", {"groups": ["g1", "g2", "g3"]})
    assert resp.status == 200, resp.body
    assert not any(svc.group_exists(g) for g in ("g1", "g2", "g3"))

    resp = _groups_op(server, hub, "addToGroups", {"groups": ["g4"], "filter": "userId eq 'u2'"})
    assert resp.status == 200, resp.body
    svc.send_to_group("g4", "g4-msg", content_type=TEXT)
    svc.send_to_all("marker", content_type=TEXT)
    assert a.data_until("marker") == ["marker"]
    assert b.data_until("marker") == ["g4-msg", "marker"]


def test_identifiers_with_spaces_quotes_and_unicode(
    clients: Clients, svc: WebPubSubServiceClient
) -> None:
    zoe = clients.sdk(user_id="zoë smith", groups=["room 1 ü"])
    obrien = clients.sdk(user_id="o'brien")

    assert svc.user_exists("zoë smith")
    assert svc.group_exists("room 1 ü")
    assert {(m.connection_id, m.user_id) for m in svc.list_connections(group="room 1 ü")} == {
        (zoe.connection_id, "zoë smith")
    }
    svc.add_user_to_group("café au lait", "o'brien")
    assert members(svc, "café au lait") == {obrien.connection_id}
    svc.send_to_user("zoë smith", "to-zoe", content_type=TEXT)
    svc.send_to_group("room 1 ü", "to-room", content_type=TEXT)
    svc.send_to_group("café au lait", "to-cafe", content_type=TEXT)
    svc.send_to_all("to-obrien", content_type=TEXT, filter="userId eq 'o''brien'")
    svc.send_to_all("marker", content_type=TEXT)

    assert zoe.data_until("marker") == ["to-zoe", "to-room", "marker"]
    assert obrien.data_until("marker") == ["to-cafe", "to-obrien", "marker"]
    assert zoe.connected.wait_for().user_id == "zoë smith"


# ----------------------------------------------------------- existence


def test_exists_checks(clients: Clients, svc: WebPubSubServiceClient) -> None:
    a = clients.sdk(user_id="frank", groups=["here"], protocol=WebPubSubProtocolType.JSON)
    cid = a.connection_id

    assert svc.connection_exists(cid) is True
    assert svc.connection_exists("no-such-connection") is False
    assert svc.user_exists("frank") is True
    assert svc.user_exists("ghost") is False
    assert svc.group_exists("here") is True
    assert svc.group_exists("nowhere") is False

    a.close()
    a.disconnected.wait_for()
    _wait_gone(svc, cid)
    assert svc.user_exists("frank") is False
    assert svc.group_exists("here") is False


# ----------------------------------------------------------- close


def test_close_connection_with_reason(clients: Clients, svc: WebPubSubServiceClient) -> None:
    a = clients.sdk()
    js = clients.json()
    bystander = clients.sdk()

    svc.close_connection(a.connection_id, reason="bye-a")
    svc.close_connection(js.connection_id, reason="bye-js")
    svc.close_connection("no-such-connection", reason="nobody")  # 204 as well

    frame = a.wire.wait_for(lambda f: f.get("event") == "disconnected")
    assert frame == {"type": "system", "event": "disconnected", "message": "bye-a"}
    assert a.disconnected.wait_for().message == "bye-a"
    assert js.wait_json(lambda f: f.get("event") == "disconnected")["message"] == "bye-js"
    assert js.closed.wait_for()[0] == 1000
    _wait_gone(svc, a.connection_id)
    _wait_gone(svc, js.connection_id)
    assert svc.connection_exists(bystander.connection_id)
    svc.send_to_connection(bystander.connection_id, "still-here", content_type=TEXT)
    assert bystander.data_until("still-here") == ["still-here"]


def test_close_user_connections_excluded(clients: Clients, svc: WebPubSubServiceClient) -> None:
    g1 = clients.sdk(user_id="gina")
    g2 = clients.json(user_id="gina")
    hank = clients.sdk(user_id="hank")

    svc.close_user_connections("gina", excluded=[g2.connection_id], reason="user-close")

    assert g1.disconnected.wait_for().message == "user-close"
    _wait_gone(svc, g1.connection_id)
    assert svc.connection_exists(g2.connection_id)
    assert svc.connection_exists(hank.connection_id)
    svc.send_to_all("marker", content_type=TEXT)
    assert g2.data_until("marker") == ["marker"]
    assert not any(f.get("event") == "disconnected" for f in g2.json_frames())
    assert hank.data_until("marker") == ["marker"]


def test_close_all_connections_excluded(clients: Clients, svc: WebPubSubServiceClient) -> None:
    a = clients.sdk()
    keep = clients.json()
    c = clients.json()

    svc.close_all_connections(excluded=[keep.connection_id], reason="maintenance")

    assert a.disconnected.wait_for().message == "maintenance"
    assert c.wait_json(lambda f: f.get("event") == "disconnected")["message"] == "maintenance"
    assert c.closed.wait_for()[0] == 1000
    _wait_gone(svc, a.connection_id)
    svc.send_to_all("marker", content_type=TEXT)
    assert keep.data_until("marker") == ["marker"]
    assert svc.connection_exists(keep.connection_id)


def test_close_group_connections_excluded(clients: Clients, svc: WebPubSubServiceClient) -> None:
    a = clients.json(groups=["doomed"])
    b = clients.sdk(groups=["doomed"])
    keep = clients.json(groups=["doomed"])
    outsider = clients.sdk()

    svc.close_group_connections("doomed", excluded=[keep.connection_id], reason="group-closed")

    assert a.wait_json(lambda f: f.get("event") == "disconnected")["message"] == "group-closed"
    assert a.closed.wait_for()[0] == 1000
    assert b.disconnected.wait_for().message == "group-closed"
    _wait_gone(svc, b.connection_id)
    _wait_gone(svc, a.connection_id)
    assert members(svc, "doomed") == {keep.connection_id}
    svc.send_to_all("marker", content_type=TEXT)
    assert keep.data_until("marker") == ["marker"]
    assert outsider.data_until("marker") == ["marker"]


# ----------------------------------------------------------- permissions


def _forbidden(call: Callable[[], Any]) -> None:
    with pytest.raises(SendMessageError) as exc:
        call()
    assert exc.value.error_detail is not None
    assert exc.value.error_detail.name == "Forbidden"


def test_grant_check_revoke_permission(clients: Clients, svc: WebPubSubServiceClient) -> None:
    ivy = clients.sdk(user_id="ivy")  # no roles
    listener = clients.sdk(groups=["pg"])
    cid = ivy.connection_id

    assert not svc.has_permission("joinLeaveGroup", cid, target_name="pg")
    _forbidden(lambda: ivy.client.join_group("pg"))

    svc.grant_permission("joinLeaveGroup", cid, target_name="pg")
    assert svc.has_permission("joinLeaveGroup", cid, target_name="pg")
    assert not svc.has_permission("joinLeaveGroup", cid, target_name="other")
    assert not svc.has_permission("sendToGroup", cid, target_name="pg")
    ivy.client.join_group("pg")
    assert cid in members(svc, "pg")
    _forbidden(lambda: ivy.client.join_group("other"))
    _forbidden(lambda: ivy.client.send_to_group("pg", "too early", TEXT_DATA))

    svc.grant_permission("sendToGroup", cid, target_name="pg")
    assert svc.has_permission("sendToGroup", cid, target_name="pg")
    ivy.client.send_to_group("pg", "from-ivy", TEXT_DATA)
    msg = listener.group_messages.wait_for(lambda m: m.data == "from-ivy")
    assert (msg.group, msg.from_user_id) == ("pg", "ivy")

    svc.revoke_permission("sendToGroup", cid, target_name="pg")
    assert not svc.has_permission("sendToGroup", cid, target_name="pg")
    _forbidden(lambda: ivy.client.send_to_group("pg", "revoked", TEXT_DATA))
    svc.revoke_permission("joinLeaveGroup", cid, target_name="pg")
    assert not svc.has_permission("joinLeaveGroup", cid, target_name="pg")
    _forbidden(lambda: ivy.client.leave_group("pg"))
    assert cid in members(svc, "pg")  # revoking does not remove membership

    svc.revoke_permission("joinLeaveGroup", "no-such-connection", target_name="pg")  # 204
    assert not svc.has_permission("joinLeaveGroup", "no-such-connection", target_name="pg")
    with pytest.raises(ResourceNotFoundError):
        svc.grant_permission("joinLeaveGroup", "no-such-connection", target_name="pg")
    assert listener.data_until("from-ivy") == ["from-ivy"]


# ----------------------------------------------------------- list


def test_list_connections_follows_next_link(
    server: ServerLike, hub: str, clients: Clients, svc: WebPubSubServiceClient
) -> None:
    joined = [clients.sdk(user_id=f"m{i}", groups=["big"]) for i in range(4)]
    anonymous = clients.sdk(groups=["big"])
    clients.sdk(user_id="outsider")
    expected: set[tuple[str, str | None]] = {
        (c.connection_id, f"m{i}") for i, c in enumerate(joined)
    }
    expected.add((anonymous.connection_id, None))

    pages = [list(page) for page in svc.list_connections(group="big", maxpagesize=2).by_page()]
    assert len(pages) >= 3, pages
    assert all(1 <= len(page) <= 2 for page in pages), pages
    assert {(m.connection_id, m.user_id) for page in pages for m in page} == expected
    assert sum(len(page) for page in pages) == 5

    limited = list(svc.list_connections(group="big", maxpagesize=2, top=3))
    assert len(limited) == 3
    assert {(m.connection_id, m.user_id) for m in limited} <= expected
    assert list(svc.list_connections(group="nobody-here")) == []
    for size in (0, 201):
        assert _status(_list, svc, "big", maxpagesize=size) == 400
    garbage = rest_url(
        server, hub_path(hub, "groups", "big", "connections"), [("continuationToken", "garbage")]
    )
    assert_error(rest_call(server, "GET", garbage), 400)

    # The nextLink must be absolute and carry api-version (the JS SDK GETs it verbatim).
    url = rest_url(server, hub_path(hub, "groups", "big", "connections"), [("maxpagesize", "2")])
    first = rest_call(server, "GET", url)
    assert first.status == 200, first.body
    body = first.json()
    assert len(body["value"]) == 2
    next_link = body["nextLink"]
    assert next_link.startswith(("http://", "https://")), next_link
    assert "api-version=" in next_link
    second = rest_call(server, "GET", next_link)
    assert second.status == 200, second.body
    seen_first = {v["connectionId"] for v in body["value"]}
    seen_second = {v["connectionId"] for v in second.json()["value"]}
    assert seen_second and not seen_first & seen_second


# ----------------------------------------------------------- tokens


def test_get_client_access_token(
    server: ServerLike, hub: str, clients: Clients, svc: WebPubSubServiceClient
) -> None:
    token = svc.get_client_access_token(
        user_id="jane",
        roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup.tg"],
        groups=["tg"],
        minutes_to_expire=5,
    )
    assert token["baseUrl"] == f"{server.ws_endpoint}/client/hubs/{hub}"
    assert token["url"] == f"{token['baseUrl']}?access_token={token['token']}"
    claims = jwt.decode(token["token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 300

    jane = clients.sdk(url=token["url"])
    connected = jane.connected.wait_for()
    assert connected.user_id == "jane"
    cid = connected.connection_id
    assert members(svc, "tg") == {cid}
    assert svc.has_permission("sendToGroup", cid, target_name="tg")
    assert not svc.has_permission("sendToGroup", cid, target_name="other")
    assert svc.has_permission("joinLeaveGroup", cid, target_name="anything")
    jane.client.join_group("other")
    jane.client.send_to_group("tg", "hello-tg", TEXT_DATA)
    assert jane.group_messages.wait_for().data == "hello-tg"
    _forbidden(lambda: jane.client.send_to_group("other", "nope", TEXT_DATA))

    expired = svc.get_client_access_token(user_id="jane", minutes_to_expire=-10)
    with pytest.raises(InvalidStatus) as exc:
        RawClient(expired["url"])
    assert exc.value.response.status_code == 401


def _check_generated_token(
    token: str, server: ServerLike, hub: str, lifetime_s: int
) -> dict[str, Any]:
    claims = None
    for key in (server.access_key, server.secondary_key):
        try:
            claims = jwt.decode(token, key, algorithms=["HS256"], options={"verify_aud": False})
            break
        except jwt.InvalidSignatureError:
            continue
    assert claims is not None, "token not signed with either access key"
    assert claims["aud"].lower().rstrip("/").endswith(f"/client/hubs/{hub}".lower())
    assert abs(claims["exp"] - time.time() - lifetime_s) < 30, claims
    return dict(claims)


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def test_generate_token_route(
    server: ServerLike, hub: str, clients: Clients, svc: WebPubSubServiceClient
) -> None:
    # The SDK only calls :generateToken without an access key (Entra); call its operation directly.
    generated = GeneratedOperations.get_client_access_token(
        svc,
        user_id="kim",
        roles=["webpubsub.joinLeaveGroup.x", "webpubsub.sendToGroup"],
        groups=["ga", "gb"],
        minutes_to_expire=10,
    )
    claims = _check_generated_token(generated["token"], server, hub, 600)
    assert claims["sub"] == "kim"
    assert set(_as_list(claims["role"])) == {"webpubsub.joinLeaveGroup.x", "webpubsub.sendToGroup"}
    assert set(_as_list(claims["webpubsub.group"])) == {"ga", "gb"}

    kim = clients.sdk(
        url=f"{server.ws_endpoint}/client/hubs/{hub}?access_token={generated['token']}"
    )
    connected = kim.connected.wait_for()
    assert connected.user_id == "kim"
    assert members(svc, "ga") == members(svc, "gb") == {connected.connection_id}
    assert svc.has_permission("joinLeaveGroup", connected.connection_id, target_name="x")
    assert not svc.has_permission("joinLeaveGroup", connected.connection_id, target_name="y")

    url = rest_url(server, hub_path(hub, ":generateToken"), [("role", "r1"), ("role", "r2")])
    resp = rest_call(server, "POST", url)
    assert resp.status == 200, resp.body
    assert (resp.headers.get("content-type") or "").startswith("application/json")
    anon_claims = _check_generated_token(resp.json()["token"], server, hub, 3600)
    assert "sub" not in anon_claims
    assert set(_as_list(anon_claims["role"])) == {"r1", "r2"}

    mqtt = GeneratedOperations.get_client_access_token(svc, user_id="kim", client_protocol="MQTT")
    mqtt_aud = jwt.decode(mqtt["token"], options={"verify_signature": False})["aud"]
    assert mqtt_aud.lower().endswith(f"/clients/mqtt/hubs/{hub}".lower()), mqtt_aud

    for query in (
        [("minutesToExpire", "0")],
        [("clientType", "bogus")],
        [("group", "g" * 1025)],
    ):
        bad = rest_url(server, hub_path(hub, ":generateToken"), query)
        assert_error(rest_call(server, "POST", bad), 400)


# ----------------------------------------------------------- auth


def test_secondary_key(server: ServerLike, hub: str, clients: Clients) -> None:
    svc2 = service(server, hub, secondary=True)
    try:
        token = svc2.get_client_access_token(user_id="sec")
        c = clients.sdk(url=token["url"])
        assert c.connected.wait_for().user_id == "sec"
        assert svc2.connection_exists(c.connection_id)
        svc2.send_to_connection(c.connection_id, "via-secondary", content_type=TEXT)
        assert c.server_messages.wait_for().data == "via-secondary"
        url = rest_url(server, hub_path(hub, "users", "sec"))
        assert rest_call(server, "HEAD", url, key=server.secondary_key).status == 200
    finally:
        svc2.close()


def test_wrong_key_is_401(server: ServerLike, hub: str, clients: Clients) -> None:
    watcher = clients.sdk()
    bad = WebPubSubServiceClient.from_connection_string(
        f"Endpoint={server.endpoint};AccessKey={'Z' * 44};Version=1.0;", hub=hub
    )
    try:
        with pytest.raises(ClientAuthenticationError) as exc:
            bad.send_to_all({"x": 1})
        assert exc.value.status_code == 401
        with pytest.raises(ClientAuthenticationError):
            bad.connection_exists(watcher.connection_id)
        with pytest.raises(ClientAuthenticationError):
            bad.close_all_connections(reason="should not happen")
        with pytest.raises(InvalidStatus) as ws_exc:
            RawClient(bad.get_client_access_token()["url"])
        assert ws_exc.value.response.status_code == 401
    finally:
        bad.close()

    url = rest_url(server, hub_path(hub, ":send"))
    assert_error(rest_call(server, "POST", url, body=b"x", content_type=TEXT, auth=False), 401)
    stale = rest_token(url, server.access_key, lifetime=-600)
    other_hub = rest_token(rest_url(server, hub_path("otherhub", ":send")), server.access_key)
    now = int(time.time())
    for token in (
        stale,
        other_hub,
        jwt.encode({"aud": url}, server.access_key, algorithm="HS256"),  # no exp
        jwt.encode({"aud": url, "exp": now + 60, "nbf": now + 3600}, server.access_key),
        jwt.encode({"aud": url, "exp": now + 60}, "", algorithm="none"),
    ):
        assert_error(rest_call(server, "POST", url, body=b"x", content_type=TEXT, token=token), 401)
    # Nothing was delivered and nobody was closed.
    svc = clients.svc
    svc.send_to_all("marker", content_type=TEXT)
    assert watcher.data_until("marker") == ["marker"]


# ----------------------------------------------------------- request errors


def test_missing_api_version_is_400(server: ServerLike, hub: str) -> None:
    url = rest_url(server, hub_path(hub, ":send"), api_version=None)
    assert_error(
        rest_call(server, "POST", url, body=b'{"a":1}', content_type="application/json"), 400
    )
    url = rest_url(server, hub_path(hub, "groups", "g", "connections"), api_version=None)
    assert_error(rest_call(server, "GET", url), 400)


def test_invalid_filter_is_400(
    server: ServerLike, hub: str, clients: Clients, svc: WebPubSubServiceClient
) -> None:
    watcher = clients.sdk(user_id="w", groups=["g"])
    for bad in ("userId eq", "userId eq 'a' and", "(userId eq 'a'", "not length(userId) gt 5"):
        with pytest.raises(HttpResponseError) as exc:
            svc.send_to_all("x", content_type=TEXT, filter=bad)
        assert exc.value.status_code == 400, bad
        assert isinstance(exc.value.response, HttpResponse)
        assert exc.value.response.headers.get("x-ms-error-code"), bad
        assert _status(svc.send_to_user, "w", "x", content_type=TEXT, filter=bad) == 400
        assert _status(svc.send_to_group, "g", "x", content_type=TEXT, filter=bad) == 400
        assert_error(_groups_op(server, hub, "addToGroups", {"groups": ["h"], "filter": bad}), 400)
    svc.send_to_all("marker", content_type=TEXT)
    assert watcher.data_until("marker") == ["marker"]
    assert not svc.group_exists("h")


def test_invalid_filter_answer_is_the_services(svc: WebPubSubServiceClient) -> None:
    # The service's text; azure-core reads its code and message from the body.
    with pytest.raises(HttpResponseError) as exc:
        svc.send_to_all("x", content_type=TEXT, filter="invalid filter")
    text = (
        "Invalid syntax for 'invalid filter': Syntax error at position 14 in 'invalid filter'."
        " (Parameter 'filter')"
    )
    assert exc.value.status_code == 400
    assert exc.value.error is not None
    assert (exc.value.error.code, exc.value.error.message) == ("Error.BadRequest", text)
    assert isinstance(exc.value.response, HttpResponse)
    assert exc.value.response.headers["Content-Type"] == "application/problem+json; charset=utf-8"


def test_invalid_group_name_is_400(
    server: ServerLike, hub: str, clients: Clients, svc: WebPubSubServiceClient
) -> None:
    a = clients.sdk(user_id="grp")
    cid = a.connection_id
    calls: list[Callable[[str], Any]] = [
        lambda g: svc.send_to_group(g, "x", content_type=TEXT),
        lambda g: svc.add_connection_to_group(g, cid),
        lambda g: svc.remove_connection_from_group(g, cid),
        lambda g: svc.group_exists(g),
        lambda g: svc.close_group_connections(g),
        lambda g: svc.add_user_to_group(g, "grp"),
        lambda g: _list(svc, g),
    ]
    for bad in ("g" * 1025, "   "):
        for call in calls:
            assert _status(call, bad) == 400, (bad[:8], call)
        assert_error(_groups_op(server, hub, "addToGroups", {"groups": [bad]}), 400)
    svc.add_connection_to_group("g" * 1024, cid)  # the longest valid name
    assert svc.group_exists("g" * 1024)
    assert_error(_groups_op(server, hub, "addToGroups", {"groups": []}), 400)
    assert_error(_groups_op(server, hub, "addToGroups", b"{not json"), 400)
    assert svc.connection_exists(cid)


def test_unsupported_content_type_is_415(server: ServerLike, hub: str) -> None:
    url = rest_url(server, hub_path(hub, ":send"))
    assert_error(rest_call(server, "POST", url, body=b"<p>x</p>", content_type="text/html"), 415)


def test_older_api_version_accepted(clients: Clients) -> None:
    # Older stable versions are accepted too.
    old = service(clients.server, clients.hub, api_version="2021-10-01")
    try:
        c = clients.sdk()
        old.send_to_connection(c.connection_id, "old-version", content_type=TEXT)
        assert c.data_until("old-version") == ["old-version"]
        assert old.connection_exists(c.connection_id)
    finally:
        old.close()
