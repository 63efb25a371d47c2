"""A node's log: one line per record, no secrets.

:class:`SafeFormatter` renders every record the CLI logs, hubbub's and aiohttp's alike. Values
a client chooses (user ids, event names, paths, the text of exceptions) reach log messages, so
control characters are escaped (a newline can no longer start a forged line, a NUL byte is not
written raw) and whatever looks like a token or a key is masked; a traceback keeps its lines,
indented, so every line at the margin starts a record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["FORMAT", "SafeFormatter", "escape", "install", "redact_url"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_MESSAGE_CHARS = 4096
"""A longer message is cut (a client's value must not make a line of megabytes)."""
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
