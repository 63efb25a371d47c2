"""A node's log: one line per record, no secrets, and summaries of what happened.

:class:`SafeFormatter` renders every record the CLI logs, hubbub's and aiohttp's alike. Values
a client chooses (user ids, event names, paths, the text of exceptions) reach log messages, so
control characters are escaped (a newline can no longer start a forged line, a NUL byte is not
written raw) and whatever looks like a token or a key is masked; a traceback keeps its lines,
indented, so every line at the margin starts a record.

:class:`Activity` counts what an operator needs to see a running node work (connections opened
and closed, handshakes refused, REST errors, event handler calls) with no more than an integer
addition per event; :func:`report` logs it as one line per kind per interval, and only when
something happened, so a busy node is not flooded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Coroutine, Iterable
from urllib.parse import urlsplit

from hubbub.metrics import CONNECTIONS_CLOSED, CONNECTIONS_OPENED

__all__ = [
    "ACTIVITY",
    "FORMAT",
    "Activity",
    "Counts",
    "SafeFormatter",
    "escape",
    "install",
    "redact_url",
    "report",
    "reporting",
]

log = logging.getLogger("hubbub.activity")

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_MESSAGE_CHARS = 4096
"""A longer message is cut (a client's value must not make a line of megabytes)."""
MAX_KEYS = 16
"""Distinct keys one :class:`Counts` tells apart per interval; the rest count as "other"."""
MASK = "***"

# C0, DEL, C1 (NEL among them), the Unicode line and paragraph separators, the bidi overrides.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# A bearer token, a JWT (also cut short, as aiohttp quotes the start of a header line), and
# the query or connection string parameters that carry tokens, keys and signatures.
_SECRET = re.compile(
    r"(?i)(bearer\s+|access_token=|awps_reconnection_token=|accesskey=|[?&]code=|[?&]sig=)"
    r"[^\s&;,'\"]+"
    r"|eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*){0,2}"
)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x00``...)."""
    return _CONTROL.sub(_escaped, text)


def _masked(match: re.Match[str]) -> str:
    prefix = match.group(1)
    return prefix + MASK if prefix else MASK


def redact_url(url: str) -> str:
    """``url`` without what may be a credential: user info, query and fragment go.

    An Azure Functions event handler, for one, carries its key in the query (``?code=``).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    query = "?" + MASK if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


class SafeFormatter(logging.Formatter):
    """One line per record, control characters escaped, tokens and ``secrets`` masked."""

    def __init__(self, fmt: str = FORMAT, secrets: Iterable[str] = ()) -> None:
        super().__init__(fmt)
        self._secrets = tuple(s for s in secrets if s)

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return _SECRET.sub(_masked, text)

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = self._clean(record.message)
        if len(message) > MAX_MESSAGE_CHARS:
            cut = len(message) - MAX_MESSAGE_CHARS
            message = f"{message[:MAX_MESSAGE_CHARS]}... ({cut:,} more characters)"
        record.message = escape(message)
        return super().formatMessage(record)

    def _block(self, text: str) -> str:
        """A traceback: its lines kept, each escaped and indented."""
        return "\n".join("  " + escape(line) for line in self._clean(text).splitlines())

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return self._block(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return self._block(super().formatStack(stack_info))


def install(level: str, secrets: Iterable[str] = ()) -> None:
    """Log to standard error at ``level``, every logger (aiohttp's too) through
    :class:`SafeFormatter`; ``secrets`` (the access keys) are masked wherever they appear."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    formatter = SafeFormatter(FORMAT, secrets)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


# -- what happened -------------------------------------------------------------------------------


class Counts:
    """How often each key happened since the last :meth:`take` (at most :data:`MAX_KEYS` keys)."""

    __slots__ = ("_counts", "total")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self.total = 0

    def add(self, key: str) -> None:
        self.total += 1
        counts = self._counts
        if key not in counts and len(counts) >= MAX_KEYS:
            key = "other"
        counts[key] = counts.get(key, 0) + 1

    def take(self) -> tuple[int, str]:
        """The total and the counts by key, most frequent first (``"a: 3, b: 1"``); reset."""
        total, counts = self.total, self._counts
        self.total, self._counts = 0, {}
        ranked = sorted(counts.items(), key=lambda item: -item[1])
        return total, ", ".join(f"{key}: {count:,}" for key, count in ranked)


def _many(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.1f}"


class Activity:
    """What a node did, counted as it happens and summarized by :meth:`log`."""

    refused: Counts
    """Handshakes answered with an error, by status."""
    closed: Counts
    """Connections the node closed, by cause."""
    rest_errors: Counts
    """REST calls answered 4xx, by status and error code."""
    event_failures: Counts
    """Event handler calls that failed, by event, handler and reason."""
    events_delivered: int

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start counting afresh (a new reporting period)."""
        self.refused = Counts()
        self.closed = Counts()
        self.rest_errors = Counts()
        self.event_failures = Counts()
        self.events_delivered = 0
        self._opened = CONNECTIONS_OPENED.value
        self._closed = CONNECTIONS_CLOSED.value

    def _connections(self, period: str) -> str | None:
        opened, closed = CONNECTIONS_OPENED.value, CONNECTIONS_CLOSED.value
        new, gone = opened - self._opened, closed - self._closed
        self._opened, self._closed = opened, closed
        refused, by_status = self.refused.take()
        closes, by_cause = self.closed.take()
        if not (new or gone or refused):
            return None
        line = f"connections: {new:,} opened, {gone:,} closed"
        if closes:
            line += f" ({by_cause})"
        if refused:
            line += f", {refused:,} refused ({by_status})"
        return f"{line} in the last {period} s, {opened - closed:,} open"

    def _events(self, period: str) -> tuple[int, str] | None:
        failed, by_reason = self.event_failures.take()
        delivered, self.events_delivered = self.events_delivered, 0
        if not (delivered or failed):
            return None
        line = f"event handlers: {_many(delivered, 'event')} delivered, {failed:,} failed"
        if failed:
            return logging.WARNING, f"{line} in the last {period} s ({by_reason})"
        return logging.INFO, f"{line} in the last {period} s"

    def summary(self, seconds: float) -> list[tuple[int, str]]:
        """The lines (level, text) for the last ``seconds``: one per kind that happened."""
        period = _seconds(seconds)
        lines: list[tuple[int, str]] = []
        connections = self._connections(period)
        if connections is not None:
            lines.append((logging.INFO, connections))
        errors, by_code = self.rest_errors.take()
        if errors:
            line = f"REST: {_many(errors, 'error')} in the last {period} s ({by_code})"
            lines.append((logging.INFO, line))
        events = self._events(period)
        if events is not None:
            lines.append(events)
        return lines

    def log(self, seconds: float) -> None:
        """Log the summary of the last ``seconds``."""
        for level, line in self.summary(seconds):
            log.log(level, "%s", line)


ACTIVITY = Activity()
"""The process's activity (like the metrics, one per process)."""


async def report(interval: float, activity: Activity = ACTIVITY) -> None:
    """Log ``activity`` every ``interval`` seconds, and the last part of one when cancelled."""
    activity.reset()
    loop = asyncio.get_running_loop()
    since = loop.time()
    try:
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            activity.log(now - since)
            since = now
    finally:
        activity.log(loop.time() - since)


async def reporting(main: Coroutine[None, None, None], interval: float) -> None:
    """Run ``main`` while :func:`report` logs the activity every ``interval`` seconds."""
    task = asyncio.get_running_loop().create_task(report(interval))
    try:
        await main
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
