"""Entra signing keys read from a file or fetched over https, refreshed for a new kid and every
``refresh_seconds``; a failed read keeps the keys there were."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from hubbub.entrakeys import EntraKeys, load_key_file
from hubbub.protocol.entra import (
    EntraSettings,
    EntraTokenError,
    EntraValidator,
    UnknownKeyError,
    tenant_issuers,
)
from hubbub.server.tls import server_context, upstream_context
from tests._entra import TENANT, TestKey, entra_token, jwks, write_jwks
from tests._pki import make_pki

OLD, NEW = TestKey(), TestKey()


def validator() -> EntraValidator:
    return EntraValidator(EntraSettings(issuers=tenant_issuers(TENANT)))


class KeyServer:
    """An https JWKS endpoint of the test CA that counts its requests; ``failure`` makes it
    answer that status, ``body`` that body instead of the keys, ``delay`` answer late."""

    def __init__(self) -> None:
        self.keys = [OLD]
        self.requests = 0
        self.url = ""
        self.failure: int | None = None
        self.body: bytes | None = None
        self.delay = 0.0


@pytest.fixture
async def key_server(tmp_path: Path) -> AsyncIterator[tuple[KeyServer, Path]]:
    pki = make_pki(tmp_path / "pki")
    state = KeyServer()

    async def keys(request: web.Request) -> web.Response:
        state.requests += 1
        if state.delay:
            await asyncio.sleep(state.delay)
        if state.failure is not None:
            return web.Response(status=state.failure, text="unavailable")
        if state.body is not None:
            return web.Response(body=state.body, content_type="application/json")
        return web.json_response(jwks(*state.keys))

    app = web.Application()
    app.router.add_get("/discovery/v2.0/keys", keys)
    runner = web.AppRunner(app)
    await runner.setup()
    context = server_context(str(pki.server.cert_file), str(pki.server.key_file))
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    state.url = f"https://localhost:{port}/discovery/v2.0/keys"
    yield state, pki.ca_file
    await runner.cleanup()


def test_a_key_file(tmp_path: Path) -> None:
    """A JWKS file gives the key set; a file that is not one is a ValueError."""
    path = write_jwks(tmp_path / "keys.json", OLD, NEW)
    assert load_key_file(str(path)).kids == (OLD.kid, NEW.kid)
    (tmp_path / "bad.json").write_text(json.dumps({"keys": []}))
    with pytest.raises(ValueError):
        load_key_file(str(tmp_path / "bad.json"))


async def test_a_file_is_read_again_for_an_unknown_kid(tmp_path: Path) -> None:
    """A rolled key written to the file is picked up by the first token that names it."""
    path = write_jwks(tmp_path / "keys.json", OLD)
    keys = EntraKeys(validator(), jwks_file=str(path), min_refresh_seconds=0)
    assert await keys.load()
    await keys.authenticate(entra_token(OLD))
    write_jwks(path, OLD, NEW)
    await keys.authenticate(entra_token(NEW))


async def test_keys_over_https_refresh_for_a_new_kid_at_most_so_often(
    key_server: tuple[KeyServer, Path],
) -> None:
    """An unknown kid fetches again, but not twice within min_refresh_seconds."""
    state, ca_file = key_server
    keys = EntraKeys(
        validator(),
        jwks_url=state.url,
        ssl_context=upstream_context(str(ca_file)),
        min_refresh_seconds=0,
    )
    assert await keys.load()
    await keys.authenticate(entra_token(OLD))
    assert state.requests == 1
    state.keys = [OLD, NEW]
    await keys.authenticate(entra_token(NEW))
    assert state.requests == 2
    keys.min_refresh_seconds = 3600
    with pytest.raises(UnknownKeyError):
        await keys.authenticate(entra_token(TestKey()))
    assert state.requests == 2


async def test_an_untrusted_key_endpoint_keeps_the_old_keys(
    key_server: tuple[KeyServer, Path], tmp_path: Path
) -> None:
    """The fetch verifies the endpoint's certificate; failing, nothing changes."""
    state, _ = key_server
    keys = EntraKeys(validator(), jwks_url=state.url, min_refresh_seconds=0)
    assert not await keys.load()
    with pytest.raises(EntraTokenError):
        await keys.authenticate(entra_token(OLD))


REFRESH = 0.3
"""``refresh_seconds`` of the refresh tests (the node's is a day)."""


def refreshing(state: KeyServer, ca_file: Path, timeout_seconds: float = 10.0) -> EntraKeys:
    """Keys of the endpoint read again every REFRESH seconds; an unknown kid does not make
    them be read (min_refresh_seconds of an hour), so each read is the refresh's."""
    return EntraKeys(
        validator(),
        jwks_url=state.url,
        ssl_context=upstream_context(str(ca_file)),
        min_refresh_seconds=3600,
        refresh_seconds=REFRESH,
        timeout_seconds=timeout_seconds,
    )


async def test_keys_of_a_url_are_read_again_every_refresh_seconds(
    key_server: tuple[KeyServer, Path],
) -> None:
    """The endpoint rolls its keys (NEW in, OLD out): until refresh_seconds have passed the
    keys read at first still judge; then the first token reads them again, a token of the new
    key is accepted and one of the removed key refused."""
    state, ca_file = key_server
    keys = refreshing(state, ca_file)
    assert await keys.load()
    await keys.authenticate(entra_token(OLD))
    state.keys = [NEW]
    with pytest.raises(UnknownKeyError):
        await keys.authenticate(entra_token(NEW))
    await keys.authenticate(entra_token(OLD))
    assert state.requests == 1
    await asyncio.sleep(REFRESH)
    await keys.authenticate(entra_token(NEW))
    assert state.requests == 2
    with pytest.raises(UnknownKeyError):
        await keys.authenticate(entra_token(OLD))
    assert keys.validator.keys is not None and keys.validator.keys.kids == (NEW.kid,)
    assert state.requests == 2


async def test_a_failing_refresh_keeps_the_keys(
    key_server: tuple[KeyServer, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A refresh answered 503, one answered with what is not a key set and one that times out
    each keep the keys there were (and say why in the log); the refresh after them takes the
    endpoint's keys again."""
    state, ca_file = key_server
    keys = refreshing(state, ca_file, timeout_seconds=0.2)
    assert await keys.load()
    state.keys = [NEW]
    failures: list[dict[str, object]] = [
        {"failure": 503},
        {"body": b'{"keys": []}'},  # not a key set with an RSA signing key
        {"delay": 0.5},  # past timeout_seconds
    ]
    for number, how in enumerate(failures, start=2):
        state.failure, state.body, state.delay = None, None, 0.0
        for name, value in how.items():
            setattr(state, name, value)
        await asyncio.sleep(REFRESH)
        await keys.authenticate(entra_token(OLD))
        assert state.requests == number
        with pytest.raises(UnknownKeyError):
            await keys.authenticate(entra_token(NEW))
    warnings = [r.getMessage() for r in caplog.records if r.name == "hubbub.entra"]
    assert sum("cannot read the Entra signing keys" in w for w in warnings) == len(failures)
    assert any("503" in w for w in warnings)
    state.failure, state.body, state.delay = None, None, 0.0
    await asyncio.sleep(REFRESH)
    await keys.authenticate(entra_token(NEW))
    with pytest.raises(UnknownKeyError):
        await keys.authenticate(entra_token(OLD))
    assert state.requests == len(failures) + 2
