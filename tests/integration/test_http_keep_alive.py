"""Idle HTTP connections are closed after ``server.http_keep_alive_seconds``, busy ones are not.

The fast lane serves some connections alone (aiohttp never sees them); aiohttp serves the rest.
Both kinds close after the same idle time, and neither closes while its client keeps sending.
A node with a 2 s keep-alive makes the times short.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CONFIG_TOML, Server, start_server, stop_server
from tests.integration.test_fastlane import Http

KEEP_ALIVE = 2.0
# The lane checks four times per keep-alive period; aiohttp closes on the dot.
CLOSED_WITHIN = KEEP_ALIVE * 1.25 + 2.0


@pytest.fixture(scope="module")
def brief(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = CONFIG_TOML + f"\n[server]\nhttp_keep_alive_seconds = {KEEP_ALIVE}\n"
    srv = start_server(tmp_path_factory.mktemp("keepalive"), config_toml=config)
    yield srv
    stop_server(srv)


async def _closed(http: Http, within: float) -> float:
    """When the server closed the connection (it must, within ``within``)."""
    try:
        rest = await asyncio.wait_for(http.reader.read(), within)
    except TimeoutError:
        raise AssertionError(f"the idle connection was still open after {within} s") from None
    assert rest == b""
    return time.monotonic()


def _send(http: Http, n: int) -> bytes:
    return http.request("/api/hubs/idle/users/nobody/:send", f"message {n}".encode())


async def test_a_connection_the_lane_alone_serves_stays_open_while_busy_then_closes(
    brief: Server,
) -> None:
    async with Http(brief) as http:
        # Three keep-alive periods of sends 0.3 s apart: the connection must stay open all along
        # (aiohttp, which never saw these requests, must not close it as idle either).
        deadline = time.monotonic() + 3 * KEEP_ALIVE
        n = 0
        while time.monotonic() < deadline:
            http.writer.write(_send(http, n))
            status, _, _ = await http.answer()
            assert status == 202
            last = time.monotonic()
            n += 1
            await asyncio.sleep(0.3)
        assert n >= 8
        assert await _closed(http, CLOSED_WITHIN) - last >= KEEP_ALIVE * 0.9


async def test_a_connection_aiohttp_serves_closes_when_idle(brief: Server) -> None:
    async with Http(brief) as http:
        http.writer.write(f"GET /api/health HTTP/1.1\r\nHost: {brief.host}\r\n\r\n".encode())
        status, _, _ = await http.answer()
        assert status == 200
        await _closed(http, CLOSED_WITHIN)


async def test_a_connection_that_never_sends_closes_when_idle(brief: Server) -> None:
    async with Http(brief) as http:
        await _closed(http, CLOSED_WITHIN)


async def test_the_first_request_for_aiohttp_moves_the_connection_there(brief: Server) -> None:
    """Sends via the lane, then a request aiohttp answers, then sends again: all answered."""
    async with Http(brief) as http:
        http.writer.write(_send(http, 1))
        assert (await http.answer())[0] == 202
        http.writer.write(f"GET /api/health HTTP/1.1\r\nHost: {brief.host}\r\n\r\n".encode())
        assert (await http.answer())[0] == 200
        for n in range(3):
            await asyncio.sleep(0.4)
            http.writer.write(_send(http, n))
            assert (await http.answer())[0] == 202
        await _closed(http, CLOSED_WITHIN)


def test_the_setting_is_validated(tmp_path: Path) -> None:
    from hubbub.config import load_config
    from hubbub.errors import ConfigError

    path = tmp_path / "bad.toml"
    path.write_text("[server]\nhttp_keep_alive_seconds = 0\n")
    with pytest.raises(ConfigError, match=r"server\.http_keep_alive_seconds"):
        load_config(str(path), env={})
