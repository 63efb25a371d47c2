"""The production settings: TLS, [auth.entra], [network], [limits]; validated in one line each."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from hubbub.config import load_config
from hubbub.core.acl import TrafficKind
from hubbub.core.throttle import Limits
from hubbub.errors import ConfigError
from hubbub.protocol.entra import tenant_issuers
from tests._entra import APP_ID, OBJECT_ID, TENANT
from tests._pki import Pki


def load(tmp_path: Path, text: str, **env: str) -> object:
    path = tmp_path / "hubbub.toml"
    path.write_text(text)
    return load_config(str(path), env=env)


def refused(tmp_path: Path, text: str, *fragments: str, **env: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, **env)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


def test_defaults_change_nothing() -> None:
    """Without the new sections a node is what it was: http, no Entra, no rules, no limits."""
    config = load_config(None, env={})
    assert not config.tls and config.endpoint.startswith("http://")
    assert config.entra is None
    assert config.network.acl.allows_everything and config.network.rest_port is None
    assert config.limits == Limits() and not config.limits.counts_connections


def test_tls_files_make_the_endpoint_https(tmp_path: Path, pki: Pki) -> None:
    """With a certificate and key the printed endpoint (and ws URLs from it) use https."""
    config = load(
        tmp_path,
        f'[server]\ntls_cert_file = "{pki.server.cert_file}"\n'
        f'tls_key_file = "{pki.server.key_file}"\n'
        f'tls_client_auth = "optional"\ntls_client_ca_file = "{pki.ca_file}"\n'
        f'upstream_ca_file = "{pki.ca_file}"\n',
    )
    assert config.endpoint == "https://127.0.0.1:8080"  # type: ignore[attr-defined]
    assert config.connection_string.startswith("Endpoint=https://")  # type: ignore[attr-defined]
    assert config.tls_client_auth == "optional"  # type: ignore[attr-defined]


def test_tls_from_the_environment_and_flags(pki: Pki) -> None:
    """HUBBUB_TLS_CERT_FILE and friends, and overrides as the flags pass them."""
    env = {
        "HUBBUB_TLS_CERT_FILE": str(pki.server.cert_file),
        "HUBBUB_TLS_KEY_FILE": str(pki.server.key_file),
        "HUBBUB_UPSTREAM_CA_FILE": str(pki.ca_file),
    }
    config = load_config(None, env=env)
    assert config.tls and config.upstream_ca_file == str(pki.ca_file)
    config = load_config(
        None,
        env=env,
        overrides={"tls_client_auth": "required", "tls_client_ca_file": str(pki.ca_file)},
    )
    assert config.tls_client_auth == "required"
    with pytest.raises(ConfigError, match="--tls-client-auth: expected one of"):
        load_config(None, env=env, overrides={"tls_client_auth": "yes"})


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('tls_cert_file = "{cert}"', ("server.tls_key_file", "given together")),
        (
            'tls_cert_file = "{cert}"\ntls_key_file = "{cert}"',
            ("server.tls_cert_file", "cannot load"),
        ),
        ('tls_cert_file = "{cert}"\ntls_key_file = "/nonexistent"', ("cannot load",)),
        ('tls_client_auth = "required"', ("server.tls_client_auth", "need TLS")),
        (
            'tls_cert_file = "{cert}"\ntls_key_file = "{key}"\ntls_client_auth = "required"',
            ("tls_client_ca_file",),
        ),
        ('tls_client_auth = "on"', ("server.tls_client_auth", "expected one of")),
        ('upstream_ca_file = "{key}"', ("server.upstream_ca_file", "cannot load CA")),
        ("tls_cert_file = 3", ("server.tls_cert_file", "a file path")),
    ],
)
def test_tls_mistakes(tmp_path: Path, pki: Pki, text: str, fragments: tuple[str, ...]) -> None:
    """Each TLS mistake is one line that names the key."""
    body = text.format(cert=pki.server.cert_file, key=pki.server.key_file)
    refused(tmp_path, f"[server]\n{body}\n", *fragments)


ENTRA = """
[auth.entra]
tenants = ["{tenant}"]
jwks_file = "{jwks}"

[[auth.entra.principals]]
name = "backend"
object_id = "{oid}"
hubs = {{ "*" = "reader", chat = "owner", News = ["hub/send/action"] }}

[[auth.entra.principals]]
app_id = "{app}"
hubs = {{ "*" = "Web PubSub Service Owner" }}
"""


def entra_text(jwks_file: Path, extra: str = "") -> str:
    return ENTRA.format(tenant=TENANT, jwks=jwks_file, oid=OBJECT_ID, app=APP_ID) + extra


def test_entra_section(tmp_path: Path, jwks_file: Path) -> None:
    """Tenants become both issuer forms; roles and action lists become patterns per hub."""
    config = load(tmp_path, entra_text(jwks_file))
    entra = config.entra  # type: ignore[attr-defined]
    assert entra.jwks_file == str(jwks_file)
    assert entra.settings.issuers == tenant_issuers(TENANT)
    assert entra.settings.verify_signatures
    backend, app = entra.settings.principals
    assert backend.name == "backend"
    assert backend.hubs == {"*": ("*/read",), "chat": ("*",), "news": ("hub/send/action",)}
    assert backend.allows("news", "hub/send/action") and not backend.allows(
        "other", "hub/send/action"
    )
    assert app.name == APP_ID and app.allows("any", "group/send/action")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('[auth.entra]\ntenants = ["{tenant}"]\n', ("auth.entra", "jwks_file or jwks_url")),
        ('[auth.entra]\njwks_file = "{jwks}"\n', ("auth.entra", "tenants")),
        ('[auth.entra]\ntenants = ["{tenant}"]\njwks_file = "{jwks}"\n', ("no principals",)),
        ('[auth.entra]\ntenants = ["contoso"]\n', ("auth.entra.tenants", "GUID")),
        ('[auth.entra]\njwks_file = "/nonexistent"\n', ("auth.entra.jwks_file", "cannot read")),
        (
            '[auth.entra]\njwks_file = "{jwks}"\njwks_url = "https://login.microsoftonline.com/x"\n',
            ("not both",),
        ),
        ('[auth.entra]\njwks_url = "http://login.example.com/keys"\n', ("https URL",)),
        ('[auth.entra]\nverify_signatures = "no"\n', ("auth.entra.verify_signatures",)),
        ("[auth.entra]\nmystery = 1\n", ("auth.entra.mystery", "unknown key")),
        (
            "[auth.entra]\nverify_signatures = false\n[[auth.entra.principals]]\nhubs = {{}}\n",
            ("auth.entra.principals[0]", "object_id"),
        ),
        (
            "[auth.entra]\nverify_signatures = false\n[[auth.entra.principals]]\n"
            'object_id = "{oid}"\nhubs = {{ chat = "admin" }}\n',
            ('auth.entra.principals[0].hubs."chat"', "unknown role"),
        ),
        (
            "[auth.entra]\nverify_signatures = false\n[[auth.entra.principals]]\n"
            'object_id = "{oid}"\nhubs = {{ "9chat" = "owner" }}\n',
            ("invalid hub name",),
        ),
    ],
)
def test_entra_mistakes(
    tmp_path: Path, jwks_file: Path, text: str, fragments: tuple[str, ...]
) -> None:
    """Each [auth.entra] mistake is one line naming the file and the key."""
    body = text.format(tenant=TENANT, jwks=jwks_file, oid=OBJECT_ID)
    message = refused(tmp_path, body, *fragments)
    assert message.startswith(str(tmp_path / "hubbub.toml"))


def test_unverified_entra_needs_a_loopback_bind(tmp_path: Path) -> None:
    """Development mode on 127.0.0.1 is fine; with any other host, from anywhere, it is refused."""
    text = "[auth.entra]\nverify_signatures = false\n"
    config = load(tmp_path, text)
    assert not config.entra.settings.verify_signatures  # type: ignore[attr-defined]
    assert load(tmp_path, text, HUBBUB_HOST="::1")
    refused(
        tmp_path,
        text,
        "auth.entra.verify_signatures",
        "loopback",
        "'0.0.0.0'",
        HUBBUB_HOST="0.0.0.0",
    )
    refused(tmp_path, f'[server]\nhost = "192.0.2.10"\n{text}', "loopback")
    refused(
        tmp_path, f'{text}[network]\nrest_host = "0.0.0.0"\nrest_port = 8081\n', "network.rest_host"
    )


def test_network_section(tmp_path: Path) -> None:
    """Rules in order with their kinds, trusted proxies, a REST listener of its own."""
    config = load(
        tmp_path,
        """
[network]
default_action = "deny"
trusted_proxies = ["10.0.0.0/24"]
rest_host = "10.0.0.2"
rest_port = 8081

[[network.rules]]
action = "allow"
addresses = ["10.0.0.0/8"]
kinds = ["rest", "trace"]

[[network.rules]]
action = "allow"
addresses = ["0.0.0.0/0", "::/0"]
kinds = ["client"]
""",
    )
    network = config.network  # type: ignore[attr-defined]
    assert (network.rest_host, network.rest_port) == ("10.0.0.2", 8081)
    assert network.trusted_proxies == (ipaddress.ip_network("10.0.0.0/24"),)
    public, internal = ipaddress.ip_address("198.51.100.1"), ipaddress.ip_address("10.1.1.1")
    assert network.acl.allows(TrafficKind.CLIENT, public)
    assert not network.acl.allows(TrafficKind.REST, public)
    assert network.acl.allows(TrafficKind.REST, internal)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('default_action = "block"', ("network.default_action",)),
        (
            '[[network.rules]]\naction = "allow"\naddresses = ["10.0.0.0/33"]',
            ("network.rules[0].addresses",),
        ),
        ('[[network.rules]]\naction = "allow"', ("network.rules[0].addresses", "missing")),
        ('[[network.rules]]\naction = "permit"\naddresses = []', ("network.rules[0].action",)),
        (
            '[[network.rules]]\naction = "deny"\naddresses = ["::/0"]\nkinds = ["admin"]',
            ("network.rules[0].kinds", "unknown kind"),
        ),
        ('trusted_proxies = "10.0.0.1"', ("network.trusted_proxies",)),
        ('rest_host = "10.0.0.2"', ("network.rest_port", "needs rest_port")),
        ("rest_port = 8080", ("network.rest_port", "port of its own")),
        ("rest_port = 70000", ("network.rest_port", "port number")),
    ],
)
def test_network_mistakes(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    """Each [network] mistake is one line naming the key."""
    refused(tmp_path, f"[network]\n{text}\n", *fragments)


def test_limits_section(tmp_path: Path) -> None:
    """Every limit of [limits] reaches the Limits the throttles read."""
    config = load(
        tmp_path,
        """
[limits]
max_connections_per_hub = 1000
max_connections_per_user = 5
max_connections_per_token = 10
max_message_bytes = 65536
messages_per_second = 50
message_burst = 100
user_inbound_bytes = 10485760
token_inbound_bytes = 5242880
inbound_window_seconds = 30
rest_requests_per_second = 200.5
rest_burst = 400
""",
    )
    assert config.limits == Limits(  # type: ignore[attr-defined]
        max_connections_per_hub=1000,
        max_connections_per_user=5,
        max_connections_per_token=10,
        max_message_bytes=65536,
        messages_per_second=50.0,
        message_burst=100,
        user_inbound_bytes=10485760,
        token_inbound_bytes=5242880,
        inbound_window_seconds=30.0,
        rest_requests_per_second=200.5,
        rest_burst=400,
    )


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("max_connections_per_user = 0", ("limits.max_connections_per_user", "from 1")),
        ("max_message_bytes = 2097152", ("limits.max_message_bytes", "1048576")),
        ("messages_per_second = -1", ("limits.messages_per_second",)),
        ("message_burst = 10", ("limits.message_burst", "needs messages_per_second")),
        ("rest_burst = 10", ("limits.rest_burst", "needs rest_requests_per_second")),
        ("max_connections = 10", ("limits.max_connections", "unknown key")),
        ("max_connections_per_hub = true", ("limits.max_connections_per_hub",)),
    ],
)
def test_limits_mistakes(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    """Each [limits] mistake is one line naming the key."""
    refused(tmp_path, f"[limits]\n{text}\n", *fragments)


def test_engine_defaults_to_memory() -> None:
    """Without a Redis URL a node is alone, in memory; replication is off (for a cluster)."""
    config = load_config(None, env={})
    assert config.redis_url is None
    assert config.session_replication is False


def test_engine_section_environment_and_flag(tmp_path: Path) -> None:
    """[engine] in the file, HUBBUB_REDIS_URL over it, --redis-url over both."""
    text = '[engine]\nredis_url = "redis://10.0.0.5:6379/2"\nsession_replication = false\n'
    config = load(tmp_path, text)
    assert config.redis_url == "redis://10.0.0.5:6379/2"  # type: ignore[attr-defined]
    assert config.session_replication is False  # type: ignore[attr-defined]
    config = load(tmp_path, text, HUBBUB_REDIS_URL="rediss://:secret@redis.example:6380")
    assert config.redis_url == "rediss://:secret@redis.example:6380"  # type: ignore[attr-defined]
    path = tmp_path / "hubbub.toml"
    config = load_config(
        str(path),
        env={"HUBBUB_REDIS_URL": "redis://a:1", "HUBBUB_SESSION_REPLICATION": "true"},
        overrides={"redis_url": "unix:///run/redis.sock"},
    )
    assert config.redis_url == "unix:///run/redis.sock"
    assert config.session_replication is True


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ('redis_url = "http://127.0.0.1:6379"', ("engine.redis_url", "expected redis://")),
        ('redis_url = "redis://"', ("engine.redis_url", "expected redis://")),
        ('redis_url = "redis://h:99999"', ("engine.redis_url", "expected redis://")),
        ('redis_url = "redis://h:6379/x"', ("engine.redis_url", "database number")),
        ('redis_url = "unix://"', ("engine.redis_url", "socket's path")),
        ("redis_url = 6379", ("engine.redis_url", "a Redis URL")),
        ('session_replication = "yes"', ("engine.session_replication", "true or false")),
        ('redis = "redis://h"', ("engine.redis", "unknown key")),
    ],
)
def test_engine_mistakes(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    """Each [engine] mistake is one line naming the key."""
    refused(tmp_path, f"[engine]\n{text}\n", *fragments)


def test_engine_errors_hide_the_password(tmp_path: Path) -> None:
    """A wrong Redis URL is shown without its password, from any source."""
    message = refused(tmp_path, '[engine]\nredis_url = "redis://u:hunter2@h:6379/db"\n')
    assert "hunter2" not in message and "u:***@h" in message
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={"HUBBUB_REDIS_URL": "http://:hunter2@h"})
    assert "HUBBUB_REDIS_URL" in str(caught.value) and "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError, match="HUBBUB_SESSION_REPLICATION: expected true or false"):
        load_config(None, env={"HUBBUB_SESSION_REPLICATION": "maybe"})
    with pytest.raises(ConfigError, match="--redis-url: expected redis://"):
        load_config(None, env={}, overrides={"redis_url": "redis//h"})
