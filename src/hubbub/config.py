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
    group_presence_events = ["joined", "left"]   # optional: group presence events
    group_presence_filters = ["room-*"]          # optional: only these groups (default all)

and the production sections parsed by :mod:`hubbub.configparse`: ``[server]``'s ``tls_*`` keys
and ``upstream_ca_file``, ``[auth.entra]``, ``[network]``, ``[limits]`` and ``[engine]``::

    [engine]
    redis_url = "redis://127.0.0.1:6379/0"   # a cluster on Redis; none: one in-memory node
    session_replication = false              # true: reliable sessions survive a kill -9 too

A hub not named in the file gets :data:`DEFAULT_HUB`. Errors name the source (the file; a
variable or a flag names itself), the key and the problem, in one line.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from hubbub.configparse import (
    TLS_KEYS,
    EntraConfig,
    NetworkConfig,
    check_tls_files,
    error as _error,
    expect as _expect,
    is_loopback,
    parse_engine,
    parse_entra,
    parse_limits,
    parse_network_section,
    parse_redis_url,
    parse_tls_value,
)
from hubbub.core.grouppresence import GroupPresenceSettings
from hubbub.core.names import validate_hub
from hubbub.core.throttle import Limits
from hubbub.errors import BadRequestError, ConfigError

__all__ = [
    "DEFAULT_HUB",
    "Config",
    "EventHandlerConfig",
    "HubConfig",
    "load_config",
]

SYSTEM_EVENTS = ("connect", "connected", "disconnected")
MIN_KEY_LENGTH = 32
MIN_OUTBOUND_BYTES = 64 * 1024
"""Smallest ``max_outbound_bytes``: below it a client that reads is closed by ordinary bursts."""
MAX_OUTBOUND_BYTES = 1024 * 1024 * 1024
MAX_WORKERS = 256
"""Most node processes one ``hubbub serve --workers`` starts."""
MAX_SECONDS = 86400.0
"""Largest value of a ``*_seconds`` setting of ``[server]`` (one day)."""
SECONDS_KEYS = (
    "upstream_timeout_seconds",
    "session_timeout_seconds",
    "http_keep_alive_seconds",
    "request_head_timeout_seconds",
    "log_summary_seconds",
)


@dataclass(frozen=True)
class EventHandlerConfig:
    """One upstream event handler (upstream.md §1)."""

    url_template: str
    user_event_pattern: str = ""
    system_events: tuple[str, ...] = ()
    group_presence: GroupPresenceSettings = field(default_factory=GroupPresenceSettings)
    """The group presence events (``joined``, ``left``) this handler takes, for which groups."""


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
    request_head_timeout_seconds: float = 15.0
    """How long a request head may take from its first byte; a slower one is answered 408."""
    log_summary_seconds: float = 60.0
    """How often the log summarizes what happened (connections, errors, event handlers)."""
    fast_lane: bool = True
    """Answer plain REST sends without aiohttp's request objects (same answers, less CPU)."""
    public_endpoint: str | None = None
    """The endpoint clients see (behind a proxy); default ``http(s)://host:port``."""
    tls_cert_file: str | None = None
    """PEM certificate chain: with ``tls_key_file``, the port serves https and wss."""
    tls_key_file: str | None = None
    tls_client_auth: str = "off"
    """Client certificates: ``off``, ``optional`` or ``required`` (see ``tls_client_ca_file``)."""
    tls_client_ca_file: str | None = None
    upstream_ca_file: str | None = None
    """CA bundle that event handlers' https certificates are verified against (default: system)."""
    entra: EntraConfig | None = None
    """``[auth.entra]``: Microsoft Entra ID tokens on the REST API; None: not accepted."""
    network: NetworkConfig = field(default_factory=NetworkConfig)
    limits: Limits = field(default_factory=Limits)
    redis_url: str | None = None
    """``[engine] redis_url``: the nodes sharing this Redis are one service; None: this node
    alone, with the in-memory engine."""
    session_replication: bool = False
    """``[engine] session_replication``: every reliable delivery is copied to Redis, so a
    session survives its node's death (kill -9). Off by default: it costs Redis a stream
    write per reliable delivery (bench (j): about 3x the server CPU per delivery of a
    1,000-member reliable fan-out), and without it a session still survives its node's
    graceful stop and a hand-over; a deployment that must keep reliable sessions through a
    crash turns it on. Without ``redis_url`` it does nothing."""
    workers: int = 1
    """Node processes ``hubbub serve`` runs on this machine, sharing the port (more than one
    needs Redis: :mod:`hubbub.server.workers`)."""
    key_generated: bool = False

    def hub(self, name: str) -> HubConfig:
        """Settings of hub ``name`` (lower case), or the defaults."""
        return self.hubs.get(name, DEFAULT_HUB)

    @property
    def tls(self) -> bool:
        """The port serves https and wss."""
        return self.tls_cert_file is not None

    @property
    def endpoint(self) -> str:
        if self.public_endpoint:
            return self.public_endpoint.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{url_host(host)}:{self.port}"

    @property
    def connection_string(self) -> str:
        return f"Endpoint={self.endpoint};AccessKey={self.access_keys[0]};Version=1.0;"


def url_host(host: str) -> str:
    """``host`` as it is written in a URL: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _port(source: str | None, key: str, value: object) -> int:
    try:
        port = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        port = None
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise _error(
            source, key, f"expected a port number from 0 (any free port) to 65535, got {value!r}"
        )
    return port


def _workers(source: str | None, key: str, value: object) -> int:
    try:
        workers = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        workers = None
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= MAX_WORKERS:
        raise _error(
            source,
            key,
            f"expected a number of node processes from 1 to {MAX_WORKERS}, got {value!r}",
        )
    return workers


def _keys(source: str | None, key: str, value: object, what: str) -> tuple[str, ...]:
    """One or two access keys; an error never echoes a key."""
    if not isinstance(value, list):
        raise _error(source, key, f"expected {what}, got {type(value).__name__}")
    for k in value:
        if not isinstance(k, str):
            raise _error(source, key, f"expected {what}, got {type(k).__name__} {k!r} in it")
    if not 1 <= len(value) <= 2:
        raise _error(source, key, f"expected {what}, got {len(value)}")
    for k in value:
        if len(k.encode()) < MIN_KEY_LENGTH:
            raise _error(source, key, f"an access key must be at least {MIN_KEY_LENGTH} bytes")
        if ";" in k or not k.isprintable() or any(c.isspace() for c in k):
            raise _error(
                source,
                key,
                "an access key may not contain ';', whitespace or control characters "
                "(it is written into the connection string)",
            )
    return tuple(value)


def _public_endpoint(source: str | None, key: str, value: object) -> str:
    """``http(s)://host[:port]``, without a path, query or user: the base of every URL."""
    _expect(source, key, value, str, "a URL")
    assert isinstance(value, str)
    problem = (
        f"expected http:// or https:// and a host, with no path or query "
        f"(e.g. https://pubsub.example.com), got {value!r}"
    )
    if not value.isprintable() or any(c.isspace() for c in value) or "?" in value:
        raise _error(source, key, problem)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise _error(source, key, problem) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.path not in ("", "/")
        or parts.fragment
        or "#" in value
    ):
        raise _error(source, key, problem)
    return f"{parts.scheme}://{parts.netloc}"


def _url_template(source: str, key: str, value: object) -> str:
    problem = f"expected an http(s) URL with a host, got {value!r}"
    if not isinstance(value, str):
        raise _error(source, key, problem)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise _error(source, key, problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _error(source, key, problem)
    if "{" in parts.netloc or "}" in parts.netloc:
        raise _error(source, key, f"placeholders are not allowed in the host, got {value!r}")
    return value


def _user_event_pattern(source: str, key: str, value: object) -> str:
    """``"*"``, one event name or names separated by commas; ``""``: no user events."""
    _expect(source, key, value, str, 'a string ("*", "name" or "a,b")')
    assert isinstance(value, str)
    if value == "":
        return value
    for entry in value.split(","):
        name = entry.strip()
        if not name:
            raise _error(
                source,
                key,
                f'an empty event name in {value!r} (expected "*", "name" or "a,b")',
            )
        if name == "*":
            continue
        if not name.isprintable() or any(c.isspace() for c in name):
            raise _error(
                source, key, f"event name {name!r} contains whitespace or a control character"
            )
        if any(c in name for c in "*?\\"):
            raise _error(
                source,
                key,
                f'wildcards inside a name are not supported ({name!r}): use "*" for every event',
            )
    return value


def _handler(source: str, key: str, raw: object) -> EventHandlerConfig:
    _expect(source, key, raw, dict, "a table")
    assert isinstance(raw, dict)
    unknown = set(raw) - {
        "url_template",
        "user_event_pattern",
        "system_events",
        "group_presence_events",
        "group_presence_filters",
    }
    if unknown:
        raise _error(source, f"{key}.{sorted(unknown)[0]}", "unknown key")
    url = _url_template(source, f"{key}.url_template", raw.get("url_template"))
    pattern = _user_event_pattern(
        source, f"{key}.user_event_pattern", raw.get("user_event_pattern", "")
    )
    events = raw.get("system_events", [])
    _expect(source, f"{key}.system_events", events, list, "a list of event names")
    for event in events:
        if event not in SYSTEM_EVENTS:
            raise _error(
                source,
                f"{key}.system_events",
                f"unknown event {event!r} (expected {', '.join(SYSTEM_EVENTS)})",
            )
    return EventHandlerConfig(url, pattern, tuple(events), _group_presence(source, key, raw))


def _group_presence(source: str, key: str, raw: dict[str, object]) -> GroupPresenceSettings:
    """``group_presence_events`` (``joined``, ``left``) and ``group_presence_filters``
    (wildcard group patterns, as in the group roles), as the service's ``groupPresenceEvents``
    setting of an event handler: no events named, no presence events; no filter, every group."""
    names = raw.get("group_presence_events", [])
    _expect(source, f"{key}.group_presence_events", names, list, 'a list of "joined", "left"')
    filters = raw.get("group_presence_filters", [])
    _expect(source, f"{key}.group_presence_filters", filters, list, "a list of group patterns")
    assert isinstance(names, list) and isinstance(filters, list)
    for name, value in (("group_presence_events", names), ("group_presence_filters", filters)):
        for item in value:
            _expect(source, f"{key}.{name}", item, str, "a list of strings")
    try:
        GroupPresenceSettings.parse(names)
    except ValueError as exc:
        raise _error(source, f"{key}.group_presence_events", str(exc)) from None
    try:
        return GroupPresenceSettings.parse(names, filters)
    except ValueError as exc:
        raise _error(source, f"{key}.group_presence_filters", str(exc)) from None


def _toml_key(name: str) -> str:
    """``name`` as a TOML key: bare when it can be, else quoted."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _hub(source: str, name: str, raw: object) -> HubConfig:
    key = f"hubs.{_toml_key(name)}"
    try:
        validate_hub(name)
    except BadRequestError:
        raise _error(
            source,
            key,
            "invalid hub name: a letter, then at most 127 letters, digits or _ ` , . [ ]",
        ) from None
    _expect(source, key, raw, dict, "a table")
    assert isinstance(raw, dict)
    unknown = set(raw) - {"anonymous_connect", "keep_alive_seconds", "event_handlers"}
    if unknown:
        raise _error(source, f"{key}.{sorted(unknown)[0]}", "unknown key")
    anonymous = raw.get("anonymous_connect", False)
    _expect(source, f"{key}.anonymous_connect", anonymous, bool, "true or false")
    keep_alive = raw.get("keep_alive_seconds", 20)
    if (
        not isinstance(keep_alive, int)
        or isinstance(keep_alive, bool)
        or not 1 <= keep_alive <= 120
    ):
        raise _error(
            source,
            f"{key}.keep_alive_seconds",
            f"expected an integer from 1 to 120, got {keep_alive!r}",
        )
    handlers = raw.get("event_handlers", [])
    _expect(source, f"{key}.event_handlers", handlers, list, "an array of tables")
    parsed = tuple(
        _handler(source, f"{key}.event_handlers[{i}]", h) for i, h in enumerate(handlers)
    )
    return HubConfig(bool(anonymous), keep_alive, parsed)


def _hubs(source: str, raw: object) -> dict[str, HubConfig]:
    _expect(source, "hubs", raw, dict, "a table")
    assert isinstance(raw, dict)
    hubs: dict[str, HubConfig] = {}
    names: dict[str, str] = {}
    for name, hub in raw.items():
        config = _hub(source, name, hub)
        lower = name.lower()
        if lower in names:
            raise _error(
                source,
                f"hubs.{_toml_key(name)}",
                f"the same hub as hubs.{_toml_key(names[lower])} (hub names are case-insensitive)",
            )
        names[lower] = name
        hubs[lower] = config
    return hubs


def _read(path: Path) -> dict[str, object]:
    source = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is fine
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise ConfigError(
            f"{source}: not UTF-8 text: byte 0x{data[exc.start]:02x} "
            f"(at line {line}, column {column}); TOML files are UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None


def _from_file(path: Path) -> dict[str, object]:
    source = str(path)
    raw = _read(path)
    out: dict[str, object] = {}
    unknown = set(raw) - {"server", "auth", "hubs", "network", "limits", "engine"}
    if unknown:
        raise _error(source, sorted(unknown)[0], "unknown section")
    server = raw.get("server", {})
    _expect(source, "server", server, dict, "a table")
    assert isinstance(server, dict)
    for key, value in server.items():
        if key == "host":
            _expect(source, "server.host", value, str, "a string")
            out["host"] = value
        elif key == "port":
            out["port"] = _port(source, "server.port", value)
        elif key == "public_endpoint":
            out["public_endpoint"] = _public_endpoint(source, "server.public_endpoint", value)
        elif key in TLS_KEYS:
            out[key] = parse_tls_value(source, f"server.{key}", key, value)
        elif key in SECONDS_KEYS:
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not 0 < value <= MAX_SECONDS
            ):
                raise _error(
                    source,
                    f"server.{key}",
                    f"expected a number of seconds, more than 0 and at most {MAX_SECONDS:g}, "
                    f"got {value!r}",
                )
            out[key] = float(value)
        elif key == "max_outbound_bytes":
            if (
                not isinstance(value, int)
                or isinstance(value, bool)
                or not MIN_OUTBOUND_BYTES <= value <= MAX_OUTBOUND_BYTES
            ):
                raise _error(
                    source,
                    "server.max_outbound_bytes",
                    f"expected an integer from {MIN_OUTBOUND_BYTES} (64 KiB) to "
                    f"{MAX_OUTBOUND_BYTES} (1 GiB), got {value!r}",
                )
            out["max_outbound_bytes"] = value
        elif key == "fast_lane":
            _expect(source, "server.fast_lane", value, bool, "true or false")
            out["fast_lane"] = value
        elif key == "workers":
            if isinstance(value, str):  # the file has a type: a string is not a number there
                raise _error(source, "server.workers", f"expected an integer, got {value!r}")
            out["workers"] = _workers(source, "server.workers", value)
        else:
            raise _error(source, f"server.{key}", "unknown key")
    auth = raw.get("auth", {})
    _expect(source, "auth", auth, dict, "a table")
    assert isinstance(auth, dict)
    for key, value in auth.items():
        if key == "entra":
            out["entra"] = parse_entra(source, value)
        elif key == "access_keys":
            out["access_keys"] = _keys(
                source, "auth.access_keys", value, "a list of one or two strings"
            )
        else:
            raise _error(source, f"auth.{key}", "unknown key")
    out["hubs"] = _hubs(source, raw.get("hubs", {}))
    if "network" in raw:
        out["network"] = parse_network_section(source, raw["network"], _port)
    if "limits" in raw:
        out["limits"] = parse_limits(source, raw["limits"])
    if "engine" in raw:
        out.update(parse_engine(source, raw["engine"]))
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, object]:
    """The ``HUBBUB_*`` variables; an empty one counts as unset."""
    out: dict[str, object] = {}
    if host := env.get("HUBBUB_HOST"):
        out["host"] = host
    if port := env.get("HUBBUB_PORT"):
        out["port"] = _port(None, "HUBBUB_PORT", port)
    if keys := env.get("HUBBUB_ACCESS_KEY"):
        out["access_keys"] = _keys(
            None,
            "HUBBUB_ACCESS_KEY",
            [k.strip() for k in keys.split(",") if k.strip()],
            "one or two keys, separated by a comma",
        )
    if endpoint := env.get("HUBBUB_PUBLIC_ENDPOINT"):
        out["public_endpoint"] = _public_endpoint(None, "HUBBUB_PUBLIC_ENDPOINT", endpoint)
    if workers := env.get("HUBBUB_WORKERS"):
        out["workers"] = _workers(None, "HUBBUB_WORKERS", workers)
    if lane := env.get("HUBBUB_FAST_LANE"):
        out["fast_lane"] = _switch("HUBBUB_FAST_LANE", lane)
    for key in TLS_KEYS:
        variable = f"HUBBUB_{key.upper()}"
        if value := env.get(variable):
            out[key] = parse_tls_value(None, variable, key, value)
    if url := env.get("HUBBUB_REDIS_URL"):
        out["redis_url"] = parse_redis_url(None, "HUBBUB_REDIS_URL", url)
    if replication := env.get("HUBBUB_SESSION_REPLICATION"):
        out["session_replication"] = _switch("HUBBUB_SESSION_REPLICATION", replication)
    return out


_SWITCH = {"true": True, "1": True, "false": False, "0": False}


def _switch(key: str, value: str) -> bool:
    """A setting that is on or off, as a variable spells it."""
    try:
        return _SWITCH[value.strip().lower()]
    except KeyError:
        raise _error(None, key, f"expected true or false, got {value!r}") from None


def _check_together(config: Config) -> None:
    """Rules between settings that may come from different sources."""
    check_tls_files(
        config.tls_cert_file,
        config.tls_key_file,
        config.tls_client_auth,
        config.tls_client_ca_file,
        config.upstream_ca_file,
    )
    entra = config.entra
    if entra is not None and not entra.settings.verify_signatures:
        for what, host in (
            ("server.host", config.host),
            ("network.rest_host", config.network.rest_host),
        ):
            if host is not None and not is_loopback(host):
                raise _error(
                    None,
                    "auth.entra.verify_signatures",
                    f"false is for local development only and needs a loopback {what} "
                    f"(127.0.0.1, ::1 or localhost), got {host!r}",
                )
    rest_port = config.network.rest_port
    if rest_port is not None and rest_port != 0 and rest_port == config.port:
        raise _error(
            None, "network.rest_port", f"the REST listener needs a port of its own, not {rest_port}"
        )


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
            value = _port(None, "--port", value)
        elif key == "workers":
            value = _workers(None, "--workers", value)
        elif key == "access_keys":
            value = _keys(None, "--access-key", value, "one or two (primary, secondary)")
        elif key in TLS_KEYS:
            value = parse_tls_value(None, f"--{key.replace('_', '-')}", key, value)
        elif key == "redis_url":
            value = parse_redis_url(None, "--redis-url", value)
        values[key] = value
    config = Config(**values)  # type: ignore[arg-type]
    _check_together(config)
    if not config.access_keys:
        import secrets

        config = replace(config, access_keys=(secrets.token_urlsafe(33),), key_generated=True)
    return config
