"""The run's timer for session waits (refd.deadlines): a wait is interrupted
(here: its scope cancelled) when its deadline passes, as a trio deadline
would be, whichever way the deadline moved before; a cleared or forgotten
wait is never interrupted; and the heap does not grow with the sessions that
have ended.

Time is trio's MockClock, which jumps to the next deadline while every task
waits, so each test asserts the exact time of a cancellation."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from refd.deadlines import _PRUNE_MIN, Wait, deadlines
from refd.limits import Limits
from refd.protocol.connection import Connection, State
from refd.server import _read_deadline


def scoped_wait() -> Wait:
    """A wait whose interrupt cancels a scope of its own, as for a session over a
    stream other than a socket (`refd.server`); `scope_of` gives the scope.

    (Not a subclass of `Wait`: in the compiled build, refd.compiled, a class
    defined here cannot subclass a compiled one.)"""
    return Wait(trio.CancelScope().cancel)


def scope_of(wait: Wait) -> trio.CancelScope:
    """The scope that ``wait``'s interrupt cancels (`scoped_wait`)."""
    scope = getattr(wait.interrupt, "__self__", None)
    assert isinstance(scope, trio.CancelScope)
    return scope


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def wait_until_cancelled(wait: Wait) -> float:
    """Sleep in ``wait``'s scope until it is cancelled; trio's time then.

    (`trio.TooSlowError` at 10,000 s, a time no test expects, rather than a
    hang if the timer never cancels.)"""
    scope = scope_of(wait)
    with trio.fail_after(10_000), scope:
        await trio.sleep_forever()
    assert scope.cancelled_caught
    assert wait.fired
    return trio.current_time()


async def test_a_wait_is_cancelled_at_its_deadline(autojump_clock: trio.testing.MockClock) -> None:
    wait = scoped_wait()
    deadlines().set(wait, trio.current_time() + 5, "idle_timeout")
    assert await wait_until_cancelled(wait) == 5
    assert wait.name == "idle_timeout"
    assert len(deadlines()) == 0


async def test_a_deadline_moved_later_fires_at_the_later_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = deadlines()
    wait = scoped_wait()
    timer.set(wait, 5, "idle_timeout")

    async def move() -> None:
        await trio.sleep(3)
        timer.set(wait, 3 + 60, "login_timeout")  # the heap still holds the entry for 5

    async with trio.open_nursery() as nursery:
        nursery.start_soon(move)
        assert await wait_until_cancelled(wait) == 63
    assert wait.name == "login_timeout"


async def test_a_deadline_moved_earlier_fires_at_the_earlier_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = deadlines()
    other = scoped_wait()
    timer.set(other, 100, "idle_timeout")  # the timer sleeps until 100
    wait = scoped_wait()
    timer.set(wait, 50, "idle_timeout")

    async def move() -> None:
        await trio.sleep(1)
        timer.set(wait, 7, "command_timeout")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(move)
        assert await wait_until_cancelled(wait) == 7
    assert not scope_of(other).cancel_called
    assert not other.fired
    assert await wait_until_cancelled(other) == 100


async def test_a_deadline_already_past_fires_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    await trio.sleep(10)
    wait = scoped_wait()
    deadlines().set(wait, 4, "login_timeout")
    assert await wait_until_cancelled(wait) == 10


async def test_cleared_and_forgotten_waits_are_never_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timer = deadlines()
    cleared, forgotten, live = (scoped_wait() for _ in range(3))
    timer.set(cleared, 5, "idle_timeout")
    timer.set(forgotten, 5, "idle_timeout")
    timer.set(live, 20, "idle_timeout")
    cleared.clear()
    timer.forget(forgotten)
    assert await wait_until_cancelled(live) == 20
    assert not scope_of(cleared).cancel_called
    assert not scope_of(forgotten).cancel_called
    assert not (cleared.fired or forgotten.fired)
    # a cleared wait set again counts from its new deadline
    timer.set(cleared, 30, "idle_timeout")
    assert await wait_until_cancelled(cleared) == 30


async def test_the_heap_stays_bounded_by_the_open_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Many short sessions, one long one: what ended is pruned from the heap."""
    timer = deadlines()
    long_one = scoped_wait()
    timer.set(long_one, 1000, "idle_timeout")
    for i in range(20 * _PRUNE_MIN):
        short = scoped_wait()
        timer.set(short, 60 + i, "idle_timeout")
        short.clear()
        timer.forget(short)
        assert len(timer._heap) <= 2 * _PRUNE_MIN + 2
    assert len(timer) == 1
    assert await wait_until_cancelled(long_one) == 1000


def test_each_trio_run_has_its_own_timer() -> None:
    first: list[object] = []

    async def leave_a_wait() -> None:
        timer = deadlines()
        first.append(timer)
        timer.set(scoped_wait(), trio.current_time() + 3600, "idle_timeout")
        assert deadlines() is timer
        assert len(timer) == 1

    async def fresh() -> None:
        assert deadlines() is not first[0]
        assert len(deadlines()) == 0

    trio.run(leave_a_wait)
    trio.run(fresh)


async def test_a_wait_back_at_an_old_time_keeps_one_entry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Moved earlier (5 -> 3), looked at by the timer at 3, then set to 5 again:
    the old entry for 5 and the new one carry the same time; a rebuild keeps
    one, and the wait still fires once, at 5."""
    timer = deadlines()
    wait = scoped_wait()
    timer.set(wait, 5, "idle_timeout")
    timer.set(wait, 3, "command_timeout")
    wait.clear()
    await trio.sleep(4)  # the timer looked at the entry for 3: nothing to cancel
    timer.set(wait, 5, "idle_timeout")
    for _ in range(3 * _PRUNE_MIN):  # enough ended sessions for a rebuild
        short = scoped_wait()
        timer.set(short, 100, "idle_timeout")
        timer.forget(short)
    assert len(timer) == 1
    assert [e for e in timer._heap if e[2] is wait] == [timer._heap[0]]
    assert await wait_until_cancelled(wait) == 5
    assert len(timer) == 0


@pytest.mark.parametrize(
    ("state", "now", "started", "want"),
    [
        # before login: idle 60 s after the last read, login 120 s after the connect
        ("NOT_AUTHENTICATED", 10.0, None, (70.0, "idle_timeout")),
        ("NOT_AUTHENTICATED", 70.0, None, (120.0, "login_timeout")),
        ("NOT_AUTHENTICATED", 60.0, None, (120.0, "idle_timeout")),  # a tie: idle's
        ("NOT_AUTHENTICATED", 10.0, 5.0, (35.0, "command_timeout")),
        ("NOT_AUTHENTICATED", 40.0, 71.0, (100.0, "idle_timeout")),
        ("NOT_AUTHENTICATED", 40.0, 70.0, (100.0, "command_timeout")),  # a tie: the command's
        ("NOT_AUTHENTICATED", 70.0, 90.0, (120.0, "command_timeout")),  # and with login's
        # after login: idle 1,800 s, no login deadline
        ("AUTHENTICATED", 500.0, None, (2300.0, "idle_timeout")),
        ("AUTHENTICATED", 500.0, 2270.0, (2300.0, "command_timeout")),
        ("AUTHENTICATED", 500.0, 2271.0, (2300.0, "idle_timeout")),
    ],
)
def test_a_read_waits_for_the_nearest_of_its_deadlines(
    state: str, now: float, started: float | None, want: tuple[float, str]
) -> None:
    """`refd.server._read_deadline`: the nearest of idle, login and command."""
    limits = Limits(
        preauth_idle_timeout_s=60.0,
        login_timeout_s=120.0,
        idle_timeout_s=1800.0,
        command_timeout_s=30.0,
    )
    conn = Connection(limits)
    conn.state = State[state]
    assert _read_deadline(conn, limits, now, 0.0, started) == want
