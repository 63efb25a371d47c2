"""What a new configuration would change, and which changes a running node takes live."""

from __future__ import annotations

from pathlib import Path

from hubbub.config import Config, load_config
from hubbub.reload import describe, diff, live_config
from tests._pki import Pki

KEY_A = "A" * 43
KEY_B = "B" * 43
KEY_C = "C" * 43

BASE = f"""
[server]
port = 8080

[auth]
access_keys = ["{KEY_A}", "{KEY_B}"]

[hubs.chat]
anonymous_connect = false

[[hubs.chat.event_handlers]]
url_template = "https://handler.example/api/{{event}}?code=s3cret"
system_events = ["connect"]
"""


def config(tmp_path: Path, text: str, name: str = "hubbub.toml") -> Config:
    path = tmp_path / name
    path.write_text(text)
    return load_config(str(path), env={})


def lines(old: Config, new: Config) -> list[str]:
    return describe(diff(old, new))


def test_no_changes(tmp_path: Path) -> None:
    """The same file twice: nothing to say."""
    assert lines(config(tmp_path, BASE), config(tmp_path, BASE)) == ["no changes"]


def test_key_rotation_is_described_without_the_keys(tmp_path: Path) -> None:
    """Promoting the secondary and adding a new one: said in words, never with a key."""
    old = config(tmp_path, BASE)
    new = config(tmp_path, BASE.replace(f'"{KEY_A}", "{KEY_B}"', f'"{KEY_B}", "{KEY_C}"'))
    said = lines(old, new)
    assert said == [
        "auth.access_keys: the primary key is the former secondary",
        "auth.access_keys: the secondary key changed",
    ]
    assert not any(k in " ".join(said) for k in (KEY_A, KEY_B, KEY_C))
    assert live_config(old, new).access_keys == (KEY_B, KEY_C)
    removed = config(tmp_path, BASE.replace(f', "{KEY_B}"', ""))
    assert lines(old, removed) == ["auth.access_keys: the secondary key was removed"]


def test_hub_settings_and_handlers_are_live_and_urls_lose_their_query(tmp_path: Path) -> None:
    """A handler's ?code= is a secret; hub changes take effect without a restart."""
    old = config(tmp_path, BASE)
    new = config(
        tmp_path,
        BASE.replace(
            "anonymous_connect = false", "anonymous_connect = true\nkeep_alive_seconds = 5"
        ).replace("handler.example", "other.example")
        + "\n[hubs.news]\nanonymous_connect = true\n",
    )
    changes = diff(old, new)
    assert all(c.live for c in changes)
    said = describe(changes)
    assert said == [
        "hubs.chat.anonymous_connect: False -> True",
        "hubs.chat.keep_alive_seconds: 20 -> 5 (new connections)",
        "hubs.chat.event_handlers: https://handler.example/api/{event}?... -> "
        "https://other.example/api/{event}?...",
        "hubs.news: added",
        "hubs.news.anonymous_connect: False -> True",
    ]
    assert "s3cret" not in " ".join(said)
    assert live_config(old, new).hub("chat").anonymous_connect


def test_listening_addresses_need_a_restart_and_are_kept(tmp_path: Path) -> None:
    """A new port or REST listener is reported as needing a restart; the node keeps its own."""
    old = config(tmp_path, BASE)
    new = config(
        tmp_path,
        BASE.replace("port = 8080", 'port = 9090\nhost = "0.0.0.0"\nhttp_keep_alive_seconds = 5')
        + '\n[network]\nrest_host = "127.0.0.1"\nrest_port = 9091\n',
    )
    said = lines(old, new)
    assert "server.port: 8080 -> 9090 (needs a restart)" in said
    assert "server.host: '127.0.0.1' -> '0.0.0.0' (needs a restart)" in said
    assert "server.http_keep_alive_seconds: 75.0 -> 5.0 (needs a restart)" in said
    assert "network.rest_port: not set -> 9091 (needs a restart)" in said
    running = live_config(old, new)
    assert (running.host, running.port, running.network.rest_port) == ("127.0.0.1", 8080, None)
    assert running.http_keep_alive_seconds == 75.0


def test_tls(tmp_path: Path, pki: Pki) -> None:
    """A renewed certificate is live; turning TLS on, or another client CA, needs a restart."""
    plain = config(tmp_path, BASE)
    tls = BASE.replace(
        "port = 8080",
        f'port = 8080\ntls_cert_file = "{pki.server.cert_file}"\n'
        f'tls_key_file = "{pki.server.key_file}"',
    )
    on = config(tmp_path, tls)
    assert lines(plain, on) == ["server.tls_cert_file: TLS turned on (needs a restart)"]
    assert not live_config(plain, on).tls
    renewed = pki.issue("renewed-for-reload")
    moved = config(
        tmp_path,
        tls.replace(str(pki.server.cert_file), str(renewed.cert_file)).replace(
            str(pki.server.key_file), str(renewed.key_file)
        ),
    )
    assert lines(on, moved) == [
        f"server.tls_cert_file: {renewed.cert_file} (loaded for new handshakes)"
    ]
    assert live_config(on, moved).tls_cert_file == str(renewed.cert_file)
    mtls = config(
        tmp_path,
        tls.replace(
            "port = 8080",
            f'port = 8080\ntls_client_auth = "optional"\ntls_client_ca_file = "{pki.ca_file}"',
        ),
    )
    assert lines(on, mtls) == [
        "server.tls_client_auth: 'off' -> 'optional'",
        f"server.tls_client_ca_file: not set -> '{pki.ca_file}' (needs a restart)",
    ]


def test_limits_network_and_entra_are_live(tmp_path: Path) -> None:
    """Rules, proxies and limits switch without a restart."""
    old = config(tmp_path, BASE)
    new = config(
        tmp_path,
        BASE + '\n[network]\ndefault_action = "deny"\ntrusted_proxies = ["10.0.0.0/8"]\n'
        '[[network.rules]]\naction = "allow"\naddresses = ["127.0.0.0/8"]\n'
        "\n[limits]\nmax_connections_per_user = 3\n"
        "\n[auth.entra]\nverify_signatures = false\n",
    )
    changes = diff(old, new)
    assert all(c.live for c in changes)
    assert describe(changes) == [
        "auth.entra: Entra ID tokens accepted",
        "network.rules: 1 rules, default deny",
        "network.trusted_proxies: 10.0.0.0/8",
        "limits.max_connections_per_user: not set -> 3",
    ]
    assert live_config(old, new).limits.max_connections_per_user == 3


def test_a_generated_key_survives_a_reload_without_keys() -> None:
    """No key in either: the running node keeps the key its clients were given."""
    old, new = load_config(None, env={}), load_config(None, env={})
    assert old.access_keys != new.access_keys
    assert live_config(old, new).access_keys == old.access_keys
    assert lines(old, new) == ["no changes"]


def test_the_engine_needs_a_restart_and_is_kept(tmp_path: Path) -> None:
    """A node joins its cluster when it starts: [engine] changes wait for a restart, and the
    Redis password is never shown."""
    old = config(
        tmp_path,
        BASE + '\n[engine]\nredis_url = "redis://:pw1@r1:6379/0"\nsession_replication = true\n',
    )
    new = config(
        tmp_path,
        BASE + '\n[engine]\nredis_url = "redis://u:pw2@r2:6379/1"\nsession_replication = false\n',
    )
    said = lines(old, new)
    assert (
        "engine.redis_url: redis://:***@r1:6379/0 -> redis://u:***@r2:6379/1 (needs a restart)"
        in said
    )
    assert "engine.session_replication: True -> False (needs a restart)" in said
    assert not any("pw1" in line or "pw2" in line for line in said)
    running = live_config(old, new)
    assert (running.redis_url, running.session_replication) == ("redis://:pw1@r1:6379/0", True)
