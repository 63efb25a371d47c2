"""Message metadata: its rules, REST headers, event-handler headers."""

from __future__ import annotations

import pytest

from hubbub.protocol.metadata import (
    MAX_TOTAL_BYTES,
    MetadataError,
    metadata_from_headers,
    metadata_headers,
    validate_metadata,
)


def test_valid_metadata_keeps_order_and_the_last_value() -> None:
    """Pairs keep their order; a repeated key keeps its last value; none is None."""
    assert validate_metadata([("b", "1"), ("a", "2"), ("b", "3")]) == (("b", "3"), ("a", "2"))
    assert validate_metadata([]) is None
    token_key = "!#$%&'*+-.^_`|~09AZaz"
    assert validate_metadata([(token_key, "")]) == ((token_key, ""),)


@pytest.mark.parametrize(
    ("pairs", "text"),
    [
        ([("a b", "v")], "Metadata key 'a b' contains invalid characters."),
        ([("", "v")], "Metadata key '' contains invalid characters."),
        ([("k", "caf\u00e9")], "Metadata value for key 'k' must be ASCII."),
        ([("k" * 257, "v")], f"Metadata key '{'k' * 257}' exceeds 256 bytes."),
        ([("k", "v" * 1025)], "Metadata value for key 'k' exceeds 1024 bytes."),
        (
            [(f"k{n}", "v" * 1000) for n in range(9)],
            f"Metadata exceeds {MAX_TOTAL_BYTES} bytes in total.",
        ),
    ],
)
def test_rules(pairs: list[tuple[str, str]], text: str) -> None:
    """Each rule is refused with a message naming the key."""
    with pytest.raises(MetadataError) as info:
        validate_metadata(pairs)
    assert str(info.value) == text


def test_limits_are_inclusive() -> None:
    """A 256-byte key, a 1024-byte value and 8 KiB in total are allowed."""
    assert validate_metadata([("k" * 256, "v" * 1024)]) is not None
    eight_kib = [(f"k{n}", "v" * (1024 - len(f"k{n}"))) for n in range(8)]
    assert validate_metadata(eight_kib) is not None


def test_rest_headers() -> None:
    """Keys are lowercased; the last header and the last comma-separated value win."""
    headers = [
        ("Content-Type", "text/plain"),
        ("X-WebPubSub-Metadata-Trace", "first"),
        ("x-webpubsub-metadata-trace", " middle, last "),
        ("X-WEBPUBSUB-METADATA-Kind", "order"),
        ("X-WebPubSub-Metadata-", "ignored"),
        ("X-WebPubSub-Metadatax", "not metadata"),
    ]
    assert metadata_from_headers(headers) == (("trace", "last"), ("kind", "order"))
    assert metadata_from_headers([("Accept", "*/*")]) is None


def test_rest_headers_follow_the_rules() -> None:
    """A header value that is not ASCII is refused like client metadata."""
    with pytest.raises(MetadataError):
        metadata_from_headers([("X-WebPubSub-Metadata-k", "\u00e9")])


def test_event_handler_headers() -> None:
    """Metadata goes to event handlers as lowercased ``x-webpubsub-metadata-*`` headers."""
    assert metadata_headers((("Trace", "t"), ("k", "v"))) == [
        ("x-webpubsub-metadata-trace", "t"),
        ("x-webpubsub-metadata-k", "v"),
    ]
    assert metadata_headers({"A": "1"}) == [("x-webpubsub-metadata-a", "1")]
    assert metadata_headers(None) == []
