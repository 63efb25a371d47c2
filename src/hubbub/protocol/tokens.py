"""Access tokens: client JWTs, REST JWTs and reconnection tokens (spec: tokens.md).

Every token is HS256 keyed with the UTF-8 bytes of an access key string; either configured key
verifies. Audiences are compared on their path, case-insensitively and without a trailing slash,
because the SDKs disagree on case, default ports and query strings (tokens.md §1.2, rest-api.md §3).

A REST token's path is compared with the request's path as the client sent it, segment by segment:
the SDKs sign the URL they send, with names percent-encoded (``a?b`` as ``a%3Fb``, a literal
``%2F`` as ``%252F``), so both sides are read the way the router reads the path, never decoded
twice and never cut at a decoded ``?``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

import jwt

__all__ = [
    "CLOCK_SKEW_SECONDS",
    "ClientClaims",
    "TokenError",
    "audience_path",
    "mint_client_token",
    "reconnection_token",
    "token_window",
    "verify_client_token",
    "verify_reconnection_token",
    "verify_rest_token",
]

CLOCK_SKEW_SECONDS = 30
"""Leeway for ``exp`` and ``nbf`` (the service's value is unconfirmed; tokens.md §1.3)."""

_GROUP_CLAIM = "webpubsub.group"
_ROLE_CLAIM = "role"


class TokenError(ValueError):
    """A token that does not verify; the message says why (never sent with key material)."""


@dataclass(frozen=True, slots=True)
class ClientClaims:
    """What a verified client token grants."""

    user_id: str | None
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    claims: dict[str, object] = field(default_factory=dict)


def _as_strings(value: object) -> tuple[str, ...]:
    """A claim given as a string or an array of strings (tokens.md §1.1)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TokenError("claim must be a string or an array of strings")


# Characters a path segment may hold unescaped (RFC 3986 ``pchar``); ``/`` is not one of them, so
# a name's ``%2F`` stays apart from the slashes between segments.
_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"
_CACHED_PATH_CHARS = 512


def audience_path(url: str) -> str:
    """The comparable form of an audience or a request target: its path, lower case, no trailing /.

    ``url`` is absolute (an ``aud``) or a path as sent, with or without a query. Each segment is
    percent-decoded to bytes once and re-encoded one way, so ``zo%C3%AB``, ``zo%c3%ab`` and
    ``zoë`` agree while ``a%2Fb`` (one segment) and ``a/b`` (two) do not.
    """
    path = urlsplit(url).path if "://" in url else url.split("?", 1)[0]
    return _cached_canonical(path) if len(path) <= _CACHED_PATH_CHARS else _canonical(path)


def _canonical(path: str) -> str:
    segments = (quote_from_bytes(unquote_to_bytes(s), _SEGMENT_SAFE) for s in path.split("/"))
    return "/".join(segments).rstrip("/").lower()


_cached_canonical = functools.lru_cache(maxsize=4096)(_canonical)


_VERIFIED_CACHE_SIZE = 4096
_CACHED_TOKEN_CHARS = 4096
"""Longer tokens are verified every time rather than kept: an SDK signs the whole URL, so 1,000
``excluded`` ids make a 43-71 kB token, and 4,096 of those would hold hundreds of megabytes."""
_verified: OrderedDict[tuple[str, tuple[str, ...]], dict[str, object]] = OrderedDict()


def _decode(token: str, keys: Sequence[str]) -> dict[str, object]:
    """Verify signature and lifetime; a token seen before skips the HMAC, not the lifetime.

    Servers reuse one token for many REST calls (the JS SDK for an hour), and verifying it was
    a third of the cost of a small ``:send``.
    """
    if not token.isascii():
        raise TokenError("invalid token: not a JWT")  # PyJWT would fail to encode it
    if len(token) > _CACHED_TOKEN_CHARS:
        return _verify(token, keys)
    cache_key = (token, tuple(keys))
    claims = _verified.get(cache_key)
    if claims is None:
        claims = _verify(token, keys)
        _verified[cache_key] = claims
        if len(_verified) > _VERIFIED_CACHE_SIZE:
            _verified.popitem(last=False)
    else:
        _verified.move_to_end(cache_key)
        _check_lifetime(claims)
    return claims


def _check_lifetime(claims: dict[str, object]) -> None:
    now = time.time()
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or exp + CLOCK_SKEW_SECONDS < now:
        raise TokenError("invalid token: Signature has expired")
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and nbf - CLOCK_SKEW_SECONDS > now:
        raise TokenError("invalid token: The token is not yet valid (nbf)")


def token_window(claims: dict[str, object]) -> tuple[float, float]:
    """When a verified token's claims are valid: from the first to the second time (seconds since
    the epoch, clock skew included), as :func:`_check_lifetime` judges them."""
    exp = claims.get("exp")
    nbf = claims.get("nbf")
    expires = exp + CLOCK_SKEW_SECONDS if isinstance(exp, (int, float)) else float("-inf")
    begins = nbf - CLOCK_SKEW_SECONDS if isinstance(nbf, (int, float)) else float("-inf")
    return begins, expires


def _verify(token: str, keys: Sequence[str]) -> dict[str, object]:
    last: Exception | None = None
    for key in keys:
        try:
            claims: dict[str, object] = jwt.decode(
                token,
                key.encode(),
                algorithms=["HS256"],
                options={"verify_aud": False, "require": ["exp"]},
                leeway=CLOCK_SKEW_SECONDS,
            )
            _check_unicode(claims)
            return claims
        except jwt.InvalidSignatureError as exc:
            last = exc
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from exc
    raise TokenError("invalid token: signature verification failed") from last


def _check_unicode(claims: dict[str, object]) -> None:
    """PyJWT reads ``"\\ud800"`` in a payload as a lone surrogate, which no user id or group name
    may hold: it can be neither logged nor sent as UTF-8."""
    try:
        json.dumps(claims, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise TokenError("invalid token: a claim is not valid Unicode") from exc


def verify_client_token(token: str, keys: Sequence[str], hub: str) -> ClientClaims:
    """Verify a client access token for ``hub``.

    Raises:
        TokenError: bad signature, expired, not yet valid, or an audience for another hub.
    """
    claims = _decode(token, keys)
    aud = claims.get("aud")
    expected = audience_path(f"/client/hubs/{hub}")
    if not isinstance(aud, str) or not audience_path(aud).endswith(expected):
        raise TokenError("invalid token: audience does not match the hub")
    sub = claims.get("sub")
    return ClientClaims(
        user_id=sub if isinstance(sub, str) else None,
        roles=_as_strings(claims.get(_ROLE_CLAIM)),
        groups=_as_strings(claims.get(_GROUP_CLAIM)),
        claims=claims,
    )


def verify_rest_token(token: str, keys: Sequence[str], request_path: str) -> dict[str, object]:
    """Verify the bearer token of a REST call whose path, as the client sent it (not decoded),
    is ``request_path``; returns its claims.

    Raises:
        TokenError: bad signature, expired, or an audience for another URL.
    """
    claims = _decode(token, keys)
    aud = claims.get("aud")
    if not isinstance(aud, str) or audience_path(aud) != audience_path(request_path):
        raise TokenError("invalid token: audience does not match the request URL")
    return claims


def mint_client_token(
    key: str,
    audience: str,
    *,
    user_id: str | None = None,
    roles: Sequence[str] = (),
    groups: Sequence[str] = (),
    minutes: int = 60,
) -> str:
    """Mint a client access token as the SDKs and ``:generateToken`` do (tokens.md §1.2)."""
    now = int(time.time())
    payload: dict[str, object] = {
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + 60 * minutes,
    }
    if user_id is not None:
        payload["sub"] = user_id
    if roles:
        payload[_ROLE_CLAIM] = list(roles)
    if groups:
        payload[_GROUP_CLAIM] = list(groups)
    return jwt.encode(payload, key.encode(), algorithm="HS256")


def reconnection_token(key: str, connection_id: str) -> str:
    """An unforgeable, URL-safe token bound to one connection id (tokens.md §3)."""
    digest = hmac.new(key.encode(), b"reconnect:" + connection_id.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def verify_reconnection_token(token: str, keys: Sequence[str], connection_id: str) -> bool:
    """True when ``token`` was issued for ``connection_id`` by one of ``keys``."""
    return any(hmac.compare_digest(token, reconnection_token(k, connection_id)) for k in keys)
