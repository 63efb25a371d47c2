"""Throttles: token buckets, connection counts, traffic windows, Retry-After."""

from __future__ import annotations

import pytest

from hubbub.core.throttle import (
    BucketMap,
    ConnectionCounter,
    InboundGate,
    Limits,
    TokenBucket,
    TrafficMeter,
    WindowMeter,
    retry_after_headers,
    token_signature,
)

TOKEN_A = "h.p.sigA"
TOKEN_B = "h.p.sigB"


def test_a_bucket_grants_its_burst_then_the_rate() -> None:
    """Starts full; an empty bucket says how long until the next token."""
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.25) == pytest.approx(0.25)  # a refused take costs nothing
    assert bucket.take(0.5) == 0.0
    assert bucket.take(100.0) == 0.0  # refills up to the burst only
    assert [bucket.take(100.0) for _ in range(3)][-1] > 0


def test_bucket_map_keeps_one_bucket_per_key_and_a_bound() -> None:
    """Keys do not share tokens; past max_keys the least recently used is forgotten."""
    buckets = BucketMap(rate=1.0, burst=1, max_keys=2)
    assert buckets.take("chat", 0.0) == 0.0
    assert buckets.take("chat", 0.0) > 0
    assert buckets.take("news", 0.0) == 0.0
    buckets.take("third", 0.0)
    assert buckets.take("chat", 0.0) == 0.0  # evicted, so full again


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    """RFC 9110 delay-seconds for Retry-After, milliseconds for retry-after-ms."""
    assert retry_after_headers(0.2) == {"Retry-After": "1", "retry-after-ms": "200"}
    assert retry_after_headers(2.01) == {"Retry-After": "3", "retry-after-ms": "2010"}


def test_connection_counter_per_hub_user_and_token() -> None:
    """Each limit refuses at its count, with the service's reason; release frees a place."""
    counter = ConnectionCounter(
        Limits(max_connections_per_hub=3, max_connections_per_user=2, max_connections_per_token=1)
    )
    assert counter.admit("chat", "alice", TOKEN_A) is None
    refused = counter.admit("chat", "bob", TOKEN_A)
    assert refused is not None and "ConnectionCountLimitReached" in refused and "token" in refused
    assert counter.admit("chat", "alice", TOKEN_B) is None
    refused = counter.admit("chat", "alice", "h.p.sigC")
    assert refused is not None and "user" in refused
    assert counter.admit("chat", None, None) is None
    refused = counter.admit("chat", None, None)
    assert refused is not None and "hub" in refused
    assert counter.admit("news", "alice", TOKEN_A) is None  # another hub counts apart
    counter.release("chat", "alice", TOKEN_A)
    assert counter.count("chat") == 2
    assert counter.admit("chat", "carol", TOKEN_A) is None


def test_a_refused_admission_reserves_nothing() -> None:
    """Only admitted connections count."""
    counter = ConnectionCounter(Limits(max_connections_per_hub=5, max_connections_per_user=1))
    counter.admit("chat", "alice", None)
    assert counter.admit("chat", "alice", None) is not None
    assert counter.count("chat") == 1


def test_no_limits_refuse_nothing() -> None:
    """The defaults: every limit off."""
    limits = Limits()
    assert not limits.counts_connections
    counter = ConnectionCounter(limits)
    assert all(counter.admit("chat", "u", TOKEN_A) is None for _ in range(1000))


def test_a_limit_set_later_judges_the_connections_already_open() -> None:
    """Connections are counted without limits too, so a reload that adds one is exact."""
    counter = ConnectionCounter(Limits())
    for _ in range(3):
        counter.admit("chat", "alice", None)
    counter.limits = Limits(max_connections_per_user=3)
    assert counter.admit("chat", "alice", None) is not None
    counter.release("chat", "alice", None)
    assert counter.admit("chat", "alice", None) is None


def test_token_signature() -> None:
    """The third segment of a JWT; anything else has none."""
    assert token_signature("a.b.c") == "c"
    assert token_signature("abc") is None
    assert token_signature(None) is None


def test_window_meter_sums_per_window() -> None:
    """The aggregation window opens at a key's first message and starts over after it."""
    meter = WindowMeter(limit=100, window=10.0)
    assert not meter.add("k", 60, 0.0)
    assert meter.add("k", 60, 5.0)
    assert not meter.add("other", 60, 5.0)
    assert not meter.add("k", 60, 10.0)


def test_inbound_gate_message_rate() -> None:
    """A connection over its message rate is to be closed; size over the limit is its own test."""
    limits = Limits(messages_per_second=2.0, message_burst=2, max_message_bytes=10)
    gate = InboundGate(limits, TrafficMeter(limits), "chat", "alice", TOKEN_A, now=0.0)
    assert gate.too_big(11) and not gate.too_big(10)
    assert gate.check(5, 0.0) is None
    assert gate.check(5, 0.0) is None
    reason = gate.check(5, 0.0)
    assert reason is not None and "messages per second" in reason
    assert gate.check(5, 1.0) is None


def test_traffic_rules_are_shared_by_a_users_connections() -> None:
    """TrafficThrottleByUserIdRule sums every connection of the user; the token rule likewise."""
    limits = Limits(user_inbound_bytes=100, token_inbound_bytes=150, inbound_window_seconds=60)
    meter = TrafficMeter(limits)
    one = InboundGate(limits, meter, "chat", "alice", TOKEN_A, now=0.0)
    two = InboundGate(limits, meter, "chat", "alice", TOKEN_B, now=0.0)
    assert one.check(60, 1.0) is None
    reason = two.check(60, 2.0)
    assert reason is not None and "TrafficThrottleByUserIdRule" in reason
    anonymous = InboundGate(limits, meter, "chat", None, TOKEN_A, now=0.0)
    assert anonymous.check(80, 3.0) is None  # token A: 60 + 80
    reason = anonymous.check(20, 3.0)
    assert reason is not None and "TrafficThrottleByJwtSignatureRule" in reason


def test_a_gate_without_limits_lets_everything_through() -> None:
    """The defaults never close anybody."""
    limits = Limits()
    gate = InboundGate(limits, TrafficMeter(limits), "chat", "u", TOKEN_A, now=0.0)
    assert not gate.too_big(10**9)
    assert all(gate.check(10**6, 0.0) is None for _ in range(1000))
