"""Client addresses behind proxies: which hop of ``X-Forwarded-For`` to believe.

Shared by every service that limits or records callers by address (the score API, the gateway).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The caller's address: ``X-Forwarded-For`` is believed only from a trusted proxy.

    Walks the header right to left, skipping trusted proxies, so a client cannot forge the
    address by sending its own header through the proxy.
    """
    address = _unmapped(peer or "")
    if not forwarded_for or not _in(address, trusted):
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address
        address = _unmapped(hop)
        if not _in(address, trusted):
            return address
    return address


def _in(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _unmapped(address: str) -> str:
    """``::ffff:a.b.c.d`` (an IPv4 client of a dual-stack listener) as ``a.b.c.d``, so IPv4
    CIDRs match it and it counts as the same client either way."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return address
