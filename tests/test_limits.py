"""Unit tests of the cross-connection limits (pure objects, injected clock)."""

from refd.limits import AuthThrottle, ConnectionTracker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_doubles_up_to_the_cap_and_forgets() -> None:
    clock = Clock()
    t = AuthThrottle(clock, forget_after_s=900)
    delays = [t.failed("192.0.2.1", base_s=2, max_s=15) for _ in range(6)]
    assert delays == [2, 4, 8, 15, 15, 15]
    # Another address has its own history.
    assert t.failed("192.0.2.2", base_s=2, max_s=15) == 2
    clock.now += 901
    assert t.failures("192.0.2.1") == 0
    assert t.failed("192.0.2.1", base_s=2, max_s=15) == 2


def test_throttle_success_resets() -> None:
    t = AuthThrottle(Clock())
    t.failed("a", base_s=1, max_s=10)
    t.failed("a", base_s=1, max_s=10)
    t.succeeded("a")
    assert t.failed("a", base_s=1, max_s=10) == 1


def test_throttle_memory_is_bounded() -> None:
    t = AuthThrottle(Clock(), max_entries=3)
    for i in range(10):
        t.failed(f"10.0.0.{i}", base_s=2, max_s=15)
    assert [t.failures(f"10.0.0.{i}") for i in range(10)] == [0] * 7 + [1, 1, 1]


def test_connection_tracker() -> None:
    c = ConnectionTracker()
    assert c.try_open("a", max_total=3, max_per_address=2) is None
    assert c.try_open("a", max_total=3, max_per_address=2) is None
    assert c.try_open("a", max_total=3, max_per_address=2) == "connections_per_address"
    assert c.try_open("b", max_total=3, max_per_address=2) is None
    assert c.try_open("c", max_total=3, max_per_address=2) == "connections_total"
    c.close("a")
    assert c.try_open("c", max_total=3, max_per_address=2) is None
    c.close("a")
    c.close("b")
    c.close("c")
    assert (c.total, c.per_address) == (0, {})
