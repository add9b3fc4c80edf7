"""`refd.transport.accept_loop` on a listening socket that several processes share.

Two accept loops in one trio run, each on its own descriptor of the same
listening socket (``os.dup``), stand for two workers: a connection wakes
both, and one of them finds nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import pytest
import trio
import trio.testing

from refd import transport
from refd.door import DoorState
from refd.transport import SocketConnection, accept_loop

log = logging.getLogger("tests.accept_loop")


def _listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def _recorder(who: str, taken: list[str]) -> Callable[[SocketConnection, object, object], None]:
    def start(conn: SocketConnection, peer: object, local: object) -> None:
        taken.append(who)
        conn.close()

    return start


async def _connect_one_by_one(port: int, count: int) -> None:
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)):
            await trio.testing.wait_all_tasks_blocked(0.01)


async def _two_loops(door: DoorState, *, shared: bool, connections: int) -> list[str]:
    """Which loop took each of ``connections`` made one at a time."""
    first = _listener()
    second = socket.socket(fileno=os.dup(first.fileno()))
    port = first.getsockname()[1]
    taken: list[str] = []
    async with trio.open_nursery() as nursery:
        for who, sock in (("a", first), ("b", second)):
            nursery.start_soon(
                lambda s=sock, w=who: accept_loop(
                    s, "imap", door, _recorder(w, taken), log, shared=shared
                )
            )
        await trio.testing.wait_all_tasks_blocked(0.01)
        await _connect_one_by_one(port, connections)
        nursery.cancel_scope.cancel()
    return taken


@pytest.fixture(autouse=True)
def _long_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    # far longer than the test: a loop that pauses takes nothing more
    monkeypatch.setattr(transport, "IDLE_LOSER_PAUSE_S", 30.0)


async def test_an_idle_worker_that_lost_the_race_leaves_the_next_ones_to_the_winner() -> None:
    taken = await _two_loops(DoorState(), shared=True, connections=12)
    # The first connection woke both; the loser pauses, so the winner takes all.
    assert len(taken) == 12
    assert set(taken) in ({"a"}, {"b"})


@pytest.mark.parametrize(
    ("shared", "serving"),
    [
        (True, True),  # lost the race, but has a connection of its own
        (False, False),  # no other process accepts on the socket
    ],
)
async def test_a_loop_that_must_not_pause_keeps_taking_its_share(
    shared: bool, serving: bool
) -> None:
    door = DoorState()
    if serving:
        assert door.connections.try_open("192.0.2.1", max_total=10, max_per_address=10) is None
    taken = await _two_loops(door, shared=shared, connections=40)
    assert len(taken) == 40
    # trio runs the two woken loops in either order; 40 to one of them
    # would have a chance of 2**-39
    assert set(taken) == {"a", "b"}
