"""Token verification: keys, audiences, lifetimes, and the cache of verified tokens."""

from __future__ import annotations

import time

import jwt
import pytest

from hubbub.protocol import tokens
from hubbub.protocol.tokens import (
    TokenError,
    reconnection_token,
    verify_client_token,
    verify_reconnection_token,
    verify_rest_token,
)

KEYS = ("a" * 40, "b" * 40)


def mint(key: str, **claims: object) -> str:
    return jwt.encode({"exp": int(time.time()) + 60, **claims}, key.encode(), algorithm="HS256")


@pytest.mark.parametrize(
    "aud",
    [
        "http://127.0.0.1:8080/client/hubs/Chat",
        "HTTP://127.0.0.1:8080/CLIENT/HUBS/chat/",
        "https://pubsub.example.com:443/client/hubs/chat",
        "http://localhost/prefix/client/hubs/chat",
    ],
)
def test_client_audience_is_compared_on_its_path(aud: str) -> None:
    """Case, trailing slash, host and port do not matter; the hub does."""
    claims = verify_client_token(mint(KEYS[1], aud=aud, sub="u", role="r"), KEYS, "chat")
    assert claims.user_id == "u" and claims.roles == ("r",)


def test_client_token_for_another_hub_is_refused() -> None:
    """The audience names the hub the client connects to."""
    with pytest.raises(TokenError):
        verify_client_token(mint(KEYS[0], aud="http://h/client/hubs/other"), KEYS, "chat")


def test_rest_audience_ignores_the_query() -> None:
    """SDKs sign the full URL with its query; the path is what counts."""
    url = "http://h:1/api/hubs/chat/:send?api-version=2024-12-01&excluded=x"
    verify_rest_token(mint(KEYS[0], aud=url), KEYS, "/api/hubs/chat/:send")
    with pytest.raises(TokenError):
        verify_rest_token(mint(KEYS[0], aud=url), KEYS, "/api/hubs/chat/groups/g/:send")


def test_unknown_key_and_missing_exp_are_refused() -> None:
    """Only the configured keys sign, and every token must expire."""
    with pytest.raises(TokenError):
        verify_rest_token(mint("c" * 40, aud="/api/x"), KEYS, "/api/x")
    no_exp = jwt.encode({"aud": "/api/x"}, KEYS[0].encode(), algorithm="HS256")
    with pytest.raises(TokenError):
        verify_rest_token(no_exp, KEYS, "/api/x")


def test_cached_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    """A token verified once is not verified again, but its lifetime is checked every time."""
    token = mint(KEYS[0], aud="/api/cached")
    verify_rest_token(token, KEYS, "/api/cached")
    assert any(key[0] == token for key in tokens._verified)
    later = time.time() + 60 + tokens.CLOCK_SKEW_SECONDS + 1
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    with pytest.raises(TokenError, match="expired"):
        verify_rest_token(token, KEYS, "/api/cached")


def test_cached_token_is_not_valid_for_another_key_set() -> None:
    """The cache is keyed by the keys too: a rotated-out key stops verifying."""
    token = mint(KEYS[0], aud="/api/rotated")
    verify_rest_token(token, KEYS, "/api/rotated")
    with pytest.raises(TokenError):
        verify_rest_token(token, (KEYS[1],), "/api/rotated")


def test_reconnection_token_is_bound_to_the_connection() -> None:
    """A reconnection token verifies for its connection id only, with either key."""
    token = reconnection_token(KEYS[1], "conn-1")
    assert verify_reconnection_token(token, KEYS, "conn-1")
    assert not verify_reconnection_token(token, KEYS, "conn-2")
    assert not verify_reconnection_token(token, (KEYS[0],), "conn-1")
