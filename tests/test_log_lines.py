"""The log's formatter (escaping, masking), as pure logic."""

from __future__ import annotations

import logging
import sys

import pytest

from hubbub.logs import MAX_MESSAGE_CHARS, SafeFormatter, redact_url

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwOi8veCIsImV4cCI6MX0"
    ".Yt3zXhQm0r0Cq1Jq0GmQm1nW1t1YI6y6o5bT7lM2wZ4"
)


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = sys.exc_info() if exc else None
    return logging.LogRecord("hubbub.test", logging.INFO, __file__, 1, msg, args, exc_info)


def _format(msg: str, *args: object) -> str:
    return SafeFormatter("%(levelname)s %(message)s", secrets=[KEY]).format(_record(msg, *args))


FORGED = "alice\n2026-01-01 00:00:00,000 ERROR hubbub.node: forged"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (FORGED, "alice\\n2026-01-01 00:00:00,000 ERROR hubbub.node: forged"),
        ("a\rb", "a\\rb"),
        ("nul\x00", "nul\\x00"),
        ("esc\x1b[31mred", "esc\\x1b[31mred"),
        ("tab\there", "tab\\there"),
        ("del\x7f", "del\\x7f"),
        ("nel\x85c1\x9b", "nel\\x85c1\\x9b"),
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
        ("vt\x0bff\x0cfs\x1c", "vt\\x0bff\\x0cfs\\x1c"),
        ("plain text, ünïcode ✓", "plain text, ünïcode ✓"),
    ],
)
def test_control_characters_of_arguments_are_escaped(value: str, shown: str) -> None:
    line = _format("connected user=%s", value)
    assert line == f"INFO connected user={shown}"
    assert len(line.splitlines()) == 1


def test_the_format_string_itself_is_escaped_too() -> None:
    assert _format("two\nlines") == "INFO two\\nlines"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"Bearer {JWT}", "Bearer ***"),
        (f"b'Authorization: bearer {JWT[:40]}", "b'Authorization: bearer ***"),
        (f"token {JWT[:30]}", "token ***"),
        (f"/client/hubs/chat?access_token={JWT}&x=1", "/client/hubs/chat?access_token=***&x=1"),
        (
            "?awps_connection_id=c&awps_reconnection_token=abc-_",
            "?awps_connection_id=c&awps_reconnection_token=***",
        ),
        (
            f"Endpoint=http://h;AccessKey={KEY};Version=1.0;",
            "Endpoint=http://h;AccessKey=***;Version=1.0;",
        ),
        (f"key {KEY} as such", "key *** as such"),
        (
            "https://f.azurewebsites.net/api/x?code=s3cr3t==",
            "https://f.azurewebsites.net/api/x?code=***",
        ),
    ],
)
def test_tokens_and_keys_are_masked(text: str, masked: str) -> None:
    assert _format("%s", text) == f"INFO {masked}"


def test_a_traceback_keeps_its_lines_indented_and_escaped() -> None:
    formatter = SafeFormatter("%(levelname)s %(message)s", secrets=[KEY])
    try:
        raise ValueError(f"bad {JWT}\n2026-01-01 00:00:00,000 ERROR x: forged\x00")
    except ValueError:
        record = _record("request failed", exc=True)
    text = formatter.format(record)
    first, *rest = text.split("\n")
    assert first == "INFO request failed"
    assert rest[0] == "  Traceback (most recent call last):"
    assert all(line.startswith("  ") for line in rest), rest
    assert "  2026-01-01 00:00:00,000 ERROR x: forged\\x00" in rest
    assert "\x00" not in text
    assert JWT[:20] not in text


def test_a_long_message_is_cut() -> None:
    line = _format("%s", "x" * (MAX_MESSAGE_CHARS + 10))
    assert line == "INFO " + "x" * MAX_MESSAGE_CHARS + "... (10 more characters)"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "http://127.0.0.1:8081/eventhandler/{event}",
            "http://127.0.0.1:8081/eventhandler/{event}",
        ),
        (
            "https://f.azurewebsites.net/runtime/webhooks/webpubsub?code=s3cr3t",
            "https://f.azurewebsites.net/runtime/webhooks/webpubsub?***",
        ),
        ("https://user:pass@h.example/x#frag", "https://h.example/x"),
        ("http://[::1]:9000/h", "http://[::1]:9000/h"),
        ("http://h:notaport/x", "<invalid URL>"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
