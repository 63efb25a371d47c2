"""Network access control: who may open which kind of traffic, by source address.

As the service's network ACLs (howto-secure-network-access-control): requests are of a kind —
client connections, REST API calls, live trace — and rules allow or deny kinds from address
ranges (CIDR, IPv4 and IPv6), evaluated in order, the first match deciding; when none matches,
the default action applies. The self-hosted form of "private endpoints only for REST" is a rule
that allows ``rest`` from the internal range before a default of ``deny``, or REST on a
listener of its own.

Behind a reverse proxy the peer is the proxy; the client's address is then read from
``Forwarded`` (RFC 7239) or ``X-Forwarded-For``, and only when the peer is a trusted proxy:
walking the chain from the nearest hop, trusted proxies are skipped and the first other address
is the client's. Anybody else's forwarding headers are ignored, so they cannot pick an address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Address",
    "IpRule",
    "Network",
    "NetworkAcl",
    "TrafficKind",
    "client_address",
    "parse_address",
    "parse_network",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrafficKind(StrEnum):
    """The request types of the service's ACLs: ClientConnection, RESTAPI, Trace."""

    CLIENT = "client"
    REST = "rest"
    TRACE = "trace"


ALLOW, DENY = "allow", "deny"


@dataclass(frozen=True)
class IpRule:
    """Allow or deny some kinds of traffic from some address ranges."""

    action: str
    networks: tuple[Network, ...]
    kinds: frozenset[TrafficKind] = frozenset(TrafficKind)

    def matches(self, kind: TrafficKind, address: Address | None) -> bool:
        if kind not in self.kinds or address is None:
            return False
        return any(address.version == n.version and address in n for n in self.networks)


@dataclass(frozen=True)
class NetworkAcl:
    """Ordered rules and a default action; the default ACL allows everything."""

    rules: tuple[IpRule, ...] = ()
    default_action: str = ALLOW

    def allows(self, kind: TrafficKind, address: Address | None) -> bool:
        """Whether traffic of ``kind`` from ``address`` may go on (None: an unknown address,
        which only the default action decides)."""
        address = _unmapped(address)
        for rule in self.rules:
            if rule.matches(kind, address):
                return rule.action == ALLOW
        return self.default_action == ALLOW

    @property
    def allows_everything(self) -> bool:
        """No rule and a default of allow: the check can be skipped."""
        return not self.rules and self.default_action == ALLOW


def parse_address(text: str) -> Address | None:
    """An address as peers and forwarding headers write it, or None.

    Accepts ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]`` and ``[::1]:80``; an IPv4 address
    mapped into IPv6 (``::ffff:1.2.3.4``, a dual-stack socket's peer) reads as IPv4.
    """
    text = text.strip().strip('"')
    if text.startswith("["):
        end = text.find("]")
        text = text[1:end] if end > 0 else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return _unmapped(address)


def parse_network(text: str) -> Network:
    """A CIDR range; a bare address is a range of one. Host bits are dropped, as the service
    does (its own example allows ``2603::/8``).

    Raises:
        ValueError: not an address range.
    """
    return ipaddress.ip_network(text.strip(), strict=False)


def _unmapped(address: Address | None) -> Address | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address | None, proxies: Sequence[Network]) -> bool:
    return address is not None and any(
        address.version == n.version and address in n for n in proxies
    )


def _forwarded_for(values: Iterable[str]) -> list[str | None]:
    """The ``for=`` of each element of ``Forwarded`` headers, in order; None for an element
    without one or with an obfuscated identifier (``for=_hidden``, ``for=unknown``)."""
    hops: list[str | None] = []
    for value in values:
        for element in value.split(","):
            found: str | None = None
            for pair in element.split(";"):
                name, _, raw = pair.strip().partition("=")
                if name.strip().lower() == "for":
                    found = raw.strip()
            hops.append(found)
    return hops


def client_address(
    peer: str | None,
    *,
    forwarded: Sequence[str] = (),
    x_forwarded_for: Sequence[str] = (),
    trusted_proxies: Sequence[Network] = (),
) -> Address | None:
    """The address to judge a request by.

    Args:
        peer: the transport's peer address (``request.remote``).
        forwarded: every ``Forwarded`` header line, in order; it wins over ``X-Forwarded-For``.
        x_forwarded_for: every ``X-Forwarded-For`` header line, in order.
        trusted_proxies: the ranges whose forwarding headers are believed.

    Returns:
        The peer unless it is a trusted proxy; else the nearest hop that is not a trusted
        proxy. A hop that cannot be read stops the walk at the last address that could.
    """
    address = parse_address(peer) if peer else None
    if not _trusted(address, trusted_proxies):
        return address
    hops: list[str | None]
    if forwarded:
        hops = _forwarded_for(forwarded)
    else:
        hops = [h for line in x_forwarded_for for h in line.split(",")]
    for hop in reversed(hops):
        parsed = parse_address(hop) if hop else None
        if parsed is None:
            return address
        address = parsed
        if not _trusted(address, trusted_proxies):
            return address
    return address
