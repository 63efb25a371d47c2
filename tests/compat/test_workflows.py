"""The twelve Azure Web PubSub Arazzo workflows, run with the Python server SDK.

Each `_run_*` function performs one workflow's steps as written (api-version
2024-01-01, the workflows' default) and returns the step outputs (HTTP statuses),
branching exactly where the workflow branches. The tests then check what real
connected clients observed, for every branch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.messaging.webpubsubclient.models import SendMessageError, WebPubSubDataType
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from azure.messaging.webpubsubservice._operations._operations import (
    WebPubSubServiceClientOperationsMixin as GeneratedOperations,
)

from tests.compat._clients import (
    Clients,
    ServerLike,
    code,
    members,
    service,
    status_of,
    wait_until,
)

pytestmark = [pytest.mark.compat, pytest.mark.timeout(20)]

WORKFLOW_API_VERSION = "2024-01-01"
TEXT = "text/plain"


@pytest.fixture
def clients(server: ServerLike, hub: str) -> Iterator[Clients]:
    factory = Clients(server, hub)
    yield factory
    factory.close_all()


@pytest.fixture
def wf(server: ServerLike, hub: str) -> Iterator[WebPubSubServiceClient]:
    """The server SDK as the workflows call it."""
    client = service(server, hub, api_version=WORKFLOW_API_VERSION)
    yield client
    client.close()


@pytest.fixture
def svc(clients: Clients) -> WebPubSubServiceClient:
    """An independent SDK client for checking state (latest api-version)."""
    return clients.svc


def _gone(svc: WebPubSubServiceClient, cid: str) -> None:
    wait_until(lambda: not svc.connection_exists(cid), f"connection {cid} gone")


def _generate_token(wf: WebPubSubServiceClient, **params: Any) -> str:
    """`generateClientToken`: the REST :generateToken route through the SDK's operation."""
    response = GeneratedOperations.get_client_access_token(wf, **params)
    return str(response["token"])


def _client_url(server: ServerLike, hub: str, token: str) -> str:
    return f"{server.ws_endpoint}/client/hubs/{hub}?access_token={token}"


# ----------------------------------------------------------- check-then-close


def _run_check_then_close(wf: WebPubSubServiceClient, cid: str, reason: str) -> dict[str, int]:
    out = {"existsStatus": code(wf.connection_exists(cid, cls=status_of))}
    if out["existsStatus"] == 200:
        out["closeStatus"] = code(wf.close_connection(cid, reason=reason, cls=status_of))
    return out


def test_check_then_close_connection(
    clients: Clients, wf: WebPubSubServiceClient, svc: WebPubSubServiceClient
) -> None:
    target = clients.json()
    sdk_target = clients.sdk()
    bystander = clients.sdk()

    assert _run_check_then_close(wf, target.connection_id, "guarded close") == {
        "existsStatus": 200,
        "closeStatus": 204,
    }
    assert _run_check_then_close(wf, sdk_target.connection_id, "guarded close") == {
        "existsStatus": 200,
        "closeStatus": 204,
    }
    frame = target.wait_json(lambda f: f.get("event") == "disconnected")
    assert frame == {"type": "system", "event": "disconnected", "message": "guarded close"}
    assert target.closed.wait_for()[0] == 1000
    assert sdk_target.disconnected.wait_for().message == "guarded close"
    _gone(svc, target.connection_id)

    # Branch: the connection is already gone, so the flow ends without a close.
    assert _run_check_then_close(wf, target.connection_id, "again") == {"existsStatus": 404}
    assert _run_check_then_close(wf, "never-existed", "again") == {"existsStatus": 404}
    assert svc.connection_exists(bystander.connection_id)
    svc.send_to_all("marker", content_type=TEXT)
    assert bystander.data_until("marker") == ["marker"]


# ----------------------------------------------------------- direct-connection-message


def _run_direct_message(wf: WebPubSubServiceClient, cid: str, message: str) -> dict[str, int]:
    out = {"existsStatus": code(wf.connection_exists(cid, cls=status_of))}
    if out["existsStatus"] == 200:
        out["sendStatus"] = code(
            wf.send_to_connection(cid, message, content_type=TEXT, cls=status_of)
        )
    return out


def test_direct_connection_message(
    clients: Clients, wf: WebPubSubServiceClient, svc: WebPubSubServiceClient
) -> None:
    target = clients.sdk(user_id="same-user")
    sibling = clients.sdk(user_id="same-user")
    plain = clients.json()

    out = _run_direct_message(wf, target.connection_id, "just for you")
    assert out == {"existsStatus": 200, "sendStatus": 202}
    msg = target.server_messages.wait_for()
    assert (msg.data_type, msg.data) == ("text", "just for you")
    assert _run_direct_message(wf, plain.connection_id, "plain too") == {
        "existsStatus": 200,
        "sendStatus": 202,
    }
    assert plain.wait_json(lambda f: f.get("type") == "message") == {
        "type": "message",
        "from": "server",
        "dataType": "text",
        "data": "plain too",
    }

    # Branch: the connection left; nothing is sent.
    plain.close()
    _gone(svc, plain.connection_id)
    assert _run_direct_message(wf, plain.connection_id, "too late") == {"existsStatus": 404}

    svc.send_to_user("same-user", "marker", content_type=TEXT)
    assert target.data_until("marker") == ["just for you", "marker"]
    assert sibling.data_until("marker") == ["marker"]


# ----------------------------------------------------------- grant-permission-and-send-to-user


def _run_grant_and_send(
    wf: WebPubSubServiceClient,
    permission: str,
    cid: str,
    user_id: str,
    message: str,
    target_name: str | None,
) -> dict[str, int]:
    return {
        "grantStatus": code(
            wf.grant_permission(permission, cid, target_name=target_name, cls=status_of)
        ),
        "sendStatus": code(wf.send_to_user(user_id, message, content_type=TEXT, cls=status_of)),
    }


def test_grant_permission_and_send_to_user(
    clients: Clients, wf: WebPubSubServiceClient, svc: WebPubSubServiceClient
) -> None:
    uma = clients.sdk(user_id="uma")
    uma_other = clients.sdk(user_id="uma")
    listener = clients.sdk(groups=["stage"])
    assert not svc.has_permission("sendToGroup", uma.connection_id, target_name="stage")
    with pytest.raises(SendMessageError):
        uma.client.send_to_group("stage", "before", WebPubSubDataType.TEXT)

    out = _run_grant_and_send(
        wf, "sendToGroup", uma.connection_id, "uma", "you may speak on stage", "stage"
    )

    assert out == {"grantStatus": 200, "sendStatus": 202}
    for conn in (uma, uma_other):
        msg = conn.server_messages.wait_for()
        assert (msg.data_type, msg.data) == ("text", "you may speak on stage")
    assert svc.has_permission("sendToGroup", uma.connection_id, target_name="stage")
    assert not svc.has_permission("sendToGroup", uma_other.connection_id, target_name="stage")
    uma.client.send_to_group("stage", "hello stage", WebPubSubDataType.TEXT)
    heard = listener.group_messages.wait_for()
    assert (heard.group, heard.from_user_id, heard.data) == ("stage", "uma", "hello stage")
    assert listener.data_until("hello stage") == ["hello stage"]


# ----------------------------------------------------------- grant-permission-if-missing


def _run_grant_if_missing(
    wf: WebPubSubServiceClient, permission: str, cid: str, target_name: str
) -> dict[str, int]:
    # The workflow's check step names no targetName; a group-scoped check is used so that
    # the check and the grant talk about the same permission.
    out = {
        "checkStatus": code(
            wf.has_permission(permission, cid, target_name=target_name, cls=status_of)
        )
    }
    if out["checkStatus"] == 404:
        out["grantStatus"] = code(
            wf.grant_permission(permission, cid, target_name=target_name, cls=status_of)
        )
    return out


def test_grant_permission_if_missing(
    clients: Clients, wf: WebPubSubServiceClient, svc: WebPubSubServiceClient
) -> None:
    newbie = clients.sdk()
    veteran = clients.sdk(roles=["webpubsub.joinLeaveGroup.club"])
    with pytest.raises(SendMessageError):
        newbie.client.join_group("club")

    # Branch: missing → granted.
    out = _run_grant_if_missing(wf, "joinLeaveGroup", newbie.connection_id, "club")
    assert out == {"checkStatus": 404, "grantStatus": 200}
    newbie.client.join_group("club")
    assert newbie.connection_id in members(svc, "club")

    # Branch: present → the flow ends (both for a REST grant and for a token role).
    assert _run_grant_if_missing(wf, "joinLeaveGroup", newbie.connection_id, "club") == {
        "checkStatus": 200
    }
    assert _run_grant_if_missing(wf, "joinLeaveGroup", veteran.connection_id, "club") == {
        "checkStatus": 200
    }
    veteran.client.join_group("club")
    assert members(svc, "club") == {newbie.connection_id, veteran.connection_id}
    # The grant was scoped: another group is still refused.
    with pytest.raises(SendMessageError):
        newbie.client.join_group("other-club")


# ----------------------------------------------------------- group-broadcast-if-active


def _run_broadcast_if_active(
    wf: WebPubSubServiceClient, group: str, message: str
) -> dict[str, int]:
    out = {"groupStatus": code(wf.group_exists(group, cls=status_of))}
    if out["groupStatus"] == 200:
        out["sendStatus"] = code(wf.send_to_group(group, message, content_type=TEXT, cls=status_of))
    return out


def test_group_broadcast_if_active(
    clients: Clients, wf: WebPubSubServiceClient, svc: WebPubSubServiceClient
) -> None:
    a = clients.sdk(groups=["live"])
    b = clients.raw(groups=["live"])
    outsider = clients.sdk()

    assert _run_broadcast_if_active(wf, "live", "we are live") == {
        "groupStatus": 200,
        "sendStatus": 202,
    }
    msg = a.group_messages.wait_for()
    assert (msg.group, msg.data_type, msg.data) == ("live", "text", "we are live")
    assert b.frames.wait_for() == "we are live"

    # Branch: an empty group, and a group whose last member just left.
    assert _run_broadcast_if_active(wf, "empty", "nobody hears") == {"groupStatus": 404}
    svc.remove_connection_from_group("live", a.connection_id)
    b.close()
    wait_until(lambda: not svc.group_exists("live"), "group 'live' emptied")
    assert _run_broadcast_if_active(wf, "live", "too late") == {"groupStatus": 404}

    svc.send_to_all("marker", content_type=TEXT)
    assert a.data_until("marker") == ["we are live", "marker"]
    assert outsider.data_until("marker") == ["marker"]


# ----------------------------------------------------------- group-warn-and-teardown


def _run_warn_and_teardown(wf: WebPubSubServiceClient, group: str, warning: str) -> dict[str, int]:
    return {
        "sendStatus": code(wf.send_to_group(group, warning, content_type=TEXT, cls=status_of)),
        "closeStatus": code(wf.close_group_connections(group, cls=status_of)),
    }


def test_group_warn_and_teardown(
    clients: Clients, wf: WebPubSubServiceClient, svc: WebPubSubServiceClient
) -> None:
    member_json = clients.json(groups=["sinking"])
    member_sdk = clients.sdk(groups=["sinking"])
    survivor = clients.sdk()

    out = _run_warn_and_teardown(wf, "sinking", "closing in 3, 2, 1")

    assert out == {"sendStatus": 202, "closeStatus": 204}
    member_json.closed.wait_for()
    frames = member_json.json_frames()
    assert [f.get("type") for f in frames] == ["message", "system"]
    assert frames[0]["data"] == "closing in 3, 2, 1"
    assert frames[0]["group"] == "sinking"
    assert frames[1]["event"] == "disconnected"
    assert member_json.closed.wait_for()[0] == 1000
    warned = member_sdk.group_messages.wait_for()
    assert (warned.group, warned.data) == ("sinking", "closing in 3, 2, 1")
    member_sdk.disconnected.wait_for()
    _gone(svc, member_json.connection_id)
    _gone(svc, member_sdk.connection_id)
    assert not svc.group_exists("sinking")
    svc.send_to_all("marker", content_type=TEXT)
    assert survivor.data_until("marker") == ["marker"]


# ----------------------------------------------------------- join-group-and-send


def _run_join_send_leave(
    wf: WebPubSubServiceClient, group: str, cid: str, message: str
) -> dict[str, int]:
    return {
        "addStatus": code(wf.add_connection_to_group(group, cid, cls=status_of)),
        "sendStatus": code(wf.send_to_group(group, message, content_type=TEXT, cls=status_of)),
        "removeStatus": code(wf.remove_connection_from_group(group, cid, cls=status_of)),
    }


def test_join_group_send_then_leave(
    clients: Clients, wf: WebPubSubServiceClient, svc: WebPubSubServiceClient
) -> None:
    guest = clients.sdk()
    resident = clients.sdk(groups=["hall"])

    out = _run_join_send_leave(wf, "hall", guest.connection_id, "welcome to the hall")

    assert out == {"addStatus": 200, "sendStatus": 202, "removeStatus": 204}
    msg = guest.group_messages.wait_for()
    assert (msg.group, msg.data) == ("hall", "welcome to the hall")
    assert members(svc, "hall") == {resident.connection_id}
    svc.send_to_group("hall", "after-leave", content_type=TEXT)
    svc.send_to_all("marker", content_type=TEXT)
    assert guest.data_until("marker") == ["welcome to the hall", "marker"]
    assert resident.data_until("marker") == ["welcome to the hall", "after-leave", "marker"]


# ----------------------------------------------------------- notify-user-if-online


def _run_notify_if_online(wf: WebPubSubServiceClient, user_id: str, message: str) -> dict[str, int]:
    out = {"userStatus": code(wf.user_exists(user_id, cls=status_of))}
    if out["userStatus"] == 200:
        out["sendStatus"] = code(
            wf.send_to_user(user_id, message, content_type=TEXT, cls=status_of)
        )
    return out


def test_notify_user_if_online(
    clients: Clients, wf: WebPubSubServiceClient, svc: WebPubSubServiceClient
) -> None:
    phone = clients.sdk(user_id="olivia")
    laptop = clients.raw(user_id="olivia")
    other = clients.sdk(user_id="oscar")

    assert _run_notify_if_online(wf, "olivia", "you have mail") == {
        "userStatus": 200,
        "sendStatus": 202,
    }
    assert phone.server_messages.wait_for().data == "you have mail"
    assert laptop.frames.wait_for() == "you have mail"

    # Branch: offline users (never connected, or all connections gone).
    assert _run_notify_if_online(wf, "nobody", "lost") == {"userStatus": 404}
    other.close()
    wait_until(lambda: not svc.user_exists("oscar"), "user 'oscar' offline")
    assert _run_notify_if_online(wf, "oscar", "lost too") == {"userStatus": 404}

    svc.send_to_all("marker", content_type=TEXT)
    assert phone.data_until("marker") == ["you have mail", "marker"]
    assert laptop.frames_until("marker") == ["you have mail", "marker"]


# ----------------------------------------------------------- provision-client-and-join-group


def _run_provision(
    wf: WebPubSubServiceClient, group: str, cid: str, user_id: str, announcement: str
) -> dict[str, Any]:
    return {
        "token": _generate_token(wf, user_id=user_id, minutes_to_expire=60, groups=[group]),
        "addStatus": code(wf.add_connection_to_group(group, cid, cls=status_of)),
        "sendStatus": code(wf.send_to_group(group, announcement, content_type=TEXT, cls=status_of)),
    }


def test_provision_client_and_join_group(
    server: ServerLike,
    hub: str,
    clients: Clients,
    wf: WebPubSubServiceClient,
    svc: WebPubSubServiceClient,
) -> None:
    existing = clients.sdk(user_id="pat")
    outsider = clients.sdk()

    out = _run_provision(wf, "chat", existing.connection_id, "pat", "pat joined the chat")

    assert (out["addStatus"], out["sendStatus"]) == (200, 202)
    claims = jwt.decode(out["token"], options={"verify_signature": False})
    assert claims["sub"] == "pat"
    groups = claims["webpubsub.group"]
    assert (groups if isinstance(groups, list) else [groups]) == ["chat"]
    msg = existing.group_messages.wait_for()
    assert (msg.group, msg.data) == ("chat", "pat joined the chat")

    # A browser connecting with the minted token is in the group from the start.
    browser = clients.sdk(url=_client_url(server, hub, out["token"]))
    assert browser.connected.wait_for().user_id == "pat"
    assert members(svc, "chat") == {existing.connection_id, browser.connection_id}
    svc.send_to_group("chat", "second announcement", content_type=TEXT)
    svc.send_to_all("marker", content_type=TEXT)
    assert browser.data_until("marker") == ["second announcement", "marker"]
    assert outsider.data_until("marker") == ["marker"]


# ----------------------------------------------------------- revoke-permission-and-evict


def _run_revoke_and_evict(
    wf: WebPubSubServiceClient, permission: str, cid: str, target_name: str, reason: str
) -> dict[str, int]:
    return {
        "revokeStatus": code(
            wf.revoke_permission(permission, cid, target_name=target_name, cls=status_of)
        ),
        "closeStatus": code(wf.close_connection(cid, reason=reason, cls=status_of)),
    }


def test_revoke_permission_and_evict(
    clients: Clients, wf: WebPubSubServiceClient, svc: WebPubSubServiceClient
) -> None:
    troll = clients.sdk(user_id="troll")
    audience = clients.sdk(groups=["forum"])
    svc.grant_permission("sendToGroup", troll.connection_id, target_name="forum")
    troll.client.send_to_group("forum", "first post", WebPubSubDataType.TEXT)
    assert audience.group_messages.wait_for().data == "first post"

    out = _run_revoke_and_evict(wf, "sendToGroup", troll.connection_id, "forum", "banned for spam")

    assert out == {"revokeStatus": 204, "closeStatus": 204}
    assert troll.disconnected.wait_for().message == "banned for spam"
    frame = troll.wire.wait_for(lambda f: f.get("event") == "disconnected")
    assert frame["message"] == "banned for spam"
    _gone(svc, troll.connection_id)
    assert not svc.user_exists("troll")
    svc.send_to_all("marker", content_type=TEXT)
    assert audience.data_until("marker") == ["first post", "marker"]


def test_revoke_permission_blocks_before_evict(
    clients: Clients, wf: WebPubSubServiceClient, svc: WebPubSubServiceClient
) -> None:
    """Between the workflow's two steps, the revoked permission is already gone."""
    member = clients.sdk()
    svc.grant_permission("sendToGroup", member.connection_id, target_name="forum")

    assert (
        code(
            wf.revoke_permission(
                "sendToGroup", member.connection_id, target_name="forum", cls=status_of
            )
        )
        == 204
    )
    assert not svc.has_permission("sendToGroup", member.connection_id, target_name="forum")
    with pytest.raises(SendMessageError) as exc:
        member.client.send_to_group("forum", "after revoke", WebPubSubDataType.TEXT)
    assert exc.value.error_detail is not None
    assert exc.value.error_detail.name == "Forbidden"
    assert code(wf.close_connection(member.connection_id, cls=status_of)) == 204
    member.disconnected.wait_for()


# ----------------------------------------------------------- token-then-broadcast


def _run_token_then_broadcast(
    wf: WebPubSubServiceClient, user_id: str, minutes: int, message: str
) -> dict[str, Any]:
    return {
        "token": _generate_token(wf, user_id=user_id, minutes_to_expire=minutes),
        "broadcastStatus": code(wf.send_to_all(message, content_type=TEXT, cls=status_of)),
    }


def test_token_then_broadcast(
    server: ServerLike, hub: str, clients: Clients, wf: WebPubSubServiceClient
) -> None:
    early_sdk = clients.sdk()
    early_plain = clients.raw()

    out = _run_token_then_broadcast(wf, "tess", 15, "hello everyone")

    assert out["broadcastStatus"] == 202
    claims = jwt.decode(out["token"], options={"verify_signature": False})
    assert claims["sub"] == "tess"
    assert 14 * 60 <= claims["exp"] - claims.get("iat", claims["exp"] - 900) <= 16 * 60
    msg = early_sdk.server_messages.wait_for()
    assert (msg.data_type, msg.data) == ("text", "hello everyone")
    assert early_plain.frames.wait_for() == "hello everyone"

    # The minted token works; a client that connects later did not get the earlier broadcast.
    late = clients.sdk(url=_client_url(server, hub, out["token"]))
    assert late.connected.wait_for().user_id == "tess"
    wf.send_to_all("marker", content_type=TEXT)
    assert late.data_until("marker") == ["marker"]
    assert early_sdk.data_until("marker") == ["hello everyone", "marker"]


# ----------------------------------------------------------- user-onboard-to-group


def _run_onboard(
    wf: WebPubSubServiceClient, group: str, user_id: str, message: str
) -> dict[str, int]:
    return {
        "addStatus": code(wf.add_user_to_group(group, user_id, cls=status_of)),
        "sendStatus": code(wf.send_to_user(user_id, message, content_type=TEXT, cls=status_of)),
    }


def test_user_onboard_to_group(
    clients: Clients, wf: WebPubSubServiceClient, svc: WebPubSubServiceClient
) -> None:
    v1 = clients.sdk(user_id="vera")
    v2 = clients.json(user_id="vera")
    walt = clients.sdk(user_id="walt")

    out = _run_onboard(wf, "crew", "vera", "welcome aboard")

    assert out == {"addStatus": 200, "sendStatus": 202}
    assert v1.server_messages.wait_for().data == "welcome aboard"
    assert v2.wait_json(lambda f: f.get("type") == "message")["data"] == "welcome aboard"
    assert members(svc, "crew") == {v1.connection_id, v2.connection_id}
    svc.send_to_group("crew", "crew briefing", content_type=TEXT)
    svc.send_to_all("marker", content_type=TEXT)
    assert v1.data_until("marker") == ["welcome aboard", "crew briefing", "marker"]
    assert v2.data_until("marker") == ["welcome aboard", "crew briefing", "marker"]
    assert walt.data_until("marker") == ["marker"]

    # A user with no connection cannot be onboarded: the first step fails with 404.
    with pytest.raises(ResourceNotFoundError):
        _run_onboard(wf, "crew", "nobody", "never sent")
