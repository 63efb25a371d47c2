"""Configuration: flags override ``HUBBUB_*`` variables, which override the TOML file.

The file's shape (ARCHITECTURE.md "Configuration")::

    [server]
    host = "127.0.0.1"
    port = 8080

    [auth]
    access_keys = ["<primary>", "<secondary>"]

    [hubs.chat]
    anonymous_connect = false
    keep_alive_seconds = 20

    [[hubs.chat.event_handlers]]
    url_template = "http://127.0.0.1:8081/eventhandler/{event}"
    user_event_pattern = "*"
    system_events = ["connect", "connected", "disconnected"]

A hub not named in the file gets :data:`DEFAULT_HUB`. Errors name the source, key and problem.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from hubbub.errors import ConfigError

__all__ = [
    "DEFAULT_HUB",
    "Config",
    "EventHandlerConfig",
    "HubConfig",
    "load_config",
]

SYSTEM_EVENTS = ("connect", "connected", "disconnected")
MIN_KEY_LENGTH = 32


@dataclass(frozen=True)
class EventHandlerConfig:
    """One upstream event handler (upstream.md §1)."""

    url_template: str
    user_event_pattern: str = ""
    system_events: tuple[str, ...] = ()


@dataclass(frozen=True)
class HubConfig:
    """Settings of one hub (service-features.md §2)."""

    anonymous_connect: bool = False
    keep_alive_seconds: int = 20
    event_handlers: tuple[EventHandlerConfig, ...] = ()


DEFAULT_HUB = HubConfig()


@dataclass(frozen=True)
class Config:
    """Everything a node needs to start."""

    host: str = "127.0.0.1"
    port: int = 8080
    access_keys: tuple[str, ...] = ()
    hubs: Mapping[str, HubConfig] = field(default_factory=dict)
    max_outbound_bytes: int = 4 * 1024 * 1024
    """Bound of one connection's unsent bytes; a connection over it is closed as slow."""
    session_timeout_seconds: float = 30.0
    """How long a reliable session outlives its dropped socket (the service keeps >= 30 s)."""
    upstream_timeout_seconds: float = 20.0
    """How long one event handler request may take before it counts as failed."""
    http_keep_alive_seconds: float = 75.0
    """How long an HTTP connection may go without a request before it is closed."""
    log_summary_seconds: float = 60.0
    """How often the log summarizes what happened (connections, errors, event handlers)."""
    public_endpoint: str | None = None
    """The endpoint clients see (behind a proxy); default ``http://host:port``."""
    key_generated: bool = False

    def hub(self, name: str) -> HubConfig:
        """Settings of hub ``name`` (lower case), or the defaults."""
        return self.hubs.get(name, DEFAULT_HUB)

    @property
    def endpoint(self) -> str:
        if self.public_endpoint:
            return self.public_endpoint.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def connection_string(self) -> str:
        return f"Endpoint={self.endpoint};AccessKey={self.access_keys[0]};Version=1.0;"


def _expect(source: str, key: str, value: object, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ConfigError(f"{source}: {key}: expected {what}, got {value!r}")


def _port(source: str, key: str, value: object) -> int:
    try:
        port = int(str(value)) if isinstance(value, str) else value
    except ValueError:
        port = None
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"{source}: {key}: expected a port number from 0 to 65535, got {value!r}")
    return port


def _keys(source: str, key: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [k for k in value.split(",") if k]
    _expect(source, key, value, list, "a list of one or two strings")
    assert isinstance(value, list)
    if not 1 <= len(value) <= 2 or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{source}: {key}: expected a list of one or two strings")
    for k in value:
        if len(k.encode()) < MIN_KEY_LENGTH:
            raise ConfigError(f"{source}: {key}: an access key must be at least 32 bytes")
    return tuple(value)


def _handler(source: str, key: str, raw: object) -> EventHandlerConfig:
    _expect(source, key, raw, dict, "a table")
    assert isinstance(raw, dict)
    unknown = set(raw) - {"url_template", "user_event_pattern", "system_events"}
    if unknown:
        raise ConfigError(f"{source}: {key}.{sorted(unknown)[0]}: unknown key")
    url = raw.get("url_template")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: {key}.url_template: expected an http(s) URL, got {url!r}")
    pattern = raw.get("user_event_pattern", "")
    _expect(source, f"{key}.user_event_pattern", pattern, str, "a string")
    events = raw.get("system_events", [])
    _expect(source, f"{key}.system_events", events, list, "a list of event names")
    for event in events:
        if event not in SYSTEM_EVENTS:
            raise ConfigError(
                f"{source}: {key}.system_events: unknown event {event!r} "
                f"(expected {', '.join(SYSTEM_EVENTS)})"
            )
    return EventHandlerConfig(url, str(pattern), tuple(events))


def _hub(source: str, name: str, raw: object) -> HubConfig:
    key = f"hubs.{name}"
    _expect(source, key, raw, dict, "a table")
    assert isinstance(raw, dict)
    unknown = set(raw) - {"anonymous_connect", "keep_alive_seconds", "event_handlers"}
    if unknown:
        raise ConfigError(f"{source}: {key}.{sorted(unknown)[0]}: unknown key")
    anonymous = raw.get("anonymous_connect", False)
    _expect(source, f"{key}.anonymous_connect", anonymous, bool, "true or false")
    keep_alive = raw.get("keep_alive_seconds", 20)
    if (
        not isinstance(keep_alive, int)
        or isinstance(keep_alive, bool)
        or not 1 <= keep_alive <= 120
    ):
        raise ConfigError(
            f"{source}: {key}.keep_alive_seconds: expected an integer from 1 to 120, "
            f"got {keep_alive!r}"
        )
    handlers = raw.get("event_handlers", [])
    _expect(source, f"{key}.event_handlers", handlers, list, "an array of tables")
    parsed = tuple(
        _handler(source, f"{key}.event_handlers[{i}]", h) for i, h in enumerate(handlers)
    )
    return HubConfig(bool(anonymous), keep_alive, parsed)


def _from_file(path: Path) -> dict[str, object]:
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    out: dict[str, object] = {}
    unknown = set(raw) - {"server", "auth", "hubs"}
    if unknown:
        raise ConfigError(f"{source}: {sorted(unknown)[0]}: unknown section")
    server = raw.get("server", {})
    _expect(source, "server", server, dict, "a table")
    for key, value in server.items():
        if key == "host":
            _expect(source, "server.host", value, str, "a string")
            out["host"] = value
        elif key == "port":
            out["port"] = _port(source, "server.port", value)
        elif key == "public_endpoint":
            _expect(source, "server.public_endpoint", value, str, "a URL")
            out["public_endpoint"] = value
        elif key in (
            "upstream_timeout_seconds",
            "session_timeout_seconds",
            "http_keep_alive_seconds",
            "log_summary_seconds",
        ):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ConfigError(
                    f"{source}: server.{key}: expected a positive number, got {value!r}"
                )
            out[key] = float(value)
        elif key == "max_outbound_bytes":
            _expect(source, "server.max_outbound_bytes", value, int, "an integer")
            out["max_outbound_bytes"] = value
        else:
            raise ConfigError(f"{source}: server.{key}: unknown key")
    auth = raw.get("auth", {})
    _expect(source, "auth", auth, dict, "a table")
    for key, value in auth.items():
        if key != "access_keys":
            raise ConfigError(f"{source}: auth.{key}: unknown key")
        out["access_keys"] = _keys(source, "auth.access_keys", value)
    hubs = raw.get("hubs", {})
    _expect(source, "hubs", hubs, dict, "a table")
    out["hubs"] = {name.lower(): _hub(source, name, h) for name, h in hubs.items()}
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, object]:
    out: dict[str, object] = {}
    if "HUBBUB_HOST" in env:
        out["host"] = env["HUBBUB_HOST"]
    if "HUBBUB_PORT" in env:
        out["port"] = _port("environment", "HUBBUB_PORT", env["HUBBUB_PORT"])
    if "HUBBUB_ACCESS_KEY" in env:
        out["access_keys"] = _keys("environment", "HUBBUB_ACCESS_KEY", env["HUBBUB_ACCESS_KEY"])
    if "HUBBUB_PUBLIC_ENDPOINT" in env:
        out["public_endpoint"] = env["HUBBUB_PUBLIC_ENDPOINT"]
    return out


def load_config(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Build the configuration from a file, the environment and flags, in rising priority.

    Raises:
        ConfigError: any source is invalid; the message names the source and the key.
    """
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    config_path = path or env.get("HUBBUB_CONFIG")
    if config_path:
        values.update(_from_file(Path(config_path)))
    values.update(_from_env(env))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "port":
            value = _port("--port", "--port", value)
        elif key == "access_keys":
            value = _keys("--access-key", "--access-key", value)
        values[key] = value
    config = Config(**values)  # type: ignore[arg-type]
    if not config.access_keys:
        import secrets

        config = replace(config, access_keys=(secrets.token_urlsafe(33),), key_generated=True)
    return config
