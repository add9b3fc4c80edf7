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


#: (address, id(networks)) -> (networks, answer); the tuple kept guards
#: against a reused id
_IN_CACHE: dict[tuple[str, int], tuple[tuple[IPNetwork, ...], bool]] = {}
_IN_CACHE_SIZE = 16384


def address_in(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether ``address`` is in one of ``networks``.

    Cached (it is asked about three times per session) by the identity of
    ``networks``, not by its value: hashing a tuple of ``ipaddress``
    networks runs Python code per network, ~1 us each, so an lru_cache
    keyed on the tuple cost 3 us per call with three networks, this 0.3 us.
    """
    key = (address, id(networks))
    hit = _IN_CACHE.get(key)
    if hit is not None and hit[0] is networks:
        return hit[1]
    ip = parse_ip(address)
    found = ip is not None and any(ip in net for net in networks)
    if len(_IN_CACHE) >= _IN_CACHE_SIZE:
        _IN_CACHE.clear()
    _IN_CACHE[key] = (networks, found)
    return found
