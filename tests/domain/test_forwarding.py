"""The client address behind proxies: forwarding headers count only from trusted peers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyplane.domain.forwarding import MAX_FORWARDED_HOPS, client_address, parse_trusted

TRUSTED = parse_trusted(["10.0.0.0/8", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "real_ip", "expected"),
    [
        # an untrusted peer is the client, whatever it claims
        ("198.51.100.1", "203.0.113.5", "203.0.113.6", "198.51.100.1"),
        # a trusted peer: the rightmost untrusted hop
        ("10.0.0.1", "203.0.113.5", None, "203.0.113.5"),
        ("10.0.0.1", "1.1.1.1, 203.0.113.5, 10.2.2.2", None, "203.0.113.5"),
        # every hop trusted: the leftmost
        ("10.0.0.1", "10.9.9.9, 10.8.8.8", None, "10.9.9.9"),
        # garbage stops the walk at the last hop a trusted proxy vouched for
        ("10.0.0.1", "203.0.113.5, bogus", None, "10.0.0.1"),
        ("10.0.0.1", "203.0.113.5, bogus, 10.3.3.3", None, "10.3.3.3"),
        # X-Real-IP when there is no X-Forwarded-For
        ("10.0.0.1", None, "203.0.113.7", "203.0.113.7"),
        ("10.0.0.1", None, "nonsense", "10.0.0.1"),
        ("10.0.0.1", "", "203.0.113.7", "203.0.113.7"),
        # IPv6 and IPv4-mapped peers
        ("2001:db8::1", "2001:db8::2, 2606:4700::1", None, "2606:4700::1"),
        ("::ffff:10.0.0.1", "203.0.113.5", None, "203.0.113.5"),
        ("::ffff:198.51.100.1", "203.0.113.5", None, "198.51.100.1"),
        # no usable peer
        (None, "203.0.113.5", None, None),
        ("unix-socket", "203.0.113.5", None, None),
    ],
)
def test_client_address(
    peer: str | None, forwarded_for: str | None, real_ip: str | None, expected: str | None
) -> None:
    assert client_address(peer, forwarded_for, real_ip, TRUSTED) == expected


def test_without_trusted_proxies_headers_are_ignored() -> None:
    assert client_address("10.0.0.1", "203.0.113.5", "203.0.113.6", ()) == "10.0.0.1"


def test_a_very_long_chain_is_read_only_from_its_right_end() -> None:
    chain = ", ".join(["10.0.0.5"] * (MAX_FORWARDED_HOPS * 10))
    assert client_address("10.0.0.1", "203.0.113.5, " + chain, None, TRUSTED) == "10.0.0.5"


def test_bad_trusted_entries_are_refused() -> None:
    for bad in ("10.0.0.1/8", "nope", "fe80::1%eth0"):
        with pytest.raises(ValueError):
            parse_trusted([bad])


_ipv4 = st.ip_addresses(v=4).map(str)
_hop = st.one_of(_ipv4, st.sampled_from(["10.1.2.3", "10.0.0.9", "bogus", "", " "]))


@given(
    peer=st.one_of(_ipv4, st.sampled_from(["10.0.0.1", "10.200.0.1"])),
    hops=st.lists(_hop, max_size=8),
    real_ip=st.one_of(st.none(), _ipv4, st.just("nonsense")),
)
def test_the_answer_is_always_the_peer_or_something_a_trusted_hop_vouched_for(
    peer: str, hops: list[str], real_ip: str | None
) -> None:
    forwarded = ", ".join(hops) if hops else None
    result = client_address(peer, forwarded, real_ip, TRUSTED)
    assert result is not None
    if not peer.startswith("10."):
        assert result == peer  # an untrusted peer's headers never count
    else:
        assert result in {peer, real_ip, *(hop.strip() for hop in hops)}
        if forwarded is None and real_ip is None:
            assert result == peer
    assert client_address(peer, forwarded, real_ip, ()) == peer
