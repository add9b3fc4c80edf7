"""Unit tests of the cross-connection limits (pure objects)."""

from refd.limits import ConnectionTracker, Limits
from refd.protocol.connection import Connection, ProtocolLimits


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


def test_the_protocol_core_gets_the_configured_limits_themselves() -> None:
    # Limits extends ProtocolLimits: no field is copied (and none can be forgotten).
    limits = Limits(max_line_bytes=1024, bad_commands=3, max_list_patterns=7)
    assert isinstance(limits, ProtocolLimits)
    assert Connection(limits).limits is limits
