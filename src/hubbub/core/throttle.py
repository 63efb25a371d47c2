"""Throttles: connection counts, inbound client traffic and REST request rates. No I/O, no clock.

Modelled on the service's application firewall (howto-configure-application-firewall):

* connection count rules — concurrent connections per user id (``ThrottleByUserIdRule``) and
  per token (``ThrottleByJwtSignatureRule``); a connection over one is refused with **429**.
  hubbub adds a per-hub cap, answered the same way (the service's unit quota is logged as
  ``ConnectionCountLimitReached``).
* traffic control rules — inbound bytes per user and per token, summed over an aggregation
  window; a client over one is **disconnected**. hubbub adds a per-connection message rate.
* REST calls over a per-hub rate get **429** with ``Retry-After``, which the SDKs' retry
  policies honour (azure-core ``RetryPolicy``, ``throttlingRetryPolicy`` in JS).

Every limit is off (None) unless configured. Callers pass ``now`` (``time.monotonic()``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "BucketMap",
    "ConnectionCounter",
    "InboundGate",
    "Limits",
    "TokenBucket",
    "TrafficMeter",
    "WindowMeter",
    "retry_after_headers",
    "token_signature",
]

REASON_CONNECTION_LIMIT = "ConnectionCountLimitReached"
_MAX_KEYS = 100_000
"""Bound of every per-key table; the least recently used key goes first."""


@dataclass(frozen=True)
class Limits:
    """The ``[limits]`` settings; None is no limit."""

    max_connections_per_hub: int | None = None
    max_connections_per_user: int | None = None
    max_connections_per_token: int | None = None
    max_message_bytes: int | None = None
    messages_per_second: float | None = None
    message_burst: int | None = None
    user_inbound_bytes: int | None = None
    token_inbound_bytes: int | None = None
    inbound_window_seconds: float = 60.0
    rest_requests_per_second: float | None = None
    rest_burst: int | None = None

    @property
    def counts_connections(self) -> bool:
        return any(
            v is not None
            for v in (
                self.max_connections_per_hub,
                self.max_connections_per_user,
                self.max_connections_per_token,
            )
        )


def token_signature(token: str | None) -> str | None:
    """What ``ThrottleByJwtSignatureRule`` counts by: the token's signature segment."""
    if not token or token.count(".") != 2:
        return None
    return token.rsplit(".", 1)[1]


def retry_after_headers(wait: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds (at least 1, as RFC 9110 writes it) and the precise
    ``retry-after-ms`` that the JavaScript SDK reads first."""
    return {
        "Retry-After": str(max(1, math.ceil(wait))),
        "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
    }


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens: 0.0 when granted, else the seconds until they would be (and
        nothing is taken)."""
        elapsed = max(0.0, now - self._last)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._last = now
        if self._tokens >= cost:
            self._tokens -= cost
            return 0.0
        return (cost - self._tokens) / self.rate


class BucketMap:
    """One :class:`TokenBucket` per key (a hub, an address), bounded in keys."""

    def __init__(self, rate: float, burst: float, max_keys: int = _MAX_KEYS) -> None:
        self.rate, self.burst, self._max = rate, burst, max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, cost)


class WindowMeter:
    """Bytes summed per key over fixed windows of ``window`` seconds, each key's first message
    opening its window, as the service's aggregation window."""

    def __init__(self, limit: int, window: float, max_keys: int = _MAX_KEYS) -> None:
        self.limit, self.window, self._max = limit, window, max_keys
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def add(self, key: str, amount: int, now: float) -> bool:
        """Count ``amount``; True when the key's window is over the limit."""
        start, total = self._windows.get(key, (now, 0))
        if now - start >= self.window:
            start, total = now, 0
        total += amount
        self._windows[key] = (start, total)
        self._windows.move_to_end(key)
        if len(self._windows) > self._max:
            self._windows.popitem(last=False)
        return total > self.limit


class ConnectionCounter:
    """Concurrent connections per hub, per user of a hub and per token of a hub.

    Every connection is counted whatever the limits, so limits set by a live reload judge the
    connections already open. :meth:`admit` reserves a place before the connect event runs, so
    racing upgrades cannot pass a limit together; every admitted connection is
    :meth:`release`-d exactly once, with the same arguments.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._counts: dict[tuple[str, ...], int] = {}

    @staticmethod
    def _keys(hub: str, user: str | None, token: str | None) -> list[tuple[str, ...]]:
        keys: list[tuple[str, ...]] = [("hub", hub)]
        if user is not None:
            keys.append(("user", hub, user))
        signature = token_signature(token)
        if signature is not None:
            keys.append(("token", hub, signature))
        return keys

    def _limit(self, kind: str) -> int | None:
        limits = self.limits
        return {
            "hub": limits.max_connections_per_hub,
            "user": limits.max_connections_per_user,
            "token": limits.max_connections_per_token,
        }[kind]

    def admit(self, hub: str, user: str | None, token: str | None) -> str | None:
        """Reserve a place; None when admitted, else why not (for the 429's message)."""
        keys = self._keys(hub, user, token)
        for key in keys:
            limit = self._limit(key[0])
            if limit is not None and self._counts.get(key, 0) >= limit:
                return f"{REASON_CONNECTION_LIMIT}: at most {limit} connections per {key[0]}"
        for key in keys:
            self._counts[key] = self._counts.get(key, 0) + 1
        return None

    def release(self, hub: str, user: str | None, token: str | None) -> None:
        for key in self._keys(hub, user, token):
            left = self._counts.get(key, 0) - 1
            if left > 0:
                self._counts[key] = left
            else:
                self._counts.pop(key, None)

    def count(self, hub: str) -> int:
        return self._counts.get(("hub", hub), 0)


class TrafficMeter:
    """The traffic control rules shared by a node's connections: bytes per user and per token."""

    def __init__(self, limits: Limits) -> None:
        window = limits.inbound_window_seconds
        self._user = (
            WindowMeter(limits.user_inbound_bytes, window)
            if limits.user_inbound_bytes is not None
            else None
        )
        self._token = (
            WindowMeter(limits.token_inbound_bytes, window)
            if limits.token_inbound_bytes is not None
            else None
        )

    def over(
        self, hub: str, user: str | None, signature: str | None, size: int, now: float
    ) -> str | None:
        """Count one inbound message; the rule it breaks, or None."""
        if self._user is not None and user is not None:
            if self._user.add(f"{hub}\n{user}", size, now):
                return "TrafficThrottleByUserIdRule"
        if self._token is not None and signature is not None:
            if self._token.add(f"{hub}\n{signature}", size, now):
                return "TrafficThrottleByJwtSignatureRule"
        return None


class InboundGate:
    """One connection's inbound checks: its message size and rate, then the shared meters."""

    __slots__ = ("_bucket", "_hub", "_meter", "_signature", "_user", "max_bytes")

    def __init__(
        self,
        limits: Limits,
        meter: TrafficMeter,
        hub: str,
        user: str | None,
        token: str | None,
        now: float,
    ) -> None:
        self.max_bytes = limits.max_message_bytes
        rate = limits.messages_per_second
        burst = limits.message_burst if limits.message_burst is not None else rate
        self._bucket = TokenBucket(rate, max(1.0, burst or 1.0), now) if rate else None
        self._meter, self._hub, self._user = meter, hub, user
        self._signature = token_signature(token)

    def too_big(self, size: int) -> bool:
        """A message over ``max_message_bytes`` (closed with 1009, as one over 1 MB is)."""
        return self.max_bytes is not None and size > self.max_bytes

    def check(self, size: int, now: float) -> str | None:
        """Count one inbound message of ``size`` bytes: None to go on, else why the connection
        is to be closed (as the service disconnects a client over a traffic rule)."""
        if self._bucket is not None and self._bucket.take(now):
            return f"more than {self._bucket.rate:g} messages per second"
        rule = self._meter.over(self._hub, self._user, self._signature, size, now)
        return f"inbound traffic over {rule}" if rule else None
