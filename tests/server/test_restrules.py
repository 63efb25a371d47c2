"""The REST rulebook without sockets: routes, refusals, content types, answers as bytes."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import jwt
import pytest
from aiohttp.helpers import parse_content_type

from hubbub import metrics
from hubbub.config import load_config
from hubbub.errors import BadRequestError
from hubbub.policy import Policy
from hubbub.protocol.entra import KeySet
from hubbub.protocol.messages import DataType
from hubbub.server import rest
from hubbub.server.errors import error_response
from hubbub.server.restrules import (
    API_SUPPORTED_VERSIONS,
    CONTENT_TYPES,
    DEFER,
    Operation,
    Refusal,
    RestRules,
    Route,
    data_type,
    media_type,
    raw_error,
    route,
)
from tests._entra import OBJECT_ID, TENANT, TestKey, entra_token

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
RULES = RestRules((KEY,), 75.0)


def token(target: str, key: str = KEY) -> str:
    claims = {"aud": f"http://127.0.0.1:8080{target}", "exp": int(time.time()) + 60}
    return jwt.encode(claims, key, algorithm="HS256")


def test_every_operation_has_an_aiohttp_handler() -> None:
    assert set(rest._HANDLERS) == set(Operation)


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        ("POST", "/api/hubs/h/:send?api-version=1", Route(Operation.SEND_TO_ALL, "h", ())),
        (
            "POST",
            "/api/hubs/h/users/a%2Fb/:send",
            Route(Operation.SEND_TO_USER, "h", (("userId", "a/b"),)),
        ),
        (
            "PUT",
            "/api/hubs/h/groups/g/connections/c",
            Route(Operation.ADD_CONNECTION_TO_GROUP, "h", (("group", "g"), ("connectionId", "c"))),
        ),
        (
            "POST",
            "http://proxy.example/api/hubs/h/groups/g%252F/:send?x=1",
            Route(Operation.SEND_TO_GROUP, "h", (("group", "g%2F"),)),
        ),
        ("GET", "/api/hubs/h/:send", None),
        ("POST", "/api/hubs/h/users//:send", None),
        ("POST", "/api/hub/h/:send", None),
        ("DELETE", "/api/hubs/h/users/u/groups/g/x", None),
    ],
)
def test_routes(method: str, target: str, expected: Route | None) -> None:
    assert route(method, target) == expected


def test_a_name_that_is_not_utf8_is_a_bad_request() -> None:
    with pytest.raises(BadRequestError):
        route("POST", "/api/hubs/h/users/%ff/:send")


def test_refusals_in_the_order_aiohttp_answers_them() -> None:
    target = "/api/hubs/h/:send?api-version=1"
    good = f"Bearer {token(target)}"
    assert RULES.refusal(target, good) is None
    assert RULES.refusal("/api/\udcff", good) == Refusal(400, "the request target is not UTF-8")
    assert RULES.refusal(target, "") == Refusal(401, "a bearer token is required")
    assert RULES.refusal(target, "Basic x") == Refusal(401, "a bearer token is required")
    assert RULES.refusal(target, f"Bearer {token(target, 'k' * 40)}") is not None
    assert RULES.refusal("/api/hubs/h/users/u/:send", good) is not None  # other audience
    assert RULES.refusal("/api/health", "", health=True) is None


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "Text/Plain; charset=utf-8",
        " application/json ",
        "application/json;;",
        "application/octet-stream; x=y",
        "text/html",
        "",
        "text",
        "a/b/c",
        "\u00e9/\u00e9",
        "multipart/form-data; boundary=",
        'text/plain; q="a;b"',
    ],
)
def test_media_types_are_read_as_aiohttp_reads_them(content_type: str) -> None:
    assert media_type(content_type) == parse_content_type(content_type)[0]


def test_data_types() -> None:
    assert data_type(None) is DataType.BINARY  # RFC 9110 §8.3: octets when not said
    assert data_type("TEXT/PLAIN;charset=utf-8") is DataType.TEXT
    assert data_type("text/html") is None
    assert set(CONTENT_TYPES.values()) == {DataType.TEXT, DataType.JSON, DataType.BINARY}


def test_an_error_as_bytes_is_what_aiohttp_answers() -> None:
    answer = raw_error(500, "internal server error")
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 500 Internal Server Error"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    response = error_response(500, "internal server error")
    assert body == response.body
    assert headers["Content-Length"] == str(len(body))
    assert headers["x-ms-error-code"] == response.headers["x-ms-error-code"]
    assert headers["Content-Type"] == "application/json"
    assert {"Date", "Server"} <= set(headers)
    assert b"Connection: close\r\n" in raw_error(408, "slow", close=True)


def _policy_rules(tmp_path: Path, text: str) -> RestRules:
    path = tmp_path / "hubbub.toml"
    path.write_text(text)
    return RestRules((KEY,), 75.0, Policy(load_config(str(path), env={})))


def test_entra_tokens_by_the_rulebook(tmp_path: Path, entra_key: TestKey, jwks_file: Path) -> None:
    """Before the keys are read an Entra token is DEFER-red (the lane hands it on); once read:
    None for the principal's hub, 403 with the data action for another, 401 with a challenge
    for a token that does not verify; a path that names no operation is the handler's (404)."""
    rules = _policy_rules(
        tmp_path,
        f'[auth.entra]\ntenants = ["{TENANT}"]\njwks_file = "{jwks_file}"\n'
        f'[[auth.entra.principals]]\nobject_id = "{OBJECT_ID}"\nhubs = {{ chat = "owner" }}\n',
    )
    bearer = f"Bearer {entra_token(entra_key)}"
    send = "/api/hubs/chat/:send?api-version=1"
    assert rules.refusal(send, bearer) is DEFER
    assert rules.policy is not None and rules.policy.entra is not None
    rules.policy.entra.validator.replace_keys(KeySet.from_json(jwks_file.read_bytes()))
    assert rules.refusal(send, bearer) is None
    forbidden = rules.refusal("/api/hubs/news/:send?api-version=1", bearer)
    assert forbidden is not None and forbidden.status == 403
    assert forbidden.message.startswith("Microsoft.SignalRService/WebPubSub/hub/send/action ")
    assert forbidden.headers == (API_SUPPORTED_VERSIONS,)  # past the token check
    generate = rules.refusal("/api/hubs/news/:generateToken", bearer)
    assert generate is not None and "clientConnection/generateToken/action" in generate.message
    assert rules.refusal("/api/hubs/chat/nothing/here", bearer) is None
    expired = f"Bearer {entra_token(entra_key, lifetime=-600, not_before=-4000)}"
    refused = rules.refusal(send, expired)
    assert refused is not None and refused.status == 401
    assert refused.headers == (("WWW-Authenticate", 'Bearer error="invalid_token"'),)
    assert rules.refusal(send, f"Bearer {token(send)}") is None  # access keys still work


async def test_refusal_after_keys_reads_them(
    tmp_path: Path, entra_key: TestKey, jwks_file: Path
) -> None:
    rules = _policy_rules(
        tmp_path,
        f'[auth.entra]\ntenants = ["{TENANT}"]\njwks_file = "{jwks_file}"\n'
        f'[[auth.entra.principals]]\nobject_id = "{OBJECT_ID}"\nhubs = {{ "*" = "owner" }}\n',
    )
    send = "/api/hubs/chat/:send?api-version=1"
    assert await rules.refusal_after_keys(send, f"Bearer {entra_token(entra_key)}") is None
    unknown = await rules.refusal_after_keys(send, f"Bearer {entra_token(TestKey())}")
    assert unknown is not None and unknown.status == 401


def test_network_and_rate_by_the_rulebook(tmp_path: Path) -> None:
    """403 from a denied address (health is answered); 429 with Retry-After over the rate,
    counted unless the reader hands the request on (count=False)."""
    rules = _policy_rules(
        tmp_path,
        '[network]\ndefault_action = "deny"\n'
        '[[network.rules]]\naction = "allow"\naddresses = ["10.0.0.0/8"]\n'
        "[limits]\nrest_requests_per_second = 1\n",
    )
    send = "/api/hubs/chat/:send?api-version=1"
    good = f"Bearer {token(send)}"
    inside, outside = ipaddress.ip_address("10.1.1.1"), ipaddress.ip_address("192.0.2.1")
    assert rules.refusal(send, good, address=outside) == Refusal(
        403, "the network rules do not allow this address"
    )
    assert rules.refusal("/api/health", "", health=True, address=outside) is None
    assert rules.refusal(send, good, address=inside) is None
    before = metrics.REST_THROTTLED.value
    throttled = rules.refusal(send, good, address=inside, count=False)
    assert throttled is not None and throttled.status == 429
    assert dict(throttled.headers)["Retry-After"] == "1"
    assert API_SUPPORTED_VERSIONS in throttled.headers
    assert metrics.REST_THROTTLED.value == before
    assert rules.refusal(send, good, address=inside) is not None
    assert metrics.REST_THROTTLED.value == before + 1
