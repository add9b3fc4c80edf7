"""Unit tests of the cross-connection limits (pure objects)."""

from refd.limits import ConnectionTracker


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
