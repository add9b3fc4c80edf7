"""Graceful shutdown: a trigger (door.stop) and a deadline on the connections' nursery."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import trio
from trio.testing import MockClock, wait_all_tasks_blocked

from refd.config.loader import DaemonConfig, ListenerConfig
from refd.door import DoorState
from refd.runtime import Service, ServiceRef
from refd.server import serve


async def read_until(stream: trio.SocketStream, end: bytes) -> bytes:
    buf = b""
    while not buf.endswith(end):
        data = await stream.receive_some(4096)
        if not data:
            return buf + b"<closed>"
        buf += data
    return buf


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
async def test_stop_ends_when_the_last_session_does_or_at_the_grace_deadline(
    demo_config: DaemonConfig,
    demo_service: Service,
    clock: MockClock,
    caplog: pytest.LogCaptureFixture,
    busy: bool,
) -> None:
    config = dataclasses.replace(
        demo_config,
        listeners=(ListenerConfig("imap", "127.0.0.1", 0, "none"),),
        shutdown_grace_s=7.0,
    )
    policy = dataclasses.replace(demo_service.policy, auth_failure_delay_s=30.0)
    ref = ServiceRef(dataclasses.replace(demo_service, policy=policy))
    door = DoorState()
    ended = trio.Event()
    stopped_at = ended_at = 0.0

    async def door_task(task_status: trio.TaskStatus[list[object]]) -> None:
        nonlocal ended_at
        await serve(config, ref, door=door, task_status=task_status)
        ended_at = trio.current_time()
        ended.set()

    caplog.set_level(logging.WARNING, logger="refd.server")
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(door_task)
        client = await trio.open_tcp_stream("127.0.0.1", bound[0].port)
        assert (await read_until(client, b"\r\n")).startswith(b"* OK [CAPABILITY")
        if busy:
            # A failed login from loopback waits the 30 s delay before its answer.
            await client.send_all(b"a LOGIN alice wrong\r\n")
            await trio.sleep(1.0)
        stopped_at = trio.current_time()
        door.stop()
        await ended.wait()
        rest = await read_until(client, b"\r\n")
        await client.aclose()
    took = ended_at - stopped_at
    grace_logs = [r.getMessage() for r in caplog.records if "grace over" in r.getMessage()]
    if busy:
        # Cancelled at the deadline: no answer, no referral, the socket closed.
        assert rest == b"<closed>"
        assert 7.0 <= took < 7.05
        assert grace_logs == [
            "shutdown grace over: closed the sessions still open after 7s (shutdown_grace_s)"
        ]
    else:
        assert rest == b"* BYE [UNAVAILABLE] Server shutting down.\r\n"
        assert took == 0.0
        assert grace_logs == []


async def test_stop_does_not_wait_for_the_tasks_of_sessions_already_ended(
    demo_config: DaemonConfig,
    demo_service: Service,
    clock: MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A connection task whose session ended waits for the next connection
    # (refd.connection_tasks); a stop ends it at once, not at the deadline.
    config = dataclasses.replace(
        demo_config,
        listeners=(ListenerConfig("imap", "127.0.0.1", 0, "none"),),
        shutdown_grace_s=7.0,
    )
    door = DoorState()
    ended = trio.Event()
    ended_at = 0.0

    async def door_task(task_status: trio.TaskStatus[list[object]]) -> None:
        nonlocal ended_at
        await serve(config, ServiceRef(demo_service), door=door, task_status=task_status)
        ended_at = trio.current_time()
        ended.set()

    caplog.set_level(logging.WARNING, logger="refd.server")
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(door_task)
        for _ in range(3):
            client = await trio.open_tcp_stream("127.0.0.1", bound[0].port)
            await client.send_all(b"a LOGOUT\r\n")
            assert (await read_until(client, b"<closed>")).endswith(
                b"a OK LOGOUT completed.\r\n<closed>"
            )
            await client.aclose()
        await wait_all_tasks_blocked()
        stopped_at = trio.current_time()
        door.stop()
        await ended.wait()
    assert ended_at - stopped_at == 0.0
    assert [r.getMessage() for r in caplog.records if "grace over" in r.getMessage()] == []
