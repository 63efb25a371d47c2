"""What a new configuration changes, and what of it can change without a restart.

``hubbub check-config`` prints :func:`diff` against the running defaults or another file; a
reload (SIGHUP, or the file changing) logs it and applies :func:`live_config`: the new
configuration with the settings that need a restart kept as they are running.

Live: access keys (a removed key refuses new tokens signed with it at once; open connections
stay), hub settings and event handlers, the TLS certificate and key (new handshakes), the
client-certificate mode, the upstream CA, Entra settings, network rules and trusted proxies,
limits, the public endpoint and the per-connection bounds (new connections and sessions).
Restart: the listening addresses (host, port, the REST listener), turning TLS on or off, the
client-certificate CA (OpenSSL can add CAs to a live context but not remove them), and the HTTP
server's keep-alive and request-head timeouts (set when the server starts).

Nothing here prints a key or a URL's query (a handler's ``?code=`` is a secret).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from hubbub.config import DEFAULT_HUB, Config, EventHandlerConfig, HubConfig

__all__ = ["Change", "describe", "diff", "live_config"]

RESTART_FIELDS = ("host", "port", "http_keep_alive_seconds", "request_head_timeout_seconds")
LIVE_FIELDS = (
    "max_outbound_bytes",
    "session_timeout_seconds",
    "upstream_timeout_seconds",
    "public_endpoint",
    "tls_client_auth",
    "upstream_ca_file",
)


@dataclass(frozen=True)
class Change:
    """One difference: the key as the file spells it, what changed, and whether it is live."""

    key: str
    what: str
    live: bool = True

    def __str__(self) -> str:
        return f"{self.key}: {self.what}" + ("" if self.live else " (needs a restart)")


def describe(changes: list[Change]) -> list[str]:
    """One line per change; ``no changes`` when there are none."""
    return [str(c) for c in changes] or ["no changes"]


def _shown(value: object) -> str:
    return "not set" if value is None else repr(value)


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}" + ("?..." if parts.query else "")


def _keys(old: tuple[str, ...], new: tuple[str, ...], generated: bool) -> Iterator[Change]:
    if old == new:
        return
    if generated:
        yield Change("auth.access_keys", "removed; a key is generated for this run")
        return
    for index, name in enumerate(("primary", "secondary")):
        before = old[index] if index < len(old) else None
        after = new[index] if index < len(new) else None
        if before == after:
            continue
        if before is None:
            yield Change("auth.access_keys", f"the {name} key was added")
        elif after is None:
            yield Change("auth.access_keys", f"the {name} key was removed")
        elif after in old:
            yield Change(
                "auth.access_keys",
                f"the {name} key is the former {('primary', 'secondary')[old.index(after)]}",
            )
        else:
            yield Change("auth.access_keys", f"the {name} key changed")


def _handlers(handlers: tuple[EventHandlerConfig, ...]) -> str:
    return ", ".join(_safe_url(h.url_template) for h in handlers) or "none"


def _hubs(old: Config, new: Config) -> Iterator[Change]:
    for name in sorted(set(old.hubs) | set(new.hubs)):
        before, after = old.hubs.get(name), new.hubs.get(name)
        key = f"hubs.{name}"
        if before == after:
            continue
        if before is None:
            yield Change(key, "added")
        elif after is None:
            yield Change(key, "removed (the hub gets the default settings)")
        b, a = before or DEFAULT_HUB, after or DEFAULT_HUB
        yield from _hub_fields(key, b, a)


def _hub_fields(key: str, before: HubConfig, after: HubConfig) -> Iterator[Change]:
    if before.anonymous_connect != after.anonymous_connect:
        yield Change(
            f"{key}.anonymous_connect", f"{before.anonymous_connect} -> {after.anonymous_connect}"
        )
    if before.keep_alive_seconds != after.keep_alive_seconds:
        yield Change(
            f"{key}.keep_alive_seconds",
            f"{before.keep_alive_seconds} -> {after.keep_alive_seconds} (new connections)",
        )
    if before.event_handlers != after.event_handlers:
        yield Change(
            f"{key}.event_handlers",
            f"{_handlers(before.event_handlers)} -> {_handlers(after.event_handlers)}",
        )


def _tls(old: Config, new: Config) -> Iterator[Change]:
    if old.tls != new.tls:
        state = "on" if new.tls else "off"
        yield Change("server.tls_cert_file", f"TLS turned {state}", live=False)
    elif (old.tls_cert_file, old.tls_key_file) != (new.tls_cert_file, new.tls_key_file):
        yield Change("server.tls_cert_file", f"{new.tls_cert_file} (loaded for new handshakes)")
    if old.tls_client_ca_file != new.tls_client_ca_file:
        yield Change(
            "server.tls_client_ca_file",
            f"{_shown(old.tls_client_ca_file)} -> {_shown(new.tls_client_ca_file)}",
            live=False,
        )


def _entra(old: Config, new: Config) -> Iterator[Change]:
    if old.entra == new.entra:
        return
    if old.entra is None or new.entra is None:
        yield Change(
            "auth.entra",
            "Entra ID tokens accepted" if new.entra else "Entra ID tokens no longer accepted",
        )
        return
    before, after = old.entra, new.entra
    for name in ("jwks_file", "jwks_url"):
        if getattr(before, name) != getattr(after, name):
            yield Change(
                f"auth.entra.{name}",
                f"{_shown(getattr(before, name))} -> {_shown(getattr(after, name))}",
            )
    for name in ("tenants", "issuers", "audiences", "verify_signatures"):
        b, a = getattr(before.settings, name), getattr(after.settings, name)
        if b != a:
            yield Change(f"auth.entra.{name}", f"{b!r} -> {a!r}")
    if before.settings.principals != after.settings.principals:
        names = ", ".join(p.name for p in after.settings.principals) or "none"
        yield Change("auth.entra.principals", f"now {names}")


def _network(old: Config, new: Config) -> Iterator[Change]:
    before, after = old.network, new.network
    if before.acl != after.acl:
        yield Change(
            "network.rules", f"{len(after.acl.rules)} rules, default {after.acl.default_action}"
        )
    if before.trusted_proxies != after.trusted_proxies:
        yield Change(
            "network.trusted_proxies", ", ".join(map(str, after.trusted_proxies)) or "none"
        )
    for name in ("rest_host", "rest_port"):
        if getattr(before, name) != getattr(after, name):
            yield Change(
                f"network.{name}",
                f"{_shown(getattr(before, name))} -> {_shown(getattr(after, name))}",
                live=False,
            )


def _limits(old: Config, new: Config) -> Iterator[Change]:
    for name in old.limits.__dataclass_fields__:
        b, a = getattr(old.limits, name), getattr(new.limits, name)
        if b != a:
            yield Change(f"limits.{name}", f"{_shown(b)} -> {_shown(a)}")


def _redis_url(url: str | None) -> str:
    """A Redis URL without its password (keys never appear in the output)."""
    if url is None:
        return "not set"
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0].split(":", 1)[0] if "@" in parts.netloc else ""
    auth = f"{user}:***@" if "@" in parts.netloc else ""
    return f"{parts.scheme}://{auth}{host}{parts.path}"


def _engine(old: Config, new: Config) -> Iterator[Change]:
    """``[engine]``: a node joins its cluster when it starts, so each needs a restart."""
    if old.redis_url != new.redis_url:
        what = f"{_redis_url(old.redis_url)} -> {_redis_url(new.redis_url)}"
        yield Change("engine.redis_url", what, live=False)
    if old.session_replication != new.session_replication:
        what = f"{old.session_replication} -> {new.session_replication}"
        yield Change("engine.session_replication", what, live=False)


def diff(old: Config, new: Config) -> list[Change]:
    """Every difference between the running ``old`` and a freshly loaded ``new``."""
    changes: list[Change] = []
    for name in RESTART_FIELDS + LIVE_FIELDS:
        b, a = getattr(old, name), getattr(new, name)
        if b != a:
            changes.append(
                Change(f"server.{name}", f"{_shown(b)} -> {_shown(a)}", live=name in LIVE_FIELDS)
            )
    if not (old.key_generated and new.key_generated):  # then the running key is kept
        changes += _keys(old.access_keys, new.access_keys, new.key_generated)
    changes += _tls(old, new)
    changes += _entra(old, new)
    changes += _network(old, new)
    changes += _limits(old, new)
    changes += _engine(old, new)
    changes += _hubs(old, new)
    return changes


def live_config(old: Config, new: Config) -> Config:
    """What a running node switches to: ``new``, except what only a restart can change.

    A generated key stays the running one when the new file has no key either (generating
    another would refuse every client).
    """
    kept: dict[str, object] = {name: getattr(old, name) for name in RESTART_FIELDS}
    kept.update(redis_url=old.redis_url, session_replication=old.session_replication)
    if old.tls != new.tls:
        kept.update(tls_cert_file=old.tls_cert_file, tls_key_file=old.tls_key_file)
    kept["tls_client_ca_file"] = old.tls_client_ca_file
    kept["network"] = replace(
        new.network, rest_host=old.network.rest_host, rest_port=old.network.rest_port
    )
    if new.key_generated and old.key_generated:
        kept["access_keys"] = old.access_keys
    return replace(new, **kept)  # type: ignore[arg-type]
