"""Entra signing keys for an :class:`~hubbub.protocol.entra.EntraValidator`: a file or a URL.

Entra rolls its keys: a token may name a ``kid`` published after the keys were last read. A
token with an unknown ``kid`` makes the keys be read again — at most once per
``min_refresh_seconds``, so tokens naming made-up keys cannot make the node fetch on every
call — and a URL is also read again every ``refresh_seconds``. A fetch that fails keeps the
keys there were.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path

import aiohttp

from hubbub.protocol.entra import EntraValidator, Identity, KeySet, UnknownKeyError

__all__ = ["EntraKeys", "load_key_file"]

log = logging.getLogger("hubbub.entra")

MAX_JWKS_BYTES = 1024 * 1024


def load_key_file(path: str) -> KeySet:
    """The key set of a JWKS file.

    Raises:
        OSError: it cannot be read.
        ValueError: it is not a JWKS with an RSA signing key.
    """
    return KeySet.from_json(Path(path).read_bytes())


KEYLESS_RETRY_SECONDS = 1.0
"""While no keys could be read yet, the first wait before a token makes the node read again
(it doubles with each failed read, up to ``min_refresh_seconds``)."""


class EntraKeys:
    """Keeps ``validator``'s keys current and retries a token once after new keys arrive."""

    def __init__(
        self,
        validator: EntraValidator,
        *,
        jwks_file: str | None = None,
        jwks_url: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        min_refresh_seconds: float = 300.0,
        refresh_seconds: float = 86400.0,
        timeout_seconds: float = 10.0,
        keyless_retry_seconds: float = KEYLESS_RETRY_SECONDS,
    ) -> None:
        self.validator = validator
        self.jwks_file, self.jwks_url = jwks_file, jwks_url
        self._ssl = ssl_context
        self.min_refresh_seconds, self.refresh_seconds = min_refresh_seconds, refresh_seconds
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._last = -float("inf")
        self._lock = asyncio.Lock()
        self.keyless_retry_seconds = keyless_retry_seconds
        self._keyless_wait = keyless_retry_seconds
        """While no keys are held: how long after a failed read the next token reads again."""

    async def load(self) -> bool:
        """Read the keys now; False (and the old keys kept) when that fails."""
        self._last = time.monotonic()
        try:
            if self.jwks_url:
                keys = await self._fetch(self.jwks_url)
            elif self.jwks_file:
                keys = await asyncio.to_thread(load_key_file, self.jwks_file)
            else:
                return False
        except (OSError, ValueError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("cannot read the Entra signing keys from %s: %s", self._source, exc)
            return False
        self.validator.replace_keys(keys)
        log.info("Entra signing keys from %s: %s", self._source, ", ".join(keys.kids))
        return True

    async def authenticate(self, token: str) -> Identity:
        """:meth:`EntraValidator.authenticate`, reading the keys again for an unknown ``kid``.

        Raises:
            EntraTokenError: as the validator.
        """
        now = time.monotonic()
        if self.validator.keys is None and self.validator.settings.verify_signatures:
            async with self._lock:  # the first call, or every read so far failed
                wait = min(self._keyless_wait, self.min_refresh_seconds)
                if self.validator.keys is None and now - self._last >= wait:
                    await self.load()
                    # Every token is refused until a read succeeds: try again soon, then less
                    # and less often (up to min_refresh_seconds).
                    self._keyless_wait = (
                        self.keyless_retry_seconds
                        if self.validator.keys is not None
                        else min(self._keyless_wait * 2, self.min_refresh_seconds)
                    )
        elif self.jwks_url and now - self._last >= self.refresh_seconds:
            async with self._lock:
                if now - self._last >= self.refresh_seconds:
                    await self.load()
        try:
            return self.validator.authenticate(token)
        except UnknownKeyError:
            async with self._lock:
                if time.monotonic() - self._last < self.min_refresh_seconds:
                    raise
                await self.load()
            return self.validator.authenticate(token)

    @property
    def _source(self) -> str:
        return self.jwks_url or self.jwks_file or "nowhere"

    async def _fetch(self, url: str) -> KeySet:
        async with (
            aiohttp.ClientSession(timeout=self._timeout) as session,
            session.get(url, ssl=self._ssl if self._ssl is not None else True) as response,
        ):
            response.raise_for_status()
            body = await response.content.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError("the key set is larger than 1 MiB")
        return KeySet.from_json(body)
