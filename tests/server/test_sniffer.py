"""The fast lane's request framing, without sockets: which bytes it answers, which go to aiohttp."""

from __future__ import annotations

from typing import Any

import pytest

from hubbub.server.fastlane import Sniffer
from hubbub.server.limits import MAX_BODY_BYTES, MAX_LANE_HEAD_BYTES as MAX_HEAD_BYTES


class Lane:
    """Admits every head but one whose token is ``bad``; takes every body not starting with
    ``no``; records what it saw."""

    def __init__(self) -> None:
        self.heads: list[tuple[bytes, dict[bytes, bytes]]] = []
        self.seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []

    def admit(self, url: bytes, headers: dict[bytes, bytes], *args: object) -> Any:
        self.heads.append((url, headers))
        return None if headers.get(b"authorization") == b"Bearer bad" else (url, headers)

    def send(self, admitted: Any, body: bytes) -> bytes | None:
        url, headers = admitted
        self.seen.append((url, headers, body))
        if body == b"boom":
            raise RuntimeError("a defect in the lane")
        return None if body.startswith(b"no") else b"202:" + body


def request(
    body: bytes = b"hello", *, method: str = "POST", extra: str = "", token: str = "t"
) -> bytes:
    return (
        f"{method} /api/hubs/h/users/u/:send?api-version=2024-12-01 HTTP/1.1\r\n"
        f"Host: x\r\nAuthorization: Bearer {token}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def sniffer() -> tuple[Sniffer, Lane, list[bytes]]:
    lane, written = Lane(), list[bytes]()
    return Sniffer(lane, written.append, lambda: None), lane, written  # type: ignore[arg-type]


def test_a_plain_send_is_answered_and_nothing_goes_on() -> None:
    s, lane, written = sniffer()
    assert s.feed(request()) is None
    assert written == [b"202:hello"]
    url, headers, body = lane.seen[0]
    assert url == b"/api/hubs/h/users/u/:send?api-version=2024-12-01"
    assert headers[b"authorization"] == b"Bearer t"
    assert headers[b"content-type"] == b"text/plain"
    assert body == b"hello"
    assert b"host" not in headers  # only the headers the lane reads are kept


def test_pipelined_sends_in_one_chunk_are_answered_in_order_in_one_write() -> None:
    s, _, written = sniffer()
    assert s.feed(request(b"a") + request(b"b") + request(b"c")) is None
    assert written == [b"202:a202:b202:c"]


def test_the_answers_before_a_hand_over_are_written_before_it() -> None:
    s, _, written = sniffer()
    rest = request(b"no") + request(b"after")
    assert s.feed(request(b"a") + request(b"b") + rest) == rest
    assert written == [b"202:a202:b"]


@pytest.mark.parametrize("step", [1, 2, 7, 64])
def test_a_request_split_anywhere_is_answered_once_whole(step: int) -> None:
    s, _, written = sniffer()
    data = request(b"x" * 300) + request(b"second")
    for i in range(0, len(data), step):
        assert s.feed(data[i : i + step]) is None
    assert written == [b"202:" + b"x" * 300, b"202:second"]


def test_from_the_first_refused_request_on_every_byte_goes_to_aiohttp() -> None:
    s, _, written = sniffer()
    rest = request(b"no thanks") + request(b"after")
    assert s.feed(request(b"first") + rest) == rest
    assert written == [b"202:first"]


def test_a_failure_in_the_lane_hands_the_failing_request_to_aiohttp() -> None:
    s, _, written = sniffer()
    rest = request(b"boom") + request(b"after")
    assert s.feed(request(b"first") + rest) == rest
    assert written == [b"202:first"]


def test_what_was_buffered_goes_along_when_the_lane_steps_aside() -> None:
    s, _, written = sniffer()
    data = request(b"no")
    assert s.feed(data[:10]) is None
    assert s.feed(data[10:]) == data
    assert written == []


@pytest.mark.parametrize(
    "data",
    [
        request(method="GET"),
        request(method="PUT"),
        request(extra="Expect: 100-continue\r\n"),
        request(extra="Connection: close\r\n"),
        request(b"", extra="Connection: close\r\n"),
        request(b"", extra="Connection: keep-alive, Close\r\n"),
        request(b"x" * (MAX_BODY_BYTES + 1)),
        b"POST /api/hubs/h/:send?api-version=1 HTTP/1.0\r\nContent-Length: 1\r\n\r\nx",
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\n\r\n",  # no Content-Length
        b"GET /client/hubs/h HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=[
        "get",
        "put",
        "expect",
        "connection-close",
        "connection-close-empty-body",
        "connection-close-among-others",
        "body-too-big",
        "http-1.0",
        "chunked",
        "no-length",
        "upgrade",
        "garbage",
    ],
)
def test_requests_the_lane_does_not_take_go_to_aiohttp_untouched(data: bytes) -> None:
    s, lane, written = sniffer()
    assert s.feed(data) == data
    assert written == [] and lane.seen == []


def test_a_head_that_never_ends_goes_to_aiohttp() -> None:
    s, _, _ = sniffer()
    data = b"POST /x HTTP/1.1\r\nX-Long: " + b"a" * MAX_HEAD_BYTES
    assert s.feed(data) == data


def test_an_incomplete_head_waits() -> None:
    s, lane, written = sniffer()
    assert s.feed(b"POST /api/hubs/h/:send?api-version=1 HTTP/1.1\r\n") is None
    assert lane.seen == [] and written == []


@pytest.mark.parametrize("split", [False, True], ids=["same-read", "later-read"])
def test_bytes_that_cannot_start_a_send_go_to_aiohttp_at_once(split: bool) -> None:
    # What a body longer than its Content-Length leaves behind: aiohttp answers 400 and closes.
    s, _, written = sniffer()
    leftover = "€".encode()
    if split:
        assert s.feed(request(b"sent")) is None
        assert s.feed(leftover) == leftover
    else:
        assert s.feed(request(b"sent") + leftover) == leftover
    assert written == [b"202:sent"]


@pytest.mark.parametrize("first", [b"P", b"PO", b"POS", b"POST"])
def test_the_start_of_a_post_waits_for_more(first: bytes) -> None:
    s, _, _ = sniffer()
    assert s.feed(first) is None
    assert s.feed(b"X") == first + b"X"  # not POST after all


def test_a_refused_token_goes_to_aiohttp_as_soon_as_the_head_is_complete() -> None:
    s, lane, written = sniffer()
    data = request(b"x" * 1000, token="bad")
    head_end = data.index(b"\r\n\r\n") + 4
    assert s.feed(data[: head_end - 1]) is None
    assert s.feed(data[head_end - 1 : head_end + 10]) == data[: head_end + 10]  # body not awaited
    assert written == [] and lane.seen == []


def test_an_admitted_request_waits_for_its_body_and_its_head_is_judged_once() -> None:
    s, lane, written = sniffer()
    data = request(b"y" * 5000) + request(b"next")
    for i in range(len(data)):
        assert s.feed(data[i : i + 1]) is None
    assert written == [b"202:" + b"y" * 5000, b"202:next"]
    assert len(lane.heads) == 2  # one parse and one token check per request, not per byte


def test_reading_head_is_true_only_between_the_first_and_last_byte_of_a_head() -> None:
    s, _, _ = sniffer()
    data = request(b"body")
    head_end = data.index(b"\r\n\r\n") + 4
    assert not s.reading_head
    s.feed(data[:5])
    assert s.reading_head
    s.feed(data[5:head_end])
    assert not s.reading_head  # the body is awaited: the head is complete
    s.feed(data[head_end:])
    assert not s.reading_head  # answered, nothing pending


def test_only_the_unanswered_request_is_kept() -> None:
    s, _, written = sniffer()
    first, second = request(b"a" * 100), request(b"b" * 100)
    assert s.feed(first + second[:50]) is None
    assert written == [b"202:" + b"a" * 100]
    assert s.feed(second[50:]) is None
    assert written[-1] == b"202:" + b"b" * 100
