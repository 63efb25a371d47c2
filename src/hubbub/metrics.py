"""Prometheus metrics of a node, served at ``GET /metrics``.

Counters are updated per publication or per connection event, never per delivery.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = [
    "CONNECTIONS",
    "CONNECTIONS_CLOSED",
    "CONNECTIONS_OPENED",
    "DELIVERIES",
    "FAST_SENDS",
    "PUBLICATIONS",
    "REGISTRY",
    "SLOW_CLIENT_CLOSES",
    "render",
]

REGISTRY = CollectorRegistry()

CONNECTIONS = Gauge("hubbub_connections", "Open client connections.", registry=REGISTRY)
CONNECTIONS_OPENED = Counter(
    "hubbub_connections_opened", "Client connections accepted.", registry=REGISTRY
)
CONNECTIONS_CLOSED = Counter(
    "hubbub_connections_closed", "Client connections closed.", registry=REGISTRY
)
PUBLICATIONS = Counter(
    "hubbub_publications", "Messages handed to the engine for fan-out.", registry=REGISTRY
)
DELIVERIES = Counter(
    "hubbub_deliveries", "Messages handed to client connections.", registry=REGISTRY
)
FAST_SENDS = Counter(
    "hubbub_rest_fast_sends",
    "REST sends answered by the fast lane (the rest of the REST calls go through aiohttp).",
    registry=REGISTRY,
)
SLOW_CLIENT_CLOSES = Counter(
    "hubbub_slow_client_closes",
    "Connections closed because their unsent bytes passed the outbound bound.",
    registry=REGISTRY,
)


def render() -> bytes:
    """The text exposition format."""
    return generate_latest(REGISTRY)
