"""A stand-in for Microsoft Entra ID in tests: a test signing key, its JWKS, and credentials.

``TestCredential`` and ``AsyncTestCredential`` are ``azure.core`` token credentials (sync and
async) that hand the official SDKs tokens of a real Entra access token's shape — header
``{"typ", "alg": "RS256", "kid", "x5t"}``, claims ``aud``, ``iss``, ``iat``, ``nbf``, ``exp``,
``tid``, ``oid``, ``sub``, ``appid`` (v1) or ``azp`` (v2), ``ver`` — signed by the test key, and
record the scopes they were asked for.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from azure.core.credentials import AccessToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
OTHER_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
APP_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
OBJECT_ID = "9d3b0a1e-7c55-4d2b-8a60-3f1c0c4e2b11"
AUDIENCE = "https://webpubsub.azure.com"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


@dataclass
class TestKey:
    """One RSA signing key, as Entra publishes them (``kid`` = ``x5t``)."""

    __test__ = False  # not a pytest class

    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    kid: str = ""

    def __post_init__(self) -> None:
        if not self.kid:
            public = self.key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            self.kid = _b64(hashlib.sha1(public).digest())

    def jwk(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _uint(numbers.n),
            "e": _uint(numbers.e),
        }

    @property
    def private_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()


def jwks(*keys: TestKey) -> dict[str, Any]:
    return {"keys": [k.jwk() for k in keys]}


def write_jwks(path: Path, *keys: TestKey) -> Path:
    path.write_text(json.dumps(jwks(*keys)))
    return path


def entra_token(
    key: TestKey,
    *,
    version: str = "1.0",
    tenant: str = TENANT,
    object_id: str = OBJECT_ID,
    app_id: str = APP_ID,
    audience: str = AUDIENCE,
    lifetime: int = 3600,
    not_before: int = -300,
    **extra: Any,
) -> str:
    """An access token of Entra's shape, signed by ``key``; ``extra`` overrides claims."""
    now = int(time.time())
    issuer = (
        f"https://sts.windows.net/{tenant}/"
        if version == "1.0"
        else f"https://login.microsoftonline.com/{tenant}/v2.0"
    )
    claims: dict[str, Any] = {
        "aud": audience,
        "iss": issuer,
        "iat": now + not_before,
        "nbf": now + not_before,
        "exp": now + lifetime,
        "aio": _b64(uuid.uuid4().bytes),
        "idtyp": "app",
        "oid": object_id,
        "sub": object_id,
        "tid": tenant,
        "uti": _b64(uuid.uuid4().bytes),
        "ver": version,
    }
    claims["appid" if version == "1.0" else "azp"] = app_id
    if version == "1.0":
        claims["appidacr"] = "1"
        claims["idp"] = issuer
    else:
        claims["azpacr"] = "1"
    claims.update(extra)
    headers = {"typ": "JWT", "kid": key.kid}
    if version == "1.0":
        headers["x5t"] = key.kid
    return jwt.encode(claims, key.key, algorithm="RS256", headers=headers)


@dataclass
class TestCredential:
    """A ``TokenCredential`` for the official Python SDKs (azure-core's protocol)."""

    __test__ = False

    key: TestKey
    claims: dict[str, Any] = field(default_factory=dict)
    scopes: list[tuple[str, ...]] = field(default_factory=list)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        token = entra_token(self.key, **self.claims)
        claims = jwt.decode(token, options={"verify_signature": False})
        return AccessToken(token, int(claims["exp"]))


@dataclass
class AsyncTestCredential(TestCredential):
    """The async form, for ``azure.messaging.webpubsubservice.aio``."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:  # type: ignore[override]
        return TestCredential.get_token(self, *scopes, **kwargs)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> AsyncTestCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None
