"""CloudEvents over HTTP, binary mode: what the service sends to event handlers (upstream.md).

Pure functions: headers, signatures, bodies, content types, handler matching. The HTTP client
that uses them lives in :mod:`hubbub.upstream`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import msgspec
import orjson

from hubbub.protocol.messages import DataType

__all__ = [
    "GROUP_PRESENCE_PREFIX",
    "SYSTEM_PREFIX",
    "USER_PREFIX",
    "ConnectResponse",
    "EventContext",
    "content_type_for",
    "data_type_of",
    "event_headers",
    "event_time",
    "expand_url",
    "group_presence_body",
    "origin_allowed",
    "parse_connect_response",
    "signature",
    "user_event_matches",
    "validation_headers",
]

SYSTEM_PREFIX = "azure.webpubsub.sys."
USER_PREFIX = "azure.webpubsub.user."
GROUP_PRESENCE_PREFIX = "azure.webpubsub.gp."
"""Group presence events: ``azure.webpubsub.gp.joined`` and ``azure.webpubsub.gp.left``."""

_CONTENT_TYPES = {
    DataType.TEXT: "text/plain; charset=utf-8",
    DataType.JSON: "application/json; charset=utf-8",
    DataType.BINARY: "application/octet-stream",
    DataType.PROTOBUF: "application/x-protobuf",
}
_DATA_TYPES = {
    "text/plain": DataType.TEXT,
    "application/json": DataType.JSON,
    "application/octet-stream": DataType.BINARY,
    "application/x-protobuf": DataType.PROTOBUF,
}


@dataclass(frozen=True, slots=True)
class EventContext:
    """The connection an event is about (upstream.md §3)."""

    hub: str
    connection_id: str
    user_id: str | None
    subprotocol: str | None
    state: str | None
    event_id: int


@dataclass(frozen=True, slots=True)
class ConnectResponse:
    """What a ``connect`` handler may change; None means unchanged (upstream.md §5.1)."""

    user_id: str | None = None
    groups: tuple[str, ...] | None = None
    roles: tuple[str, ...] | None = None
    subprotocol: str | None = None


@functools.lru_cache(maxsize=4096)
def signature(keys: tuple[str, ...], connection_id: str) -> str:
    """``sha256=<hex>`` per access key, comma-separated; the input is the connection id (§4).

    Cached: every event of a connection carries the same signature.
    """
    return ",".join(
        "sha256=" + hmac.new(k.encode(), connection_id.encode(), hashlib.sha256).hexdigest()
        for k in keys
    )


@functools.lru_cache(maxsize=2)
def _time_at(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def event_time(now: float | None = None) -> str:
    """The ``ce-time`` of an event sent at ``now`` (default: this second), UTC."""
    return _time_at(int(time.time() if now is None else now))


def event_headers(
    context: EventContext,
    event: str,
    system: bool,
    origin: str,
    keys: tuple[str, ...],
    content_type: str,
    *,
    prefix: str | None = None,
) -> dict[str, str]:
    """Every header of an event POST (§3); ``prefix`` overrides the ``ce-type`` prefix (group
    presence events use :data:`GROUP_PRESENCE_PREFIX`)."""
    if prefix is None:
        prefix = SYSTEM_PREFIX if system else USER_PREFIX
    headers = {
        "Content-Type": content_type,
        "WebHook-Request-Origin": origin,
        "ce-specversion": "1.0",
        "ce-awpsversion": "1.0",
        "ce-type": prefix + event,
        "ce-source": f"/hubs/{context.hub}/client/{context.connection_id}",
        "ce-id": str(context.event_id),
        "ce-time": event_time(),
        "ce-signature": signature(keys, context.connection_id),
        "ce-hub": context.hub,
        "ce-connectionId": context.connection_id,
        "ce-eventName": event,
    }
    if context.user_id is not None:
        headers["ce-userId"] = context.user_id
    if context.subprotocol and event != "connect":
        headers["ce-subprotocol"] = context.subprotocol
    if context.state:
        headers["ce-connectionState"] = context.state
    return headers


def group_presence_body(group: str) -> bytes:
    """The body of a ``joined`` or ``left`` event (Content-Type ``application/json``)."""
    return orjson.dumps({"group": group})


def validation_headers(origin: str) -> dict[str, str]:
    """Headers of the abuse-protection probe: no signature, no connection (§2)."""
    return {"WebHook-Request-Origin": origin, "ce-awpsversion": "1.0"}


def origin_allowed(allowed: str | None, origin: str) -> bool:
    """``WebHook-Allowed-Origin`` of ``*`` or our host, with or without a port (§2)."""
    if not allowed:
        return False
    for value in allowed.replace(" ", ",").split(","):
        value = value.strip().lower()
        if value == "*" or value == origin.lower() or value.split(":")[0] == origin.lower():
            return True
    return False


@functools.lru_cache(maxsize=1024)
def expand_url(template: str, hub: str, event: str) -> str:
    """Substitute ``{hub}`` and ``{event}`` (case-insensitively, URL-escaped)."""
    out = template
    for name, value in (("{hub}", hub), ("{event}", event)):
        lower = out.lower()
        index = lower.find(name)
        while index >= 0:
            out = out[:index] + quote(value, safe="") + out[index + len(name) :]
            lower = out.lower()
            index = lower.find(name, index + 1)
    return out


def url_host(url: str) -> str:
    """The host of a URL template (placeholders are not allowed there)."""
    return urlsplit(url).hostname or ""


def user_event_matches(pattern: str, event: str) -> bool:
    """``*``, one name, or a comma-separated list of names, compared case-insensitively."""
    event = event.lower()
    for entry in pattern.split(","):
        entry = entry.strip().lower()
        if entry == "*" or (entry and entry == event):
            return True
    return False


def content_type_for(data_type: DataType) -> str:
    """The Content-Type of a user event body carrying ``data_type`` (§6.1)."""
    return _CONTENT_TYPES[data_type]


def data_type_of(content_type: str | None) -> DataType | None:
    """The data type of a handler's reply, from its Content-Type (parameters ignored)."""
    if not content_type:
        return None
    return _DATA_TYPES.get(content_type.split(";", 1)[0].strip().lower())


def connect_body(
    claims: Mapping[str, object],
    query: Sequence[tuple[str, str]],
    headers: Sequence[tuple[str, str]],
    subprotocols: Sequence[str],
    client_certificates: Sequence[Mapping[str, str]] = (),
) -> bytes:
    """The ``connect`` body: every map is string to array of strings (§5.1).

    ``client_certificates`` are the TLS client certificates, ``{"thumbprint", "content"}`` each
    (``server/tls.py``); empty when the client sent none or TLS client auth is off.
    """

    def strings(value: object) -> list[str]:
        items = value if isinstance(value, list) else [value]
        return [v if isinstance(v, str) else orjson.dumps(v).decode() for v in items]

    def multi(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key, value in pairs:
            out.setdefault(key, []).append(value)
        return out

    return orjson.dumps(
        {
            "claims": {k: strings(v) for k, v in claims.items()},
            "query": multi(query),
            "headers": multi(headers),
            "subprotocols": list(subprotocols),
            "clientCertificates": [dict(c) for c in client_certificates],
        }
    )


def _strings(value: object, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{name} must be an array of strings")


def parse_connect_response(body: bytes) -> ConnectResponse:
    """Parse a 200 ``connect`` reply; an empty body or JSON null changes nothing.

    Raises:
        ValueError: the body is not a JSON object of the documented shape.
    """
    if not body.strip():
        return ConnectResponse()
    try:
        raw = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ValueError(f"connect response is not JSON: {exc}") from exc
    if raw is None:
        return ConnectResponse()
    if not isinstance(raw, dict):
        raise ValueError("connect response must be a JSON object")
    fields = {str(k).lower(): v for k, v in raw.items()}
    user_id = fields.get("userid")
    subprotocol = fields.get("subprotocol")
    if user_id is not None and not isinstance(user_id, str):
        raise ValueError("userId must be a string")
    if subprotocol is not None and not isinstance(subprotocol, str):
        raise ValueError("subprotocol must be a string")
    return ConnectResponse(
        user_id=user_id,
        groups=_strings(fields.get("groups"), "groups"),
        roles=_strings(fields.get("roles"), "roles"),
        subprotocol=subprotocol or None,
    )
