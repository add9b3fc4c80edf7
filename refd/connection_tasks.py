"""Tasks that serve one accepted connection after another, instead of a task each.

trio runs every connection in a task of its own.  Starting that task and
ending it is a fixed cost per connection, paid whatever the session does:
``start_soon`` builds the task, copies the context and wraps a compiled
coroutine in a Python one (trio's ``python_wrapper``), and the finished
task's ``StopIteration`` is raised into trio's run loop, where CPython adds
a traceback entry (a line-number search through that large function).
`ConnectionTasks` keeps a task whose connection is done, and hands it the
next one: a PLAIN login-referral session ran 363,799 -> 323,851
instructions (callgrind, c=16, compiled build; bench/instructions.py).

Nothing else changes for a connection: it runs in the listener's nursery
of connections, is cancelled with it, and an exception that escapes a
connection ends its task and reaches the nursery as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import outcome
import trio

__all__ = ["MAX_IDLE", "ConnectionTasks"]

#: the idle tasks kept at most; a task that finds this many idle ends instead
#: (an idle task holds a few of its coroutine frames, ~2 KiB)
MAX_IDLE = 256

#: what `ConnectionTasks.close` wakes an idle task with: end
_CLOSE = None


class ConnectionTasks:
    """Run ``serve(*args)`` for each connection in ``nursery``, in tasks named ``name``.

    `start` hands a connection to an idle task, or starts a task for it.  A
    task whose connection is done waits for the next, unless `MAX_IDLE`
    tasks are idle already or `close` was called: then it ends.  `close`
    (when the listeners stop accepting) ends the idle tasks, so that the
    nursery ends with the last connection.  An idle task is cancelled like
    any other task of the nursery.
    """

    def __init__(
        self, nursery: trio.Nursery, serve: Callable[..., Awaitable[None]], name: str
    ) -> None:
        self._nursery = nursery
        self._serve = serve
        self._name = name
        self._idle: list[trio.lowlevel.Task] = []
        self._closed = False

    @property
    def idle(self) -> int:
        """How many tasks wait for a connection."""
        return len(self._idle)

    def start(self, *args: Any) -> None:
        """Serve a connection: ``serve(*args)`` in an idle task, or in a new one."""
        if self._closed:
            raise RuntimeError("ConnectionTasks closed")
        if self._idle:
            trio.lowlevel.reschedule(self._idle.pop(), outcome.Value(args))
        else:
            self._nursery.start_soon(self._run, args, name=self._name)

    def close(self) -> None:
        """Start no more connections; the idle tasks end, the busy ones after theirs."""
        self._closed = True
        idle, self._idle = self._idle, []
        for task in idle:
            trio.lowlevel.reschedule(task, outcome.Value(_CLOSE))

    async def _run(self, args: tuple[Any, ...] | None) -> None:
        while args is not None:
            await self._serve(*args)
            args = None  # an idle task keeps nothing of its last connection
            if self._closed or len(self._idle) >= MAX_IDLE:
                return
            args = await self._next()

    async def _next(self) -> tuple[Any, ...] | None:
        """The next connection's arguments, or `_CLOSE`."""
        task = trio.lowlevel.current_task()
        self._idle.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._idle.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        found: tuple[Any, ...] | None = await trio.lowlevel.wait_task_rescheduled(abort)
        return found
