"""ConnectionTasks: one task serves connection after connection, and ends when it should."""

from __future__ import annotations

import gc
import weakref

import pytest
import trio
import trio.testing

from refd import connection_tasks
from refd.connection_tasks import ConnectionTasks


class Served:
    """A ``serve`` that records which task served what, and waits when told to."""

    def __init__(self) -> None:
        self.by: list[tuple[str, trio.lowlevel.Task]] = []
        self.release = trio.Event()
        self.hold = False

    async def __call__(self, what: str) -> None:
        self.by.append((what, trio.lowlevel.current_task()))
        if self.hold:
            await self.release.wait()
        if what == "boom":
            raise ValueError("boom")


async def test_one_task_serves_one_connection_after_another() -> None:
    served = Served()
    async with trio.open_nursery() as nursery:
        tasks = ConnectionTasks(nursery, served, "conn")
        for what in ("a", "b", "c"):
            tasks.start(what)
            await trio.testing.wait_all_tasks_blocked()
        assert tasks.idle == 1
        assert [t.name for t in nursery.child_tasks] == ["conn"]
        tasks.close()
    assert [what for what, _ in served.by] == ["a", "b", "c"]
    assert len({task for _, task in served.by}) == 1
    assert tasks.idle == 0


async def test_connections_at_once_get_a_task_each_and_leave_them_idle() -> None:
    served = Served()
    served.hold = True
    async with trio.open_nursery() as nursery:
        tasks = ConnectionTasks(nursery, served, "conn")
        for what in ("a", "b", "c"):
            tasks.start(what)
        await trio.testing.wait_all_tasks_blocked()
        assert len({task for _, task in served.by}) == 3
        assert tasks.idle == 0
        served.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert tasks.idle == 3
        served.hold = False
        tasks.start("d")  # an idle task takes it
        await trio.testing.wait_all_tasks_blocked()
        assert served.by[-1][1] in {task for _, task in served.by[:3]}
        assert len(nursery.child_tasks) == 3
        tasks.close()
    assert len(nursery.child_tasks) == 0


async def test_no_more_idle_tasks_than_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection_tasks, "MAX_IDLE", 2)
    served = Served()
    served.hold = True
    async with trio.open_nursery() as nursery:
        tasks = ConnectionTasks(nursery, served, "conn")
        for what in "abcd":
            tasks.start(what)
        await trio.testing.wait_all_tasks_blocked()
        served.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert tasks.idle == 2
        assert len(nursery.child_tasks) == 2  # the other two ended
        tasks.close()


async def test_close_ends_the_idle_tasks_and_lets_busy_ones_finish() -> None:
    served = Served()
    async with trio.open_nursery() as nursery:
        tasks = ConnectionTasks(nursery, served, "conn")
        tasks.start("a")
        await trio.testing.wait_all_tasks_blocked()
        served.hold = True
        tasks.start("b")  # busy, in the idle task
        tasks.start("c")  # busy, in a new task
        await trio.testing.wait_all_tasks_blocked()
        tasks.close()
        with pytest.raises(RuntimeError, match="closed"):
            tasks.start("d")
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) == 2
        served.release.set()  # both finish their connection and end
    assert sorted(what for what, _ in served.by) == ["a", "b", "c"]
    assert tasks.idle == 0


async def test_idle_tasks_are_cancelled_with_the_nursery() -> None:
    served = Served()
    with trio.move_on_after(5) as guard:
        async with trio.open_nursery() as nursery:
            tasks = ConnectionTasks(nursery, served, "conn")
            tasks.start("a")
            await trio.testing.wait_all_tasks_blocked()
            assert tasks.idle == 1
            nursery.cancel_scope.cancel()
    assert not guard.cancelled_caught
    assert tasks.idle == 0


async def test_an_error_in_a_connection_reaches_the_nursery() -> None:
    served = Served()
    with pytest.raises(ExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            tasks = ConnectionTasks(nursery, served, "conn")
            tasks.start("a")
            await trio.testing.wait_all_tasks_blocked()
            tasks.start("boom")  # in the idle task, which then ends with the error
            await trio.testing.wait_all_tasks_blocked()
    assert [repr(e) for e in caught.value.exceptions] == ["ValueError('boom')"]
    assert tasks.idle == 0


async def test_an_idle_task_keeps_nothing_of_its_last_connection() -> None:
    # Its stream, and what else the connection was given, are freed as the
    # connection ends, not when the task serves the next one.
    class Stream:
        pass

    async def serve(stream: Stream) -> None:
        await trio.lowlevel.checkpoint()

    stream = Stream()
    gone = weakref.ref(stream)
    async with trio.open_nursery() as nursery:
        tasks = ConnectionTasks(nursery, serve, "conn")
        tasks.start(stream)
        del stream
        await trio.testing.wait_all_tasks_blocked()
        assert tasks.idle == 1
        gc.collect()
        assert gone() is None
        tasks.close()
