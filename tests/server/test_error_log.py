"""Error answers in the log: a REST 5xx logged as it happens, a 4xx counted for the summary.

The real application (``build_app``) behind aiohttp's test server, over a real socket; only
the service's ``send`` is made to fail, for the 5xx.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer

from hubbub.config import Config
from hubbub.logs import ACTIVITY
from hubbub.server.app import build_app
from hubbub.server.rest import SERVICE

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
QUERY = "?api-version=2024-12-01"


@pytest.fixture
async def client() -> AsyncIterator[TestClient[object, object]]:
    app = build_app(Config(access_keys=(KEY,)))

    async def broken_send(*args: object) -> None:
        raise RuntimeError("the engine broke")

    app[SERVICE].send = broken_send  # type: ignore[method-assign]
    async with TestClient(TestServer(app)) as client:
        ACTIVITY.reset()
        yield client


def _bearer(client: TestClient[object, object], path: str) -> dict[str, str]:
    url = str(client.make_url(path))
    token = jwt.encode({"aud": url, "exp": int(time.time()) + 60}, KEY, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


async def test_a_rest_5xx_is_logged_as_it_happens(
    client: TestClient[object, object], caplog: pytest.LogCaptureFixture
) -> None:
    path = "/api/hubs/chat/:send" + QUERY
    with caplog.at_level(logging.ERROR, logger="hubbub.rest"):
        resp = await client.post(path, data=b"hi", headers=_bearer(client, path))
        assert resp.status == 500
    answered = [r.getMessage() for r in caplog.records if "answered" in r.getMessage()]
    assert answered == ["POST /api/hubs/chat/:send answered 500 InternalServerError"]
    assert ACTIVITY.rest_errors.take() == (0, "")


async def test_a_rest_4xx_is_counted_not_logged(
    client: TestClient[object, object], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            assert (await client.post("/api/hubs/chat/:send" + QUERY, data=b"x")).status == 401
        path = "/api/hubs/chat/users/nobody" + QUERY
        resp = await client.head(path, headers=_bearer(client, path))
        assert resp.status == 404  # an existence check's answer, not an error
    assert [r for r in caplog.records if r.name.startswith("hubbub")] == []
    assert ACTIVITY.rest_errors.take() == (3, "401 Unauthorized: 3")
