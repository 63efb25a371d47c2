"""The log's formatter (escaping, masking) and its activity summaries, as pure logic."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from hubbub.config import load_config
from hubbub.errors import ConfigError
from hubbub.logs import MAX_KEYS, MAX_MESSAGE_CHARS, Activity, Counts, SafeFormatter, redact_url
from hubbub.metrics import CONNECTIONS_CLOSED, CONNECTIONS_OPENED

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


def test_counts_keep_a_bounded_number_of_keys() -> None:
    counts = Counts()
    for i in range(MAX_KEYS + 50):
        counts.add(f"key{i}")
    counts.add("key0")
    total, text = counts.take()
    assert total == MAX_KEYS + 51
    assert text.startswith("other: 50, key0: 2, ")
    assert text.count(", ") == MAX_KEYS
    assert counts.take() == (0, "")


def test_activity_says_nothing_when_nothing_happened() -> None:
    assert Activity().summary(60) == []


def test_activity_summary_lines() -> None:
    activity = Activity()
    CONNECTIONS_OPENED.inc(1234)
    CONNECTIONS_CLOSED.inc(3)
    activity.closed.add("too slow to read")
    activity.closed.add("too slow to read")
    activity.refused.add("401")
    for _ in range(10):
        activity.rest_errors.add("401 Unauthorized")
    activity.rest_errors.add("404 NotFound")
    activity.events_delivered = 7
    activity.event_failures.add("connect to http://h/{event} answered 500")
    open_now = CONNECTIONS_OPENED.value - CONNECTIONS_CLOSED.value
    assert activity.summary(60.2) == [
        (
            logging.INFO,
            "connections: 1,234 opened, 3 closed (too slow to read: 2), 1 refused (401: 1)"
            f" in the last 60 s, {open_now:,} open",
        ),
        (logging.INFO, "REST: 11 errors in the last 60 s (401 Unauthorized: 10, 404 NotFound: 1)"),
        (
            logging.WARNING,
            "event handlers: 7 events delivered, 1 failed in the last 60 s"
            " (connect to http://h/{event} answered 500: 1)",
        ),
    ]
    assert activity.summary(0.5) == []
    activity.events_delivered = 1
    assert activity.summary(0.5) == [
        (logging.INFO, "event handlers: 1 event delivered, 0 failed in the last 0.5 s")
    ]


def test_the_summary_interval_is_a_positive_number(tmp_path: Path) -> None:
    config = tmp_path / "hubbub.toml"
    config.write_text("[server]\nlog_summary_seconds = 2.5\n")
    assert load_config(str(config), env={}).log_summary_seconds == 2.5
    assert load_config(None, env={}).log_summary_seconds == 60
    config.write_text("[server]\nlog_summary_seconds = 0\n")
    with pytest.raises(
        ConfigError, match=r"server\.log_summary_seconds: expected a number of seconds, more than 0"
    ):
        load_config(str(config), env={})
