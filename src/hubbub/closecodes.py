"""WebSocket close codes and reasons the service uses (client-protocols.md §8).

A reason is what a closed connection's ``disconnected`` event and close frame say; the
``REASON_`` values are the ones the service itself decides.
"""

from __future__ import annotations

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_SLOW_CLIENT",
    "CLOSE_UNSUPPORTED_DATA",
    "REASON_CLOSED_BY_APP_SERVER",
    "REASON_MESSAGE_NOT_HANDLED",
    "REASON_NOT_RECOVERABLE",
    "REASON_REPLACED",
    "REASON_SERVICE_RELOAD",
    "REASON_SESSION_EXPIRED",
    "REASON_SLOW_CLIENT",
    "REASON_THROTTLING",
    "REASON_UNACKED_OVERFLOW",
]

CLOSE_NORMAL = 1000
"""Normal close: REST close routes, and a plain client whose message event has no handler."""
CLOSE_GOING_AWAY = 1001
"""The node is stopping; clients reconnect (reliable ones try to recover first)."""
CLOSE_PROTOCOL_ERROR = 1002
"""A frame the protocol forbids, such as a client frame without a mask (RFC 6455 §5.1)."""
CLOSE_UNSUPPORTED_DATA = 1003
"""A binary frame on a JSON subprotocol."""
CLOSE_INVALID_DATA = 1007
"""A frame that is not a valid message of its subprotocol."""
CLOSE_POLICY_VIOLATION = 1008
"""The session cannot be recovered; SDKs stop recovering and open a new connection. Also a
client over its message rate or a traffic limit: the service disconnects it (the code it uses
is unconfirmed), and recovering the same session would only go on over the limit."""
CLOSE_MESSAGE_TOO_BIG = 1009
"""A client message over the 1 MB limit (aiohttp closes with it)."""
CLOSE_SLOW_CLIENT = 1013
"""The connection's outbound buffer overflowed ("Try Again Later"; the service logs SlowClient)."""

REASON_CLOSED_BY_APP_SERVER = "Closed by REST API."
REASON_NOT_RECOVERABLE = "The connection could not be recovered."
REASON_SLOW_CLIENT = "SlowClient"
REASON_UNACKED_OVERFLOW = "Too many unacknowledged messages."
"""A reliable session past its unacknowledged limits (§4); it closes 1008."""
REASON_SESSION_EXPIRED = "Session expired."
"""A detached reliable session nobody recovered in time."""
REASON_REPLACED = "replaced by a recovered connection"
"""The old socket of a session that a recovery moved to a new one."""
REASON_MESSAGE_NOT_HANDLED = "message event not handled"
"""A plain client's message that no handler took (§6.4); the close frame itself says nothing."""
REASON_THROTTLING = "Throttling"
"""A client over a traffic limit: the service's connection-close category for it."""
REASON_SERVICE_RELOAD = "ServiceReload"
"""What Azure tells clients it closes for maintenance (service-features.md §7.13)."""
