"""Client addresses behind proxies: which hop of ``X-Forwarded-For`` to believe, one spelling
per address, and the subject an address is counted under.

Shared by every service that limits or records callers by address (the score API, the gateway).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# One IPv6 subscriber usually holds a whole /64 (often a /56 or /48) and picks addresses in it
# at will, so counting /128s would hand each client 2**64 counters.
DEFAULT_IPV6_PREFIX = 64


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The caller's address, normalised: ``X-Forwarded-For`` is believed only from a trusted
    proxy.

    Walks the header right to left, skipping trusted proxies, so a client cannot forge the
    address by sending its own header through the proxy. The result is ``normalise``'s
    spelling, so every spelling of one address is one address.
    """
    address = normalise(peer or "")
    if not forwarded_for or not _in(address, trusted):
        return address
    for hop in reversed(forwarded_for.split(",")):
        ip = parse(hop)
        if ip is None:
            return address
        address = str(ip)
        if not _in(address, trusted):
            return address
    return address


def parse(text: str) -> Address | None:
    """An address in any spelling, or None: surrounding blanks and ``[...]`` are allowed, a
    zone id (``%eth0``) is dropped, and ``::ffff:a.b.c.d`` is the IPv4 address a.b.c.d."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    # An IPv4 client of a dual-stack listener: IPv4 CIDRs must match it, and it is one client
    # whichever way it arrived.
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    # The zone names an interface of the host that wrote it, not a different address.
    return ipaddress.IPv6Address(int(ip)) if ip.scope_id is not None else ip


def normalise(address: str) -> str:
    """The canonical spelling (RFC 5952: lower case, shortest form, no zone) of an address;
    text that is no address (a Unix socket peer, "") is kept as it is."""
    ip = parse(address)
    return address if ip is None else str(ip)


def limit_subject(address: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """What limits and counters count ``address`` under: an IPv4 address is itself; an IPv6
    address stands for its ``/ipv6_prefix`` network (``2001:db8:1:2::/64``), whole at 128."""
    if not 0 <= ipv6_prefix <= 128:
        raise ValueError(f"an IPv6 prefix is 0..128, not {ipv6_prefix}")
    ip = parse(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv4Address) or ipv6_prefix == 128:
        return str(ip)
    return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))


def is_trusted(address: str, networks: Sequence[Network]) -> bool:
    """Whether ``address`` lies in one of ``networks`` (a proxy whose X-Forwarded-For counts)."""
    return _in(address, networks)


def _in(address: str, networks: Sequence[Network]) -> bool:
    ip = parse(address)
    return ip is not None and any(ip in net for net in networks)
