"""Which address is the client's, when requests arrive through reverse proxies.

``X-Forwarded-For`` is written by every hop, and the client writes its first entries itself:
anything left of the nearest proxy we do not run is attacker-controlled. So the header is
believed only when the TCP peer is a trusted proxy, and then read from the right, skipping
trusted hops, up to the first address no trusted proxy vouches for (the same rule as nginx's
``real_ip_recursive on``).
"""

from __future__ import annotations

from collections.abc import Sequence

from keyplane.domain.network import IpAddress, IpNetwork, parse_ip, parse_network

#: Most ``X-Forwarded-For`` entries looked at; a longer chain is an attack, not a topology.
MAX_FORWARDED_HOPS = 32


def parse_trusted(entries: Sequence[str]) -> tuple[IpNetwork, ...]:
    """Parse trusted-proxy addresses and CIDR networks; raise ValueError on a bad one."""
    return tuple(parse_network(entry.strip()) for entry in entries)


def is_trusted(address: IpAddress | None, trusted: Sequence[IpNetwork]) -> bool:
    """Whether ``address`` lies in one of the ``trusted`` networks."""
    if address is None:
        return False
    return any(address.version == network.version and address in network for network in trusted)


def client_address(
    peer: str | None,
    forwarded_for: str | None,
    real_ip: str | None,
    trusted: Sequence[IpNetwork],
) -> str | None:
    """The client's IP address as text, or ``None`` when nothing usable is known.

    Args:
        peer: the TCP peer's address.
        forwarded_for: the ``X-Forwarded-For`` header, if any.
        real_ip: the ``X-Real-IP`` header, if any; used when there is no ``X-Forwarded-For``.
        trusted: networks of the proxies whose forwarding headers are believed.

    With no trusted proxies (the default) the forwarding headers are ignored entirely and
    the peer is the client.
    """
    current = parse_ip(peer) if peer else None
    if current is None:
        return None
    if not is_trusted(current, trusted):
        return str(current)
    if forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",")][-MAX_FORWARDED_HOPS:]
        for hop in reversed(hops):
            address = parse_ip(hop)
            if address is None:
                # Garbage in the chain: stop at the last hop a trusted proxy vouched for.
                return str(current)
            current = address
            if not is_trusted(current, trusted):
                return str(current)
        return str(current)  # every hop is a trusted proxy: the leftmost is the client
    if real_ip:
        address = parse_ip(real_ip.strip())
        if address is not None:
            return str(address)
    return str(current)
