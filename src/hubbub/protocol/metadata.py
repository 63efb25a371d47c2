"""Per-message metadata: its rules, and how REST callers and clients give it.

A message may carry string metadata from a client (``"metadata":{...}`` on ``sendToGroup`` and
``event``, the protobuf ``metadata`` maps) or from a REST caller (``X-WebPubSub-Metadata-<key>``
request headers). It reaches JSON and protobuf clients with the data, and event handlers as
``x-webpubsub-metadata-<key>`` headers. The rules follow Microsoft's emulator (the service
documents none): keys are HTTP token characters, values ASCII, a key at most 256 bytes, a value
at most 1024 bytes, all keys and values together at most 8 KiB.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from hubbub.protocol.messages import Metadata

__all__ = [
    "HEADER_PREFIX",
    "MAX_KEY_BYTES",
    "MAX_TOTAL_BYTES",
    "MAX_VALUE_BYTES",
    "MetadataError",
    "metadata_from_headers",
    "metadata_headers",
    "validate_metadata",
]

HEADER_PREFIX = "x-webpubsub-metadata-"
"""REST request headers (case-insensitive) and event-handler headers carrying metadata."""
MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 1024
MAX_TOTAL_BYTES = 8 * 1024

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class MetadataError(ValueError):
    """Metadata that breaks a rule; ``str(e)`` says which key and why."""


def validate_metadata(pairs: Iterable[tuple[str, str]]) -> Metadata | None:
    """Check metadata against the rules.

    Args:
        pairs: ``(key, value)`` pairs; a repeated key keeps its last value.

    Returns:
        The metadata as hubbub carries it, or None when there is none.

    Raises:
        MetadataError: a key that is not an HTTP token, a value that is not ASCII or a string,
            or a key, value or total above its limit.
    """
    merged: dict[str, str] = {}
    for key, value in pairs:
        merged[key] = value
    total = 0
    for key, value in merged.items():
        if not isinstance(value, str):
            raise MetadataError(f"Metadata value for key '{key}' must be a string.")
        if not _TOKEN.fullmatch(key):
            raise MetadataError(f"Metadata key '{key}' contains invalid characters.")
        if not value.isascii():
            raise MetadataError(f"Metadata value for key '{key}' must be ASCII.")
        if len(key) > MAX_KEY_BYTES:
            raise MetadataError(f"Metadata key '{key}' exceeds {MAX_KEY_BYTES} bytes.")
        if len(value) > MAX_VALUE_BYTES:
            raise MetadataError(f"Metadata value for key '{key}' exceeds {MAX_VALUE_BYTES} bytes.")
        total += len(key) + len(value)
    if total > MAX_TOTAL_BYTES:
        raise MetadataError(f"Metadata exceeds {MAX_TOTAL_BYTES} bytes in total.")
    return tuple(merged.items()) or None


def metadata_from_headers(headers: Iterable[tuple[str, str]]) -> Metadata | None:
    """The metadata of a REST request's ``X-WebPubSub-Metadata-*`` headers.

    Keys are the rest of the header name, lowercased. A repeated header keeps its last value,
    and a value that is a comma-separated list its last element, trimmed (so a header folded by
    a proxy reads like the last one sent). ``X-WebPubSub-Metadata-`` alone is ignored.

    Args:
        headers: every request header as ``(name, value)``, in order.

    Raises:
        MetadataError: as :func:`validate_metadata`.
    """
    found: list[tuple[str, str]] = []
    size = len(HEADER_PREFIX)
    for name, value in headers:
        if len(name) <= size or name[:size].lower() != HEADER_PREFIX:
            continue
        found.append((name[size:].lower(), value.rpartition(",")[2].strip()))
    return validate_metadata(found)


def metadata_headers(metadata: Metadata | Mapping[str, str] | None) -> list[tuple[str, str]]:
    """The ``x-webpubsub-metadata-<key>`` headers of an event-handler request."""
    if not metadata:
        return []
    items = metadata.items() if isinstance(metadata, Mapping) else metadata
    return [(HEADER_PREFIX + key.lower(), value) for key, value in items]
