"""Microsoft Entra ID access tokens on the REST API (rest-api.md §3.2, tokens.md §6).

The official server SDKs, given a ``TokenCredential``, ask it for the scope
``https://webpubsub.azure.com/.default`` and send ``Authorization: Bearer <JWT>``; Entra signs that
JWT with RS256 under a key it publishes as a JWKS, and its ``aud`` is the resource
``https://webpubsub.azure.com``. The service authorises the caller by Azure RBAC: each operation
needs one data action (``Microsoft.SignalRService/WebPubSub/group/send/action``...), granted by the
roles "Web PubSub Service Owner" (``*``) and "Web PubSub Service Reader" (``*/read``). Here the
principals and what they may do are configured, per hub.

Two token versions exist (Entra "access token claims reference"): v1 with
``iss = https://sts.windows.net/{tid}/`` and ``appid``, v2 with
``iss = https://login.microsoftonline.com/{tid}/v2.0`` and ``azp``; both carry ``tid``, ``oid``,
``exp``, ``nbf`` and a ``kid`` header naming the signing key.

Refusals answer as the service: a token that does not verify is 401; a verified caller without
the data action (an unknown principal, another hub) is 403 with the service's message
("... permission is required to access this API. Please check your role assignments.").
Nothing here does I/O: keys come in as JWKS bytes, read from a file or fetched by an adapter.
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import jwt

from hubbub.errors import ForbiddenError
from hubbub.protocol.tokens import TokenError

__all__ = [
    "ACTION_PREFIX",
    "DATA_ACTIONS",
    "DEFAULT_AUDIENCES",
    "LEEWAY_SECONDS",
    "OWNER",
    "READER",
    "SCOPE",
    "EntraForbiddenError",
    "EntraSettings",
    "EntraTokenError",
    "EntraValidator",
    "Identity",
    "KeySet",
    "Principal",
    "UnknownKeyError",
    "is_entra_token",
    "principal_actions",
    "tenant_issuers",
]

SCOPE = "https://webpubsub.azure.com/.default"
"""What the SDKs ask a ``TokenCredential`` for (``credential_scopes``, ``credentialScopes``)."""
DEFAULT_AUDIENCES = ("https://webpubsub.azure.com", "https://webpubsub.azure.com/")
"""The resource the scope names; a token requested for ``.../`` + ``/.default`` keeps the slash."""
LEEWAY_SECONDS = 300
"""Clock skew allowed on ``exp``/``nbf``: Microsoft.IdentityModel's default (the service's value
is unconfirmed)."""
ACTION_PREFIX = "Microsoft.SignalRService/WebPubSub/"
OWNER = ("*",)
"""The data actions of "Web PubSub Service Owner"."""
READER = ("*/read",)
"""The data actions of "Web PubSub Service Reader"."""

# The data action each REST operation needs, keyed as the REST router keys its routes: the method
# and the path below /api/hubs/{hub}/ with each name replaced by "*". From Azure's list of
# Microsoft.SignalRService/WebPubSub data actions; the permission routes are not named there and
# take clientConnection/read and /write (unconfirmed).
DATA_ACTIONS: Mapping[tuple[str, str], str] = {
    ("POST", ":addToGroups"): "group/write",
    ("POST", ":closeConnections"): "clientConnection/write",
    ("POST", ":generateToken"): "clientConnection/generateToken/action",
    ("POST", ":removeFromGroups"): "group/write",
    ("POST", ":send"): "hub/send/action",
    ("DELETE", "connections/*"): "clientConnection/write",
    ("HEAD", "connections/*"): "clientConnection/read",
    ("POST", "connections/*/:send"): "clientConnection/send/action",
    ("DELETE", "connections/*/groups"): "group/write",
    ("HEAD", "groups/*"): "group/read",
    ("POST", "groups/*/:closeConnections"): "clientConnection/write",
    ("POST", "groups/*/:send"): "group/send/action",
    ("GET", "groups/*/connections"): "group/read",
    ("DELETE", "groups/*/connections/*"): "group/write",
    ("PUT", "groups/*/connections/*"): "group/write",
    ("DELETE", "permissions/*/connections/*"): "clientConnection/write",
    ("HEAD", "permissions/*/connections/*"): "clientConnection/read",
    ("PUT", "permissions/*/connections/*"): "clientConnection/write",
    ("HEAD", "users/*"): "user/read",
    ("POST", "users/*/:closeConnections"): "clientConnection/write",
    ("POST", "users/*/:send"): "user/send/action",
    ("DELETE", "users/*/groups"): "group/write",
    ("DELETE", "users/*/groups/*"): "group/write",
    ("PUT", "users/*/groups/*"): "group/write",
}

_ALGORITHM = "RS256"
_CACHE_SIZE = 1024
_CACHED_TOKEN_CHARS = 8192


class EntraTokenError(TokenError):
    """An Entra token that does not verify: 401."""


class UnknownKeyError(EntraTokenError):
    """The token names a signing key the key set lacks; fetching the keys again may help.

    Attributes:
        kid: the key id of the token's header.
    """

    def __init__(self, kid: str) -> None:
        super().__init__("invalid token: the signing key is not known")
        self.kid = kid


class EntraForbiddenError(ForbiddenError):
    """A verified caller without the data action the operation needs: 403."""

    def __init__(self, action: str) -> None:
        super().__init__(
            f"{ACTION_PREFIX}{action} permission is required to access this API. "
            "Please check your role assignments."
        )
        self.action = action


def tenant_issuers(tenant_id: str) -> tuple[str, str]:
    """The v1 and v2 ``iss`` values of a tenant in the public cloud."""
    return (
        f"https://sts.windows.net/{tenant_id}/",
        f"https://login.microsoftonline.com/{tenant_id}/v2.0",
    )


def is_entra_token(token: str) -> bool:
    """True when ``token`` is a JWT signed with RS256: an Entra token, not an access-key one.

    Only the header is read (no signature check), so the REST adapter can choose the verifier.
    """
    try:
        return jwt.get_unverified_header(token).get("alg") == _ALGORITHM
    except jwt.PyJWTError:
        return False


@dataclass(frozen=True)
class Principal:
    """A caller allowed in, and what it may do.

    Attributes:
        name: a label for logs.
        object_id: the ``oid`` of the user or service principal (what RBAC assigns roles to).
        app_id: the client application's id (``appid`` in v1 tokens, ``azp`` in v2).
        tenant_id: the ``tid`` it must come from; None: any configured tenant.
        hubs: hub name (lower case) or ``"*"`` for every hub, to data-action patterns relative
            to :data:`ACTION_PREFIX`, lower case, ``*`` matching anything (as in Azure roles).
            Grants add up: ``"*"`` and the hub's own entry both count.
    """

    name: str
    object_id: str | None = None
    app_id: str | None = None
    tenant_id: str | None = None
    hubs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def matches(self, identity: Identity) -> bool:
        """Every id this principal names equals the token's (ids compared case-insensitively)."""
        pairs = (
            (self.object_id, identity.object_id),
            (self.app_id, identity.app_id),
            (self.tenant_id, identity.tenant_id),
        )
        return any(want for want, _ in pairs[:2]) and all(
            want is None or (got is not None and want.lower() == got.lower()) for want, got in pairs
        )

    def allows(self, hub: str, action: str) -> bool:
        """Whether this principal holds ``action`` on ``hub``."""
        wanted = action.lower()
        patterns = (*self.hubs.get("*", ()), *self.hubs.get(hub.lower(), ()))
        return any(fnmatch.fnmatchcase(wanted, p) for p in patterns)


@dataclass(frozen=True)
class EntraSettings:
    """What an Entra token must look like to be accepted.

    Attributes:
        issuers: accepted ``iss`` values, exact (see :func:`tenant_issuers`).
        tenants: accepted ``tid`` values; empty: the tenant of an accepted issuer.
        audiences: accepted ``aud`` values.
        principals: who may call, and what each may do.
        verify_signatures: False only for local development: the token's signature is not
            checked (its shape, audience and lifetime still are) and, when no principal is
            configured, every caller is an owner.
    """

    issuers: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()
    audiences: tuple[str, ...] = DEFAULT_AUDIENCES
    principals: tuple[Principal, ...] = ()
    verify_signatures: bool = True


@dataclass(frozen=True)
class Identity:
    """A verified Entra caller."""

    tenant_id: str
    object_id: str | None
    app_id: str | None
    issuer: str
    version: str
    claims: Mapping[str, object]


class KeySet:
    """Signing keys from a JWKS document (``{"keys": [{"kty": "RSA", "kid": ..., ...}]}``)."""

    def __init__(self, keys: Mapping[str, jwt.PyJWK]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_json(cls, data: bytes | str) -> KeySet:
        """Parse a JWKS; keys that are not RSA signing keys with a ``kid`` are skipped.

        Raises:
            ValueError: not a JWKS, or no usable key in it.
        """
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        raw = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(raw, list):
            raise ValueError('expected a JWKS: an object with a "keys" array')
        keys: dict[str, jwt.PyJWK] = {}
        for entry in raw:
            if not isinstance(entry, dict) or entry.get("kty") != "RSA":
                continue
            if entry.get("use", "sig") != "sig" or not isinstance(entry.get("kid"), str):
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry, algorithm=_ALGORITHM)
            except jwt.PyJWTError:
                continue
        if not keys:
            raise ValueError("no RSA signing key with a kid in the key set")
        return cls(keys)

    def get(self, kid: str) -> jwt.PyJWK | None:
        return self._keys.get(kid)

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._keys)


class EntraValidator:
    """Verifies Entra tokens and authorises their callers; keeps verified tokens for reuse.

    The SDKs reuse one token for its lifetime (about an hour), so a token seen before skips the
    RSA check, never the lifetime check.
    """

    def __init__(self, settings: EntraSettings, keys: KeySet | None = None) -> None:
        self.settings = settings
        self._keys = keys
        self._issuers = frozenset(settings.issuers)
        self._tenants = frozenset(t.lower() for t in settings.tenants)
        self._verified: OrderedDict[str, Identity] = OrderedDict()

    @property
    def keys(self) -> KeySet | None:
        return self._keys

    def replace_keys(self, keys: KeySet) -> None:
        """Use a new key set (a JWKS fetched again); tokens already verified stay verified."""
        self._keys = keys

    def authenticate(self, token: str, now: float | None = None) -> Identity:
        """Verify ``token``: signature, lifetime, audience, issuer and tenant.

        Raises:
            UnknownKeyError: its ``kid`` is not in the key set.
            EntraTokenError: anything else wrong with it.
        """
        now = time.time() if now is None else now
        identity = self._verified.get(token)
        if identity is None:
            identity = self._verify(token, now)
            if len(token) <= _CACHED_TOKEN_CHARS:
                self._verified[token] = identity
                if len(self._verified) > _CACHE_SIZE:
                    self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(token)
            _check_lifetime(identity.claims, now)
        return identity

    def authorize(self, identity: Identity, hub: str, action: str) -> None:
        """Check that ``identity`` holds ``action`` on ``hub``.

        Raises:
            EntraForbiddenError: no configured principal grants it.
        """
        principals = self.settings.principals
        if not principals and not self.settings.verify_signatures:
            return  # local development: every caller is an owner
        for principal in principals:
            if principal.matches(identity) and principal.allows(hub, action):
                return
        raise EntraForbiddenError(action)

    def check(self, token: str, hub: str, method: str, shape: str) -> Identity:
        """Authenticate ``token`` and authorise the REST operation ``(method, shape)`` on ``hub``.

        Raises:
            EntraTokenError: 401.
            EntraForbiddenError: 403; an operation without a data action is forbidden too.
        """
        identity = self.authenticate(token)
        action = DATA_ACTIONS.get((method.upper(), shape))
        if action is None:
            raise EntraForbiddenError("*")
        self.authorize(identity, hub, action)
        return identity

    def _verify(self, token: str, now: float) -> Identity:
        claims = self._decode(token)
        _check_lifetime(claims, now)
        aud = claims.get("aud")
        if not isinstance(aud, str) or aud not in self.settings.audiences:
            raise EntraTokenError("invalid token: the audience is not this service")
        return self._identity(claims)

    def _decode(self, token: str) -> dict[str, object]:
        if not token.isascii():
            raise EntraTokenError("invalid token: not a JWT")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != _ALGORITHM:
                raise EntraTokenError(f"invalid token: expected an {_ALGORITHM} signature")
            if not self.settings.verify_signatures:
                claims: dict[str, object] = jwt.decode(
                    token, options={"verify_signature": False}, algorithms=[_ALGORITHM]
                )
                return claims
            kid = header.get("kid")
            if not isinstance(kid, str):
                raise EntraTokenError("invalid token: no kid in its header")
            key = self._keys.get(kid) if self._keys is not None else None
            if key is None:
                raise UnknownKeyError(kid)
            claims = jwt.decode(
                token,
                key,
                algorithms=[_ALGORITHM],
                options={
                    "verify_exp": False,  # checked below, with the same leeway as cached tokens
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                },
            )
            return claims
        except jwt.InvalidSignatureError:
            raise EntraTokenError("invalid token: signature verification failed") from None
        except jwt.PyJWTError as exc:
            raise EntraTokenError(f"invalid token: {exc}") from None

    def _identity(self, claims: Mapping[str, object]) -> Identity:
        iss, tid = claims.get("iss"), claims.get("tid")
        if not isinstance(iss, str) or not isinstance(tid, str) or not tid:
            raise EntraTokenError("invalid token: no iss or tid claim")
        if self._issuers or self.settings.verify_signatures:
            if iss not in self._issuers:
                raise EntraTokenError("invalid token: the issuer is not trusted")
        elif iss not in tenant_issuers(tid):
            raise EntraTokenError("invalid token: not issued by Microsoft Entra ID")
        if self._tenants and tid.lower() not in self._tenants:
            raise EntraTokenError("invalid token: the tenant is not trusted")
        oid, app_id = claims.get("oid"), claims.get("appid", claims.get("azp"))
        version = claims.get("ver")
        return Identity(
            tenant_id=tid,
            object_id=oid if isinstance(oid, str) else None,
            app_id=app_id if isinstance(app_id, str) else None,
            issuer=iss,
            version=version if isinstance(version, str) else "",
            claims=dict(claims),
        )


def _check_lifetime(claims: Mapping[str, object], now: float) -> None:
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise EntraTokenError("invalid token: no exp claim")
    if exp + LEEWAY_SECONDS < now:
        raise EntraTokenError("invalid token: the token has expired")
    if isinstance(nbf, (int, float)) and nbf - LEEWAY_SECONDS > now:
        raise EntraTokenError("invalid token: the token is not yet valid")


def principal_actions(value: str | Sequence[str]) -> tuple[str, ...]:
    """Data-action patterns from a role name or a list of actions, for :attr:`Principal.hubs`.

    ``"owner"``/``"Web PubSub Service Owner"`` and ``"reader"``/``"Web PubSub Service Reader"``
    are the built-in roles; actions may be written with or without :data:`ACTION_PREFIX`.

    Raises:
        ValueError: an unknown role, or an action with characters an Azure action cannot hold.
    """
    if isinstance(value, str):
        role = value.strip().lower()
        if role in ("owner", "web pubsub service owner"):
            return OWNER
        if role in ("reader", "web pubsub service reader"):
            return READER
        raise ValueError(
            f'unknown role {value!r} (expected "owner", "reader" or a list of data actions)'
        )
    actions = []
    for action in value:
        lowered = action.strip().lower().removeprefix(ACTION_PREFIX.lower())
        if not lowered or not all(c.isalnum() or c in "/*" for c in lowered):
            raise ValueError(f"invalid data action {action!r}")
        actions.append(lowered)
    return tuple(actions)
