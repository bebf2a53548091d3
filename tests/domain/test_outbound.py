"""The SSRF guard's address rules (domain/outbound.py), without any I/O."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain.outbound import host_address, legacy_ipv4, refusal, verdict


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::ffff:127.0.0.1", "loopback (127.0.0.1 inside"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:8.8.8.8", "IPv4-mapped"),
        ("64:ff9b::a00:1", "private (10.0.0.1 inside"),
        ("2002:7f00:1::", "loopback (127.0.0.1 inside"),
        ("192.0.2.10", "documentation"),
    ],
)
def test_internal_addresses_are_refused_with_their_reason(address: str, reason: str) -> None:
    found = refusal(ip_address(address))
    assert found is not None
    assert reason in found


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "93.184.215.14"])
def test_ordinary_public_addresses_pass(address: str) -> None:
    assert refusal(ip_address(address)) is None


def test_an_allowlisted_network_lets_its_addresses_through_and_no_others() -> None:
    allowed = [ip_network("127.0.0.0/8"), ip_network("10.1.0.0/16")]
    assert verdict(ip_address("127.0.0.1"), allowed) is None
    assert verdict(ip_address("10.1.2.3"), allowed) is None
    assert verdict(ip_address("::ffff:127.0.0.1"), allowed) is None  # the same address
    assert verdict(ip_address("10.2.0.1"), allowed) == "10.2.0.1 is private"
    assert verdict(ip_address("::1"), allowed) == "::1 is loopback"
    assert verdict(ip_address("169.254.169.254"), allowed) is not None


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0x7f000001", "0177.0.0.1", "0177.0000.0000.0001", "127.1", "0x7f.1", "127.0.1"],
)
def test_legacy_numeric_forms_mean_what_inet_aton_says(host: str) -> None:
    assert legacy_ipv4(host) == IPv4Address("127.0.0.1")
    assert host_address(host) == IPv4Address("127.0.0.1")


@pytest.mark.parametrize(
    "host", ["example.com", "256.1.1.1", "08.1.1.1", "1.2.3.4.5", "a.1", "1.2.3.256"]
)
def test_names_and_impossible_numbers_are_not_addresses(host: str) -> None:
    assert legacy_ipv4(host) is None
    assert host_address(host) is None


def test_bracketed_ipv6_and_zone_ids() -> None:
    assert host_address("[::1]") == ip_address("::1")
    assert host_address("fe80::1%eth0") is None


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_every_ipv4_address_reads_back_from_its_decimal_and_hex_forms(value: int) -> None:
    assert legacy_ipv4(str(value)) == IPv4Address(value)
    assert legacy_ipv4(hex(value)) == IPv4Address(value)
    assert legacy_ipv4(str(IPv4Address(value))) == IPv4Address(value)
