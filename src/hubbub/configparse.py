"""Validation helpers of the configuration, and the production sections.

``[server]``'s TLS keys, ``[auth.entra]``, ``[network]``, ``[limits]`` and ``[engine]`` (see
:mod:`hubbub.config` for the rest). Every error is one line: ``source: key: problem``, where a
variable or flag names itself; no error echoes a secret.
"""

from __future__ import annotations

import ipaddress
import json
import re
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from hubbub.core.acl import IpRule, Network, NetworkAcl, TrafficKind, parse_network
from hubbub.core.names import validate_hub
from hubbub.core.throttle import Limits
from hubbub.errors import BadRequestError, ConfigError
from hubbub.protocol.entra import (
    DEFAULT_AUDIENCES,
    EntraSettings,
    KeySet,
    Principal,
    principal_actions,
    tenant_issuers,
)

__all__ = [
    "CLIENT_AUTH_MODES",
    "TLS_KEYS",
    "EntraConfig",
    "NetworkConfig",
    "check_tls_files",
    "error",
    "expect",
    "is_loopback",
    "parse_engine",
    "parse_entra",
    "parse_limits",
    "parse_network_section",
    "parse_redis_url",
    "parse_tls_value",
]

CLIENT_AUTH_MODES = ("off", "optional", "required")
TLS_KEYS = (
    "tls_cert_file",
    "tls_key_file",
    "tls_client_auth",
    "tls_client_ca_file",
    "upstream_ca_file",
)
MAX_MESSAGE_BYTES = 1024 * 1024
"""The service's limit on one client message; ``limits.max_message_bytes`` may only lower it."""


def error(source: str | None, key: str, problem: str) -> ConfigError:
    """``source: key: problem``; a variable or flag (no ``source``) names itself."""
    return ConfigError(f"{source}: {key}: {problem}" if source else f"{key}: {problem}")


def expect(
    source: str | None, key: str, value: object, kind: type | tuple[type, ...], what: str
) -> None:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise error(source, key, f"expected {what}, got {value!r}")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _keys_of(source: str, key: str, raw: Mapping[str, object], allowed: set[str]) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise error(source, f"{key}.{sorted(unknown)[0]}", "unknown key")


def _strings(source: str, key: str, value: object, what: str = "a list of strings") -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise error(source, key, f"expected {what}, got {value!r}")
    return list(value)


def _guid(source: str, key: str, value: object) -> str:
    expect(source, key, value, str, "a GUID (e.g. 72f988bf-86f1-41af-91ab-2d7cd011db47)")
    assert isinstance(value, str)
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise error(
            source,
            key,
            f"expected a GUID (e.g. 72f988bf-86f1-41af-91ab-2d7cd011db47), got {value!r}",
        ) from None


# --- [server] TLS -------------------------------------------------------------------------------


def parse_tls_value(source: str | None, key: str, name: str, value: object) -> str:
    """One TLS setting: a file path, or the client-auth mode."""
    if name == "tls_client_auth":
        if value not in CLIENT_AUTH_MODES:
            raise error(
                source,
                key,
                f"expected one of {', '.join(map(repr, CLIENT_AUTH_MODES))}, got {value!r}",
            )
        assert isinstance(value, str)
        return value
    expect(source, key, value, str, "a file path")
    assert isinstance(value, str)
    if not value.strip():
        raise error(source, key, "expected a file path, got an empty string")
    return value


def check_tls_files(
    cert_file: str | None,
    key_file: str | None,
    client_auth: str,
    client_ca_file: str | None,
    upstream_ca_file: str | None,
) -> None:
    """The TLS settings together: pairs complete, files loadable.

    Raises:
        ConfigError: naming the key (``server.tls_*``) and the problem.
    """
    if (cert_file is None) != (key_file is None):
        missing = "server.tls_key_file" if key_file is None else "server.tls_cert_file"
        raise error(None, missing, "tls_cert_file and tls_key_file are given together")
    if cert_file is not None and key_file is not None:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise error(
                None,
                "server.tls_cert_file",
                f"cannot load the certificate {cert_file} with the key {key_file}: {_why(exc)}",
            ) from None
    if client_auth != "off":
        if cert_file is None:
            raise error(
                None, "server.tls_client_auth", "client certificates need TLS: set tls_cert_file"
            )
        if client_ca_file is None:
            raise error(
                None,
                "server.tls_client_auth",
                f"{client_auth!r} needs tls_client_ca_file, the CA that issues client certificates",
            )
    for key, path in (
        ("tls_client_ca_file", client_ca_file),
        ("upstream_ca_file", upstream_ca_file),
    ):
        if path is not None:
            try:
                ssl.create_default_context(cafile=path)
            except (OSError, ssl.SSLError) as exc:
                raise error(
                    None, f"server.{key}", f"cannot load CA certificates from {path}: {_why(exc)}"
                ) from None


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)


# --- [auth.entra] -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntraConfig:
    """``[auth.entra]``: the validator's settings and where its keys come from."""

    settings: EntraSettings
    jwks_file: str | None = None
    jwks_url: str | None = None


_ENTRA_KEYS = {
    "tenants",
    "issuers",
    "audiences",
    "jwks_file",
    "jwks_url",
    "verify_signatures",
    "principals",
}
_PRINCIPAL_KEYS = {"name", "object_id", "app_id", "tenant_id", "hubs"}


def _principal(source: str, key: str, raw: object) -> Principal:
    expect(source, key, raw, dict, "a table")
    assert isinstance(raw, dict)
    _keys_of(source, key, raw, _PRINCIPAL_KEYS)
    ids = {
        k: _guid(source, f"{key}.{k}", raw[k])
        for k in ("object_id", "app_id", "tenant_id")
        if k in raw
    }
    if "object_id" not in ids and "app_id" not in ids:
        raise error(source, key, "a principal names an object_id, an app_id or both")
    name = raw.get("name", ids.get("object_id") or ids.get("app_id"))
    expect(source, f"{key}.name", name, str, "a string")
    hubs = raw.get("hubs")
    expect(source, f"{key}.hubs", hubs, dict, 'a table of hub = role, e.g. { "*" = "owner" }')
    assert isinstance(hubs, dict) and isinstance(name, str)
    grants: dict[str, tuple[str, ...]] = {}
    for hub, value in hubs.items():
        hub_key = f"{key}.hubs.{json.dumps(hub)}"
        if hub != "*":
            try:
                validate_hub(hub)
            except BadRequestError:
                raise error(source, hub_key, 'invalid hub name (or "*" for every hub)') from None
        if not isinstance(value, (str, list)) or (
            isinstance(value, list) and not all(isinstance(v, str) for v in value)
        ):
            raise error(
                source,
                hub_key,
                f'expected "owner", "reader" or a list of data actions, got {value!r}',
            )
        try:
            grants[hub.lower()] = principal_actions(value)
        except ValueError as exc:
            raise error(source, hub_key, str(exc)) from None
    return Principal(
        name,
        object_id=ids.get("object_id"),
        app_id=ids.get("app_id"),
        tenant_id=ids.get("tenant_id"),
        hubs=grants,
    )


def _jwks_url(source: str, key: str, value: object) -> str:
    expect(source, key, value, str, "an https URL")
    assert isinstance(value, str)
    parts = urlsplit(value)
    loopback = parts.hostname is not None and is_loopback(parts.hostname)
    if (
        not parts.hostname
        or parts.scheme not in ("https", "http")
        or (parts.scheme == "http" and not loopback)
    ):
        raise error(source, key, f"expected an https URL (http only on loopback), got {value!r}")
    return value


def parse_entra(source: str, raw: object) -> EntraConfig:
    """``[auth.entra]``."""
    key = "auth.entra"
    expect(source, key, raw, dict, "a table")
    assert isinstance(raw, dict)
    _keys_of(source, key, raw, _ENTRA_KEYS)
    verify = raw.get("verify_signatures", True)
    expect(source, f"{key}.verify_signatures", verify, bool, "true or false")
    tenants = [
        _guid(source, f"{key}.tenants", t)
        for t in _strings(source, f"{key}.tenants", raw.get("tenants", []))
    ]
    issuers = _strings(source, f"{key}.issuers", raw.get("issuers", []), "a list of issuer URLs")
    for issuer in issuers:
        if not urlsplit(issuer).scheme == "https":
            raise error(source, f"{key}.issuers", f"expected https URLs, got {issuer!r}")
    audiences = tuple(
        _strings(source, f"{key}.audiences", raw.get("audiences", list(DEFAULT_AUDIENCES)))
    )
    if not audiences:
        raise error(source, f"{key}.audiences", "expected at least one audience")
    jwks_file, jwks_url = raw.get("jwks_file"), raw.get("jwks_url")
    if jwks_file is not None and jwks_url is not None:
        raise error(source, f"{key}.jwks_url", "give jwks_file or jwks_url, not both")
    if jwks_url is not None:
        jwks_url = _jwks_url(source, f"{key}.jwks_url", jwks_url)
    if jwks_file is not None:
        expect(source, f"{key}.jwks_file", jwks_file, str, "a file path")
        assert isinstance(jwks_file, str)
        try:
            KeySet.from_json(Path(jwks_file).read_bytes())
        except OSError as exc:
            raise error(
                source, f"{key}.jwks_file", f"cannot read {jwks_file}: {exc.strerror or exc}"
            ) from None
        except ValueError as exc:
            raise error(source, f"{key}.jwks_file", f"{jwks_file}: {exc}") from None
    raw_principals = raw.get("principals", [])
    expect(
        source,
        f"{key}.principals",
        raw_principals,
        list,
        "an array of tables ([[auth.entra.principals]])",
    )
    assert isinstance(raw_principals, list)
    principals = tuple(
        _principal(source, f"{key}.principals[{i}]", p) for i, p in enumerate(raw_principals)
    )
    if verify:
        if jwks_file is None and jwks_url is None:
            raise error(
                source, key, "signatures are verified against jwks_file or jwks_url: give one"
            )
        if not tenants and not issuers:
            raise error(source, key, "give the tenants (or issuers) whose tokens are accepted")
        if not principals:
            raise error(
                source,
                key,
                "no principals: add [[auth.entra.principals]] with the callers allowed in",
            )
    all_issuers = tuple(dict.fromkeys([*(i for t in tenants for i in tenant_issuers(t)), *issuers]))
    settings = EntraSettings(
        issuers=all_issuers,
        tenants=tuple(tenants),
        audiences=audiences,
        principals=principals,
        verify_signatures=bool(verify),
    )
    return EntraConfig(settings, jwks_file if isinstance(jwks_file, str) else None, jwks_url)


# --- [network] ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkConfig:
    """``[network]``: access rules, trusted proxies, and the optional REST listener."""

    acl: NetworkAcl = field(default_factory=NetworkAcl)
    trusted_proxies: tuple[Network, ...] = ()
    rest_host: str | None = None
    rest_port: int | None = None


_NETWORK_KEYS = {"default_action", "rules", "trusted_proxies", "rest_host", "rest_port"}
_RULE_KEYS = {"action", "addresses", "kinds"}
_KINDS = tuple(k.value for k in TrafficKind)


def _networks(source: str, key: str, value: object) -> tuple[Network, ...]:
    networks = []
    for text in _strings(source, key, value, "a list of address ranges (CIDR)"):
        try:
            networks.append(parse_network(text))
        except ValueError:
            raise error(source, key, f"expected an address or CIDR range, got {text!r}") from None
    return tuple(networks)


def _rule(source: str, key: str, raw: object) -> IpRule:
    expect(source, key, raw, dict, "a table")
    assert isinstance(raw, dict)
    _keys_of(source, key, raw, _RULE_KEYS)
    action = raw.get("action")
    if action not in ("allow", "deny"):
        raise error(source, f"{key}.action", f'expected "allow" or "deny", got {action!r}')
    if "addresses" not in raw:
        raise error(
            source,
            f"{key}.addresses",
            'missing (e.g. ["10.0.0.0/8"]; everything: ["0.0.0.0/0", "::/0"])',
        )
    networks = _networks(source, f"{key}.addresses", raw["addresses"])
    kinds = _strings(source, f"{key}.kinds", raw.get("kinds", list(_KINDS)))
    for kind in kinds:
        if kind not in _KINDS:
            raise error(
                source, f"{key}.kinds", f"unknown kind {kind!r} (expected {', '.join(_KINDS)})"
            )
    if not kinds:
        raise error(source, f"{key}.kinds", "expected at least one kind")
    return IpRule(str(action), networks, frozenset(TrafficKind(k) for k in kinds))


def parse_network_section(source: str, raw: object, port_of: object) -> NetworkConfig:
    """``[network]``; ``port_of`` validates a port (config.py's ``_port``)."""
    key = "network"
    expect(source, key, raw, dict, "a table")
    assert isinstance(raw, dict)
    _keys_of(source, key, raw, _NETWORK_KEYS)
    default = raw.get("default_action", "allow")
    if default not in ("allow", "deny"):
        raise error(source, f"{key}.default_action", f'expected "allow" or "deny", got {default!r}')
    rules = raw.get("rules", [])
    expect(source, f"{key}.rules", rules, list, "an array of tables ([[network.rules]])")
    assert isinstance(rules, list)
    parsed = tuple(_rule(source, f"{key}.rules[{i}]", r) for i, r in enumerate(rules))
    proxies = _networks(source, f"{key}.trusted_proxies", raw.get("trusted_proxies", []))
    rest_host = raw.get("rest_host")
    if rest_host is not None:
        expect(source, f"{key}.rest_host", rest_host, str, "a string")
    rest_port = raw.get("rest_port")
    if rest_port is not None:
        assert callable(port_of)
        rest_port = port_of(source, f"{key}.rest_port", rest_port)
    if rest_host is not None and rest_port is None:
        raise error(source, f"{key}.rest_port", "a REST listener of its own needs rest_port too")
    return NetworkConfig(
        NetworkAcl(parsed, str(default)),
        proxies,
        rest_host if isinstance(rest_host, str) else None,
        rest_port if isinstance(rest_port, int) else None,
    )


# --- [limits] -----------------------------------------------------------------------------------

_INT_LIMITS = {
    "max_connections_per_hub": (1, 10**9),
    "max_connections_per_user": (1, 10**9),
    "max_connections_per_token": (1, 10**9),
    "max_message_bytes": (1, MAX_MESSAGE_BYTES),
    "message_burst": (1, 10**9),
    "user_inbound_bytes": (1, 2**62),
    "token_inbound_bytes": (1, 2**62),
    "rest_burst": (1, 10**9),
}
_RATE_LIMITS = ("messages_per_second", "rest_requests_per_second", "inbound_window_seconds")


def parse_limits(source: str, raw: object) -> Limits:
    """``[limits]``: every limit a positive number; bursts need their rate."""
    key = "limits"
    expect(source, key, raw, dict, "a table")
    assert isinstance(raw, dict)
    _keys_of(source, key, raw, set(_INT_LIMITS) | set(_RATE_LIMITS))
    values: dict[str, object] = {}
    for name, value in raw.items():
        if name in _INT_LIMITS:
            low, high = _INT_LIMITS[name]
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise error(
                    source,
                    f"{key}.{name}",
                    f"expected an integer from {low} to {high}, got {value!r}",
                )
        elif (
            not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 10**9
        ):
            raise error(source, f"{key}.{name}", f"expected a number more than 0, got {value!r}")
        values[name] = float(value) if name in _RATE_LIMITS else value
    for burst, rate in (
        ("message_burst", "messages_per_second"),
        ("rest_burst", "rest_requests_per_second"),
    ):
        if burst in values and rate not in values:
            raise error(source, f"{key}.{burst}", f"a burst needs {rate}")
    return Limits(**values)  # type: ignore[arg-type]


# --- [engine] -----------------------------------------------------------------------------------

REDIS_SCHEMES = ("redis", "rediss", "unix")
_ENGINE_KEYS = {"redis_url", "session_replication"}


def _without_password(url: str) -> str:
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def parse_redis_url(source: str | None, key: str, value: object) -> str:
    """``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS) or
    ``unix:///path/to/socket``; an error never echoes the password."""
    expect(source, key, value, str, "a Redis URL (e.g. redis://127.0.0.1:6379/0)")
    assert isinstance(value, str)
    url = value.strip()
    shown = _without_password(url)
    problem = (
        f"expected redis://host[:port][/db], rediss://... (TLS) or unix:///path, got {shown!r}"
    )
    if not url or not url.isprintable() or any(c.isspace() for c in url):
        raise error(source, key, problem)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise error(source, key, problem) from None
    if parts.scheme not in REDIS_SCHEMES:
        raise error(source, key, problem)
    if parts.scheme == "unix":
        if not parts.path:
            raise error(source, key, f"a unix:// URL names the socket's path, got {shown!r}")
        return url
    if not parts.hostname:
        raise error(source, key, problem)
    if port == 0:
        raise error(source, key, f"expected a port from 1 to 65535, got {shown!r}")
    database = parts.path.strip("/")
    if database and not (database.isdigit() and int(database) < 2**31):
        raise error(source, key, f"the path is a database number (e.g. /0), got {shown!r}")
    return url


def parse_engine(source: str, raw: object) -> dict[str, object]:
    """``[engine]``: ``redis_url`` (the cluster engine; none: the in-memory single node) and
    ``session_replication``; as keys of :class:`hubbub.config.Config`."""
    key = "engine"
    expect(source, key, raw, dict, "a table")
    assert isinstance(raw, dict)
    _keys_of(source, key, raw, _ENGINE_KEYS)
    out: dict[str, object] = {}
    if "redis_url" in raw:
        out["redis_url"] = parse_redis_url(source, f"{key}.redis_url", raw["redis_url"])
    if "session_replication" in raw:
        value = raw["session_replication"]
        expect(source, f"{key}.session_replication", value, bool, "true or false")
        out["session_replication"] = value
    return out
