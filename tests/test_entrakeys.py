"""Entra signing keys read from a file or fetched over https, refreshed for a new kid."""

from __future__ import annotations

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
    """An https JWKS endpoint of the test CA that counts its requests."""

    def __init__(self) -> None:
        self.keys = [OLD]
        self.requests = 0
        self.url = ""


@pytest.fixture
async def key_server(tmp_path: Path) -> AsyncIterator[tuple[KeyServer, Path]]:
    pki = make_pki(tmp_path / "pki")
    state = KeyServer()

    async def keys(request: web.Request) -> web.Response:
        state.requests += 1
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
