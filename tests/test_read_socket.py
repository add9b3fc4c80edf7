"""`refd.transport.read_socket`: a session's reads, and their turns on the loop."""

from __future__ import annotations

import socket

import trio

from refd.transport import READ_STREAK, ReadStreak, read_socket


def _pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    return ours, theirs


async def test_a_read_returns_the_bytes_that_are_there() -> None:
    ours, theirs = _pair()
    with ours, theirs:
        theirs.sendall(b"a1 LOGIN u p\r\n")
        assert await read_socket(ours.fileno(), 100, ReadStreak()) == b"a1 LOGIN u p\r\n"
        theirs.close()
        assert await read_socket(ours.fileno(), 100, ReadStreak()) == b""


async def test_a_read_waits_for_bytes_not_there_yet() -> None:
    ours, theirs = _pair()
    streak = ReadStreak()
    streak.count = READ_STREAK - 1
    with ours, theirs:
        async with trio.open_nursery() as nursery:

            async def later() -> None:
                await trio.sleep(0.01)
                theirs.sendall(b"a2 LOGOUT\r\n")

            nursery.start_soon(later)
            assert await read_socket(ours.fileno(), 100, streak) == b"a2 LOGOUT\r\n"
        # a read that waited starts a new streak
        assert streak.count == 0


async def test_reads_that_never_wait_still_let_other_tasks_run() -> None:
    """A client whose next command is always there yields the loop every READ_STREAK reads."""
    ours, theirs = _pair()
    streak = ReadStreak()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    with ours, theirs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            await trio.lowlevel.checkpoint()
            before = ticks
            seen = []
            for _ in range(2 * READ_STREAK):
                theirs.sendall(b"a NOOP\r\n")
                assert await read_socket(ours.fileno(), 100, streak) == b"a NOOP\r\n"
                seen.append(ticks - before)
            nursery.cancel_scope.cancel()
    # no turn for anybody else within a streak: those reads cost no pass of the loop
    assert seen[: READ_STREAK - 1] == [0] * (READ_STREAK - 1)
    # but the other task ran before the second streak was over
    assert seen[-1] >= 1
