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


@pytest.mark.parametrize(
    "aud", ["http://h/client/hubs/a`b,c.d[e]", "http://h/client/hubs/a%60b%2Cc.d%5Be%5D"]
)
def test_client_audience_with_every_character_a_hub_may_hold(aud: str) -> None:
    verify_client_token(mint(KEYS[0], aud=aud), KEYS, "a`b,c.d[e]")


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


# (name, how the official SDKs put it into the path: every character but unreserved ones
# percent-encoded, as Python's quote(safe="") and JavaScript's encodeURIComponent do).
SDK_NAMES = [
    ("a?b", "a%3Fb"),
    ("a#b", "a%23b"),
    ("a%2Fb", "a%252Fb"),
    ("100%", "100%25"),
    ("a b", "a%20b"),
    ("zoë", "zo%C3%AB"),
    ("a/b", "a%2Fb"),
    ("a&b=c;d", "a%26b%3Dc%3Bd"),
]


@pytest.mark.parametrize(("name", "encoded"), SDK_NAMES)
def test_rest_audience_is_the_path_as_sent(name: str, encoded: str) -> None:
    """The SDKs sign the URL they send; the request's path is compared as it was sent."""
    path = f"/api/hubs/chat/users/{encoded}/:send"
    aud = f"http://h:1{path}?api-version=2024-12-01"
    verify_rest_token(mint(KEYS[0], aud=aud), KEYS, path + "?api-version=2024-12-01")
    verify_rest_token(mint(KEYS[0], aud=aud), KEYS, path)


@pytest.mark.parametrize(
    ("aud_path", "request_path"),
    [
        ("/api/hubs/chat/users/zo%c3%ab", "/api/hubs/chat/users/zo%C3%AB"),  # escape case
        ("/api/hubs/chat/users/zoë", "/api/hubs/chat/users/zo%C3%AB"),  # a hand-made aud
        ("/api/hubs/chat/users/a b", "/api/hubs/chat/users/a%20b"),
        ("/api/hubs/chat/users/%61", "/api/hubs/chat/users/a"),  # an unreserved one escaped
        ("/API/Hubs/Chat/users/x/", "/api/hubs/chat/users/x"),  # case, trailing slash
    ],
)
def test_rest_audience_forms_that_mean_the_same_path(aud_path: str, request_path: str) -> None:
    verify_rest_token(mint(KEYS[0], aud="http://h" + aud_path), KEYS, request_path)


@pytest.mark.parametrize(
    ("aud_path", "request_path"),
    [
        # A name's slash is not a segment boundary: users/a%2Fb/groups is no users/a/b/groups.
        ("/api/hubs/chat/users/a%2Fgroups%2Fg", "/api/hubs/chat/users/a/groups/g"),
        ("/api/hubs/chat/users/a/groups/g", "/api/hubs/chat/users/a%2Fgroups%2Fg"),
        # Decoded once, not twice: a literal %2F is no slash.
        ("/api/hubs/chat/users/a%2Fb", "/api/hubs/chat/users/a%252Fb"),
        # A name's ? is no query.
        ("/api/hubs/chat/users/a", "/api/hubs/chat/users/a%3Fb"),
        ("/api/hubs/chat/users/a%3Fb", "/api/hubs/chat/users/a"),
    ],
)
def test_rest_audience_for_another_path_is_refused(aud_path: str, request_path: str) -> None:
    with pytest.raises(TokenError):
        verify_rest_token(mint(KEYS[0], aud="http://h" + aud_path), KEYS, request_path)


def test_a_token_that_is_not_ascii_is_refused() -> None:
    """A JWT is ASCII; anything else is a TokenError, not an encoding error."""
    token = mint(KEYS[0], aud="/api/x")
    for bad in (token + "\u00e9", "\udcff" + token):
        with pytest.raises(TokenError):
            verify_rest_token(bad, KEYS, "/api/x")


@pytest.mark.parametrize(
    "claims",
    [{"sub": "\ud800"}, {"role": ["ok", "x\udfff"]}, {"webpubsub.group": "\udc80"}],
    ids=["sub", "role", "group"],
)
def test_a_claim_with_a_lone_surrogate_is_refused(claims: dict[str, object]) -> None:
    """JSON can escape half a surrogate pair; no name may hold one, so the token is bad."""
    token = mint(KEYS[0], aud="http://h/client/hubs/chat", **claims)
    with pytest.raises(TokenError, match="not valid Unicode"):
        verify_client_token(token, KEYS, "chat")


def test_long_tokens_are_verified_but_not_kept() -> None:
    """A token that signs a long URL (1,000 excluded ids) is not held by the cache."""
    url = "/api/hubs/chat/:send?" + "&".join(f"excluded={i:022d}" for i in range(1000))
    token = mint(KEYS[0], aud=url)
    verify_rest_token(token, KEYS, url)
    assert not any(key[0] == token for key in tokens._verified)
    with pytest.raises(TokenError):
        verify_rest_token(token, KEYS, "/api/hubs/other/:send")


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
    monkeypatch.setattr(time, "time", lambda: later)
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
