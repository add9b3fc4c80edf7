"""Shared fixtures: the demo service, and an RFC-style transcript runner.

``door.transcript(...)`` plays a dialogue written the way the RFCs write
them — ``C:`` lines are sent, ``S:`` lines must arrive byte for byte; ``P:``
sends part of a line and ``W:`` waits that many (mock) seconds — over
an in-memory stream pair into the real per-connection loop.  Time is a
MockClock that jumps when everything is idle, so delays and timeouts cost
no real time.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from refd import compiled
from refd.config.loader import DEMO_CONFIG, DaemonConfig, load_config, load_service
from refd.door import DoorState
from refd.runtime import ClientInfo, Service, ServiceRef
from refd.server import handle_connection

#: the build of refd under test: ``interpreted`` (the checkout as it is), or
#: ``compiled`` when CI runs the suite in a tree built with REFD_COMPILE=1
#: (``.ci/run``); a run that imports another build than it names fails at once.
EXPECTED_BUILD = os.environ.get("REFD_TEST_BUILD", "interpreted")


def pytest_sessionstart(session: pytest.Session) -> None:
    found = compiled.describe()
    if found != EXPECTED_BUILD:
        raise pytest.UsageError(
            f"refd under test is {found}, not {EXPECTED_BUILD} (REFD_TEST_BUILD); "
            f"the extension modules found: {compiled.compiled()}"
        )


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # Jump only after 200 ms of real idleness: password hashing runs in a
    # thread, and the clock must not leap ahead while a hash is computed.
    return trio.testing.MockClock(autojump_threshold=0.2)


@pytest.fixture(scope="session")
def demo_config() -> DaemonConfig:
    return load_config(DEMO_CONFIG)


@pytest.fixture(scope="session")
def demo_service(demo_config: DaemonConfig) -> Service:
    return load_service(demo_config)


class Door:
    """The per-connection loop over memory streams, driven by transcripts."""

    def __init__(self, service: Service) -> None:
        self.ref = ServiceRef(service)
        self.door = DoorState()

    async def transcript(self, script: str, *, address: str = "127.0.0.1") -> list[float]:
        """Play ``script``; return the (mock) time each ``S:`` line arrived."""
        client_stream, server_stream = trio.testing.memory_stream_pair()
        info = ClientInfo(conn_id="t-1", address=address)
        buf = bytearray()
        times: list[float] = []

        async def read_line() -> bytes:
            while b"\n" not in buf:
                with trio.fail_after(3600):
                    data = await client_stream.receive_some(65536)
                if not data:
                    return b"<closed>"
                buf.extend(data)
            i = buf.index(b"\n") + 1
            line = bytes(buf[:i])
            del buf[:i]
            return line

        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle_connection, server_stream, info, self.ref, self.door)
            for n, raw in enumerate(script.splitlines(), 1):
                if not raw.strip():
                    continue
                who, _, text = raw.lstrip().partition(": ")
                if who == "C":
                    await client_stream.send_all(text.encode("utf-8") + b"\r\n")
                elif who == "P":  # part of a line, no CRLF
                    await client_stream.send_all(text.encode("utf-8"))
                elif who == "W":  # wait (mock clock) seconds
                    await trio.sleep(float(text))
                elif who == "S":
                    got = await read_line()
                    want = b"<closed>" if text == "<closed>" else text.encode("utf-8") + b"\r\n"
                    assert got == want, f"line {n}: expected {want!r}, got {got!r}"
                    times.append(trio.current_time())
                else:
                    raise ValueError(f"line {n}: start with 'C: ', 'S: ', 'P: ' or 'W: ': {raw!r}")
            # Nothing more may have been said.
            with trio.move_on_after(5):
                extra = await read_line()
                assert extra == b"<closed>", f"unexpected extra output {extra!r}"
            await client_stream.aclose()
        return times


@pytest.fixture
def door(demo_service: Service) -> Iterator[Door]:
    yield Door(demo_service)


def make_door(service: Service, policy: dict[str, Any] | None = None, **limits: Any) -> Door:
    """A door on ``service`` with some policy settings and limits changed."""
    return Door(
        dataclasses.replace(
            service,
            policy=dataclasses.replace(service.policy, **(policy or {})),
            limits=dataclasses.replace(service.limits, **limits),
        )
    )


def hits(door: object, limit: str) -> float:
    """How often ``limit`` was hit, read from the metrics registry."""
    value = door.metrics.registry.get_sample_value(  # type: ignore[attr-defined]
        "refd_limit_hits_total", {"limit": limit}
    )
    return value or 0.0
