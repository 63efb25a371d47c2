"""The REST rulebook without sockets: routes, refusals, content types, answers as bytes."""

from __future__ import annotations

import time

import jwt
import pytest
from aiohttp.helpers import parse_content_type

from hubbub.errors import BadRequestError
from hubbub.protocol.messages import DataType
from hubbub.server import rest
from hubbub.server.errors import error_response
from hubbub.server.restrules import (
    CONTENT_TYPES,
    Operation,
    RestRules,
    Route,
    data_type,
    media_type,
    raw_error,
    route,
)

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
    assert RULES.refusal(target, good, "1") is None
    assert RULES.refusal("/api/\udcff", good, "1") == (400, "the request target is not UTF-8")
    assert RULES.refusal(target, "", "1") == (401, "a bearer token is required")
    assert RULES.refusal(target, "Basic x", "1") == (401, "a bearer token is required")
    assert RULES.refusal(target, f"Bearer {token(target, 'k' * 40)}", "1") is not None
    assert RULES.refusal("/api/hubs/h/users/u/:send", good, "1") is not None  # other audience
    assert RULES.refusal(target, good, None) == (
        400,
        "the api-version query parameter is required",
    )
    assert RULES.refusal("/api/health", "", None, health=True) is None


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


def test_a_passing_request_is_judged_with_its_tokens_lifetime() -> None:
    target = "/api/hubs/h/:send?api-version=1"
    now = int(time.time())
    claims = {"aud": f"http://h{target}", "nbf": now - 5, "exp": now + 60}
    good = f"Bearer {jwt.encode(claims, KEY, algorithm='HS256')}"
    assert RULES.judge(target, good, "1") == (now - 5 - 30, now + 60 + 30)  # 30 s of skew
    assert RULES.judge(target, "", "1") == (401, "a bearer token is required")
    assert RULES.judge("/api/health", "", None, health=True) == (float("-inf"), float("inf"))
