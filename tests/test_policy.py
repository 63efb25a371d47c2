"""The policy the adapters ask: network rules, throttles and Entra, updated live."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from hubbub import metrics
from hubbub.config import Config, load_config
from hubbub.core.acl import TrafficKind
from hubbub.policy import Policy
from hubbub.protocol.entra import EntraForbiddenError, EntraTokenError
from tests._entra import OBJECT_ID, TENANT, TestKey, entra_token


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def config(tmp_path: Path, text: str, name: str = "hubbub.toml") -> Config:
    path = tmp_path / name
    path.write_text(text)
    return load_config(str(path), env={})


def entra(jwks_file: Path, hubs: str = '{ chat = "owner" }') -> str:
    return (
        f'[auth.entra]\ntenants = ["{TENANT}"]\njwks_file = "{jwks_file}"\n'
        f'[[auth.entra.principals]]\nobject_id = "{OBJECT_ID}"\nhubs = {hubs}\n'
    )


def test_defaults_refuse_nothing_and_cost_nothing_per_message() -> None:
    """Without [network], [limits] or [auth.entra] every check passes; no inbound gate."""
    policy = Policy(load_config(None, env={}))
    assert policy.check_network(TrafficKind.REST, ipaddress.ip_address("203.0.113.1")) is None
    assert policy.check_rest_rate("chat") is None
    assert policy.admit_connection("chat", "alice", "a.b.c") is None
    assert policy.inbound_gate("chat", "alice", "a.b.c") is None
    assert policy.entra is None


async def test_entra_is_refused_when_not_configured() -> None:
    """An RS256 token to a node without [auth.entra] is a 401."""
    with pytest.raises(EntraTokenError, match="not accepted"):
        await Policy(load_config(None, env={})).authorize_entra("x.y.z", "chat", "POST", ":send")


def test_network_refusal_is_403_and_counted(tmp_path: Path) -> None:
    """A denied address gets 403; the forwarded address counts only from a trusted proxy."""
    policy = Policy(
        config(
            tmp_path,
            '[network]\ndefault_action = "deny"\ntrusted_proxies = ["127.0.0.1"]\n'
            '[[network.rules]]\naction = "allow"\naddresses = ["10.0.0.0/8"]\n',
        )
    )
    before = metrics.NETWORK_DENIALS.value
    proxied = policy.address("127.0.0.1", x_forwarded_for=["10.1.2.3"])
    assert policy.check_network(TrafficKind.CLIENT, proxied) is None
    direct = policy.address("192.0.2.7", x_forwarded_for=["10.1.2.3"])
    refusal = policy.check_network(TrafficKind.CLIENT, direct)
    assert refusal is not None and refusal.status == 403
    assert metrics.NETWORK_DENIALS.value == before + 1


def test_rest_rate_is_429_with_retry_after(tmp_path: Path) -> None:
    """Over the per-hub rate: 429 and how long to wait; other hubs are not affected."""
    clock = Clock()
    policy = Policy(
        config(tmp_path, "[limits]\nrest_requests_per_second = 2\nrest_burst = 2\n"), clock
    )
    assert policy.check_rest_rate("chat") is None and policy.check_rest_rate("CHAT") is None
    refusal = policy.check_rest_rate("chat")
    assert refusal is not None and refusal.status == 429
    assert refusal.headers == {"Retry-After": "1", "retry-after-ms": "500"}
    assert policy.check_rest_rate("news") is None
    clock.now = 0.5
    assert policy.check_rest_rate("chat") is None


def test_connection_limits_survive_a_reload(tmp_path: Path) -> None:
    """Counts carry over an update; a limit added live judges the open connections."""
    policy = Policy(config(tmp_path, ""))
    for _ in range(2):
        assert policy.admit_connection("chat", "alice", None) is None
    policy.update(config(tmp_path, "[limits]\nmax_connections_per_user = 2\n", "b.toml"))
    refusal = policy.admit_connection("chat", "alice", None)
    assert refusal is not None and refusal.status == 429
    assert "ConnectionCountLimitReached" in refusal.message
    policy.release_connection("chat", "alice", None)
    assert policy.admit_connection("chat", "alice", None) is None


def test_inbound_gate_when_limited(tmp_path: Path) -> None:
    """A message limit gives each connection a gate."""
    policy = Policy(config(tmp_path, "[limits]\nmessages_per_second = 1\n"))
    gate = policy.inbound_gate("chat", "alice", None)
    assert gate is not None
    assert gate.check(10, 0.0) is None and gate.check(10, 0.0) is not None


async def test_entra_through_the_policy(
    tmp_path: Path, entra_key: TestKey, jwks_file: Path
) -> None:
    """Keys are read on first use; 403 for another hub; an update keeps the keys read."""
    policy = Policy(config(tmp_path, entra(jwks_file)))
    token = entra_token(entra_key)
    identity = await policy.authorize_entra(token, "chat", "POST", ":send")
    assert identity.object_id == OBJECT_ID
    with pytest.raises(EntraForbiddenError):
        await policy.authorize_entra(token, "news", "POST", ":send")
    policy.update(config(tmp_path, entra(jwks_file, '{ "*" = "owner" }'), "b.toml"))
    assert policy.entra is not None and policy.entra.validator.keys is not None
    await policy.authorize_entra(token, "news", "POST", ":send")
    policy.update(config(tmp_path, "", "c.toml"))
    with pytest.raises(EntraTokenError):
        await policy.authorize_entra(token, "news", "POST", ":send")


def test_unverified_entra_is_loud(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Development mode logs a warning whenever it is (re)configured."""
    with caplog.at_level("WARNING", "hubbub.policy"):
        Policy(config(tmp_path, "[auth.entra]\nverify_signatures = false\n"))
    assert "WITHOUT checking their signatures" in caplog.text


async def test_unverified_entra_accepts_any_key(tmp_path: Path) -> None:
    """No key set is read in development mode; any Entra-shaped token is an owner."""
    policy = Policy(config(tmp_path, "[auth.entra]\nverify_signatures = false\n"))
    await policy.authorize_entra(entra_token(TestKey()), "chat", "POST", ":generateToken")
