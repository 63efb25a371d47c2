"""Entra signing keys read from a file or fetched over https, refreshed for a new kid and every
``refresh_seconds``; a failed read keeps the keys there were."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from hubbub.config import load_config
from hubbub.entrakeys import EntraKeys, load_key_file
from hubbub.policy import Policy
from hubbub.protocol.entra import (
    EntraSettings,
    EntraTokenError,
    EntraValidator,
    UnknownKeyError,
    tenant_issuers,
)
from hubbub.server.app import _refresh_keys
from hubbub.server.tls import server_context, upstream_context
from tests._entra import OBJECT_ID, TENANT, TestKey, entra_token, jwks, write_jwks
from tests._pki import make_pki

OLD, NEW = TestKey(), TestKey()


def validator() -> EntraValidator:
    return EntraValidator(EntraSettings(issuers=tenant_issuers(TENANT)))


class KeyServer:
    """A JWKS endpoint (https of the test CA, or http) that counts its requests; ``failure``
    makes it answer that status, ``body`` that body instead of the keys, ``delay`` answer late."""

    def __init__(self) -> None:
        self.keys = [OLD]
        self.requests = 0
        self.url = ""
        self.failure: int | None = None
        self.body: bytes | None = None
        self.delay = 0.0


@contextlib.asynccontextmanager
async def serving(state: KeyServer, context: ssl.SSLContext | None) -> AsyncIterator[None]:
    """``state``'s endpoint on a free loopback port, https with ``context``, else http."""

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
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    host = "localhost" if context is not None else "127.0.0.1"
    state.url = f"{'https' if context else 'http'}://{host}:{port}/discovery/v2.0/keys"
    try:
        yield
    finally:
        await runner.cleanup()


@pytest.fixture
async def key_server(tmp_path: Path) -> AsyncIterator[tuple[KeyServer, Path]]:
    pki = make_pki(tmp_path / "pki")
    state = KeyServer()
    context = server_context(str(pki.server.cert_file), str(pki.server.key_file))
    async with serving(state, context):
        yield state, pki.ca_file


@pytest.fixture
async def plain_key_server() -> AsyncIterator[KeyServer]:
    """The endpoint over http (``jwks_url`` takes http on loopback)."""
    state = KeyServer()
    async with serving(state, None):
        yield state


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
PAST_REFRESH = REFRESH + 0.05


async def eventually(check: Callable[[], bool], what: str) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"not within 2 s: {what}")


def kids(entra: EntraKeys) -> tuple[str, ...]:
    keys = entra.validator.keys
    return keys.kids if keys is not None else ()


def failed_reads(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        "cannot read the Entra signing keys" in r.getMessage()
        for r in caplog.records
        if r.name == "hubbub.entra"
    )


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
    await asyncio.sleep(PAST_REFRESH)
    await keys.authenticate(entra_token(NEW))
    assert state.requests == 2
    with pytest.raises(UnknownKeyError):
        await keys.authenticate(entra_token(OLD))
    assert kids(keys) == (NEW.kid,)
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
        await asyncio.sleep(PAST_REFRESH)
        await keys.authenticate(entra_token(OLD))
        assert state.requests == number
        with pytest.raises(UnknownKeyError):
            await keys.authenticate(entra_token(NEW))
    assert failed_reads(caplog) == len(failures)
    assert any("503" in r.getMessage() for r in caplog.records if r.name == "hubbub.entra")
    state.failure, state.body, state.delay = None, None, 0.0
    await asyncio.sleep(PAST_REFRESH)
    await keys.authenticate(entra_token(NEW))
    with pytest.raises(UnknownKeyError):
        await keys.authenticate(entra_token(OLD))
    assert state.requests == len(failures) + 2


async def test_a_node_reads_the_keys_of_its_url_again_on_its_own(
    tmp_path: Path, plain_key_server: KeyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The node's refresh task (every day; here every REFRESH seconds) reads the keys of
    ``[auth.entra] jwks_url`` again with no token asking: a rolled key verifies at once, the
    removed one no more; a failed read keeps the keys."""
    state = plain_key_server
    path = tmp_path / "hubbub.toml"
    path.write_text(
        f'[auth.entra]\ntenants = ["{TENANT}"]\njwks_url = "{state.url}"\n'
        f'[[auth.entra.principals]]\nobject_id = "{OBJECT_ID}"\nhubs = {{ chat = "owner" }}\n'
    )
    policy = Policy(load_config(str(path), env={}))
    entra = policy.entra
    assert entra is not None and await entra.load()  # as the node does at start
    refresh = asyncio.create_task(_refresh_keys(policy, REFRESH))
    try:
        await policy.authorize_entra(entra_token(OLD), "chat", "POST", ":send")
        state.keys = [NEW]
        await eventually(lambda: kids(entra) == (NEW.kid,), "the rolled keys read")
        assert state.requests == 2
        await policy.authorize_entra(entra_token(NEW), "chat", "POST", ":send")
        with pytest.raises(UnknownKeyError):  # a new kid reads again at most every 5 minutes
            await policy.authorize_entra(entra_token(OLD), "chat", "POST", ":send")
        state.failure = 503
        await eventually(lambda: failed_reads(caplog) == 1, "a failed read logged")
        await policy.authorize_entra(entra_token(NEW), "chat", "POST", ":send")
        assert kids(entra) == (NEW.kid,) and state.requests == 3
    finally:
        refresh.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresh


async def test_keys_not_read_at_start_are_read_again_soon(
    plain_key_server: KeyServer,
) -> None:
    """The endpoint fails when the node starts: tokens are refused, and read the keys again
    after a wait that starts short (not min_refresh_seconds) and doubles with each failure."""
    state = plain_key_server
    keys = EntraKeys(
        validator(), jwks_url=state.url, min_refresh_seconds=3600, keyless_retry_seconds=0.2
    )
    state.failure = 503
    assert not await keys.load()
    with pytest.raises(EntraTokenError):
        await keys.authenticate(entra_token(OLD))
    assert state.requests == 1  # within the first wait: not read again
    await asyncio.sleep(0.25)
    with pytest.raises(EntraTokenError):
        await keys.authenticate(entra_token(OLD))
    assert state.requests == 2  # read again, failed: the wait is 0.4 s now
    await asyncio.sleep(0.25)
    state.failure = None
    with pytest.raises(EntraTokenError):
        await keys.authenticate(entra_token(OLD))
    assert state.requests == 2
    await asyncio.sleep(0.2)
    await keys.authenticate(entra_token(OLD))
    assert state.requests == 3
    assert kids(keys) == (OLD.kid,)
