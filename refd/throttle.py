"""The login throttle's policy: failure counts in, delays out.

Pure: no trio, no sockets, time from an injected clock.  Four counters
remember recent failed logins, each forgotten ``forget_after_s`` after its
last failure (a sliding expiry):

- ``address``: the client address (an IPv4-mapped IPv6 address counts as
  the IPv4 address);
- ``network``: its /24 (IPv4) or /64 (IPv6), ``ipv4_prefix`` / ``ipv6_prefix``;
- ``user``: the user name as typed, case-folded, whether or not it exists;
- ``pair``: that user name from that address.

A failure adds one to each and is answered after
``min(max, max(base, d(address, 1), d(network, network_threshold),
d(user, user_threshold)))`` where ``d(n, t) = base * 2 ** (n - t)`` once
``n >= t`` (else nothing).  The address rule alone is the classic 2, 4, 8,
15 s; a network or a user name only adds delay past its threshold.

A success is answered after ``min(max, max(d(address, 1), d(network, ...)))``
from the counts *before* it, so a guesser that hangs up early learns nothing
sooner than a failure would have told him; the user counter never delays a
success, so nobody elsewhere can slow a victim's own correct login.  Then
the success forgives that user's own failures from that address (the pair
is subtracted from the other three and deleted); it never resets the address,
so an attacker's good login of his own account buys him nothing.  There is no
lockout: every answer comes, at worst after ``max``.

:class:`CounterTable` keeps the counters (and small expiring values) in
memory, bounded, oldest evicted first; the stores in ``refd.store`` share
the same operations (``add``, ``settle``, ``get``, ``put``) with Redis and
between workers.
"""

from __future__ import annotations

import collections
import functools
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from refd.addresses import IPAddress, parse_ip

__all__ = [
    "CounterTable",
    "Counts",
    "Delay",
    "Subjects",
    "ThrottleRules",
    "failure_delay",
    "network_of",
    "subjects",
    "success_delay",
]

#: A count past which the doubling stops mattering (2**32 * base > any cap).
_MAX_DOUBLINGS = 32


@dataclass(frozen=True, slots=True)
class ThrottleRules:
    """The thresholds (``throttle:`` in the config); delays come from ``auth:``."""

    forget_after_s: float = 900.0
    #: failures from one network before they add delay of their own
    network_threshold: int = 10
    #: failures for one user name, from anywhere, before they add delay
    user_threshold: int = 5
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64


class Subjects(NamedTuple):
    """What a login attempt is counted against (plain values, not yet keys)."""

    address: str
    network: str
    user: str
    pair: str


class Counts(NamedTuple):
    """Recent failures of each subject."""

    address: int = 0
    network: int = 0
    user: int = 0
    pair: int = 0


@dataclass(frozen=True, slots=True)
class Delay:
    """How long to wait before answering, and which rule decided it.

    ``rule`` is ``address``, ``network`` or ``user`` when that counter made
    the delay longer than the base, ``base`` for the plain failure delay,
    ``none`` for no delay (and ``trusted`` for a trusted network's base delay).
    """

    seconds: float
    rule: str


def _ip(address: str) -> IPAddress | None:
    return parse_ip(address.strip("[]"))


@functools.lru_cache(maxsize=16384)
def _where(address: str, ipv4_prefix: int, ipv6_prefix: int) -> tuple[str, str]:
    # Cached: parsing addresses is most of the work of counting a login.
    ip = _ip(address)
    if ip is None:
        return address, address
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    return str(ip), str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def network_of(address: str, rules: ThrottleRules) -> str:
    """The network ``address`` is counted in, as ``a.b.c.0/24`` (or itself if not an IP)."""
    return _where(address, rules.ipv4_prefix, rules.ipv6_prefix)[1]


def subjects(address: str, user: str, rules: ThrottleRules) -> Subjects:
    """The four subjects of a login by ``user`` (as typed) from ``address``."""
    addr, network = _where(address, rules.ipv4_prefix, rules.ipv6_prefix)
    name = user.casefold()
    return Subjects(addr, network, name, f"{name}\x00{addr}")


def _step(count: int, threshold: int, base_s: float) -> float:
    if count < threshold:
        return 0.0
    return base_s * (1 << min(count - threshold, _MAX_DOUBLINGS))


def _largest(candidates: list[tuple[float, str]]) -> tuple[float, str]:
    # The first of equals wins: address before network before user.
    best = candidates[0]
    for seconds, rule in candidates[1:]:
        if seconds > best[0]:
            best = (seconds, rule)
    return best


def failure_delay(after: Counts, rules: ThrottleRules, *, base_s: float, max_s: float) -> Delay:
    """The wait before answering a failure; ``after`` includes this failure."""
    seconds, rule = _largest(
        [
            (_step(after.address, 1, base_s), "address"),
            (_step(after.network, rules.network_threshold, base_s), "network"),
            (_step(after.user, rules.user_threshold, base_s), "user"),
        ]
    )
    if seconds <= base_s:
        return Delay(float(base_s), "base")
    return Delay(float(min(seconds, max(max_s, base_s))), rule)


def success_delay(before: Counts, rules: ThrottleRules, *, base_s: float, max_s: float) -> Delay:
    """The wait before answering a success; ``before`` are the counts it found."""
    seconds, rule = _largest(
        [
            (_step(before.address, 1, base_s), "address"),
            (_step(before.network, rules.network_threshold, base_s), "network"),
        ]
    )
    if seconds <= 0:
        return Delay(0.0, "none")
    return Delay(float(min(seconds, max(max_s, base_s))), rule)


class CounterTable:
    """Expiring counters and values in memory: the local store's contents.

    ``add`` renews each key's expiry (sliding); ``settle`` reads the counts
    and forgives the pair (the last key); ``get``/``put`` hold small values
    (the imap source's positive cache).  At most ``max_entries`` keys are
    kept: the least recently written go first.
    """

    def __init__(self, clock: Callable[[], float], *, max_entries: int = 100_000) -> None:
        self._clock = clock
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, tuple[int | bytes, float]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, key: str, now: float) -> int | bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            del self._entries[key]
            return None
        return entry[0]

    def _count(self, key: str, now: float) -> int:
        value = self._live(key, now)
        return value if isinstance(value, int) else 0

    def _write(self, key: str, value: int | bytes, expires: float) -> None:
        self._entries[key] = (value, expires)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def add(self, keys: Sequence[str], ttl_s: float) -> tuple[int, ...]:
        """Add one to each counter, renew its expiry; return the new counts."""
        now = self._clock()
        out = []
        for key in keys:
            count = self._count(key, now) + 1
            self._write(key, count, now + ttl_s)
            out.append(count)
        return tuple(out)

    def counts(self, keys: Sequence[str]) -> tuple[int, ...]:
        now = self._clock()
        return tuple(self._count(key, now) for key in keys)

    def settle(self, keys: Sequence[str]) -> tuple[int, ...]:
        """Return the counts; then take the last key's count off the others and drop it.

        Expiry times are kept (a success does not make failures last longer).
        """
        now = self._clock()
        before = tuple(self._count(key, now) for key in keys)
        forgiven = before[-1]
        if forgiven:
            for key, count in zip(keys[:-1], before[:-1], strict=True):
                if count <= forgiven:
                    self._entries.pop(key, None)
                elif count:
                    self._entries[key] = (count - forgiven, self._entries[key][1])
            self._entries.pop(keys[-1], None)
        return before

    def get(self, key: str) -> bytes | None:
        value = self._live(key, self._clock())
        return value if isinstance(value, bytes) else None

    def put(self, key: str, value: bytes, ttl_s: float) -> None:
        self._write(key, value, self._clock() + ttl_s)
