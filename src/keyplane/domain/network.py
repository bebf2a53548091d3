"""IP allow and deny rules for keys: parsing networks and addresses, and the decision itself.

IPv4-mapped IPv6 addresses (``::ffff:203.0.113.5``, what a dual-stack socket reports for an
IPv4 client) are turned into plain IPv4 everywhere, for addresses and for rules alike;
otherwise a deny rule for ``203.0.113.0/24`` would silently miss the very same client.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import TypeAlias

IpAddress: TypeAlias = IPv4Address | IPv6Address
IpNetwork: TypeAlias = IPv4Network | IPv6Network

MAX_NETWORK_LENGTH = 64
# The IPv4-mapped block, ::ffff:0:0/96; its last 32 bits are the IPv4 address.
_MAPPED_PREFIX = 96


def _unmap_network(network: IpNetwork) -> IpNetwork:
    if isinstance(network, IPv6Network) and network.prefixlen >= _MAPPED_PREFIX:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return IPv4Network((mapped, network.prefixlen - _MAPPED_PREFIX))
    return network


def _unmap_address(address: IpAddress) -> IpAddress:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: str) -> IpNetwork:
    """Parse an address or a CIDR network, IPv4 or IPv6; raise ValueError if it is neither.

    A single address becomes a /32 (or /128). A CIDR with host bits set, such as
    ``203.0.113.5/24``, is refused rather than rounded down: it is usually a typo for either
    the address or the network, and guessing wrong widens or narrows access silently.
    """
    if len(text) > MAX_NETWORK_LENGTH:
        raise ValueError(f"an IP network is at most {MAX_NETWORK_LENGTH} characters")
    # ipaddress accepts IPv6 zone ids ("fe80::1%eth0"); they name an interface of whichever
    # host reads the rule, so they mean nothing in a stored rule.
    if "%" in text:
        raise ValueError("IPv6 zone ids (%...) are not allowed in IP rules")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or CIDR network") from None
        raise ValueError(
            f"{text} has host bits set: write {loose} for the whole network, "
            "or leave out the prefix length for a single address"
        ) from None
    return _unmap_network(network)


@lru_cache(maxsize=8192)  # verify parses the same few client addresses over and over
def parse_ip(text: str) -> IpAddress | None:
    """The client address in ``text``, or None when it is not a plain IP address.

    IPv4-mapped IPv6 comes back as IPv4 so IPv4 rules apply to it; zone ids are refused.
    """
    if len(text) > MAX_NETWORK_LENGTH or "%" in text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return _unmap_address(address)


@dataclass(frozen=True, slots=True)
class IpRules:
    """Which client addresses may use a key.

    ``deny`` wins over ``allow``; an empty ``allow`` admits every address not denied.
    """

    allow: tuple[IpNetwork, ...] = ()
    deny: tuple[IpNetwork, ...] = ()

    def permits(self, ip: IpAddress | None) -> bool:
        """Decide for one client; ``None`` means the address is unknown.

        With no rules at all everything passes. With any rule an unknown address fails:
        a key restricted to an office network must not work when the address went missing.
        """
        if not self.allow and not self.deny:
            return True
        if ip is None:
            return False
        address = _unmap_address(ip)
        # Loops, not any() over generators: checked on every verify of a key with IP rules.
        for network in self.deny:
            if _contains(network, address):
                return False
        if not self.allow:
            return True
        for network in self.allow:  # noqa: SIM110
            if _contains(network, address):
                return True
        return False


def _contains(network: IpNetwork, address: IpAddress) -> bool:
    # ipaddress already answers False across versions; the explicit check keeps that
    # guarantee visible and independent of the library's internals.
    return network.version == address.version and address in network
