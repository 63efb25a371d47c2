"""Client endpoint handshake: authentication, hub/group validation, subprotocol negotiation."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable

import aiohttp
import jwt
import pytest

from tests.integration._wire import (
    JSON,
    RELIABLE,
    ROLE_JOIN,
    ROLE_SEND,
    TIMEOUT,
    HandshakeResult,
    ServerLike,
    Wire,
    client_audience,
    mint_client_token,
    ok_ack,
    raw_handshake,
)


def assert_refused(result: HandshakeResult, status: int) -> None:
    """A refusal before the upgrade: the expected status and a JSON error object as body."""
    assert result.status == status, (result.status, result.body)
    assert isinstance(result.json_body(), dict), result.body


def _target(hub: str, token: str | None = None) -> str:
    target = f"/client/hubs/{urllib.parse.quote(hub, safe='')}"
    if token is not None:
        target += f"?access_token={token}"
    return target


# --------------------------------------------------------------------------- token transport


async def test_token_in_query_string_is_accepted(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="alice", auth="query")
        assert client.protocol == JSON
        assert client.connected is not None
        assert client.connected["userId"] == "alice"


async def test_token_in_authorization_header_is_accepted(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="bob", auth="header")
        assert client.connected is not None
        assert client.connected["userId"] == "bob"


async def test_no_token_is_rejected_with_401(server: ServerLike, hub: str) -> None:
    result = await raw_handshake(server, _target(hub), protocols=[JSON])
    assert_refused(result, 401)


async def test_no_token_is_accepted_on_anonymous_hub(server: ServerLike) -> None:
    result = await raw_handshake(server, _target("anon"), protocols=[JSON])
    assert result.status == 101
    async with Wire(server) as wire:
        client = await wire.connect("anon", auth="none")
        assert client.connected is not None
        assert client.connected["userId"] is None


async def test_token_on_anonymous_hub_sets_user(server: ServerLike) -> None:
    async with Wire(server) as wire:
        client = await wire.connect("anon", user="known")
        assert client.connected is not None
        assert client.connected["userId"] == "known"


async def test_token_with_kid_header_and_custom_claims_is_accepted(
    server: ServerLike, hub: str
) -> None:
    claims = {
        "aud": client_audience(server, hub),
        "exp": int(time.time()) + 600,
        "sub": "kid-user",
        "tenant": "contoso",
        "scores": [1, 2],
    }
    token = jwt.encode(
        claims, server.access_key.encode(), algorithm="HS256", headers={"kid": "whatever"}
    )
    async with Wire(server) as wire:
        client = await wire.connect(hub, token=token)
        assert client.connected is not None
        assert client.connected["userId"] == "kid-user"


def _bad_signature(server: ServerLike, hub: str) -> str:
    return mint_client_token(server, hub, user="u", key="not-the-key-" + "x" * 40)


def _expired(server: ServerLike, hub: str) -> str:
    return mint_client_token(server, hub, user="u", lifetime=-3600)


def _not_yet_valid(server: ServerLike, hub: str) -> str:
    return mint_client_token(server, hub, user="u", nbf=int(time.time()) + 3600)


def _other_hub(server: ServerLike, hub: str) -> str:
    return mint_client_token(server, hub, user="u", aud=client_audience(server, hub + "other"))


def _mqtt_audience(server: ServerLike, hub: str) -> str:
    return mint_client_token(
        server, hub, user="u", aud=f"{server.endpoint}/clients/mqtt/hubs/{hub}"
    )


def _alg_none(server: ServerLike, hub: str) -> str:
    return mint_client_token(server, hub, user="u", algorithm="none")


def _hs512(server: ServerLike, hub: str) -> str:
    return mint_client_token(server, hub, user="u", algorithm="HS512")


def _tampered(server: ServerLike, hub: str) -> str:
    header, _, signature = mint_client_token(server, hub, user="u").split(".")
    forged = mint_client_token(server, hub, user="admin", key="x" * 44).split(".")[1]
    return f"{header}.{forged}.{signature}"


def _garbage(server: ServerLike, hub: str) -> str:
    return "not-a-jwt"


@pytest.mark.parametrize(
    "make_token",
    [
        _bad_signature,
        _expired,
        _not_yet_valid,
        _other_hub,
        _mqtt_audience,
        _alg_none,
        _hs512,
        _tampered,
        _garbage,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
@pytest.mark.parametrize("auth", ["query", "header"])
async def test_invalid_token_is_rejected_with_401(
    server: ServerLike, hub: str, make_token: Callable[[ServerLike, str], str], auth: str
) -> None:
    token = make_token(server, hub)
    if auth == "query":
        result = await raw_handshake(server, _target(hub, token), protocols=[JSON])
    else:
        result = await raw_handshake(
            server, _target(hub), protocols=[JSON], headers={"Authorization": f"Bearer {token}"}
        )
    assert_refused(result, 401)


async def test_token_signed_with_secondary_key_is_accepted(server: ServerLike, hub: str) -> None:
    token = mint_client_token(server, hub, user="carol", key=server.secondary_key)
    async with Wire(server) as wire:
        client = await wire.connect(hub, token=token)
        assert client.connected is not None
        assert client.connected["userId"] == "carol"


def _aud_upper(server: ServerLike, hub: str) -> str:
    return client_audience(server, hub).upper()


def _aud_trailing_slash(server: ServerLike, hub: str) -> str:
    return client_audience(server, hub) + "/"


def _aud_without_port(server: ServerLike, hub: str) -> str:
    return f"http://{server.host}/client/hubs/{hub}"


def _aud_default_port(server: ServerLike, hub: str) -> str:
    return f"http://{server.host}:80/client/hubs/{hub}"


@pytest.mark.parametrize(
    "make_aud",
    [_aud_upper, _aud_trailing_slash, _aud_without_port, _aud_default_port],
    ids=lambda f: f.__name__.removeprefix("_aud_"),
)
async def test_equivalent_audience_is_accepted(
    server: ServerLike, hub: str, make_aud: Callable[[ServerLike, str], str]
) -> None:
    token = mint_client_token(server, hub, user="dave", aud=make_aud(server, hub))
    result = await raw_handshake(server, _target(hub, token), protocols=[JSON])
    assert result.status == 101, (result.status, result.body)


async def test_hub_name_is_case_insensitive_in_audience(server: ServerLike, hub: str) -> None:
    token = mint_client_token(server, hub, user="erin", aud=client_audience(server, hub.upper()))
    result = await raw_handshake(server, _target(hub, token), protocols=[JSON])
    assert result.status == 101, (result.status, result.body)


# --------------------------------------------------------------------------- claims


@pytest.mark.parametrize(
    "roles",
    [ROLE_JOIN, [ROLE_JOIN], [ROLE_SEND, ROLE_JOIN]],
    ids=["string", "array-one", "array-two"],
)
async def test_role_claim_as_string_or_array(
    server: ServerLike, hub: str, roles: str | list[str]
) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="u", roles=roles)
        await client.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
        assert await client.recv_json() == ok_ack(1)
        await client.send_json(
            {"type": "sendToGroup", "group": "g", "ackId": 2, "dataType": "text", "data": "x"}
        )
        if isinstance(roles, list) and ROLE_SEND in roles:
            frames = [await client.recv_json(), await client.recv_json()]
            assert ok_ack(2) in frames, frames
            assert any(f["type"] == "message" for f in frames), frames
        else:
            ack = await client.recv_json()
            assert ack["ackId"] == 2 and ack["success"] is False, ack
            assert ack["error"]["name"] == "Forbidden", ack


@pytest.mark.parametrize(
    ("claim", "members"),
    [("g1", ["g1"]), (["g1"], ["g1"]), (["g1", "g2"], ["g1", "g2"])],
    ids=["string", "array-one", "array-two"],
)
async def test_group_claim_joins_groups_on_connect(
    server: ServerLike, hub: str, claim: str | list[str], members: list[str]
) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="u", groups=claim)
        for group in [*members, "g3"]:
            await wire.send_to_group(hub, group, f"to-{group}")
        for group in members:
            frame = await client.recv_json()
            assert frame == {
                "type": "message",
                "from": "group",
                "group": group,
                "dataType": "text",
                "data": f"to-{group}",
            }
        # g3 was never joined: the marker must come next
        await wire.marker(hub, client)


@pytest.mark.parametrize(
    "claim",
    ["", "   ", "x" * 1025, ["ok", ""], ["ok", "\t "]],
    ids=["empty", "whitespace", "too-long", "array-with-empty", "array-with-whitespace"],
)
async def test_invalid_group_claim_is_rejected_with_400(
    server: ServerLike, hub: str, claim: str | list[str]
) -> None:
    token = mint_client_token(server, hub, user="u", groups=claim)
    result = await raw_handshake(server, _target(hub, token), protocols=[JSON])
    assert_refused(result, 400)


async def test_group_claim_of_max_length_is_accepted(server: ServerLike, hub: str) -> None:
    token = mint_client_token(server, hub, user="u", groups=["y" * 1024])
    result = await raw_handshake(server, _target(hub, token), protocols=[JSON])
    assert result.status == 101, (result.status, result.body)


# --------------------------------------------------------------------------- hub names / URL forms


@pytest.mark.parametrize(
    "bad_hub", ["1hub", "hub-name", "h" * 129, "_hub"], ids=["digit", "dash", "too-long", "under"]
)
@pytest.mark.parametrize("form", ["path", "query"])
async def test_invalid_hub_name_is_rejected_with_400(
    server: ServerLike, bad_hub: str, form: str
) -> None:
    token = mint_client_token(server, bad_hub, user="u")
    if form == "path":
        target = _target(bad_hub, token)
    else:
        target = f"/client/?hub={urllib.parse.quote(bad_hub)}&access_token={token}"
    result = await raw_handshake(server, target, protocols=[JSON])
    assert_refused(result, 400)


@pytest.mark.parametrize("target", ["/client/", "/client/?hub="])
async def test_missing_hub_is_rejected_with_400(server: ServerLike, target: str) -> None:
    result = await raw_handshake(server, target, protocols=[JSON])
    assert_refused(result, 400)


async def test_hub_in_query_form_is_accepted(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="quinn", path=f"/client/?hub={hub}")
        assert client.connected is not None
        assert client.connected["userId"] == "quinn"
        # it really belongs to that hub
        await wire.send_to_all(hub, "hello-hub")
        assert await client.recv_json() == {
            "type": "message",
            "from": "server",
            "dataType": "text",
            "data": "hello-hub",
        }


async def test_plain_get_without_upgrade_is_rejected_with_400(server: ServerLike, hub: str) -> None:
    token = mint_client_token(server, hub, user="u")
    result = await raw_handshake(server, _target(hub, token), upgrade=False)
    assert_refused(result, 400)
    async with Wire(server) as wire:
        async with wire.http.get(
            f"{server.endpoint}{_target(hub, token)}",
            timeout=aiohttp.ClientTimeout(total=TIMEOUT),
        ) as resp:
            assert resp.status == 400


# --------------------------------------------------------------------------- subprotocols


@pytest.mark.parametrize(
    ("offered", "selected"),
    [
        ([JSON], JSON),
        ([RELIABLE], RELIABLE),
        (["my.custom.protocol"], "my.custom.protocol"),
        (["JSON.WebPubSub.Azure.V1"], "JSON.WebPubSub.Azure.V1"),
        (["foo.bar", RELIABLE, JSON], RELIABLE),
        ([JSON, RELIABLE], JSON),
        ([RELIABLE, JSON], RELIABLE),
    ],
    ids=[
        "json",
        "reliable",
        "unknown",
        "mixed-case",
        "unknown-then-known",
        "json-first",
        "reliable-first",
    ],
)
async def test_subprotocol_is_echoed_exactly(
    server: ServerLike, hub: str, offered: list[str], selected: str
) -> None:
    token = mint_client_token(server, hub, user="u")
    result = await raw_handshake(server, _target(hub, token), protocols=offered)
    assert result.status == 101, (result.status, result.body)
    assert result.headers.getall("Sec-WebSocket-Protocol", []) == [selected]


async def test_no_subprotocol_offered_means_no_header(server: ServerLike, hub: str) -> None:
    token = mint_client_token(server, hub, user="u")
    result = await raw_handshake(server, _target(hub, token))
    assert result.status == 101, (result.status, result.body)
    assert "Sec-WebSocket-Protocol" not in result.headers


@pytest.mark.parametrize("protocols", [(), ("my.custom.protocol",)], ids=["none", "unknown"])
async def test_none_or_unknown_subprotocol_is_raw_mode(
    server: ServerLike, hub: str, protocols: tuple[str, ...]
) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="raw-user", protocols=protocols)
        assert client.protocol == (protocols[0] if protocols else None)
        # raw clients get no `connected` frame and no envelope: the first frame is the body
        await wire.send_to_user(hub, "raw-user", "plain body")
        assert await client.recv_text() == "plain body"


async def test_first_known_subprotocol_decides_the_mode(server: ServerLike, hub: str) -> None:
    async with Wire(server) as wire:
        client = await wire.connect(hub, user="u", protocols=("foo.bar", RELIABLE, JSON))
        assert client.protocol == RELIABLE
        assert client.connected is not None
        assert "reconnectionToken" in client.connected
        plain = await wire.connect(hub, user="u", protocols=(JSON, RELIABLE))
        assert plain.protocol == JSON
        assert plain.connected is not None
        assert "reconnectionToken" not in plain.connected
        assert json.loads(plain.connected_text or "") == plain.connected
