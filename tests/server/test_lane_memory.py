"""What the fast lane remembers of the URLs it is sent: nothing before the token is checked,
and a bounded amount after.

Heads of up to 16 KiB are the lane's to read; if it remembered each URL it routed before the
token check, unauthenticated clients could make it hold thousands of them.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

from hubbub.server import fastlane
from hubbub.server.fastlane import FastLane
from hubbub.server.restrules import CACHED_URLS, RestRules

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
LONG = 8 * 1024


def lane() -> FastLane:
    return FastLane(None, RestRules((KEY,), 75.0))  # type: ignore[arg-type]  # sends nothing


def retained(work: Callable[[], Any]) -> int:
    """Bytes still allocated after ``work`` (and a collection)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def url(i: int, length: int = LONG) -> bytes:
    return f"/api/hubs/h/users/{'u' * length}{i}/:send?api-version=2024-12-01".encode()


def headers(token: str) -> dict[bytes, bytes]:
    return {b"authorization": b"Bearer " + token.encode(), b"content-type": b"text/plain"}


def test_urls_of_requests_with_a_bad_token_are_not_remembered() -> None:
    the_lane = lane()

    def work() -> None:
        for i in range(2000):
            assert the_lane.admit(url(i), headers("not.a.token")) is None

    assert retained(work) < 1024 * 1024  # remembered, they would hold about 50 MB


def test_what_authenticated_sends_leave_is_bounded() -> None:
    sends = fastlane._Sends()
    send = fastlane._plain_send(url(0, 10))
    assert send is not None
    for i in range(3 * CACHED_URLS):
        sends.remember(url(i, 10), send)
    sends.remember(url(0), send)  # longer than CACHED_URL_BYTES
    assert len(sends) == CACHED_URLS
    assert sends.get(url(0)) is None and sends.get(url(3 * CACHED_URLS - 1, 10)) is send
