"""Session handlers answer with values: the login delay is in the Reply, the server waits."""

from __future__ import annotations

import trio
from trio.testing import MockClock

from refd.door import DoorState
from refd.protocol.connection import Connection
from refd.runtime import ClientInfo, Service, ServiceRef
from refd.session import Session


async def answer(service: Service, line: bytes) -> tuple[float, float, bytes]:
    """The reply's delay, the (mock) time the handler took, and the tagged line."""
    conn = Connection(service.limits)
    session = Session(
        ServiceRef(service), ClientInfo("t-1", "192.0.2.7", tls=True), conn, DoorState()
    )
    conn.receive_data(line)
    event = conn.next_event()
    started = trio.current_time()
    reply = await session.handle(event)
    took = trio.current_time() - started
    return reply.delay_s, took, conn.send(reply.responses[-1])


async def test_a_failed_login_carries_its_delay_and_the_handler_does_not_sleep(
    demo_service: Service, clock: MockClock
) -> None:
    delay, took, tagged = await answer(demo_service, b"a LOGIN alice wrong\r\n")
    assert tagged == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    assert delay == demo_service.policy.auth_failure_delay_s == 2.0
    assert took == 0.0


async def test_an_unknown_user_carries_the_same_delay(
    demo_service: Service, clock: MockClock
) -> None:
    delay, took, tagged = await answer(demo_service, b"a LOGIN nobody wrong\r\n")
    assert tagged == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    assert (delay, took) == (2.0, 0.0)


async def test_other_commands_carry_no_delay(demo_service: Service, clock: MockClock) -> None:
    delay, took, tagged = await answer(demo_service, b"a NOOP\r\n")
    assert tagged == b"a OK NOOP completed.\r\n"
    assert (delay, took) == (0.0, 0.0)
