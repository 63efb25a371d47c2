"""Network access rules per kind of traffic, and the client address behind trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest

from hubbub.core.acl import (
    IpRule,
    NetworkAcl,
    TrafficKind,
    client_address,
    parse_address,
    parse_network,
)

CLIENT, REST, TRACE = TrafficKind.CLIENT, TrafficKind.REST, TrafficKind.TRACE
PROXY = (parse_network("10.0.0.0/24"),)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def rule(
    action: str, *networks: str, kinds: tuple[TrafficKind, ...] = tuple(TrafficKind)
) -> IpRule:
    return IpRule(action, tuple(parse_network(n) for n in networks), frozenset(kinds))


def test_the_default_acl_allows_everything() -> None:
    """No rules and the default action: nothing changes for a node without [network]."""
    acl = NetworkAcl()
    assert acl.allows_everything
    assert all(acl.allows(k, ip("203.0.113.9")) for k in TrafficKind)


def test_rules_are_evaluated_in_order_first_match_wins() -> None:
    """As the service's IP rules: the first matching rule decides, then the default."""
    acl = NetworkAcl(
        (rule("allow", "123.0.0.0/8", "2603::/8"), rule("deny", "0.0.0.0/0", "::/0")),
        default_action="deny",
    )
    assert acl.allows(CLIENT, ip("123.4.5.6"))
    assert acl.allows(REST, ip("2603::1"))
    assert not acl.allows(CLIENT, ip("8.8.8.8"))
    assert not acl.allows(CLIENT, None)


def test_rest_only_from_the_internal_network() -> None:
    """The self-hosted form of 'public network: ClientConnection only; REST via a private link'."""
    acl = NetworkAcl(
        (
            rule("allow", "10.0.0.0/8", kinds=(REST, TRACE)),
            rule("allow", "0.0.0.0/0", "::/0", kinds=(CLIENT,)),
        ),
        default_action="deny",
    )
    assert acl.allows(CLIENT, ip("198.51.100.1"))
    assert not acl.allows(REST, ip("198.51.100.1"))
    assert not acl.allows(TRACE, ip("198.51.100.1"))
    assert acl.allows(REST, ip("10.1.2.3"))
    assert not acl.allows_everything


def test_an_ipv4_peer_of_a_dual_stack_socket_matches_ipv4_rules() -> None:
    """'::ffff:10.1.2.3' is 10.1.2.3."""
    acl = NetworkAcl((rule("deny", "10.0.0.0/8"),))
    assert not acl.allows(REST, ip("::ffff:10.1.2.3"))
    assert acl.allows(REST, ip("::ffff:11.1.2.3"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.4:8080", "1.2.3.4"),
        ("::1", "::1"),
        ("[::1]", "::1"),
        ('"[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("fe80::1%eth0", "fe80::1"),
        ("_hidden", None),
        ("unknown", None),
        ("", None),
        ("[::1", None),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    """Addresses as peers and forwarding headers write them."""
    parsed = parse_address(text)
    assert (str(parsed) if parsed else None) == expected


def test_parse_network_drops_host_bits_as_the_service_does() -> None:
    """'2603::/8' (the service's own example) is 2600::/8; a bare address is a range of one."""
    assert parse_network("10.0.0.1") == ipaddress.ip_network("10.0.0.1/32")
    assert parse_network("2603::/8") == ipaddress.ip_network("2600::/8")
    with pytest.raises(ValueError):
        parse_network("10.0.0.0/33")


def test_forwarding_headers_from_an_untrusted_peer_are_ignored() -> None:
    """A client cannot choose its address by sending X-Forwarded-For itself."""
    got = client_address("198.51.100.7", x_forwarded_for=["10.9.9.9"], trusted_proxies=PROXY)
    assert got == ip("198.51.100.7")
    assert client_address("10.0.0.5", x_forwarded_for=["1.1.1.1"]) == ip("10.0.0.5")


def test_x_forwarded_for_is_walked_from_the_nearest_hop() -> None:
    """Trusted hops are skipped; what the client put at the left does not count."""
    got = client_address(
        "10.0.0.5",
        x_forwarded_for=["6.6.6.6, 203.0.113.9", "10.0.0.7"],
        trusted_proxies=PROXY,
    )
    assert got == ip("203.0.113.9")


def test_forwarded_wins_over_x_forwarded_for() -> None:
    """RFC 7239 'for=' with quoted IPv6 and ports; X-Forwarded-For is then not read."""
    got = client_address(
        "10.0.0.5",
        forwarded=['for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711"'],
        x_forwarded_for=["1.1.1.1"],
        trusted_proxies=PROXY,
    )
    assert got == ip("2001:db8:cafe::17")


def test_an_unreadable_hop_stops_at_the_last_known_address() -> None:
    """An obfuscated or garbled hop: the nearest address that could be read is kept."""
    got = client_address("10.0.0.5", forwarded=["for=_hidden"], trusted_proxies=PROXY)
    assert got == ip("10.0.0.5")
    got = client_address(
        "10.0.0.5", x_forwarded_for=["203.0.113.9, garbage, 10.0.0.6"], trusted_proxies=PROXY
    )
    assert got == ip("10.0.0.6")


def test_a_chain_of_only_proxies_gives_the_farthest() -> None:
    """Every hop trusted: the one farthest away is the best answer there is."""
    got = client_address("10.0.0.5", x_forwarded_for=["10.0.0.8"], trusted_proxies=PROXY)
    assert got == ip("10.0.0.8")


def test_no_peer_address() -> None:
    """A socket without an IP peer (a Unix socket) has no address."""
    assert client_address(None) is None
