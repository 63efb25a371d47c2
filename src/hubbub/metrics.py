"""Prometheus metrics of a node, served at ``GET /metrics``.

Counters are updated per publication or per connection event, never per delivery. They are
:class:`Tally` objects: a plain integer bumped by the event loop's thread and read when the
registry is scraped (a prometheus-client ``Counter`` takes a lock per increment, which was a
measurable share of a small REST send).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CONNECTIONS",
    "CONNECTIONS_CLOSED",
    "CONNECTIONS_OPENED",
    "DELIVERIES",
    "ENGINE_STATE",
    "FAST_SENDS",
    "LIMIT_REFUSALS",
    "NETWORK_DENIALS",
    "PUBLICATIONS",
    "REGISTRY",
    "REST_THROTTLED",
    "SLOW_CLIENT_CLOSES",
    "THROTTLE_CLOSES",
    "Tally",
    "engine_state",
    "render",
    "watch_engine",
]

REGISTRY = CollectorRegistry()


class Tally:
    """A monotonic counter for one thread: ``inc`` is an integer addition."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class _Tallies(Collector):
    """Exposes the tallies as Prometheus counters (``<name>_total``)."""

    def __init__(self) -> None:
        self._tallies: list[tuple[str, str, Tally]] = []

    def add(self, name: str, documentation: str) -> Tally:
        tally = Tally()
        self._tallies.append((name, documentation, tally))
        return tally

    def collect(self) -> Iterator[Metric]:
        for name, documentation, tally in self._tallies:
            yield CounterMetricFamily(name, documentation, value=tally.value)


_TALLIES = _Tallies()
REGISTRY.register(_TALLIES)

CONNECTIONS = Gauge("hubbub_connections", "Open client connections.", registry=REGISTRY)
CONNECTIONS_OPENED = _TALLIES.add(
    "hubbub_connections_opened",
    "Client connections accepted.",
)
CONNECTIONS_CLOSED = _TALLIES.add(
    "hubbub_connections_closed",
    "Client connections closed.",
)
PUBLICATIONS = _TALLIES.add(
    "hubbub_publications",
    "Messages handed to the engine for fan-out.",
)
DELIVERIES = _TALLIES.add(
    "hubbub_deliveries",
    "Messages handed to client connections.",
)
FAST_SENDS = _TALLIES.add(
    "hubbub_rest_fast_sends",
    "REST sends answered by the fast lane (the rest of the REST calls go through aiohttp).",
)
SLOW_CLIENT_CLOSES = _TALLIES.add(
    "hubbub_slow_client_closes",
    "Connections closed because their unsent bytes passed the outbound bound.",
)

LIMIT_REFUSALS = _TALLIES.add(
    "hubbub_connection_limit_refusals",
    "Connections refused with 429 over a connection count limit ([limits]).",
)
THROTTLE_CLOSES = _TALLIES.add(
    "hubbub_throttle_closes",
    "Connections closed over their message rate or a traffic limit ([limits]).",
)
REST_THROTTLED = _TALLIES.add(
    "hubbub_rest_throttled",
    "REST calls answered 429 over the REST request rate ([limits]).",
)
NETWORK_DENIALS = _TALLIES.add(
    "hubbub_network_denials",
    "Requests refused by the network rules ([network]).",
)


ENGINE_STATES = ("connecting", "ready", "degraded", "closed")
ENGINE_STATE = Gauge(
    "hubbub_engine_state",
    "1 for the cluster engine's current state (connecting, ready, degraded, closed); "
    "absent on a node without Redis.",
    ["state"],
    registry=REGISTRY,
)


def engine_state(state: object) -> None:
    """The cluster engine's new state (an ``EngineState``: its ``value`` is the name)."""
    current = getattr(state, "value", str(state))
    for name in ENGINE_STATES:
        ENGINE_STATE.labels(name).set(1 if name == current else 0)


class _EngineStats(Collector):
    """The Redis engine's counters (``RedisStats``), read when scraped."""

    _FIELDS = (
        ("published", "Publications handed to Redis for the other nodes."),
        ("dropped", "Cross-node copies dropped while Redis was unavailable."),
        ("received", "Messages received from the other nodes."),
        ("commands", "Cluster commands sent."),
        ("request_timeouts", "Cluster requests that timed out waiting for the other nodes."),
        ("outages", "Times Redis was lost after the node had registered."),
        ("replica_drops", "Session replica writes dropped because replication fell behind."),
        ("reregistered", "Connections registered again after an outage."),
        ("reaped", "Dead nodes whose connections this node removed from the registry."),
    )

    def __init__(self) -> None:
        self.stats: object | None = None

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        if stats is None:
            return
        for name, documentation in self._FIELDS:
            yield CounterMetricFamily(
                f"hubbub_engine_{name}", documentation, value=getattr(stats, name)
            )


_ENGINE_STATS = _EngineStats()
REGISTRY.register(_ENGINE_STATS)


def watch_engine(stats: object) -> None:
    """Expose a Redis engine's ``RedisStats`` (one engine per process)."""
    _ENGINE_STATS.stats = stats


def render() -> bytes:
    """The text exposition format."""
    return generate_latest(REGISTRY)
