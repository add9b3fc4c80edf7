"""Client addresses: the one home of parsing, IPv4-mapped unmapping and network checks.

An IPv6 socket reports an IPv4 client as ``::ffff:192.0.2.1``; every check
and every counter sees the IPv4 address instead, so a ``192.0.2.0/24`` in
the config means what it says whichever way the listener is bound.

Pure: ``ipaddress`` and ``functools`` only (tests/routing/test_purity.py).
"""

from __future__ import annotations

import functools
import ipaddress

__all__ = ["LOOPBACK", "IPAddress", "IPNetwork", "address_in", "parse_ip", "unmapped"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

LOOPBACK: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


def parse_ip(address: str) -> IPAddress | None:
    """``address`` as an IP address, IPv4-mapped IPv6 unmapped; None if it is not one."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@functools.lru_cache(maxsize=16384)
def unmapped(host: str) -> str:
    """A peer's host as the door logs and counts it: IPv4-mapped IPv6 as IPv4.

    Cached: asked twice per connection (peer and local address), and parsing
    with ``ipaddress`` costs ~7 us where a cache hit costs 0.2 us.
    """
    ip = parse_ip(host)
    return host if ip is None or ip.version == 6 else str(ip)


@functools.lru_cache(maxsize=16384)
def address_in(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether ``address`` is in one of ``networks`` (cached: asked per command)."""
    ip = parse_ip(address)
    return ip is not None and any(ip in net for net in networks)
