"""Entra access tokens: verification, the service's refusals, principals and data actions."""

from __future__ import annotations

import json
import time

import jwt
import pytest

from hubbub.protocol.entra import (
    DATA_ACTIONS,
    LEEWAY_SECONDS,
    EntraForbiddenError,
    EntraSettings,
    EntraTokenError,
    EntraValidator,
    KeySet,
    Principal,
    UnknownKeyError,
    is_entra_token,
    principal_actions,
    tenant_issuers,
)
from hubbub.protocol.tokens import TokenError
from tests._entra import (
    APP_ID,
    AUDIENCE,
    OBJECT_ID,
    OTHER_TENANT,
    TENANT,
    TestKey,
    entra_token,
    jwks,
)

KEY = TestKey()
OWNER = Principal("backend", object_id=OBJECT_ID, hubs={"*": principal_actions("owner")})


def validator(**settings: object) -> EntraValidator:
    values: dict[str, object] = {"issuers": tenant_issuers(TENANT), "principals": (OWNER,)}
    values.update(settings)
    return EntraValidator(EntraSettings(**values), KeySet.from_json(json.dumps(jwks(KEY))))  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["1.0", "2.0"])
def test_v1_and_v2_tokens_are_accepted(version: str) -> None:
    """Both token versions verify; the app id comes from appid (v1) or azp (v2)."""
    identity = validator().authenticate(entra_token(KEY, version=version))
    assert (identity.tenant_id, identity.object_id, identity.app_id) == (TENANT, OBJECT_ID, APP_ID)
    assert identity.version == version


def test_a_token_for_the_resource_with_a_slash_is_accepted() -> None:
    """The scope 'https://webpubsub.azure.com//.default' gives an aud with a trailing slash."""
    validator().authenticate(entra_token(KEY, audience=AUDIENCE + "/"))


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (lambda: entra_token(TestKey(kid=KEY.kid)), "signature verification failed"),
        (lambda: entra_token(KEY, audience="https://management.azure.com"), "audience"),
        (lambda: entra_token(KEY, tenant=OTHER_TENANT), "issuer is not trusted"),
        (lambda: entra_token(KEY, lifetime=-LEEWAY_SECONDS - 5), "expired"),
        (lambda: entra_token(KEY, not_before=LEEWAY_SECONDS + 60), "not yet valid"),
        (lambda: jwt.encode({"aud": AUDIENCE}, "k" * 32, algorithm="HS256"), "RS256"),
        (lambda: entra_token(KEY, exp=None), "no exp"),
        (lambda: "not-a-jwt", "invalid token"),
        (lambda: entra_token(KEY, tid=None), "no iss or tid"),
    ],
    ids=[
        "bad-signature",
        "wrong-audience",
        "bad-issuer",
        "expired",
        "not-yet-valid",
        "access-key-token",
        "no-exp",
        "garbage",
        "no-tid",
    ],
)
def test_a_token_that_does_not_verify_is_a_401(token: object, message: str) -> None:
    """Each way a token fails gives a TokenError (401) that says why."""
    with pytest.raises(EntraTokenError, match=message) as caught:
        validator().authenticate(token())  # type: ignore[operator]
    assert isinstance(caught.value, TokenError)


def test_lifetime_has_the_identitymodel_leeway() -> None:
    """A token expired less than the clock skew ago still verifies."""
    validator().authenticate(entra_token(KEY, lifetime=-LEEWAY_SECONDS + 30))


def test_an_unknown_kid_asks_for_the_keys_again() -> None:
    """A kid missing from the key set is its own error, so an adapter can refetch the JWKS."""
    other = TestKey()
    check = validator()
    with pytest.raises(UnknownKeyError) as caught:
        check.authenticate(entra_token(other))
    assert caught.value.kid == other.kid
    check.replace_keys(KeySet.from_json(json.dumps(jwks(KEY, other))))
    check.authenticate(entra_token(other))


def test_a_verified_token_is_not_verified_again_but_still_expires() -> None:
    """The cache skips the RSA check, never the lifetime check."""
    check = validator()
    token = entra_token(KEY, lifetime=60)
    check.authenticate(token)
    check.replace_keys(KeySet.from_json(json.dumps(jwks(TestKey()))))  # the key is gone
    check.authenticate(token)
    with pytest.raises(EntraTokenError, match="expired"):
        check.authenticate(token, now=time.time() + 60 + LEEWAY_SECONDS + 1)


def test_tenants_narrow_the_issuers() -> None:
    """With tenants configured, a token of an accepted issuer but another tid is refused."""
    issuers = (*tenant_issuers(TENANT), *tenant_issuers(OTHER_TENANT))
    check = validator(issuers=issuers, tenants=(TENANT,))
    check.authenticate(entra_token(KEY))
    with pytest.raises(EntraTokenError, match="tenant"):
        check.authenticate(entra_token(KEY, tenant=OTHER_TENANT))


def test_unknown_principal_and_forbidden_hub_are_403_with_the_service_message() -> None:
    """A verified caller without the role gets the service's RBAC message."""
    chat_only = Principal("chat", app_id=APP_ID, hubs={"chat": principal_actions("owner")})
    check = validator(principals=(chat_only,))
    check.check(entra_token(KEY), "chat", "POST", "groups/*/:send")
    with pytest.raises(EntraForbiddenError) as caught:
        check.check(entra_token(KEY), "news", "POST", "groups/*/:send")
    assert str(caught.value) == (
        "Microsoft.SignalRService/WebPubSub/group/send/action permission is required to access "
        "this API. Please check your role assignments."
    )
    assert caught.value.status == 403
    stranger = entra_token(KEY, object_id="0000", app_id="1111")
    with pytest.raises(EntraForbiddenError, match="clientConnection/generateToken/action"):
        check.check(stranger, "chat", "POST", ":generateToken")


def test_reader_may_read_and_not_send() -> None:
    """'reader' grants the */read actions only; grants for '*' and a hub add up."""
    principal = Principal(
        "p",
        object_id=OBJECT_ID,
        hubs={"*": principal_actions("reader"), "chat": principal_actions(["hub/send/action"])},
    )
    check = validator(principals=(principal,))
    token = entra_token(KEY)
    check.check(token, "news", "HEAD", "groups/*")
    check.check(token, "chat", "POST", ":send")
    with pytest.raises(EntraForbiddenError):
        check.check(token, "news", "POST", ":send")
    with pytest.raises(EntraForbiddenError):
        check.check(token, "chat", "POST", "groups/*/:send")


def test_a_principal_naming_a_tenant_needs_it() -> None:
    """Every id a principal names must match, compared case-insensitively."""
    principal = Principal("p", object_id=OBJECT_ID.upper(), tenant_id=OTHER_TENANT, hubs=OWNER.hubs)
    issuers = (*tenant_issuers(TENANT), *tenant_issuers(OTHER_TENANT))
    check = validator(principals=(principal,), issuers=issuers)
    check.check(entra_token(KEY, tenant=OTHER_TENANT), "chat", "POST", ":send")
    with pytest.raises(EntraForbiddenError):
        check.check(entra_token(KEY), "chat", "POST", ":send")


def test_every_rest_route_has_a_data_action() -> None:
    """The table covers each route of the REST API, no more."""
    from hubbub.server.restrules import _ROUTES

    assert set(DATA_ACTIONS) == set(_ROUTES)


def test_development_mode_skips_only_the_signature() -> None:
    """Unverified mode takes any key, any caller as owner; shape, audience and lifetime count."""
    check = validator(verify_signatures=False, issuers=(), principals=())
    stranger_key = TestKey()
    check.check(entra_token(stranger_key, object_id="x"), "chat", "POST", ":send")
    for bad, message in [
        (entra_token(stranger_key, audience="https://other"), "audience"),
        (entra_token(stranger_key, lifetime=-LEEWAY_SECONDS - 5), "expired"),
        (entra_token(stranger_key, iss="https://evil.example/"), "not issued by"),
    ]:
        with pytest.raises(EntraTokenError, match=message):
            check.authenticate(bad)


def test_development_mode_with_principals_still_authorises() -> None:
    """Configured principals are enforced even when signatures are not checked."""
    check = validator(verify_signatures=False, issuers=())
    with pytest.raises(EntraForbiddenError):
        check.check(entra_token(TestKey(), object_id="x", app_id="y"), "chat", "POST", ":send")


def test_is_entra_token_tells_rs256_from_access_key_tokens() -> None:
    """The REST adapter picks the verifier from the header's alg alone."""
    assert is_entra_token(entra_token(KEY))
    assert not is_entra_token(jwt.encode({"aud": "x"}, "k" * 32, algorithm="HS256"))
    assert not is_entra_token("garbage")


def test_key_set_parsing() -> None:
    """Non-RSA and keyless entries are skipped; a set with nothing usable is an error."""
    document = jwks(KEY)
    document["keys"].append({"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AA", "y": "AA"})
    assert KeySet.from_json(json.dumps(document)).kids == (KEY.kid,)
    for bad in ["[]", '{"keys": []}', "{", '{"keys": [{"kty": "oct", "k": "AA"}]}']:
        with pytest.raises(ValueError):
            KeySet.from_json(bad)


@pytest.mark.parametrize("bad", ["admin", ["group/send/action; drop"], [""]])
def test_principal_actions_refuses_what_azure_would_not_name(bad: object) -> None:
    """Roles are owner or reader; actions hold letters, '/' and '*' only."""
    with pytest.raises(ValueError):
        principal_actions(bad)  # type: ignore[arg-type]


def test_principal_actions_accepts_full_names() -> None:
    """The built-in role names and prefixed actions read as their short forms."""
    assert principal_actions("Web PubSub Service Reader") == ("*/read",)
    assert principal_actions(["Microsoft.SignalRService/WebPubSub/group/*"]) == ("group/*",)
