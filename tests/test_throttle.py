"""The login throttle's policy: counts in, delays out (pure, injected clock).

Then the same policy through :class:`refd.store.Throttle` on its local store
(trio's mock clock, no sockets): the attacks of issue 9 as sequences of
delays.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from refd.metrics import Metrics
from refd.store import Throttle
from refd.throttle import (
    CounterTable,
    Counts,
    Delay,
    Subjects,
    ThrottleRules,
    failure_delay,
    network_of,
    subjects,
    success_delay,
)

RULES = ThrottleRules()  # network_threshold 10, user_threshold 5


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the delay rules -----------------------------------------------------------------------

FAILURES = [
    # counts after the failure (address, network, user, pair) -> delay, rule
    (Counts(1, 1, 1, 1), Delay(2, "base")),
    (Counts(2, 2, 2, 2), Delay(4, "address")),
    (Counts(3, 3, 3, 3), Delay(8, "address")),
    (Counts(4, 4, 4, 4), Delay(15, "address")),  # 16, capped
    (Counts(40, 40, 4, 4), Delay(15, "address")),
    # a network adds nothing up to its threshold, then doubles from the base
    (Counts(1, 10, 1, 1), Delay(2, "base")),
    (Counts(1, 11, 1, 1), Delay(4, "network")),
    (Counts(1, 12, 1, 1), Delay(8, "network")),
    (Counts(1, 13, 1, 1), Delay(15, "network")),
    # a user name likewise, from its threshold (unknown names included)
    (Counts(1, 1, 5, 1), Delay(2, "base")),
    (Counts(1, 1, 6, 1), Delay(4, "user")),
    (Counts(1, 1, 7, 1), Delay(8, "user")),
    (Counts(1, 1, 9, 1), Delay(15, "user")),
    # the largest wins; equals go to the address, then the network
    (Counts(3, 11, 6, 3), Delay(8, "address")),
    (Counts(2, 11, 6, 1), Delay(4, "address")),
    (Counts(1, 12, 6, 1), Delay(8, "network")),
]


@pytest.mark.parametrize(("after", "expected"), FAILURES)
def test_failure_delay(after: Counts, expected: Delay) -> None:
    assert failure_delay(after, RULES, base_s=2, max_s=15) == expected


SUCCESSES = [
    # counts found before the success -> delay, rule
    (Counts(0, 0, 0, 0), Delay(0, "none")),
    (Counts(1, 1, 1, 1), Delay(2, "address")),
    (Counts(3, 3, 0, 0), Delay(8, "address")),
    (Counts(9, 9, 0, 0), Delay(15, "address")),
    (Counts(0, 12, 0, 0), Delay(8, "network")),
    (Counts(0, 10, 0, 0), Delay(2, "network")),
    (Counts(0, 9, 0, 0), Delay(0, "none")),
    # the user counter never delays a success: nobody can slow a victim's login
    (Counts(0, 0, 1000, 0), Delay(0, "none")),
]


@pytest.mark.parametrize(("before", "expected"), SUCCESSES)
def test_success_delay(before: Counts, expected: Delay) -> None:
    assert success_delay(before, RULES, base_s=2, max_s=15) == expected


def test_delays_scale_with_the_base_and_stop_at_the_cap() -> None:
    small = [failure_delay(Counts(n, n, 1, n), RULES, base_s=0.05, max_s=15) for n in (1, 2, 3)]
    assert small == [Delay(0.05, "base"), Delay(0.1, "address"), Delay(0.2, "address")]
    # A cap below the base is the base, as auth.failure_delay_max_s always was.
    assert failure_delay(Counts(5, 5, 5, 5), RULES, base_s=2, max_s=1) == Delay(2, "address")
    huge = Counts(10**9, 10**9, 10**9, 1)
    assert failure_delay(huge, RULES, base_s=2, max_s=15) == Delay(15, "address")


def test_thresholds_are_configurable() -> None:
    rules = ThrottleRules(network_threshold=3, user_threshold=2)
    assert failure_delay(Counts(1, 4, 1, 1), rules, base_s=1, max_s=60) == Delay(2, "network")
    assert failure_delay(Counts(1, 1, 4, 1), rules, base_s=1, max_s=60) == Delay(4, "user")


# -- what a login is counted against -----------------------------------------------------------

SUBJECTS = [
    (
        ("192.0.2.77", "Alice"),
        Subjects("192.0.2.77", "192.0.2.0/24", "alice", "alice\x00192.0.2.77"),
    ),
    # an IPv4-mapped IPv6 address is the IPv4 address
    (
        ("::ffff:192.0.2.77", "bob"),
        Subjects("192.0.2.77", "192.0.2.0/24", "bob", "bob\x00192.0.2.77"),
    ),
    (
        ("2001:db8:1:2:3:4:5:6", "bob"),
        Subjects("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64", "bob", "bob\x002001:db8:1:2:3:4:5:6"),
    ),
    (("[2001:db8::1]", "x"), Subjects("2001:db8::1", "2001:db8::/64", "x", "x\x002001:db8::1")),
    # case-folded as typed (Dovecot's names are case-insensitive)
    (
        ("192.0.2.1", "STRASSE"),
        Subjects("192.0.2.1", "192.0.2.0/24", "strasse", "strasse\x00192.0.2.1"),
    ),
    (
        ("192.0.2.1", "straße"),
        Subjects("192.0.2.1", "192.0.2.0/24", "strasse", "strasse\x00192.0.2.1"),
    ),
    # not an IP (a peer name the kernel could not give): counted as itself
    (("unknown", "u"), Subjects("unknown", "unknown", "u", "u\x00unknown")),
]


@pytest.mark.parametrize(("given", "expected"), SUBJECTS)
def test_subjects(given: tuple[str, str], expected: Subjects) -> None:
    assert subjects(*given, RULES) == expected


def test_network_prefixes_are_configurable() -> None:
    rules = ThrottleRules(ipv4_prefix=16, ipv6_prefix=48)
    assert network_of("192.0.2.77", rules) == "192.0.0.0/16"
    assert network_of("2001:db8:1:2::9", rules) == "2001:db8:1::/48"


# -- the counter table -------------------------------------------------------------------------


def test_counters_slide_and_expire() -> None:
    clock = Clock()
    t = CounterTable(clock)
    assert t.add(["a", "b"], 900) == (1, 1)
    clock.now += 800
    assert t.add(["a"], 900) == (2,)  # renewed: a lives until 1700 + 900
    clock.now += 200
    assert t.counts(["a", "b"]) == (2, 0)  # b expired 900 s after its only failure
    clock.now += 701
    assert t.counts(["a"]) == (0,)
    assert len(t) == 0


def test_settle_forgives_the_pair_only() -> None:
    clock = Clock()
    t = CounterTable(clock)
    for _ in range(3):
        t.add(["A", "N", "U", "P"], 900)
    t.add(["A", "N", "U2", "P2"], 900)  # someone else from the same address
    assert t.settle(["A", "N", "U", "P"]) == (4, 4, 3, 3)  # counts before
    assert t.counts(["A", "N", "U", "P", "U2", "P2"]) == (1, 1, 0, 0, 1, 1)
    # A success with nothing to forgive changes nothing.
    assert t.settle(["A", "N", "U", "P"]) == (1, 1, 0, 0)
    assert t.counts(["A", "N", "U2"]) == (1, 1, 1)


def test_settle_keeps_expiry_and_never_revives_a_counter() -> None:
    clock = Clock()
    t = CounterTable(clock)
    t.add(["A", "P"], 900)
    t.add(["A", "P"], 900)
    clock.now += 100
    t.add(["A"], 100)  # A now expires at 1200, P at 1900
    clock.now += 150
    assert t.settle(["A", "P"]) == (0, 2)
    assert t.counts(["A", "P"]) == (0, 0)
    assert len(t) == 0
    t.add(["A"], 900)
    t.add(["A"], 900)
    t.add(["A", "P"], 900)
    clock.now += 10
    t.settle(["A", "P"])
    clock.now += 890  # the settled counter kept its expiry: 900 s after its last failure
    assert t.counts(["A"]) == (0,)


def test_values_expire_and_memory_is_bounded() -> None:
    clock = Clock()
    t = CounterTable(clock, max_entries=3)
    t.put("c1", b"1", 30)
    assert t.get("c1") == b"1"
    clock.now += 30
    assert t.get("c1") is None
    for i in range(10):
        t.add([f"a{i}"], 900)
    assert t.counts([f"a{i}" for i in range(10)]) == (0,) * 7 + (1, 1, 1)
    assert t.get("a9") is None  # a counter is not a value


# -- the attacks, through the throttle on its local store ---------------------------------


async def failed(t: Throttle, address: str, user: str, rules: ThrottleRules = RULES) -> Delay:
    return (await t.failed(address, user, rules, base_s=2, max_s=15)).delay


async def succeeded(t: Throttle, address: str, user: str) -> Delay:
    return (await t.succeeded(address, user, RULES, base_s=2, max_s=15)).delay


async def test_a_good_login_of_his_own_does_not_reset_the_guesser(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Finding 6: an attacker with an account of his own alternated one wrong
    # guess at the victim with a good login of his own, and was never
    # slowed past 2 s (the success reset his address).  Now it does not.
    t = Throttle(Metrics())
    seconds = []
    for _ in range(5):
        seconds.append((await failed(t, "203.0.113.9", "victim")).seconds)
        seconds.append((await succeeded(t, "203.0.113.9", "mallory")).seconds)
    assert seconds == [2, 2, 4, 4, 8, 8, 15, 15, 15, 15]


async def test_success_forgives_only_the_users_own_failures_from_that_address(
    autojump_clock: trio.abc.Clock,
) -> None:
    t = Throttle(Metrics())
    for _ in range(3):
        await failed(t, "192.0.2.1", "alice")  # alice mistypes at home
    for _ in range(2):
        await failed(t, "192.0.2.1", "bob")  # bob at the same address
    await failed(t, "198.51.100.7", "alice")  # someone tries alice elsewhere
    # alice's success waits what the address earned (5 failures: 15 s) ...
    assert await succeeded(t, "192.0.2.1", "alice") == Delay(15, "address")
    # ... and forgives her 3 there, not bob's 2, nor the failure elsewhere.
    assert (await t.failed("192.0.2.1", "bob", RULES, base_s=2, max_s=15)).counts == Counts(
        3, 3, 3, 3
    )
    assert (await t.failed("198.51.100.7", "alice", RULES, base_s=2, max_s=15)).counts == Counts(
        2, 2, 2, 2
    )
    # A success from an address without failures is not delayed at all.
    assert await succeeded(t, "192.0.2.200", "carol") == Delay(0, "none")


async def test_spraying_from_one_network_is_slowed_and_others_are_not(
    autojump_clock: trio.abc.Clock,
) -> None:
    # 200 user names from 50 addresses of one /24, one guess each: every
    # address is new, yet the network's count slows them all.
    t = Throttle(Metrics())
    delays = [await failed(t, f"198.51.100.{1 + i % 50}", f"user{i}") for i in range(200)]
    assert delays[:10] == [Delay(2, "base")] * 10
    assert delays[10:13] == [Delay(4, "network"), Delay(8, "network"), Delay(15, "network")]
    assert all(d == Delay(15, "network") for d in delays[13:])
    # A sprayed user logs in from elsewhere: not delayed (the user counter
    # never delays a success); from the sprayed network: delayed.
    assert await succeeded(t, "192.0.2.5", "user7") == Delay(0, "none")
    assert (await succeeded(t, "198.51.100.250", "user8")).rule == "network"


async def test_one_user_guessed_from_many_networks_is_slowed_by_name(
    autojump_clock: trio.abc.Clock,
) -> None:
    t = Throttle(Metrics())
    delays = [(await failed(t, f"203.0.{i}.1", "victim")).seconds for i in range(8)]
    assert delays == [2, 2, 2, 2, 2, 4, 8, 15]
    # The victim's own correct login is not slowed, and no lockout exists.
    assert await succeeded(t, "192.0.2.5", "victim") == Delay(0, "none")


async def test_counts_are_forgotten_after_forget_after_s(autojump_clock: trio.abc.Clock) -> None:
    t = Throttle(Metrics())
    rules = ThrottleRules(forget_after_s=60)
    assert [(await failed(t, "192.0.2.1", "x", rules)).seconds for _ in range(3)] == [2, 4, 8]
    await trio.sleep(59)
    assert (await failed(t, "192.0.2.1", "x", rules)).seconds == 15
    await trio.sleep(61)
    assert (await failed(t, "192.0.2.1", "x", rules)).seconds == 2


async def test_keys_hold_no_address_and_no_user_name(autojump_clock: trio.abc.Clock) -> None:
    t = Throttle(Metrics())
    await failed(t, "192.0.2.1", "alice")
    keys = list(t.local.table._entries)
    assert len(keys) == 4
    assert all(k.startswith(("refd:a:", "refd:n:", "refd:u:", "refd:p:")) for k in keys)
    assert not any("alice" in k or "192.0.2" in k for k in keys)
