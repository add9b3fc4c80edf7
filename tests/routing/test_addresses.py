"""refd.addresses: unmapping and network checks (pure, values in, values out)."""

from __future__ import annotations

import ipaddress

from refd import addresses
from refd.addresses import LOOPBACK, address_in, parse_ip, unmapped


def nets(*text: str) -> tuple[addresses.IPNetwork, ...]:
    return tuple(ipaddress.ip_network(t) for t in text)


def test_unmapped_and_parse() -> None:
    assert unmapped("::ffff:192.0.2.1") == "192.0.2.1"
    assert unmapped("2001:db8::1") == "2001:db8::1"
    assert unmapped("not an address") == "not an address"
    assert parse_ip("::ffff:10.0.0.1") == ipaddress.ip_address("10.0.0.1")
    assert parse_ip("x") is None


def test_address_in() -> None:
    trusted = nets("192.0.2.0/24", "2001:db8::/32")
    assert address_in("192.0.2.77", trusted)
    assert address_in("::ffff:192.0.2.77", trusted)  # an IPv6 listener's view
    assert address_in("2001:db8::5", trusted)
    assert not address_in("198.51.100.1", trusted)
    assert not address_in("garbage", trusted)
    assert address_in("127.0.0.1", LOOPBACK) and address_in("::1", LOOPBACK)
    # Asked again (the cached answer) and against other networks.
    assert address_in("192.0.2.77", trusted)
    assert not address_in("192.0.2.77", nets("10.0.0.0/8"))


def test_address_in_cache_follows_the_networks_not_their_id() -> None:
    old, new = nets("10.0.0.0/8"), nets("192.0.2.0/24")
    assert address_in("192.0.2.1", new)
    # As if ``old`` had been freed and ``new`` had its id: the entry under
    # that id names another tuple, so the answer is worked out again.
    addresses._IN_CACHE[("192.0.2.1", id(new))] = (old, False)
    assert address_in("192.0.2.1", new)


def test_address_in_cache_is_bounded() -> None:
    trusted = nets("10.0.0.0/8")
    for i in range(addresses._IN_CACHE_SIZE + 10):
        address_in(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", trusted)
    assert len(addresses._IN_CACHE) <= addresses._IN_CACHE_SIZE
