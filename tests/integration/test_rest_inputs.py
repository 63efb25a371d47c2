"""Bad REST input gets a 4xx with the service's error body, never a 5xx, over real sockets.

Each request is written byte for byte on its own TCP connection (so request targets can hold
anything: raw non-UTF-8 bytes, stray ``%``, odd escapes) and signed, like the SDKs sign, for
exactly the URL it sends, so that it gets past the token check into the handlers. Hypothesis
picks the routes, names, query parameters and bodies; the node's log must stay free of errors.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from websockets.sync.client import connect

from tests.conftest import (
    CONFIG_TOML,
    FAST_LANE_MODES,
    WITHOUT_LANE,
    Server,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.timeout(180)

API_VERSION = "2024-12-01"
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@dataclass(frozen=True)
class Node:
    server: Server
    log: Path


@pytest.fixture(scope="module", params=FAST_LANE_MODES)
def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Node]:
    """A node of its own, so that its log holds only what these tests sent."""
    tmp = tmp_path_factory.mktemp("rest-inputs")
    config = CONFIG_TOML if request.param else CONFIG_TOML + WITHOUT_LANE
    server = start_server(tmp, ["--log-level", "debug"], config_toml=config)
    yield Node(server, tmp / "server.log")
    stop_server(server)


@pytest.fixture(scope="module", autouse=True)
def log_stays_clean(node: Node) -> Iterator[None]:
    yield
    text = node.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]
    assert " ERROR " not in text, text[-4000:]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def call(
    node: Node,
    method: str,
    target: bytes,
    *,
    body: bytes = b"",
    content_type: str | None = None,
    token: str | bytes | None = "sign",
    headers: dict[str, bytes] | None = None,
) -> Answer:
    """Send one request as these bytes and read the whole answer (the connection closes)."""
    server = node.server
    if token == "sign":
        audience = f"http://{server.host}:{server.port}" + target.decode("utf-8", "replace")
        claims = {"aud": audience, "exp": int(time.time()) + 300}
        token = jwt.encode(claims, server.access_key, algorithm="HS256")
    headers = {"Host": server.host.encode(), **(headers or {})}  # a Host given replaces ours
    lines = [method.encode() + b" " + target + b" HTTP/1.1"]
    if token is not None:
        lines.append(
            b"Authorization: Bearer " + (token.encode() if isinstance(token, str) else token)
        )
    if content_type is not None:
        lines.append(b"Content-Type: " + content_type.encode("utf-8", "surrogateescape"))
    for name, value in headers.items():
        lines.append(name.encode() + b": " + value)
    lines += [b"Content-Length: " + str(len(body)).encode(), b"Connection: close"]
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    answer_headers: dict[str, str] = {}
    for line in header_lines:
        field, _, text = line.partition(":")
        answer_headers[field.strip().lower()] = text.strip()
    return Answer(int(status_line.split(" ")[1]), answer_headers, rest)


def assert_answered(answer: Answer, method: str) -> None:
    """No 5xx; an error has the ErrorDetail body and the matching x-ms-error-code."""
    assert answer.status < 500, (answer.status, answer.body[:300])
    if answer.status >= 400 and method != "HEAD":
        body = json.loads(answer.body)
        body = body.get("error", body)  # api-version refusals wrap it, as ASP.NET's do
        assert isinstance(body["code"], str) and body["code"], body
        assert isinstance(body["message"], str), body
        assert answer.headers.get("x-ms-error-code") == body["code"], answer.headers


def target(path: str, query: list[tuple[str, str]], api_version: bool = True) -> bytes:
    items = [*query, ("api-version", API_VERSION)] if api_version else query
    encoded = urllib.parse.urlencode(items, quote_via=urllib.parse.quote)
    return (path + ("?" + encoded if encoded else "")).encode()


def quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


# -- the two 500s of the defect report, and their neighbours -----------------------------------


@pytest.mark.parametrize("token", ["ü", "\u20ac\u20ac", "a b", "%%%", "////", "=", "a" * 5000])
def test_a_bad_continuation_token_is_a_bad_request(node: Node, token: str) -> None:
    path = "/api/hubs/inputs/groups/g/connections"
    answer = call(node, "GET", target(path, [("continuationToken", token)]))
    assert answer.status == 400, answer
    assert_answered(answer, "GET")


@pytest.mark.parametrize("where", ["query", "body"])
def test_a_filter_with_a_huge_number_is_a_bad_request(node: Node, where: str) -> None:
    text = "length(userId) eq " + "1" * 5000
    if where == "query":
        answer = call(
            node,
            "POST",
            target("/api/hubs/inputs/:send", [("filter", text)]),
            body=b"x",
            content_type="text/plain",
        )
    else:
        body = json.dumps({"groups": ["g"], "filter": text}).encode()
        answer = call(
            node,
            "POST",
            target("/api/hubs/inputs/:addToGroups", []),
            body=body,
            content_type="application/json",
        )
    assert answer.status == 400, answer
    assert_answered(answer, "POST")
    assert json.loads(answer.body)["message"].startswith("Invalid syntax for 'length(userId) eq 1")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("maxpagesize", "\u0661\u0662"),  # Arabic-Indic digits: int() would take them
        ("maxpagesize", " 12 "),
        ("maxpagesize", "1_0"),
        ("maxpagesize", "9" * 5000),
        ("top", "-" + "9" * 5000),
        ("top", "0x10"),
    ],
)
def test_integer_parameters_are_ascii_digits(node: Node, name: str, value: str) -> None:
    path = "/api/hubs/inputs/groups/g/connections"
    answer = call(node, "GET", target(path, [(name, value)]))
    assert answer.status == 400, answer
    assert_answered(answer, "GET")


@pytest.mark.parametrize("raw", [b"\xff", b"\xed\xa0\x80", b"\xc3"])
def test_a_request_target_that_is_not_utf8_is_a_bad_request(node: Node, raw: bytes) -> None:
    answer = call(
        node,
        "POST",
        b"/api/hubs/inputs/users/a" + raw + b"/:send?api-version=1",
        body=b"x",
        content_type="text/plain",
    )
    assert answer.status == 400, answer
    assert_answered(answer, "POST")


@pytest.mark.parametrize("escape", ["%FF", "%ED%A0%80", "%C3"])
def test_a_name_that_is_not_utf8_is_a_bad_request(node: Node, escape: str) -> None:
    path = f"/api/hubs/inputs/users/a{escape}/:send"
    answer = call(node, "POST", target(path, []), body=b"x", content_type="text/plain")
    assert answer.status == 400, answer
    assert_answered(answer, "POST")


@pytest.mark.parametrize("token", [b"\xff\xfe", "eyJü.x.y".encode(), b"a.b.c\x80"])
def test_a_token_that_is_not_ascii_is_unauthorized(node: Node, token: bytes) -> None:
    answer = call(
        node,
        "POST",
        target("/api/hubs/inputs/:send", []),
        body=b"x",
        content_type="text/plain",
        token=token,
    )
    assert answer.status == 401, answer
    assert_answered(answer, "POST")


def test_a_client_token_with_half_a_surrogate_pair_is_refused(node: Node) -> None:
    """Such a user id could never be listed (JSON) or logged: the token is refused at connect."""
    server = node.server
    aud = f"http://{server.host}:{server.port}/client/hubs/inputs"
    claims = {"aud": aud, "exp": int(time.time()) + 300, "sub": "\ud800", "webpubsub.group": "g"}
    token = jwt.encode(claims, server.access_key, algorithm="HS256")
    answer = call(
        node,
        "GET",
        f"/client/hubs/inputs?access_token={token}".encode(),
        token=None,
        headers={
            "Upgrade": b"websocket",
            "Connection": b"Upgrade",
            "Sec-WebSocket-Key": b"dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version": b"13",
        },
    )
    assert answer.status == 401, answer
    listing = call(node, "GET", target("/api/hubs/inputs/groups/g/connections", []))
    assert (listing.status, json.loads(listing.body)) == (200, {"value": []})


# -- fuzzing ------------------------------------------------------------------------------------

ROUTES = [
    ("POST", ":addToGroups"),
    ("POST", ":closeConnections"),
    ("POST", ":generateToken"),
    ("POST", ":removeFromGroups"),
    ("POST", ":send"),
    ("DELETE", "connections/{c}"),
    ("HEAD", "connections/{c}"),
    ("POST", "connections/{c}/:send"),
    ("DELETE", "connections/{c}/groups"),
    ("HEAD", "groups/{g}"),
    ("POST", "groups/{g}/:closeConnections"),
    ("POST", "groups/{g}/:send"),
    ("GET", "groups/{g}/connections"),
    ("DELETE", "groups/{g}/connections/{c}"),
    ("PUT", "groups/{g}/connections/{c}"),
    ("DELETE", "permissions/{p}/connections/{c}"),
    ("HEAD", "permissions/{p}/connections/{c}"),
    ("PUT", "permissions/{p}/connections/{c}"),
    ("HEAD", "users/{u}"),
    ("POST", "users/{u}/:closeConnections"),
    ("POST", "users/{u}/:send"),
    ("DELETE", "users/{u}/groups"),
    ("DELETE", "users/{u}/groups/{g}"),
    ("PUT", "users/{u}/groups/{g}"),
]
PARAMETERS = [
    "filter",
    "continuationToken",
    "maxpagesize",
    "top",
    "messageTtlSeconds",
    "minutesToExpire",
    "excluded",
    "reason",
    "targetName",
    "userId",
    "role",
    "group",
    "clientType",
    "api-version",
]
NASTY = [
    "",
    " ",
    "\t",
    "%",
    "%%",
    "%2F",
    "%252F",
    "?",
    "#",
    "&",
    "=",
    "+",
    "/",
    "..",
    ".",
    "\x00",
    "\u0661",
    "é",
    "\U0001f600",
    "\ufffd",
    "'",
    "''",
    '"',
    "\\",
    "null",
    "true",
    "-1",
    "0",
    "2147483648",
    "1" * 5000,
    "a" * 2000,
    "sendToGroup",
    "joinLeaveGroup",
    "mqtt",
    "socketio",
    "userId eq",
    "length(userId) eq " + "9" * 4400,
    "'g' in groups",
    "not (true)",
]
text = st.one_of(st.sampled_from(NASTY), st.text(max_size=40), st.text(max_size=3000))
# A name as it goes into the path: quoted as the SDKs quote it, quoted with some characters left
# raw, or raw bytes outright.
path_names = st.one_of(
    text.map(quote).map(str.encode),
    st.tuples(text, st.sampled_from(["", "/", "%", "?#", "'()*!:@"])).map(
        lambda t: urllib.parse.quote(t[0], safe=t[1]).encode()
    ),
    st.binary(max_size=30).map(lambda b: urllib.parse.quote_from_bytes(b, safe="%").encode()),
)
hubs = st.one_of(
    st.just(b"inputs"), st.sampled_from([b"Inputs", b"a%62c", b"1hub", b"h" * 129]), path_names
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=10,
)
group_bodies = st.one_of(
    st.fixed_dictionaries({"groups": st.lists(text, max_size=4)}, optional={"filter": text}),
    st.fixed_dictionaries({"groups": json_values, "filter": json_values}),
    json_values,
).map(lambda v: json.dumps(v).encode())
bodies = st.one_of(group_bodies, st.binary(max_size=200), text.map(lambda s: s.encode()))
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "text/plain",
        "application/octet-stream",
        "text/plain; charset=x",
        "application/json;;",
        "text/html",
        "",
        "\u00e9/\u00e9",
        "multipart/form-data; boundary=",
    ]
)


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes, bytes, str | None]:
    method, shape = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 9)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]))
    path = shape.format(
        c=draw(path_names).decode("latin-1"),
        g=draw(path_names).decode("latin-1"),
        u=draw(path_names).decode("latin-1"),
        p=draw(
            st.one_of(
                st.sampled_from(["sendToGroup", "joinLeaveGroup"]),
                path_names.map(lambda b: b.decode("latin-1")),
            )
        ),
    )
    query = draw(st.lists(st.tuples(st.sampled_from(PARAMETERS), text), max_size=6))
    url = target(
        "/api/hubs/" + draw(hubs).decode("latin-1") + "/" + path, query, draw(st.booleans())
    )
    return method, url, draw(bodies), draw(content_types)


@FUZZ
@given(requests())
def test_no_request_gets_a_server_error(
    node: Node, request: tuple[str, bytes, bytes, str | None]
) -> None:
    method, url, body, content_type = request
    assert_answered(call(node, method, url, body=body, content_type=content_type), method)


@FUZZ
@given(
    st.sampled_from(["/api/hubs/inputs/groups/g/connections", "/api/hubs/inputs/:send"]),
    st.lists(st.tuples(st.sampled_from(PARAMETERS), text), min_size=1, max_size=4),
)
def test_no_parameter_gets_a_server_error(
    node: Node, path: str, query: list[tuple[str, str]]
) -> None:
    method = "GET" if path.endswith("connections") else "POST"
    answer = call(node, method, target(path, query), body=b"{}", content_type="application/json")
    assert_answered(answer, method)


@FUZZ
@given(st.binary(min_size=1, max_size=80))
def test_no_raw_path_gets_a_server_error(node: Node, raw: bytes) -> None:
    """Raw bytes straight into the request line: some make it invalid HTTP, which is a 400 too."""
    url = b"/api/hubs/inputs/" + raw + b"?api-version=" + API_VERSION.encode()
    assert_answered(call(node, "POST", url, body=b"x", content_type="text/plain"), "POST")


@pytest.fixture(scope="module")
def two_members(node: Node) -> Iterator[None]:
    """Two connections in group ``g`` of hub ``inputs``."""
    server = node.server
    aud = f"http://{server.host}:{server.port}/client/hubs/inputs"
    claims = {"aud": aud, "exp": int(time.time()) + 600, "webpubsub.group": "g"}
    token = jwt.encode(claims, server.access_key, algorithm="HS256")
    url = f"ws://{server.host}:{server.port}/client/hubs/inputs?access_token={token}"
    # max_queue=None: the fuzz sends them many messages, which nobody reads.
    with connect(url, proxy=None, max_queue=None), connect(url, proxy=None, max_queue=None):
        yield


@FUZZ
@given(
    st.sampled_from(
        [
            ("POST", "/api/hubs/inputs/:send"),
            ("POST", "/api/hubs/inputs/:generateToken"),
            ("GET", "/api/hubs/inputs/groups/g/connections"),
        ]
    ),
    st.sampled_from(["Authorization", "Content-Type", "Host", "X-Any"]),
    st.binary(max_size=200).filter(lambda b: b"\r" not in b and b"\n" not in b),
)
def test_no_header_gets_a_server_error(
    node: Node, two_members: None, route: tuple[str, str], name: str, value: bytes
) -> None:
    """A listing of a group of two, a page of one: the answer has a nextLink built from Host."""
    method, path = route
    token: Any = None if name == "Authorization" else "sign"
    answer = call(
        node,
        method,
        target(path, [("maxpagesize", "1")]),
        body=b"x",
        token=token,
        content_type=None if name == "Content-Type" else "text/plain",
        headers={name: value},
    )
    assert_answered(answer, method)
