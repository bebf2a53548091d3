from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain.network import IpRules, parse_ip, parse_network


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.0/24", IPv4Network("203.0.113.0/24")),
        ("203.0.113.7", IPv4Network("203.0.113.7/32")),
        ("0.0.0.0/0", IPv4Network("0.0.0.0/0")),
        ("2001:db8::/32", IPv6Network("2001:db8::/32")),
        ("::1", IPv6Network("::1/128")),
        ("2001:DB8::/32", IPv6Network("2001:db8::/32")),
        ("::ffff:203.0.113.0/120", IPv4Network("203.0.113.0/24")),
        ("::ffff:203.0.113.5", IPv4Network("203.0.113.5/32")),
    ],
)
def test_parse_network(text: str, expected: IPv4Network | IPv6Network) -> None:
    assert parse_network(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("203.0.113.5/24", "host bits set: write 203.0.113.0/24"),
        ("2001:db8::1/32", "host bits set: write 2001:db8::/32"),
        ("203.0.113.0/33", "not an IP address or CIDR network"),
        ("203.0.113", "not an IP address or CIDR network"),
        ("203.000.113.7", "not an IP address or CIDR network"),
        ("example.com", "not an IP address or CIDR network"),
        ("", "not an IP address or CIDR network"),
        (" 203.0.113.7", "not an IP address or CIDR network"),
        ("fe80::1%eth0", "zone ids"),
        ("1" * 65, "at most 64 characters"),
    ],
)
def test_bad_networks_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_network(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.5", IPv4Address("203.0.113.5")),
        ("2001:db8::1", IPv6Address("2001:db8::1")),
        ("::ffff:203.0.113.5", IPv4Address("203.0.113.5")),
        ("::FFFF:cb00:7105", IPv4Address("203.0.113.5")),
        ("::1", IPv6Address("::1")),
    ],
)
def test_parse_ip(text: str, expected: IPv4Address | IPv6Address) -> None:
    assert parse_ip(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "unknown",
        "203.0.113",
        "203.000.113.5",
        " 203.0.113.5",
        "203.0.113.5:443",
        "203.0.113.0/24",
        "[::1]",
        "fe80::1%eth0",
        "1" * 65,
    ],
)
def test_parse_ip_returns_none_for_anything_but_a_plain_address(text: str) -> None:
    assert parse_ip(text) is None


OFFICE = parse_network("203.0.113.0/24")
LAPTOP = parse_network("203.0.113.7")
V6_OFFICE = parse_network("2001:db8::/32")


def _ip(text: str) -> IPv4Address | IPv6Address:
    address = parse_ip(text)
    assert address is not None
    return address


def test_no_rules_admit_everything_even_an_unknown_address() -> None:
    assert IpRules().permits(None)
    assert IpRules().permits(_ip("198.51.100.1"))


def test_allow_list_admits_only_its_networks() -> None:
    rules = IpRules(allow=(OFFICE, V6_OFFICE))
    assert rules.permits(_ip("203.0.113.200"))
    assert rules.permits(_ip("2001:db8:1::5"))
    assert not rules.permits(_ip("198.51.100.1"))
    assert not rules.permits(_ip("2001:db9::1"))


def test_deny_wins_over_allow() -> None:
    rules = IpRules(allow=(OFFICE,), deny=(LAPTOP,))
    assert rules.permits(_ip("203.0.113.8"))
    assert not rules.permits(_ip("203.0.113.7"))


def test_deny_only_admits_everyone_else() -> None:
    rules = IpRules(deny=(LAPTOP,))
    assert rules.permits(_ip("198.51.100.1"))
    assert rules.permits(_ip("2001:db8::1"))
    assert not rules.permits(_ip("203.0.113.7"))


@pytest.mark.parametrize(
    "rules", [IpRules(allow=(OFFICE,)), IpRules(deny=(LAPTOP,)), IpRules((OFFICE,), (LAPTOP,))]
)
def test_any_rule_fails_closed_on_an_unknown_address(rules: IpRules) -> None:
    assert not rules.permits(None)


def test_mapped_addresses_fall_under_ipv4_rules() -> None:
    assert not IpRules(deny=(LAPTOP,)).permits(_ip("::ffff:203.0.113.7"))
    assert IpRules(allow=(OFFICE,)).permits(_ip("::ffff:203.0.113.9"))
    # Even when handed over as the raw IPv6 object, not through parse_ip.
    assert not IpRules(deny=(LAPTOP,)).permits(IPv6Address("::ffff:203.0.113.7"))


def test_versions_never_match_each_other() -> None:
    everything_v6 = parse_network("::/0")
    everything_v4 = parse_network("0.0.0.0/0")
    assert not IpRules(allow=(everything_v6,)).permits(_ip("203.0.113.7"))
    assert not IpRules(allow=(everything_v4,)).permits(_ip("2001:db8::1"))
    assert IpRules(deny=(everything_v6,)).permits(_ip("203.0.113.7"))
    assert IpRules(deny=(everything_v4,)).permits(_ip("2001:db8::1"))


V4 = st.integers(min_value=0, max_value=2**32 - 1).map(IPv4Address)


@given(V4, st.integers(min_value=0, max_value=32))
def test_an_address_is_admitted_exactly_by_the_networks_that_contain_it(
    address: IPv4Address, prefix: int
) -> None:
    network = IPv4Network((address, prefix), strict=False)
    assert IpRules(allow=(network,)).permits(address)
    assert not IpRules(deny=(network,)).permits(address)
    assert parse_ip(f"::ffff:{address}") == address
    assert parse_network(str(network)) == network


@given(V4, V4)
def test_a_single_address_rule_admits_only_that_address(
    rule: IPv4Address, client: IPv4Address
) -> None:
    assert IpRules(allow=(parse_network(str(rule)),)).permits(client) is (rule == client)
