"""Which addresses Keyplane may send webhooks to: the pure half of the SSRF guard.

A webhook URL is written by a tenant and fetched by the server, from inside the operator's
network. Left alone, ``https://169.254.169.254/...`` would read the cloud's instance
credentials and ``http://10.0.0.5:6379/`` would talk to an internal Redis. So every address a
delivery would connect to is classified here first, and refused unless it is an ordinary
global unicast address or lies in a network the operator allowlisted
(``KEYPLANE_WEBHOOK_ALLOW_NETWORKS``). ``services/outbound.py`` applies it to the address it
actually connects to, after its own DNS resolution.

Addresses that embed an IPv4 address (IPv4-mapped ``::ffff:127.0.0.1``, NAT64
``64:ff9b::7f00:1``, 6to4 ``2002:7f00:1::``) are judged by the IPv4 address inside as well, and
the legacy numeric host forms that ``inet_aton`` and so most resolvers accept
(``2130706433``, ``0177.0.0.1``, ``0x7f.1``) are decoded to the address they mean.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from keyplane.domain.network import IpAddress, IpNetwork

#: Cloud instance-metadata services, named so that a refusal says what it protected.
METADATA_ADDRESSES: frozenset[IpAddress] = frozenset(
    {
        IPv4Address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        IPv4Address("169.254.170.2"),  # AWS ECS task metadata
        IPv4Address("169.254.169.253"),  # AWS DNS resolver
        IPv4Address("100.100.100.200"),  # Alibaba Cloud
        IPv4Address("192.0.0.192"),  # Oracle Cloud
        IPv6Address("fd00:ec2::254"),  # AWS over IPv6
        IPv6Address("fd00:ec2::253"),
    }
)

# Refused ranges with the reason given; the first match names the refusal. The final
# ``is_global`` test catches whatever special-purpose block this table does not name.
_REFUSED: tuple[tuple[IpNetwork, str], ...] = (
    (IPv4Network("0.0.0.0/8"), "unspecified"),
    (IPv4Network("127.0.0.0/8"), "loopback"),
    (IPv4Network("10.0.0.0/8"), "private"),
    (IPv4Network("172.16.0.0/12"), "private"),
    (IPv4Network("192.168.0.0/16"), "private"),
    (IPv4Network("100.64.0.0/10"), "shared address space (CGNAT)"),
    (IPv4Network("169.254.0.0/16"), "link-local"),
    (IPv4Network("192.0.0.0/24"), "IETF protocol assignments"),
    (IPv4Network("192.0.2.0/24"), "documentation"),
    (IPv4Network("198.18.0.0/15"), "benchmarking"),
    (IPv4Network("198.51.100.0/24"), "documentation"),
    (IPv4Network("203.0.113.0/24"), "documentation"),
    (IPv4Network("224.0.0.0/4"), "multicast"),
    (IPv4Network("240.0.0.0/4"), "reserved"),
    (IPv6Network("::/128"), "unspecified"),
    (IPv6Network("::1/128"), "loopback"),
    (IPv6Network("fc00::/7"), "private (unique local)"),
    (IPv6Network("fe80::/10"), "link-local"),
    (IPv6Network("fec0::/10"), "site-local"),
    (IPv6Network("ff00::/8"), "multicast"),
    (IPv6Network("2001:db8::/32"), "documentation"),
    (IPv6Network("100::/64"), "discard"),
    (IPv6Network("::ffff:0:0/96"), "IPv4-mapped"),
    (IPv6Network("::/8"), "reserved"),
)

_NAT64 = IPv6Network("64:ff9b::/96")


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address; the server's is the relay
    return None


def _own_refusal(address: IpAddress) -> str | None:
    if address in METADATA_ADDRESSES:
        return "a cloud metadata service"
    for network, reason in _REFUSED:
        if address.version == network.version and address in network:
            return reason
    if not address.is_global:
        return "not a global address"
    return None


def refusal(address: IpAddress) -> str | None:
    """Why ``address`` is not a place to send webhooks, or ``None`` when it is fine.

    The reason is a short phrase (``"loopback"``, ``"a cloud metadata service"``) for errors.
    """
    # The embedded IPv4 address first: ::ffff:127.0.0.1 is refused as loopback, which says
    # more than the "reserved" its IPv6 block would give.
    if isinstance(address, IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            inner_reason = _own_refusal(inner)
            if inner_reason is not None:
                return f"{inner_reason} ({inner} inside an IPv6 address)"
    return _own_refusal(address)


def allowlisted(address: IpAddress, allowed: Sequence[IpNetwork]) -> bool:
    """Whether ``address`` (or the IPv4 address it embeds) lies in an allowlisted network."""
    candidates: list[IpAddress] = [address]
    if isinstance(address, IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            candidates.append(inner)
    return any(
        one.version == network.version and one in network
        for one in candidates
        for network in allowed
    )


def verdict(address: IpAddress, allowed: Sequence[IpNetwork]) -> str | None:
    """The refusal for connecting to ``address`` under the allowlist, or ``None`` if allowed."""
    if allowlisted(address, allowed):
        return None
    reason = refusal(address)
    if reason is None:
        return None
    return f"{address} is {reason}"


def _legacy_part(text: str) -> int | None:
    if not text:
        return None
    lowered = text.lower()
    try:
        if lowered.startswith("0x"):
            return int(lowered[2:], 16) if len(lowered) > 2 else 0
        if len(text) > 1 and text.startswith("0"):
            return int(text[1:], 8)
        return int(text, 10) if text.isdigit() else None
    except ValueError:
        return None


def legacy_ipv4(host: str) -> IPv4Address | None:
    """The IPv4 address a numeric host means to ``inet_aton``, or ``None`` if not numeric.

    ``inet_aton`` (and so ``getaddrinfo`` on most systems) reads one to four parts, each
    decimal, octal (leading ``0``) or hexadecimal (``0x``), the last filling the remaining
    bytes: ``2130706433``, ``0x7f000001``, ``0177.0.0.1`` and ``127.1`` are all 127.0.0.1.
    """
    if len(host) > 64 or not host.isascii():
        return None
    parts = host.removesuffix(".").split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = [_legacy_part(part) for part in parts]
    if any(value is None for value in values):
        return None
    numbers = [value for value in values if value is not None]
    *head, last = numbers
    if any(value > 255 for value in head) or last >= 256 ** (4 - len(head)):
        return None
    total = 0
    for value in head:
        total = total * 256 + value
    total = total * 256 ** (4 - len(head)) + last
    return IPv4Address(total)


def host_address(host: str) -> IpAddress | None:
    """The address a URL host names literally (brackets of IPv6 removed), or ``None``.

    Dotted decimal, IPv6, and the legacy numeric IPv4 forms all count; a name does not.
    """
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if "%" in bare:
        return None  # a zone id; callers refuse it as not a host at all
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return legacy_ipv4(bare)
